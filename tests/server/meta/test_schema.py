"""Migrations, durability checks and lifecycle of the MetaStore, on both backends."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from cairn.core.errors import ConfigError, Unavailable
from cairn.server.meta import MetaStore
from cairn.server.meta import migrate as migrate_mod
from cairn.server.meta.schema import metadata
from tests.support.pg import PostgresCluster

pytestmark = pytest.mark.anyio


async def test_migrate_is_idempotent_and_reaches_head(store: MetaStore) -> None:
    await store.migrate()
    await store.migrate()
    assert await migrate_mod.current_revision(store.db) == migrate_mod.head_revision() == "0001"


async def test_migrated_schema_matches_the_table_definitions(store: MetaStore) -> None:
    def diff(conn):  # type: ignore[no-untyped-def]
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(ctx, metadata)

    assert await store.db.run_plain(diff) == []


async def test_durability_settings_pass_on_a_fresh_store(store: MetaStore) -> None:
    await store.check_durability()
    await store.ping()


@pytest.mark.postgres
async def test_durability_check_refuses_synchronous_commit_off(
    pg_cluster: PostgresCluster,
) -> None:
    url = pg_cluster.create_database()
    pg_cluster.psql(f"ALTER DATABASE {url.rsplit('/', 1)[1]} SET synchronous_commit = off")
    s = await MetaStore.open(url)
    try:
        with pytest.raises(ConfigError, match="synchronous_commit is off"):
            await s.check_durability()
    finally:
        await s.close()


async def test_sqlite_connections_use_wal_full_and_busy_timeout(tmp_path: Path) -> None:
    s = await MetaStore.open(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    try:
        pragmas = ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
        for run in (s.db.read, s.db.write):  # reader pool and writer thread alike
            values = await run(
                lambda conn: [conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in pragmas]
            )
            assert values == ["wal", 2, 10_000, 1]
    finally:
        await s.close()


@pytest.mark.parametrize(
    "url",
    ["mysql://x/y", "sqlite+aiosqlite://", "sqlite:///:memory:", "", "postgresql://h/d"],
)
async def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match="database url"):
        await MetaStore.open(url)


@pytest.mark.expect_warnings
async def test_a_file_that_is_not_a_database_is_unavailable(tmp_path: Path) -> None:
    garbage = tmp_path / "not-a-db"
    garbage.write_bytes(b"this is not an SQLite file" * 200)
    gone = await MetaStore.open(f"sqlite+aiosqlite:///{garbage}")
    try:
        with pytest.raises(Unavailable):
            await gone.ping()
        with pytest.raises(Unavailable):
            await gone.migrate()
    finally:
        await gone.close()


@pytest.mark.postgres
@pytest.mark.expect_warnings
async def test_unreachable_postgres_is_unavailable(pg_cluster: PostgresCluster) -> None:
    # A port nobody listens on (the cluster's own port + a refused connection is racy).
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = await MetaStore.open(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/x")
    try:
        with pytest.raises(Unavailable):
            await s.ping()
        with pytest.raises(Unavailable):
            await s.get_user("alice")
    finally:
        await s.close()
