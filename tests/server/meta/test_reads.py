"""Reading the tree: nodes, listings, resolve, revisions, trash; access checks."""

from __future__ import annotations

import pytest

from cairn.core.errors import InvalidArgument, InvalidName, NotADirectory, NotFound
from cairn.server.meta import MetaStore

from .helpers import World, nid

pytestmark = pytest.mark.anyio


async def test_list_children_pages_in_byte_order(world: World) -> None:
    names = ["b", "B", "a", "é", "z", "A10", "A9", "_", "日本"]
    await world.commit(*[
        {"op": "mkdir", "node": nid(), "parent": world.root, "name": n, "mode": 0o700,
         "mtime_ns": 1} for n in names
    ])  # fmt: skip
    expected = sorted(names, key=lambda n: n.encode())
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = await world.store.list_children(world.user.id, world.ns, world.root, cursor, 4)
        seen += [e["name"] for e in page["entries"]]
        assert all(e["node"]["blocklist"] is None for e in page["entries"])
        cursor = page["cursor"]
        if not page["has_more"]:
            break
    assert seen == expected
    everything = await world.store.list_children(world.user.id, world.ns, world.root, None, 1000)
    assert [e["name"] for e in everything["entries"]] == expected
    assert everything["has_more"] is False


async def test_listing_shows_each_hard_link_under_its_name(world: World) -> None:
    f = await world.mkfile(name="one")
    await world.applied(
        {"op": "link", "node": f["id"], "new_parent": world.root, "new_name": "two"}
    )
    page = await world.store.list_children(world.user.id, world.ns, world.root, None, 10)
    assert [(e["name"], e["node"]["id"]) for e in page["entries"]] == [
        ("one", f["id"]), ("two", f["id"])
    ]  # fmt: skip
    assert len(page["entries"][0]["node"]["names"]) == 2


async def test_list_children_errors(world: World) -> None:
    f = await world.mkfile()
    s, u, ns = world.store, world.user.id, world.ns
    with pytest.raises(NotADirectory):
        await s.list_children(u, ns, f["id"], None, 10)
    with pytest.raises(NotFound):
        await s.list_children(u, ns, nid(), None, 10)
    for limit in (0, 1001, "5"):
        with pytest.raises(InvalidArgument, match="limit"):
            await s.list_children(u, ns, world.root, None, limit)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="cursor"):
        await s.list_children(u, ns, world.root, "!!not base64!!", 10)
    with pytest.raises(InvalidArgument, match="node id"):
        await s.list_children(u, ns, "../etc", None, 10)


async def test_resolve(world: World) -> None:
    d = await world.mkdir(name="dir")
    f = await world.mkfile(parent=d["id"], name="file name.txt")
    s, u, ns = world.store, world.user.id, world.ns
    assert (await s.resolve(u, ns, "/"))["id"] == world.root
    got = await s.resolve(u, ns, "/dir/file name.txt")
    assert got == f and got["blocklist"] is not None
    assert (await s.resolve(u, ns, "//dir/"))["id"] == d["id"]
    with pytest.raises(NotFound, match="/dir/nope"):
        await s.resolve(u, ns, "/dir/nope/deeper")
    with pytest.raises(NotFound):
        await s.resolve(u, ns, "/DIR")
    for bad in ("dir", "/dir/../dir", "/a\x00b"):
        with pytest.raises(InvalidName):
            await s.resolve(u, ns, bad)


async def test_get_node_and_revisions_errors(world: World) -> None:
    d = await world.mkdir()
    s, u, ns = world.store, world.user.id, world.ns
    with pytest.raises(NotFound):
        await s.get_node(u, ns, nid())
    with pytest.raises(InvalidArgument):
        await s.get_node(u, ns, "XYZ")
    assert (await s.revisions(u, ns, d["id"])) == {"revisions": []}
    with pytest.raises(NotFound):
        await s.revisions(u, ns, nid())


async def test_other_users_namespace_is_not_found_everywhere(store: MetaStore) -> None:
    alice = await World.new(store, "alice")
    bob = await World.new(store, "bob")
    f = await alice.mkfile()
    u, ns, root = bob.user.id, alice.ns, alice.root
    attempts = [
        store.check_access(u, ns),
        store.get_node(u, ns, f["id"]),
        store.list_children(u, ns, root, None, 10),
        store.resolve(u, ns, "/f"),
        store.revisions(u, ns, f["id"]),
        store.trash(u, ns),
    ]
    for attempt in attempts:
        with pytest.raises(NotFound):
            await attempt
    # Bob's own namespace does not hold alice's node either.
    with pytest.raises(NotFound):
        await store.get_node(u, bob.ns, f["id"])
    assert [n.ns for n in await store.namespaces(u)] == [bob.ns]
    assert await store.seqs(u) == {bob.ns: 1}
    with pytest.raises(NotFound):
        await store.check_access(u, "1")  # type: ignore[arg-type]
