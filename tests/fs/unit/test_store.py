"""The RocksDB state: outbox order and rebasing, persistence across reopen, cursor,
apply_remote corner cases (names held by other nodes, local pending names)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from cairn.core import wire
from cairn.fs.store import FLUSH_KEYS, ROOT_INO, Node, Store, name_cookie, new_node_id
from tests.fs.unit.helpers import ROOT_ID


def add_file(store: Store, parent: int, name: str, *, queue: bool = True) -> Node:
    txn = store.txn()
    node = Node(txn.alloc_ino(), new_node_id(), "file", 0o644, 1, 1, 5, 5)
    txn.add_name(node, parent, name)
    txn.put_node(node)
    if queue:
        parent_id = txn.node(parent).id
        txn.outbox_append(
            wire.Create("c-" + node.id, node.id, parent_id, name, 0o644, 5, wire.Blocklist())
        )
        txn.outbox_append(
            wire.Update("u-" + node.id, node.id, 0, wire.Blocklist(((b"\1" * 32, 9),)), 6)
        )
    txn.commit()
    return node


def remote(nid: str, names, rev: int = 1, *, deleted: bool = False) -> wire.Node:  # type: ignore[no-untyped-def]
    return wire.Node(nid, 1, "file", 0o600, 7, rev, 0, tuple(names), None, {}, wire.Blocklist(),
                     deleted, rev)  # fmt: skip


def test_outbox_order_done_and_rebase_survive_reopen(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db", ROOT_ID)
    a = add_file(store, ROOT_INO, "a")
    b = add_file(store, ROOT_INO, "b")
    entries = store.outbox_peek(None)
    assert [e.op.op_id for e in entries] == ["c-" + a.id, "u-" + a.id, "c-" + b.id, "u-" + b.id]
    assert [e.seq for e in entries] == sorted(e.seq for e in entries)
    assert store.outbox_peek(1)[0].seq == entries[0].seq
    assert store.pending(a.id) and store.pending(b.id)
    # the pusher committed a's create: rev 1; the queued update is rebased on it
    store.outbox_done([entries[0].seq], {a.id: 1})
    peek = store.outbox_peek(None)
    assert peek[0].op.op_id == "u-" + a.id and peek[0].op.base_rev == 1
    assert store.node(a.ino).base_rev == 1
    store.outbox_done([entries[0].seq])  # idempotent
    store.set_cursor("cur-7")
    store.close()

    store = Store.open(tmp_path / "db", ROOT_ID)
    assert [e.op.op_id for e in store.outbox_peek(None)] == ["u-" + a.id, "c-" + b.id, "u-" + b.id]
    assert store.pending(a.id) and store.cursor() == "cur-7"
    store.outbox_done([e.seq for e in store.outbox_peek(None)], {a.id: 2, b.id: 2})
    assert not store.pending(a.id) and store.outbox_peek(None) == []
    # sequence numbers keep increasing after a reopen (no reuse of done keys)
    c = add_file(store, ROOT_INO, "c")
    assert store.outbox_peek(1)[0].seq > entries[-1].seq
    assert store.lookup(ROOT_INO, "c") == c.ino
    store.close()


def test_readdir_in_cookie_order_resumes_after_cookie(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db", ROOT_ID)
    names = [f"n{i}" for i in range(20)]
    for n in names:
        add_file(store, ROOT_INO, n, queue=False)
    listed = list(store.readdir(ROOT_INO))
    assert sorted(n for _, n, _ in listed) == sorted(names)
    assert [c for c, _, _ in listed] == sorted(name_cookie(n) for n in names)
    rest = list(store.readdir(ROOT_INO, listed[9][0]))
    assert rest == listed[10:]
    store.close()


def test_apply_remote_moves_names_and_respects_local_pending(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db", ROOT_ID)
    x, y = "1" * 32, "2" * 32
    store.apply_remote([remote(x, [(ROOT_ID, "a")]), remote(y, [(ROOT_ID, "b")])])
    xi, yi = store.ino_of(x), store.ino_of(y)
    assert store.lookup(ROOT_INO, "a") == xi and store.lookup(ROOT_INO, "b") == yi
    # feed order: y now holds "a" before x's own entry (moving it to "c") arrives
    ch = store.apply_remote([remote(y, [(ROOT_ID, "a")], 2), remote(x, [(ROOT_ID, "c")], 2)])
    assert store.lookup(ROOT_INO, "a") == yi and store.lookup(ROOT_INO, "c") == xi
    assert store.lookup(ROOT_INO, "b") is None
    assert {(ROOT_INO, "a"), (ROOT_INO, "b"), (ROOT_INO, "c")} <= ch.entries
    assert store.node(xi).names == [(ROOT_INO, "c")]
    # a local file with queued ops keeps its name against a remote node claiming it
    local = add_file(store, ROOT_INO, "mine")
    ch = store.apply_remote([remote("3" * 32, [(ROOT_ID, "mine")])])
    assert store.lookup(ROOT_INO, "mine") == local.ino and local.id in ch.kept_local
    # remote delete removes only names still pointing at the node
    store.apply_remote([remote(x, [], 3, deleted=True)])
    assert store.ino_of(x) is None and store.lookup(ROOT_INO, "a") == yi
    store.close()


def test_a_remembered_miss_ends_with_any_commit_naming_it(tmp_path: Path) -> None:
    """Store.lookup remembers its last miss (the kernel's lookup before a create, then the
    create's own check); a name added afterwards — locally, by a pull, or in another
    directory's commit that also moves it here — is found at once."""
    store = Store.open(tmp_path / "db", ROOT_ID)
    assert store.lookup(ROOT_INO, "a") is None
    assert store.lookup(ROOT_INO, "a") is None  # the remembered miss
    a = add_file(store, ROOT_INO, "a", queue=False)
    assert store.lookup(ROOT_INO, "a") == a.ino
    assert store.lookup(ROOT_INO, "b") is None
    store.apply_remote([remote("4" * 32, [(ROOT_ID, "b")])])
    assert store.lookup(ROOT_INO, "b") == store.ino_of("4" * 32)
    d = store.txn()
    sub = Node(d.alloc_ino(), new_node_id(), "dir", 0o755, 1, 1, 5, 5)
    d.add_name(sub, ROOT_INO, "sub")
    d.put_node(sub)
    d.commit()
    assert store.lookup(sub.ino, "moved") is None
    mv = store.txn()
    node = mv.node(a.ino)
    mv.remove_name(node, ROOT_INO, "a")
    mv.add_name(node, sub.ino, "moved")
    mv.put_node(node)
    mv.commit()
    assert store.lookup(sub.ino, "moved") == a.ino
    assert store.lookup(ROOT_INO, "a") is None
    store.close()


def test_nameless_open_node_is_dropped_at_next_open(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db", ROOT_ID)
    node = add_file(store, ROOT_INO, "gone", queue=False)
    txn = store.txn()
    txn.remove_name(node, ROOT_INO, "gone")
    txn.put_node(node)  # what unlink does while a handle holds the file open
    txn.commit()
    assert store.node(node.ino) is not None
    store.close()  # "crash": no release ever came
    store = Store.open(tmp_path / "db", ROOT_ID)
    assert store.node(node.ino) is None and store.ino_of(node.id) is None
    assert store.node(ROOT_INO) is not None
    store.close()


def test_first_content_folds_into_an_unpeeked_create_only(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db", ROOT_ID)
    a = add_file(store, ROOT_INO, "a", queue=False)
    txn = store.txn()
    txn.outbox_append(wire.Create("c-a", a.id, ROOT_ID, "a", 0o644, 5, wire.Blocklist()))
    txn.commit()
    bl = wire.Blocklist(((b"\2" * 32, 7),))
    txn = store.txn()
    assert txn.fold_into_create(a.id, bl, 99)
    txn.commit()
    (entry,) = store.outbox_peek(None, sending=False)  # a status look: still foldable
    txn = store.txn()
    assert txn.fold_into_create(a.id, bl, 99)
    txn.commit()
    (entry,) = store.outbox_peek(None)  # the pusher may now be sending it
    assert entry.op.blocklist == bl and entry.op.mtime_ns == 99
    assert not store.txn().fold_into_create(a.id, wire.Blocklist(), 100)
    store.close()
    store = Store.open(tmp_path / "db", ROOT_ID)  # a new process has sent nothing yet
    txn = store.txn()
    assert txn.fold_into_create(a.id, wire.Blocklist(), 100)
    txn.commit()
    store.outbox_done([entry.seq], {a.id: 1})
    assert not store.txn().fold_into_create(a.id, bl, 101)  # no queued create any more
    store.close()


def test_outbox_done_rebases_only_the_settled_nodes_ops_and_counts(tmp_path: Path) -> None:
    """The per-node outbox index: settling one node rewrites that node's queued update and
    unlink ops only, leaves other nodes' ops alone, and the count follows appends, removals
    and a reopen."""
    store = Store.open(tmp_path / "db", ROOT_ID)
    nodes = [add_file(store, ROOT_INO, f"n{i}") for i in range(50)]
    assert store.outbox_len() == 100
    txn = store.txn()
    target = nodes[7]
    txn.outbox_append(wire.Unlink("x-" + target.id, target.id, store.root_id, "n7", 1))
    txn.commit()
    assert store.outbox_len() == 101
    creates = {e.op.node: e.seq for e in store.outbox_peek(None) if e.op.op_id.startswith("c-")}
    store.outbox_done([creates[target.id]], {target.id: 4})
    by_id = {e.op.op_id: e.op for e in store.outbox_peek(None)}
    assert by_id["u-" + target.id].base_rev == 4
    assert by_id["x-" + target.id].base_rev == 4
    assert all(by_id["u-" + n.id].base_rev == 0 for n in nodes if n is not target)
    assert store.outbox_len() == 100
    store.close()

    store = Store.open(tmp_path / "db", ROOT_ID)
    assert store.outbox_len() == 100 and store.pending(target.id)
    store.outbox_done([e.seq for e in store.outbox_peek(None) if e.op.node == target.id])
    assert store.outbox_len() == 98 and not store.pending(target.id)
    assert all(store.pending(n.id) for n in nodes if n is not target)


def test_apply_remote_echo_only_moves_the_revision(tmp_path: Path) -> None:
    """The feed repeating what the store already holds (this device's own push coming back)
    reports nothing to invalidate and keeps ctime; a real change still reports."""
    store = Store.open(tmp_path / "db", ROOT_ID)
    x = "4" * 32
    ch = store.apply_remote([remote(x, [(ROOT_ID, "a")])])
    xi = store.ino_of(x)
    assert xi in ch.inodes and (ROOT_INO, "a") in ch.entries
    before = store.node(xi)
    ch = store.apply_remote([remote(x, [(ROOT_ID, "a")], 5)])
    assert not ch.inodes and not ch.entries and not ch.content
    after = store.node(xi)
    assert after.base_rev == 5 and after.ctime_ns == before.ctime_ns
    moved = dataclasses.replace(remote(x, [(ROOT_ID, "a")], 6), mode=0o640)
    ch = store.apply_remote([moved])
    assert ch.inodes == {xi} and store.node(xi).mode == 0o640
    grown = dataclasses.replace(remote(x, [(ROOT_ID, "a")], 7), mode=0o640,
                                blocklist=wire.Blocklist(((b"\3" * 32, 9),)), size=9)  # fmt: skip
    ch = store.apply_remote([grown])
    assert ch.content == {xi} and store.blocklist(xi) == grown.blocklist
    store.close()


def test_peek_skips_pushed_ops_and_sees_late_commits(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db", ROOT_ID)
    for i in range(50):
        add_file(store, ROOT_INO, f"f{i}")
    for _ in range(5):  # push in batches, as the pusher does (2 ops per file)
        batch = store.outbox_peek(10)
        store.outbox_done([e.seq for e in batch])
    assert [e.op.op_id for e in store.outbox_peek(None)][:1] == [
        "c-" + store.node(store.lookup(ROOT_INO, "f25")).id  # type: ignore[arg-type, union-attr]
    ]
    store.outbox_done([e.seq for e in store.outbox_peek(None)])
    assert store.outbox_peek(1) == []
    # a txn that appended before an (empty) peek and commits after it is still seen
    txn = store.txn()
    node = Node(txn.alloc_ino(), new_node_id(), "file", 0o644, 1, 1, 5, 5)
    txn.add_name(node, ROOT_INO, "late")
    txn.put_node(node)
    txn.outbox_append(wire.Create("c-late", node.id, ROOT_ID, "late", 0o644, 5, wire.Blocklist()))
    later = add_file(store, ROOT_INO, "later")
    assert [e.op.op_id for e in store.outbox_peek(None)] == ["c-" + later.id, "u-" + later.id]
    txn.commit()
    assert [e.op.op_id for e in store.outbox_peek(None)] == [
        "c-late",
        "c-" + later.id,
        "u-" + later.id,
    ]
    store.close()


def test_peek_from_memory_matches_a_reopened_store(tmp_path: Path) -> None:
    """Queued ops are kept decoded after a txn writes them; every rewrite (fold into a
    create, rebase at outbox_done) must show in a peek exactly as a fresh store, which
    decodes each op from RocksDB, sees it."""
    store = Store.open(tmp_path / "db", ROOT_ID)
    a = add_file(store, ROOT_INO, "a")  # create + update
    b = add_file(store, ROOT_INO, "b", queue=False)
    txn = store.txn()
    parent = txn.node(ROOT_INO).id
    txn.outbox_append(wire.Create("c-b", b.id, parent, "b", 0o644, 5, wire.Blocklist()))
    txn.outbox_append(wire.Unlink("x-a", a.id, parent, "a", None), held=(b.id,))
    txn.commit()
    bl = wire.Blocklist(((b"\2" * 32, 7),))
    txn = store.txn()
    assert txn.fold_into_create(b.id, bl, 77)
    txn.commit()
    first = store.outbox_peek(1)  # hands a's create out: nothing folds into it any more
    store.outbox_done([first[0].seq], {a.id: 4})
    mine = store.outbox_peek(None)
    assert store._ops, "the ops appended here are served from memory"
    store.close()
    fresh = Store.open(tmp_path / "db", ROOT_ID)
    assert not fresh._ops
    assert fresh.outbox_peek(None) == mine
    by_id = {e.op.op_id: e.op for e in mine}
    assert by_id["u-" + a.id].base_rev == 4 and by_id["x-a"].base_rev == 4
    assert by_id["c-b"].blocklist == bl and by_id["c-b"].mtime_ns == 77
    assert fresh.node(a.ino).base_rev == 4 and fresh.node(a.ino).names == [(ROOT_INO, "a")]
    assert fresh.pending(b.id) and fresh.pending(a.id)
    fresh.outbox_done([e.seq for e in mine])
    assert not fresh.pending(b.id) and not fresh.pending(a.id)
    assert fresh.outbox_len() == 0
    fresh.close()


def test_node_record_round_trips_through_both_encodings(tmp_path: Path) -> None:
    """The record's JSON tail has a hand-written fast path (names only); both it and the
    general path must decode to the node they encoded, odd names included."""
    names = [(ROOT_INO, 'q"uote\\back'), (7, "é ü\u2603"), (9, "bad\udcffbyte")]
    plain = Node(5, new_node_id(), "file", 0o640, 1, 2, 3, 4, 5, names=list(names))
    rich = dataclasses.replace(plain, names=list(names), xattrs={"user.k": b"\0\1"})
    link = dataclasses.replace(plain, type="symlink", target="../t", names=list(names))
    for node in (plain, rich, link):
        assert Node.decode(5, node.encode()) == dataclasses.replace(
            node, size=len(b"../t") if node.type == "symlink" else node.size
        )


def test_big_ops_are_not_kept_decoded_and_peek_the_same(tmp_path: Path) -> None:
    """An update of a big file carries its whole blocklist: it stays in RocksDB only (the
    memory of decoded ops is bounded) and peeks exactly as a small one does."""
    store = Store.open(tmp_path / "db", ROOT_ID)
    a = add_file(store, ROOT_INO, "a", queue=False)
    big = wire.Blocklist(tuple((bytes([i]) * 32, 1 << 20) for i in range(100)))
    txn = store.txn()
    txn.outbox_append(wire.Update("u-big", a.id, 3, big, 9))
    txn.outbox_append(wire.Update("u-small", a.id, 3, wire.Blocklist(((b"\3" * 32, 5),)), 10))
    txn.commit()
    big_seq, small_seq = (e.seq for e in store.outbox_peek(None))
    assert big_seq not in store._ops and small_seq in store._ops
    assert [e.op for e in store.outbox_peek(None)] == [
        wire.Update("u-big", a.id, 3, big, 9),
        wire.Update("u-small", a.id, 3, wire.Blocklist(((b"\3" * 32, 5),)), 10),
    ]
    store.close()


def test_kept_decoded_nodes_are_copies_and_never_stale(tmp_path: Path) -> None:
    """``node()`` serves a copy of the record decoded or written last: changing what it
    returns changes nothing stored, and any newer record (a put, a base_rev patch, a
    reopen) is what the next read sees."""
    store = Store.open(tmp_path / "db", ROOT_ID)
    a = add_file(store, ROOT_INO, "a", queue=False)
    a.xattrs["user.later"] = b"x"  # the caller's object after the put: not what was kept
    got = store.node(a.ino)
    assert got is not None and got.xattrs == {} and got.names == [(ROOT_INO, "a")]
    got.names.append((ROOT_INO, "b"))
    got.size = 99
    again = store.node(a.ino)
    assert again is not None and again.names == [(ROOT_INO, "a")] and again.size == 0
    assert again is not got

    txn = store.txn()
    txn.set_base_rev(a.ino, 41)
    txn.commit()
    assert store.node(a.ino).base_rev == 41  # type: ignore[union-attr]

    txn = store.txn()
    b = txn.node(a.ino)
    assert b is not None
    b.size, b.xattrs = 7, {"user.k": b"v"}
    txn.put_node(b)
    assert txn.node(a.ino).size == 7  # type: ignore[union-attr]  # the txn's own write
    assert store.node(a.ino).size == 0  # type: ignore[union-attr]  # not committed yet
    txn.commit()
    assert store.node(a.ino).xattrs == {"user.k": b"v"}  # type: ignore[union-attr]
    store.close()
    reopened = Store.open(tmp_path / "db", ROOT_ID)
    assert reopened.node(a.ino) == dataclasses.replace(b, base_rev=41)
    reopened.close()


def test_group_commit_reads_through_and_lands_whole(tmp_path: Path) -> None:
    """Commits wait in the pending group, visible to every read at once; iterations write
    the group first; a large group is written at once; close writes what is left."""
    store = Store.open(tmp_path / "db", ROOT_ID)
    assert store.pending_keys() == 0
    a = add_file(store, ROOT_INO, "a")
    assert store.pending_keys() > 0  # not in RocksDB yet ...
    assert store.lookup(ROOT_INO, "a") == a.ino  # ... but every read sees it
    assert store.node(a.ino) == a and store.attrs(a.ino) is not None
    assert store.outbox_len() == 2

    # an iteration (here: readdir) sees RocksDB only, so it writes the group first
    assert [name for _, name, _ in store.readdir(ROOT_INO)] == ["a"]
    assert store.pending_keys() == 0

    b = add_file(store, ROOT_INO, "b", queue=False)
    txn = store.txn()
    txn.drop_node(a)
    txn.remove_name(a, ROOT_INO, "a")
    txn.commit()
    assert store.lookup(ROOT_INO, "a") is None and store.node(a.ino) is None  # deletes too
    assert [e.op.node for e in store.outbox_peek(None)] == [a.id, a.id]  # peek writes first
    assert store.pending_keys() == 0

    txn = store.txn()
    for i in range(FLUSH_KEYS):
        txn.put(b"m" + i.to_bytes(4, "big"), b"x")
    txn.commit()
    assert store.pending_keys() == 0  # large: written with its commit

    c = add_file(store, ROOT_INO, "c", queue=False)
    assert store.pending_keys() > 0
    store.close()  # writes the group
    reopened = Store.open(tmp_path / "db", ROOT_ID)
    assert sorted(name for _, name, _ in reopened.readdir(ROOT_INO)) == ["b", "c"]
    assert reopened.node(b.ino) == b and reopened.node(c.ino) == c
    assert reopened.node(a.ino) is None
    assert len(reopened.outbox_peek(None)) == 2
    reopened.close()


class FailingWrites:
    """RocksDB whose next ``fail`` batch writes raise (a full or failing disk)."""

    def __init__(self, db: object, fail: int) -> None:
        self._db, self.fail = db, fail

    def write(self, *args: object) -> None:
        if self.fail:
            self.fail -= 1
            raise OSError(28, "No space left on device")
        self._db.write(*args)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._db, name)


def test_a_failed_group_write_keeps_the_group_for_the_next(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db", ROOT_ID)
    real = store.db
    store.db = FailingWrites(real, fail=2)  # type: ignore[assignment]
    a = add_file(store, ROOT_INO, "a")
    with pytest.raises(OSError):
        store.flush()
    with pytest.raises(OSError):  # a synced commit reports it to its caller
        store.txn().commit(sync=True)
    assert store.lookup(ROOT_INO, "a") == a.ino and store.pending_keys() > 0
    store.sync_wal()  # the disk recovered: the whole group lands
    assert store.pending_keys() == 0
    store.db = real
    store.close()
    reopened = Store.open(tmp_path / "db", ROOT_ID)
    assert reopened.node(a.ino) == a and len(reopened.outbox_peek(None)) == 2
    reopened.close()


def test_ids_are_distinct_also_across_a_fork() -> None:
    ids = {new_node_id() for _ in range(3000)}  # crosses several pool refills
    assert len(ids) == 3000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids must not repeat the parent's pool
        os.close(r)
        os.write(w, "".join(new_node_id() for _ in range(4)).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        child = f.read()
    os.waitpid(pid, 0)
    parent = "".join(new_node_id() for _ in range(4))
    assert len(child) == 128 and child != parent
    assert not {child[i : i + 32] for i in range(0, 128, 32)} & ids
