"""The SQLite hot reads on plain ``sqlite3`` (``sqlite_reads`` through ``Database.read_raw``)
answer exactly what the SQLAlchemy spelling of the same reads (the PostgreSQL path, run here
on the same SQLite database through ``Database.read``) answers, for a tree with every kind
of node: directories, files with holes and several chunks, symlinks, hard links, xattrs,
deleted nodes, and pages that split hard links and namespaces."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cairn.core.errors import InvalidArgument, NotADirectory, NotFound
from cairn.server.meta import MetaStore, sqlite_reads
from cairn.server.meta import auth as auth_mod
from cairn.server.meta import chunks as chunks_mod
from cairn.server.meta import store as store_mod

from .helpers import World, create, link, mkdir, nid, unlink, update

pytestmark = pytest.mark.anyio


def same(a: Any, b: Any) -> bool:
    """Equal as the JSON clients receive (so 0 and False, or 1 and 1.0, differ)."""
    return json.dumps(a, sort_keys=True, default=repr) == json.dumps(
        b, sort_keys=True, default=repr
    )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[MetaStore]:
    s = await MetaStore.open(f"sqlite+aiosqlite:///{tmp_path / 'meta.db'}")
    try:
        await s.migrate()
        yield s
    finally:
        await s.close()


async def _tree(w: World) -> list[str]:
    """A tree with one node of every shape; returns every node id (deleted ones included)."""
    c1, c2 = await w.upload(), await w.upload()
    d = await w.mkdir(name="docs", xattrs={"user.color": "cmVk"})
    f = await w.mkfile(parent=d["id"], name="a.txt", chunks=[(c1, 100), (None, 1 << 20), (c2, 7)])
    g = await w.applied(create(d["id"], "b", [(c1, 100)], xattrs={"user.x": "", "user.y": "eQ=="}))
    await w.applied(update(g["id"], 1, [(c2, 7), (c1, 100)]))
    await w.applied(link(f["id"], w.root, "hard-link"))
    await w.applied(link(f["id"], d["id"], "zz-link"))
    s = await w.applied(
        {"op": "symlink", "node": nid(), "parent": d["id"], "name": "s", "target": "../x",
         "mtime_ns": 5}
    )  # fmt: skip
    gone = await w.mkfile(parent=d["id"], name="gone")
    await w.commit1(unlink(gone["id"], d["id"], "gone"))
    names = [f"n{i:02d}" for i in range(7)] + ["é", "日本", "B"]
    await w.commit(*[mkdir(d["id"], n) for n in names])
    empty = await w.mkdir(name="empty")
    return [w.root, d["id"], f["id"], g["id"], s["id"], gone["id"], empty["id"]]


async def test_raw_reads_equal_the_sqlalchemy_reads(sqlite_store: MetaStore) -> None:
    s, db = sqlite_store, sqlite_store.db
    w = await World.new(s, "alice")
    other = await World.new(s, "bob")
    ids = await _tree(w)
    await _tree(other)
    u, ns = w.user.id, w.ns

    for node_id in ids:
        raw = await db.read_raw(sqlite_reads.get_node, u, ns, node_id)
        assert same(raw, await db.read(store_mod._get_node, u, ns, node_id))
    assert (await db.read_raw(sqlite_reads.get_node, u, ns, ids[2]))["blocklist"][1] == [
        None,
        1 << 20,
    ]

    for parent in (w.root, ids[1], ids[6]):
        for limit in (1, 3, 100):
            after = None
            for _ in range(50):
                raw = await db.read_raw(sqlite_reads.list_children, u, ns, parent, after, limit)
                ref = await db.read(store_mod._list_children, u, ns, parent, after, limit)
                assert same(raw, ref)
                if not raw[1]:
                    break
                after = raw[0][-1][0]
            else:
                raise AssertionError("listing did not end")

    for limit in (1, 2, 5, 1000):
        cursor: dict[int, int] = {}
        for _ in range(100):
            raw = await db.read_raw(sqlite_reads.changes, u, cursor, limit)
            assert same(raw, await db.read(store_mod._changes, u, cursor, limit))
            cursor = s.cursor_seqs(raw["cursor"])
            if not raw["has_more"]:
                break
        else:
            raise AssertionError("feed did not end")
    assert await db.read_raw(sqlite_reads.heads, u) == await db.read(store_mod._heads, u)

    mine = [await w.upload() for _ in range(3)]
    theirs = await other.upload()
    asked = [os.urandom(32), mine[0], theirs, mine[1], mine[0], os.urandom(32)]
    raw_missing = await db.read_raw(sqlite_reads.missing_chunks, u, asked)
    assert raw_missing == await db.read(chunks_mod.missing_chunks, u, asked)
    assert raw_missing == [asked[0], theirs, asked[5]]
    many = [os.urandom(32) for _ in range(1100)] + mine
    assert await db.read_raw(sqlite_reads.missing_chunks, u, many) == many[:1100]
    assert await db.read_raw(sqlite_reads.user_has_chunk, u, mine[2]) is True
    assert await db.read_raw(sqlite_reads.user_has_chunk, u, theirs) is False
    assert await db.read_raw(sqlite_reads.chunk_known, theirs) is True
    assert await db.read_raw(sqlite_reads.chunk_known, os.urandom(32)) is False

    token = os.urandom(32)
    dev = await s.add_device(u, "phone", token)
    assert await db.read_raw(sqlite_reads.device_by_token, token) == dev
    assert dev == await db.read(auth_mod.device_by_token, token)
    await s.revoke_device_id(u, dev.id)
    assert await db.read_raw(sqlite_reads.device_by_token, token) is None
    assert db.inline_fallbacks == 0


async def test_raw_reads_refuse_what_the_reference_refuses(sqlite_store: MetaStore) -> None:
    s, db = sqlite_store, sqlite_store.db
    w = await World.new(s, "alice")
    other = await World.new(s, "bob")
    f = await w.mkfile()
    u = w.user.id
    cases: list[tuple[Any, Any, tuple[Any, ...], type[Exception]]] = [
        (sqlite_reads.get_node, store_mod._get_node, (u, other.ns, other.root), NotFound),
        (sqlite_reads.get_node, store_mod._get_node, (u, w.ns, nid()), NotFound),
        (sqlite_reads.get_node, store_mod._get_node, (u, 10**6, w.root), NotFound),
        (sqlite_reads.list_children, store_mod._list_children,
         (u, w.ns, f["id"], None, 5), NotADirectory),
        (sqlite_reads.list_children, store_mod._list_children,
         (u, other.ns, other.root, None, 5), NotFound),
        (sqlite_reads.check_access, store_mod._check_access, (u, other.ns), NotFound),
        (sqlite_reads.missing_chunks, chunks_mod.missing_chunks, (u, [b"short"]), InvalidArgument),
    ]  # fmt: skip
    for raw_fn, ref_fn, args, exc in cases:
        with pytest.raises(exc) as raw_err:
            await db.read_raw(raw_fn, *args)
        with pytest.raises(exc) as ref_err:
            await db.read(ref_fn, *args)
        assert str(raw_err.value) == str(ref_err.value)


async def test_raw_reads_run_on_the_loop_thread_and_see_acknowledged_writes(
    sqlite_store: MetaStore,
) -> None:
    s, db = sqlite_store, sqlite_store.db
    w = await World.new(s, "alice")
    for i in range(5):
        await w.mkdir(name=f"d{i}")
        thread, (page, more) = await db.read_raw(
            lambda conn: (
                threading.get_ident(),
                sqlite_reads.list_children(conn, w.user.id, w.ns, w.root, None, 100),
            )
        )
        assert thread == threading.get_ident()
        assert [name for name, _ in page] == [f"d{j}" for j in range(i + 1)]
        assert more is False


async def test_raw_read_connection_refuses_writes(sqlite_store: MetaStore) -> None:
    with pytest.raises(Exception, match="readonly"):
        await sqlite_store.db.read_raw(lambda conn: conn.execute("DELETE FROM users"))
