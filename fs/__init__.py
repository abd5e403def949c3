"""Cairn drive: the FUSE file system, local state, cache and sync agent (trio)."""
