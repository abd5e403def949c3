"""Server HTTP tier: real ``cairn-server`` processes (tests/support/server.py)."""

from tests.support.server import cairn_server, server_factory  # noqa: F401
