"""SQLite inline reads (``Database.read_inline``): they run on the event loop thread, see every
write acknowledged before them.

The fallback to the reader pool on SQLITE_BUSY is not covered here: a WAL database open in
other connections cannot be locked against readers from a test (exclusive locking mode needs
every other connection closed)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from cairn.server.meta import MetaStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _open(path: Path) -> MetaStore:
    s = await MetaStore.open(f"sqlite+aiosqlite:///{path}")
    await s.migrate()
    await s.db.write(lambda c: c.exec_driver_sql("CREATE TABLE t (v INTEGER)"))
    return s


def _values(conn: Connection) -> tuple[int, list[int]]:
    rows = conn.execute(text("SELECT v FROM t ORDER BY v")).scalars().all()
    return threading.get_ident(), list(rows)


async def test_inline_reads_run_on_the_loop_thread_and_see_acknowledged_writes(
    tmp_path: Path,
) -> None:
    s = await _open(tmp_path / "m.db")
    try:
        for i in range(5):
            await s.db.write(lambda c, i=i: c.execute(text("INSERT INTO t VALUES (:v)"), {"v": i}))
            thread, values = await s.db.read_inline(_values)
            assert thread == threading.get_ident()
            assert values == list(range(i + 1))
        assert s.db.inline_fallbacks == 0
    finally:
        await s.close()
