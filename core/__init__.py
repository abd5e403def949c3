"""Cairn core: chunking, chunk ids, frame codec, keys and errors (no async framework)."""
