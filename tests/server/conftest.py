"""Server HTTP tier: real ``cairn-server`` processes (tests/support/server.py), each test
module run once on SQLite and once on PostgreSQL (``-m "not postgres"`` skips the latter)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.pg import pg_cluster  # noqa: F401
from tests.support.server import ServerPool, ServerProcess


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def new_database(request: pytest.FixtureRequest) -> Callable[[], str | None]:
    """Each call: the database URL for one more server (None: its own SQLite file)."""
    if request.param == "sqlite":
        return lambda: None
    cluster = request.getfixturevalue("pg_cluster")
    return cluster.create_database  # type: ignore[no-any-return]


class _DbPool(ServerPool):
    def __init__(self, root: Path, new_db: Callable[[], str | None]) -> None:
        super().__init__(root)
        self.new_db = new_db

    def make(self, name: str = "srv", start: bool = True, **kwargs: Any) -> ServerProcess:
        kwargs.setdefault("database_url", self.new_db())
        return super().make(name, start, **kwargs)


@pytest.fixture(scope="module")
def module_server_factory(
    tmp_path_factory: pytest.TempPathFactory, new_database: Callable[[], str | None]
) -> Iterator[Any]:
    pool = _DbPool(tmp_path_factory.mktemp("servers"), new_database)
    yield pool.make
    pool.close()


@pytest.fixture
def server_factory(tmp_path: Path, new_database: Callable[[], str | None]) -> Iterator[Any]:
    pool = _DbPool(tmp_path, new_database)
    yield pool.make
    pool.close()


@pytest.fixture
def cairn_server(server_factory: Any) -> ServerProcess:
    return server_factory()  # type: ignore[no-any-return]
