"""MetaStore tests run against both backends: SQLite (a file in tmp_path) and a real
PostgreSQL (tests/support/pg.py, one fresh database per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from cairn.server.meta import MetaStore

# pg_cluster (session scope) comes from tests/server/conftest.py: importing it here too
# would start a second cluster per session.
from tests.support.pg import pg_database  # noqa: F401

from .helpers import World


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'meta.db'}"
    factory: Callable[[], str] = request.getfixturevalue("pg_database")
    return factory()


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[MetaStore]:
    s = await MetaStore.open(db_url)
    try:
        await s.migrate()
        yield s
    finally:
        await s.close()


@pytest.fixture
async def world(store: MetaStore) -> World:
    """User alice with one device, ready to commit into her home namespace."""
    return await World.new(store, "alice")
