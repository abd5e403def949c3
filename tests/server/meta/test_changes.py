"""The compacted changes feed and cursors."""

from __future__ import annotations

import base64

import pytest

from cairn.core.errors import InvalidArgument
from cairn.server.meta import MetaStore

from .helpers import World, mkdir, nid, rename, unlink

pytestmark = pytest.mark.anyio


async def pull_all(world: World, cursor: str | None, limit: int) -> tuple[list[dict], str]:
    entries: list[dict] = []
    for _ in range(1000):
        page = await world.store.changes(world.user.id, cursor, limit)
        entries += page["entries"]
        cursor = page["cursor"]
        if not page["has_more"]:
            assert cursor is not None
            return entries, cursor
    raise AssertionError("feed did not end")


async def test_full_listing_from_empty_cursor(world: World) -> None:
    d = await world.mkdir(name="d")
    f = await world.mkfile(parent=d["id"], name="f")
    page = await world.store.changes(world.user.id, None, 500)
    assert page["has_more"] is False
    assert [(e["ns"], e["seq"], e["node"]["id"]) for e in page["entries"]] == [
        (world.ns, 1, world.root), (world.ns, 2, d["id"]), (world.ns, 3, f["id"]),
    ]  # fmt: skip
    assert page["entries"][2]["node"] == await world.node(f["id"])  # with blocklist
    assert await world.store.changes(world.user.id, "", 500) == page
    # Nothing new: empty page, same position.
    again = await world.store.changes(world.user.id, page["cursor"], 500)
    assert again["entries"] == [] and again["has_more"] is False
    assert world.store.cursor_seqs(again["cursor"]) == {world.ns: 3}


async def test_feed_is_compacted_and_in_seq_order(world: World) -> None:
    start = (await world.store.changes(world.user.id, None, 500))["cursor"]
    a = await world.mkdir(name="a")
    b = await world.mkdir(name="b")
    await world.applied(rename(a["id"], world.root, "a", world.root, "a2"))
    await world.applied(unlink(b["id"], world.root, "b"))
    await world.applied(rename(a["id"], world.root, "a2", world.root, "a3"))
    entries, _ = await pull_all(world, start, 500)
    assert [(e["node"]["id"], e["seq"]) for e in entries] == [(b["id"], 5), (a["id"], 6)]
    assert entries[0]["node"]["deleted"] is True
    assert entries[1]["node"]["names"] == [[world.root, "a3"]]


async def test_paging_returns_every_node_once(world: World) -> None:
    ids = [nid() for _ in range(23)]
    await world.commit(*[mkdir(world.root, f"d{i}", node=n) for i, n in enumerate(ids)])
    for limit in (1, 5, 23, 24, 1000):
        entries, cursor = await pull_all(world, None, limit)
        assert [e["node"]["id"] for e in entries] == [world.root] + ids
        assert world.store.cursor_seqs(cursor) == {world.ns: 24}
    page = await world.store.changes(world.user.id, None, 5)
    assert page["has_more"] is True and world.store.cursor_seqs(page["cursor"]) == {world.ns: 5}


async def test_changes_only_cover_the_users_namespaces(store: MetaStore) -> None:
    alice = await World.new(store, "alice")
    bob = await World.new(store, "bob")
    await alice.mkdir(name="secret")
    entries, cursor = await pull_all(bob, None, 100)
    assert [e["node"]["id"] for e in entries] == [bob.root]
    # A cursor naming alice's namespace does not reveal anything about it.
    forged = base64.urlsafe_b64encode(f'{{"{alice.ns}":0}}'.encode()).decode().rstrip("=")
    page = await store.changes(bob.user.id, forged, 100)
    assert {e["ns"] for e in page["entries"]} == {bob.ns}


@pytest.mark.parametrize(
    "cursor",
    ["%%%", "bm90IGpzb24", base64.urlsafe_b64encode(b"[1,2]").decode(),
     base64.urlsafe_b64encode(b'{"x":1}').decode(), base64.urlsafe_b64encode(b'{"1":-1}').decode(),
     base64.urlsafe_b64encode(b'{"1":"3"}').decode(), "A" * 100_000],
)  # fmt: skip
async def test_garbage_cursor_is_invalid_argument(store: MetaStore, cursor: str) -> None:
    w = await World.new(store, "alice")
    with pytest.raises(InvalidArgument, match="cursor"):
        await store.changes(w.user.id, cursor, 10)
    with pytest.raises(InvalidArgument, match="cursor"):
        store.cursor_seqs(cursor)
    with pytest.raises(InvalidArgument, match="limit"):
        await store.changes(w.user.id, None, 0)
