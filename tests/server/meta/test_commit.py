"""Commit semantics (docs/api.md, "Commit") on both backends."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from cairn.core.errors import NotFound, TooLarge
from cairn.core.wire import Blocklist, parse_ops
from cairn.server.meta import MetaStore
from cairn.server.meta.schema import chunks, journal, revisions

from .helpers import World, create, link, mkdir, nid, rename, unlink, update

pytestmark = pytest.mark.anyio


async def test_create_tree_in_one_batch_allocates_consecutive_seqs(world: World) -> None:
    d, e, f, s = nid(), nid(), nid(), nid()
    c = await world.upload(5)
    results = await world.commit(
        mkdir(world.root, "docs", node=d, xattrs={"user.color": "cmVk"}),
        mkdir(d, "sub", node=e),
        create(e, "a.txt", [(c, 5), (None, 1 << 40)], node=f),
        {"op": "symlink", "node": s, "parent": d, "name": "ln", "target": "sub/a.txt",
         "mtime_ns": 7},
    )  # fmt: skip
    assert [r["status"] for r in results] == ["applied"] * 4
    assert [r["seq"] for r in results] == [2, 3, 4, 5]
    file = results[2]["node"]
    assert file == {
        "id": f, "ns": world.ns, "type": "file", "mode": 0o644, "mtime_ns": 2000, "rev": 1,
        "size": 5 + (1 << 40), "names": [[e, "a.txt"]], "target": None, "xattrs": {},
        "blocklist": [[c.hex(), 5], [None, 1 << 40]], "deleted": False, "seq": 4,
    }  # fmt: skip
    assert await world.node(f) == file
    assert results[0]["node"]["xattrs"] == {"user.color": "cmVk"}
    assert results[3]["node"]["target"] == "sub/a.txt"
    assert await world.store.seqs(world.user.id) == {world.ns: 5}
    # Holes cost no quota: only chunk bytes count.
    assert await world.store.usage(world.user.id) == 5


async def test_update_bumps_rev_and_keeps_revisions(world: World) -> None:
    f = await world.mkfile()
    c2 = await world.upload(50)
    r = await world.commit1(update(f["id"], 1, [(c2, 50)]))
    assert r["status"] == "applied"
    assert (r["node"]["rev"], r["node"]["size"], r["node"]["mtime_ns"]) == (2, 50, 3000)
    revs = (await world.store.revisions(world.user.id, world.ns, f["id"]))["revisions"]
    assert [(v["rev"], v["size"], v["device"]) for v in revs] == [
        (2, 50, world.device.id),
        (1, 100, world.device.id),
    ]
    assert revs[0]["blocklist"] == [[c2.hex(), 50]]
    assert await world.store.usage(world.user.id) == 50


async def test_concurrent_style_stale_base_conflict(world: World) -> None:
    f = await world.mkfile()
    c = await world.upload()
    assert (await world.commit1(update(f["id"], 1, [(c, 100)])))["status"] == "applied"
    r = await world.commit1(update(f["id"], 1, [(c, 100)]))
    assert r["status"] == "conflict" and r["reason"] == "stale_base"
    assert r["current"]["rev"] == 2 and r["current"]["blocklist"] == [[c.hex(), 100]]
    r = await world.commit1(unlink(f["id"], world.root, "f", base_rev=1))
    assert (r["status"], r["reason"]) == ("conflict", "stale_base")


async def test_missing_chunks_are_reported_and_the_op_applies_after_upload(world: World) -> None:
    known = await world.upload()
    unknown = [bytes([i]) * 32 for i in (1, 2)]
    op = create(
        world.root, "f", [(known, 100), (unknown[0], 10), (unknown[1], 10), (unknown[0], 10)]
    )
    op["op_id"] = "create-f"
    r = await world.commit1(dict(op))
    assert r == {"op_id": "create-f", "status": "missing_chunks",
                 "missing": [unknown[0].hex(), unknown[1].hex()]}  # fmt: skip
    assert await world.store.seqs(world.user.id) == {world.ns: 1}
    for c in unknown:
        await world.store.record_upload(world.user.id, c, 10, 12)
    r = await world.commit1(dict(op))  # same op id: not stored, so re-evaluated
    assert r["status"] == "applied"


async def test_chunks_uploaded_by_someone_else_are_missing_for_me(store: MetaStore) -> None:
    alice = await World.new(store, "alice")
    bob = await World.new(store, "bob")
    c = await bob.upload()
    r = await alice.commit1(create(alice.root, "f", [(c, 100)]))
    assert r["status"] == "missing_chunks" and r["missing"] == [c.hex()]


async def test_idempotent_retry_returns_stored_result_and_changes_nothing(world: World) -> None:
    c = await world.upload()
    ops = [mkdir(world.root, "d"), create(world.root, "f", [(c, 100)])]
    ops[0]["op_id"], ops[1]["op_id"] = "x1", "x2"
    first = await world.commit(*[dict(o) for o in ops])
    again = await world.commit(*[dict(o) for o in ops])
    assert again == first
    assert await world.store.seqs(world.user.id) == {world.ns: 3}
    assert await world.store.chunk_refcounts([c]) == {c: 1}
    # A new op id with the same node id is a different op: the id is taken.
    dup = dict(ops[0], op_id="x3")
    r = await world.commit1(dup)
    assert (r["status"], r["error"]) == ("error", "already_exists")


async def test_name_taken_and_case_sensitivity(world: World) -> None:
    d = await world.mkdir(name="Docs")
    r = await world.commit1(mkdir(world.root, "Docs"))
    assert (r["status"], r["reason"], r["current"]["id"]) == ("conflict", "name_taken", d["id"])
    # Names are byte-exact: another case is another name.
    assert (await world.commit1(mkdir(world.root, "docs")))["status"] == "applied"
    # A case-only rename is a real rename.
    r = await world.commit1(rename(d["id"], world.root, "Docs", world.root, "DOCS"))
    assert r["status"] == "applied" and r["node"]["names"] == [[world.root, "DOCS"]]
    names = [e["name"] for e in (await world.store.list_children(
        world.user.id, world.ns, world.root, None, 10))["entries"]]  # fmt: skip
    assert names == ["DOCS", "docs"]


async def test_errors_parent_and_types(world: World) -> None:
    f = await world.mkfile()
    cases = [
        (mkdir(nid(), "x"), "not_found"),
        (mkdir(f["id"], "x"), "not_a_directory"),
        (update(world.root, 1, []), "is_a_directory"),
        (update(nid(), 1, []), "not_found"),
        (link(world.root, world.root, "rootlink"), "is_a_directory"),
    ]
    results = await world.commit(*[op for op, _ in cases])
    assert [(r["status"], r.get("error")) for r in results] == [("error", e) for _, e in cases]
    assert all(r["message"] for r in results)


async def test_refused_op_does_not_undo_the_others_and_dependents_fail(world: World) -> None:
    d = nid()
    results = await world.commit(
        mkdir(world.root, "a"),
        mkdir(nid(), "orphan", node=d),  # parent does not exist
        mkdir(d, "child"),  # depends on the refused op
        mkdir(world.root, "b"),
    )
    assert [r["status"] for r in results] == ["applied", "error", "error", "applied"]
    assert results[2]["error"] == "not_found"
    assert [r.get("seq") for r in results] == [2, None, None, 3]


async def test_rename_move_and_moved_conflict(world: World) -> None:
    a = await world.mkdir(name="a")
    b = await world.mkdir(name="b")
    f = await world.mkfile(parent=a["id"], name="f")
    r = await world.commit1(rename(f["id"], a["id"], "f", b["id"], "g"))
    assert r["status"] == "applied" and r["node"]["names"] == [[b["id"], "g"]]
    # The device still thinks it is a/f.
    r = await world.commit1(rename(f["id"], a["id"], "f", a["id"], "h"))
    assert (r["status"], r["reason"]) == ("conflict", "moved")
    assert r["current"]["names"] == [[b["id"], "g"]]
    r = await world.commit1(unlink(f["id"], a["id"], "f"))
    assert (r["status"], r["reason"]) == ("conflict", "moved")
    resolved = await world.store.resolve(world.user.id, world.ns, "/b/g")
    assert resolved["id"] == f["id"] and resolved["rev"] == 1


async def test_rename_replace_sends_last_name_to_trash(world: World) -> None:
    old = await world.mkfile(name="target")
    new = await world.mkfile(name="tmp")
    r = await world.commit1(rename(new["id"], world.root, "tmp", world.root, "target"))
    assert (r["status"], r["reason"], r["current"]["id"]) == ("conflict", "name_taken", old["id"])
    r = await world.commit1(
        rename(new["id"], world.root, "tmp", world.root, "target", replace=True)
    )
    assert r["status"] == "applied"
    gone = await world.node(old["id"])
    assert gone["deleted"] is True and gone["names"] == []
    assert gone["seq"] == r["seq"] - 1  # the replaced node's change comes first
    trash = (await world.store.trash(world.user.id, world.ns))["entries"]
    assert [(t["id"], t["former"]) for t in trash] == [(old["id"], [world.root, "target"])]
    assert await world.store.usage(world.user.id) == 100
    # The replaced file keeps its revisions.
    revs = await world.store.revisions(world.user.id, world.ns, old["id"])
    assert len(revs["revisions"]) == 1


async def test_rename_replace_checks_what_the_device_saw(world: World) -> None:
    """``replaces``/``replaces_rev``: a save-by-rename must not delete content the device
    never saw (another device's newer revision, or another node now at the name)."""
    old = await world.mkfile(name="doc")
    tmp = await world.mkfile(name="doc.tmp")
    c = await world.upload()
    await world.applied(update(old["id"], 1, [(c, 100)]))  # another device's edit: rev 2
    op = rename(tmp["id"], world.root, "doc.tmp", world.root, "doc", replace=True)
    r = await world.commit1({**op, "replaces": old["id"], "replaces_rev": 1})
    assert (r["status"], r["reason"]) == ("conflict", "replaced_changed")
    assert r["current"]["id"] == old["id"] and r["current"]["rev"] == 2
    r = await world.commit1({**op, "replaces": nid()})  # some other node than is there
    assert (r["status"], r["reason"]) == ("conflict", "replaced_changed")
    assert (await world.node(old["id"]))["deleted"] is False
    r = await world.commit1({**op, "replaces": old["id"], "replaces_rev": 2})
    assert r["status"] == "applied"
    assert (await world.node(old["id"]))["deleted"] is True


async def test_rename_replace_type_rules(world: World) -> None:
    d = await world.mkdir(name="d")
    full = await world.mkdir(name="full")
    await world.mkdir(parent=full["id"], name="x")
    f = await world.mkfile(name="f")
    results = await world.commit(
        rename(f["id"], world.root, "f", world.root, "d", replace=True),
        rename(d["id"], world.root, "d", world.root, "f", replace=True),
        rename(d["id"], world.root, "d", world.root, "full", replace=True),
    )
    assert [r.get("error") for r in results] == [
        "is_a_directory", "not_a_directory", "directory_not_empty"
    ]  # fmt: skip
    empty = await world.mkdir(name="empty")
    r = await world.commit1(rename(d["id"], world.root, "d", world.root, "empty", replace=True))
    assert r["status"] == "applied"
    assert (await world.node(empty["id"]))["deleted"] is True


async def test_directory_cannot_move_into_its_own_subtree(world: World) -> None:
    a = await world.mkdir(name="a")
    b = await world.mkdir(parent=a["id"], name="b")
    c = await world.mkdir(parent=b["id"], name="c")
    for target in (a["id"], b["id"], c["id"]):
        r = await world.commit1(rename(a["id"], world.root, "a", target, "loop"))
        assert (r["status"], r["error"]) == ("error", "invalid_argument")
    r = await world.commit1(rename(c["id"], b["id"], "c", world.root, "c"))
    assert r["status"] == "applied"


async def test_unlink_rules_and_trash(world: World) -> None:
    d = await world.mkdir(name="d")
    f = await world.mkfile(parent=d["id"], name="f")
    r = await world.commit1(unlink(d["id"], world.root, "d"))
    assert (r["status"], r["error"]) == ("error", "directory_not_empty")
    r = await world.commit1(unlink(f["id"], d["id"], "f", base_rev=1))
    assert r["status"] == "applied" and r["node"]["deleted"] is True
    assert r["node"]["names"] == []
    r = await world.commit1(unlink(d["id"], world.root, "d"))
    assert r["status"] == "applied"
    # Operations on a deleted node: conflict "deleted" with the node as it is.
    c = await world.upload()
    r = await world.commit1(update(f["id"], 1, [(c, 100)]))
    assert (r["status"], r["reason"], r["current"]["deleted"]) == ("conflict", "deleted", True)
    trash = (await world.store.trash(world.user.id, world.ns))["entries"]
    assert {t["id"] for t in trash} == {d["id"], f["id"]}
    assert all(t["deleted"] for t in trash)
    assert await world.store.usage(world.user.id) == 0
    # The root has no name to remove.
    r = await world.commit1(unlink(world.root, world.root, "x"))
    assert (r["status"], r["reason"]) == ("conflict", "moved")


async def test_hard_links(world: World) -> None:
    d = await world.mkdir(name="d")
    f = await world.mkfile(name="f")
    r = await world.commit1(link(f["id"], d["id"], "hard"))
    assert r["status"] == "applied"
    assert sorted(map(tuple, r["node"]["names"])) == sorted([(world.root, "f"), (d["id"], "hard")])
    r = await world.commit1(link(f["id"], d["id"], "hard"))
    assert (r["status"], r["reason"]) == ("conflict", "name_taken")
    sym = await world.applied({"op": "symlink", "node": nid(), "parent": world.root,
                               "name": "s", "target": "f", "mtime_ns": 1})  # fmt: skip
    r = await world.commit1(link(sym["id"], d["id"], "s2"))
    assert (r["status"], r["error"]) == ("error", "invalid_argument")
    # Removing one name keeps the node; removing the last deletes it.
    r = await world.commit1(unlink(f["id"], world.root, "f"))
    assert r["node"]["deleted"] is False and r["node"]["names"] == [[d["id"], "hard"]]
    r = await world.commit1(unlink(f["id"], d["id"], "hard"))
    assert r["node"]["deleted"] is True


async def test_setattr_mode_mtime_and_xattrs(world: World) -> None:
    f = await world.mkfile()
    ops = [
        {"op": "setattr", "node": f["id"], "mode": 0o600,
         "xattrs_set": {"user.a": "MQ==", "user.b": "Mg=="}},
        {"op": "setattr", "node": f["id"], "mtime_ns": 42, "xattrs_set": {"user.a": "Mw=="},
         "xattrs_remove": ["user.b", "user.nope"]},
    ]  # fmt: skip
    r1, r2 = await world.commit(*ops)
    assert r1["node"]["xattrs"] == {"user.a": "MQ==", "user.b": "Mg=="}
    node = await world.node(f["id"])
    assert (node["mode"], node["mtime_ns"], node["rev"]) == (0o600, 42, 1)
    assert node["xattrs"] == {"user.a": "Mw=="}
    assert node == r2["node"]
    too_many = {f"user.x{i}": "" for i in range(64)}
    r = await world.commit1({"op": "setattr", "node": f["id"], "xattrs_set": too_many})
    assert (r["status"], r["error"]) == ("error", "too_large")
    assert (await world.node(f["id"]))["xattrs"] == {"user.a": "Mw=="}


async def test_quota(store: MetaStore) -> None:
    w = await World.new(store, "carol", quota=250)
    f = await w.mkfile()  # 100 bytes
    c = await w.upload(200)
    r = await w.commit1(create(w.root, "big", [(c, 200)]))
    assert (r["status"], r["error"]) == ("error", "quota_exceeded")
    r = await w.commit1(update(f["id"], 1, [(c, 200)]))  # 100 -> 200: fits
    assert r["status"] == "applied"
    small = await w.upload(10)
    r = await w.commit1(create(w.root, "sparse", [(small, 10), (None, 1 << 50)]))
    assert r["status"] == "applied"
    assert await store.usage(w.user.id) == 210
    # Shrinking is always allowed.
    r = await w.commit1(update(f["id"], 2, [(small, 10)]))
    assert r["status"] == "applied"


async def test_refcounts_match_revisions(world: World) -> None:
    a, b, c = await world.upload(), await world.upload(), await world.upload()
    f = await world.mkfile(chunks=[(a, 100), (a, 100), (b, 100)])
    await world.applied(update(f["id"], 1, [(b, 100), (c, 100)]))
    await world.applied(update(f["id"], 2, [(c, 100)]))
    g = await world.mkfile(name="g", chunks=[(a, 100)])
    await world.applied(unlink(g["id"], world.root, "g"))
    refs = await world.store.chunk_refcounts([a, b, c])
    assert refs == {a: 2, b: 2, c: 2}

    # Recompute from the stored revisions: each revision counts once per distinct chunk.
    def recount(conn):  # type: ignore[no-untyped-def]
        expected: dict[bytes, int] = {}
        for (blob,) in conn.execute(select(revisions.c.blocklist)):
            for cid in Blocklist.decode(bytes(blob)).chunk_ids():
                expected[cid] = expected.get(cid, 0) + 1
        stored = {bytes(k): v for k, v in conn.execute(select(chunks.c.id, chunks.c.refcount))}
        return expected, stored

    expected, stored = await world.store.db.read(recount)
    assert stored == expected


async def test_journal_has_one_entry_per_applied_op(world: World) -> None:
    f = await world.mkfile()
    await world.commit(
        mkdir(world.root, "d"), mkdir(nid(), "bad"), unlink(f["id"], world.root, "f")
    )
    rows = await world.store.db.read(
        lambda conn: conn.execute(select(journal.c.seq, journal.c.op).order_by(journal.c.seq)).all()
    )
    assert [tuple(r) for r in rows] == [(1, "mkroot"), (2, "create"), (3, "mkdir"), (4, "unlink")]


async def test_commit_access_and_bounds(store: MetaStore) -> None:
    alice = await World.new(store, "alice")
    bob = await World.new(store, "bob")
    ops = parse_ops({"ops": [mkdir(alice.root, "x") | {"op_id": "1"}]})
    for ns in (bob.ns, 999_999):
        with pytest.raises(NotFound):
            await store.commit(alice.user.id, alice.device.id, ns, ops)
    with pytest.raises(TooLarge):
        await store.commit(alice.user.id, alice.device.id, alice.ns, ops * 1001)
    assert await store.commit(alice.user.id, alice.device.id, alice.ns, []) == []
    # Bob cannot reach alice's nodes through his own namespace either.
    r = await bob.commit1(mkdir(alice.root, "x"))
    assert (r["status"], r["error"]) == ("error", "not_found")


async def test_rename_onto_itself_or_its_own_hard_link_changes_no_names(world: World) -> None:
    f = await world.mkfile(name="f")
    r = await world.commit1(rename(f["id"], world.root, "f", world.root, "f"))
    assert r["status"] == "applied" and r["node"]["names"] == [[world.root, "f"]]
    await world.applied(link(f["id"], world.root, "g"))
    r = await world.commit1(rename(f["id"], world.root, "f", world.root, "g", replace=True))
    assert r["status"] == "applied"
    assert sorted(map(tuple, r["node"]["names"])) == [(world.root, "f"), (world.root, "g")]
    assert r["node"]["deleted"] is False
