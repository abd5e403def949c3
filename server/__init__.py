"""Cairn server: metadata service, chunk store, auth and change hints (aiohttp)."""
