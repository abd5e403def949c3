"""``MetaStore.list_children_json``, ``get_node_json`` and ``changes_json``, the bodies the
API sends: on SQLite they reuse node objects encoded earlier (keyed by node id, seq and
whether the blocklist is in), so these tests check that they always say what
``list_children``, ``get_node`` and ``changes`` say, including after another server process
(a second MetaStore on the same database file) changed the nodes in every way a node object
can change."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cairn.core.errors import InvalidArgument, NotADirectory, NotFound
from cairn.server.meta import MetaStore
from cairn.server.meta.sqlite_reads import EncodedNodes

from .helpers import World, create, link, mkdir, rename, unlink, update

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _open(url: str) -> MetaStore:
    s = await MetaStore.open(url)
    await s.migrate()
    return s


@pytest.fixture
async def two(db_url: str) -> AsyncIterator[tuple[MetaStore, MetaStore]]:
    """Two MetaStores on one database, as two server workers have."""
    a = await _open(db_url)
    b = await MetaStore.open(db_url)
    try:
        yield a, b
    finally:
        await b.close()
        await a.close()


async def _pages(s: MetaStore, w: World, parent: str, limit: int) -> list[Any]:
    """Every page of ``parent`` through both methods; asserts they agree."""
    pages: list[Any] = []
    cursor = ""
    for _ in range(100):
        body = await s.list_children_json(w.user.id, w.ns, parent, cursor, limit)
        page = json.loads(body)
        assert page == await s.list_children(w.user.id, w.ns, parent, cursor, limit)
        pages.append(page)
        if not page["has_more"]:
            return pages
        cursor = page["cursor"]
    raise AssertionError("listing did not end")


async def _same_bodies(s: MetaStore, w: World, ids: list[str]) -> None:
    """Stat of every node and the whole changes feed (several page sizes) agree."""
    for node_id in ids:
        body = await s.get_node_json(w.user.id, w.ns, node_id)
        assert json.loads(body) == await s.get_node(w.user.id, w.ns, node_id)
    for limit in (1, 3, 1000):
        cursor = ""
        for _ in range(200):
            page = json.loads(await s.changes_json(w.user.id, cursor, limit))
            assert page == await s.changes(w.user.id, cursor, limit)
            cursor = page["cursor"]
            if not page["has_more"]:
                break
        else:
            raise AssertionError("feed did not end")


async def test_body_equals_the_listing_after_changes_from_another_process(
    two: tuple[MetaStore, MetaStore],
) -> None:
    a, b = two
    wa = await World.new(a, "alice")
    wb = World(b, wa.user, wa.device)  # the same device, through the other process
    d = await wa.mkdir(name="d")
    f = await wa.mkfile(parent=d["id"], name="f")
    g = await wa.mkfile(parent=d["id"], name="g")
    h = await wa.mkfile(parent=d["id"], name="h")
    await wa.applied(mkdir(d["id"], "sub", xattrs={"user.k": "dg=="}))
    await wa.applied(create(d["id"], "é 日本", [(await wa.upload(), 5)]))
    ids = [wa.root, d["id"], f["id"], g["id"], h["id"]]
    for limit in (1, 2, 100):
        first = await _pages(a, wa, d["id"], limit)
        assert await _pages(a, wa, d["id"], limit) == first  # now from the cache
    await _same_bodies(a, wa, ids)
    await _same_bodies(a, wa, ids)  # from the cache
    stale = json.loads(await a.get_node_json(wa.user.id, wa.ns, f["id"]))

    # Every kind of change to a listed node object, made by the other process.
    await wb.applied(
        {"op": "setattr", "node": f["id"], "mode": 0o600, "xattrs_set": {"user.x": "eQ=="}}
    )
    await wb.applied(link(g["id"], wa.root, "g-elsewhere"))  # names of g grow
    await wb.applied(rename(h["id"], d["id"], "h", d["id"], "h2"))
    await wb.applied(update(f["id"], 1, [(await wb.upload(), 9)]))
    await wb.commit1(unlink(g["id"], wa.root, "g-elsewhere"))
    await wb.applied(link(f["id"], d["id"], "f-link"))  # f listed twice

    for limit in (1, 2, 100):
        pages = await _pages(a, wa, d["id"], limit)
        entries = [e for p in pages for e in p["entries"]]
        by_name = {e["name"]: e["node"] for e in entries}
        assert by_name["f"]["mode"] == 0o600 and by_name["f"]["xattrs"] == {"user.x": "eQ=="}
        assert by_name["f"]["size"] == 9 and by_name["f-link"] == by_name["f"]
        assert by_name["g"]["names"] == [[d["id"], "g"]]
        assert "h" not in by_name and by_name["h2"]["names"] == [[d["id"], "h2"]]
    await _same_bodies(a, wa, ids)
    fresh = json.loads(await a.get_node_json(wa.user.id, wa.ns, f["id"]))
    assert fresh["rev"] == stale["rev"] + 1 and fresh["blocklist"] != stale["blocklist"]


async def test_body_refuses_what_the_listing_refuses(store: MetaStore, world: World) -> None:
    f = await world.mkfile()
    other = await World.new(store, "bob")
    u, ns = world.user.id, world.ns
    with pytest.raises(NotADirectory):
        await store.list_children_json(u, ns, f["id"], "", 10)
    with pytest.raises(NotFound):
        await store.list_children_json(u, ns, "0" * 32, "", 10)
    with pytest.raises(NotFound):
        await store.list_children_json(u, other.ns, other.root, "", 10)
    with pytest.raises(NotFound):
        await store.get_node_json(u, other.ns, other.root)
    with pytest.raises(NotFound):
        await store.get_node_json(u, ns, "0" * 32)
    with pytest.raises(InvalidArgument):
        await store.get_node_json(u, ns, "not-an-id")
    with pytest.raises(InvalidArgument):
        await store.changes_json(u, "garbage", 10)
    with pytest.raises(InvalidArgument):
        await store.changes_json(u, "", 0)
    empty = await world.mkdir(name="empty")
    assert json.loads(await store.list_children_json(u, ns, empty["id"], "", 10)) == {
        "entries": [],
        "cursor": "",
        "has_more": False,
    }


def test_cache_is_bounded() -> None:
    cache = EncodedNodes(size=3)
    for i in range(10):
        cache.put((str(i), i, False), "{}")
    assert sum(cache.get((str(i), i, False)) is not None for i in range(10)) <= 3
    assert cache.get(("9", 9, False)) == "{}"
    assert cache.get(("9", 9, True)) is None
    by_chars = EncodedNodes(size=1000, chars=100)
    for i in range(10):
        by_chars.put((str(i), i, True), "x" * 20)
    assert sum(by_chars.get((str(i), i, True)) is not None for i in range(10)) <= 5
    by_chars.put(("big", 1, True), "x" * 26)  # over a quarter of the bound: not kept
    assert by_chars.get(("big", 1, True)) is None
