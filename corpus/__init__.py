"""The corpus format on disk: layout and committed tables, shards, journaled commits, published files, rewriting."""
