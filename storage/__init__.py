"""Storage: file access through Beam FileSystems (local, s3://, gs://) and the object-store specifics."""
