"""Getting sources: the sources file, local files, HTTP downloads, object stores."""
