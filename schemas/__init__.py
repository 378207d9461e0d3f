"""Records passed between pipeline stages, key rules and the Parquet table schemas."""
