"""Server HTTP tier: real ``cairn-server`` processes (tests/support/server.py)."""

from tests.support.server import (  # noqa: F401
    cairn_server,
    module_server_factory,
    server_factory,
)
