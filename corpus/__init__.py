"""The corpus on disk: file helpers, shard writing, output layout, progress."""
