"""Group commit of the SQLite writer thread (server/meta/writer.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from cairn.core.errors import AlreadyExists
from cairn.server.meta import MetaStore
from cairn.server.meta.schema import users

pytestmark = pytest.mark.anyio


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[MetaStore]:
    s = await MetaStore.open(f"sqlite+aiosqlite:///{tmp_path / 'meta.db'}")
    try:
        await s.migrate()
        yield s
    finally:
        await s.close()


def _add(name: str, fail: bool = False):  # type: ignore[no-untyped-def]
    def job(conn):  # type: ignore[no-untyped-def]
        conn.execute(insert(users).values(name=name, password_hash="h", created_ns=0))
        if fail:
            raise AlreadyExists(f"{name} refused after writing")
        return name

    return job


async def test_a_failing_job_in_a_group_rolls_back_alone(sqlite_store: MetaStore) -> None:
    db = sqlite_store.db
    entered, release = threading.Event(), threading.Event()

    def gate(conn):  # type: ignore[no-untyped-def]
        entered.set()
        if not release.wait(timeout=30):  # bounded; released below
            raise AssertionError("gate never released")
        return "gate"

    first = asyncio.ensure_future(db.write(gate))
    for _ in range(3000):
        if entered.is_set() or first.done():
            break
        await asyncio.sleep(0.01)  # polling interval of a bounded wait
    assert entered.is_set()
    # Queued while the writer is busy: these run as one group, one transaction.
    jobs = [
        asyncio.ensure_future(db.write(_add("a"))),
        asyncio.ensure_future(db.write(_add("b", fail=True))),
        asyncio.ensure_future(db.write(_add("a"))),  # unique violation: its own failure
        asyncio.ensure_future(db.write(_add("c"))),
    ]
    for _ in range(3000):  # make sure all four are queued before the gate opens
        if db._writer is not None and db._writer._queue.qsize() >= 4:
            break
        await asyncio.sleep(0.01)
    release.set()
    assert await first == "gate"
    results = await asyncio.gather(*jobs, return_exceptions=True)
    assert results[0] == "a" and results[3] == "c"
    assert isinstance(results[1], AlreadyExists)
    assert "UNIQUE" in str(results[2]) or "unique" in str(results[2]).lower()
    names = await db.read(lambda conn: [r[0] for r in conn.execute(select(users.c.name))])
    assert sorted(names) == ["a", "c"]


async def test_cancelled_caller_does_not_break_the_writer(sqlite_store: MetaStore) -> None:
    task = asyncio.ensure_future(sqlite_store.add_user("x", "h", None))
    for _ in range(3):  # let it reach the writer's queue before cancelling
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The writer keeps serving; the cancelled job may or may not have run.
    await sqlite_store.add_user("y", "h", None)
    assert (await sqlite_store.get_user("y")) is not None
