"""``MetaStore.list_children_json``, the listing body the API sends: on SQLite it reuses
node objects encoded earlier (keyed by node id and seq), so these tests check that it always
says what ``list_children`` says, including after another server process (a second
MetaStore on the same database file) changed the listed nodes in every way a node object
can change."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cairn.core.errors import NotADirectory, NotFound
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
    for limit in (1, 2, 100):
        first = await _pages(a, wa, d["id"], limit)
        assert await _pages(a, wa, d["id"], limit) == first  # now from the cache

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
    empty = await world.mkdir(name="empty")
    assert json.loads(await store.list_children_json(u, ns, empty["id"], "", 10)) == {
        "entries": [],
        "cursor": "",
        "has_more": False,
    }


def test_cache_is_bounded() -> None:
    cache = EncodedNodes(size=3)
    for i in range(10):
        cache.put((str(i), i), "{}")
    assert sum(cache.get((str(i), i)) is not None for i in range(10)) <= 3
    assert cache.get(("9", 9)) == "{}"
