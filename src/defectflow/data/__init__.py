"""Sources to the standardized table: reading each source type, the preflight data gate, the facts of each image file, split assignment, the built-in demo data."""
