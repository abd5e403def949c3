"""Issue 5 sync semantics against a real server process, without the kernel (two stores in
one process): refused ops become conflicted copies, the mass-delete guard holds and
releases, change hints wake the puller, and the helpers' contracts (copy names, update
folding)."""

from __future__ import annotations

import calendar
import re
import time
from pathlib import Path

import pytest
import trio

from cairn.core import ids, wire
from cairn.core.errors import Unavailable
from cairn.core.keys import DataKey
from cairn.fs.cache import ChunkCache
from cairn.fs.client import Client
from cairn.fs.records import OutboxEntry
from cairn.fs.store import Node, Store, new_node_id, new_op_id
from cairn.fs.sync import hints as hints_mod
from cairn.fs.sync.agent import SyncAgent
from cairn.fs.sync.conflicts import copy_name
from cairn.fs.sync.hints import HintListener
from cairn.fs.sync.pusher import coalesce
from tests.support.drive import PASSWORD, DriveServer
from tests.support.netproxy import NetProxy

COPY = re.compile(r"^(.*) \(conflicted copy (\w+) \d{4}-\d{2}-\d{2} \d{6}\)(.*)$")


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


class Dev:
    """One device's store, cache, client and agent, opened in-process."""

    def __init__(self, root: Path, session: dict, url: str, name: str) -> None:
        self.session = session
        self.root_id = session["home"]["root"]
        self.dedupe = bytes.fromhex(session["dedupe_key"])
        self.store = Store.open(root / "db", self.root_id)
        self.cache = ChunkCache(root / "cache", DataKey.generate(), 1 << 30)
        self.client = Client(url, session["token"])
        self.parked = root / "parked.jsonl"
        self.agent = SyncAgent(
            self.store, self.cache, self.client, ns=session["home"]["ns"],
            parked_file=self.parked, device=name,
        )  # fmt: skip

    def _bl(self, data: bytes) -> wire.Blocklist:
        cid = ids.chunk_id(self.dedupe, data)
        self.cache.put(cid, data)
        return wire.Blocklist(((cid, len(data)),))

    def create(self, name: str, data: bytes) -> str:
        bl = self._bl(data)
        txn = self.store.txn()
        nid, now = new_node_id(), time.time_ns()
        node = Node(txn.alloc_ino(), nid, "file", 0o644, 0, 0, now, now, len(data))
        txn.add_name(node, 1, name)
        txn.put_node(node)
        txn.put_blocklist(node.ino, bl)
        txn.outbox_append(wire.Create(new_op_id(), nid, self.root_id, name, 0o644, now, bl))
        txn.commit(sync=True)
        return nid

    def update(self, nid: str, data: bytes) -> None:
        bl = self._bl(data)
        txn = self.store.txn()
        node = txn.node(txn.ino_of(nid))
        node.size = len(data)
        txn.put_node(node)
        txn.put_blocklist(node.ino, bl)
        txn.outbox_append(wire.Update(new_op_id(), nid, node.base_rev, bl, time.time_ns()))
        txn.commit(sync=True)

    def unlink(self, name: str) -> None:
        txn = self.store.txn()
        ino = txn.lookup(1, name)
        node = txn.node(ino)
        txn.remove_name(node, 1, name)
        txn.drop_node(node)
        txn.outbox_append(wire.Unlink(new_op_id(), node.id, self.root_id, name, node.base_rev))
        txn.commit(sync=True)

    def rename(self, old: str, new: str) -> None:
        txn = self.store.txn()
        node = txn.node(txn.lookup(1, old))
        txn.remove_name(node, 1, old)
        txn.add_name(node, 1, new)
        txn.put_node(node)
        r = self.root_id
        txn.outbox_append(wire.Rename(new_op_id(), node.id, r, old, r, new))
        txn.commit(sync=True)

    def tree(self) -> dict[str, bytes]:
        """name → chunk ids of each file in the root (the content, by identity)."""
        out = {}
        for _, name, ino in self.store.readdir(1):
            out[name] = b"".join(c for c, _ in self.store.blocklist(ino) if c is not None)
        return out

    def cid(self, data: bytes) -> bytes:
        return ids.chunk_id(self.dedupe, data)

    async def sync(self) -> None:
        await self.agent.pusher.push_once()
        await self.agent.puller.pull_once()

    async def close(self) -> None:
        await self.client.aclose()
        self.store.close()


async def pair(server: DriveServer, tmp: Path) -> tuple[Dev, Dev]:
    devs = []
    for name in ("A", "B"):
        async with Client(server.url) as c:
            session = await c.login("alice", PASSWORD, name)
        devs.append(Dev(tmp / name, session, server.url, name))
    return devs[0], devs[1]


# --- pure helpers ---------------------------------------------------------------------------


def test_copy_name_shape_and_bounds() -> None:
    t = calendar.timegm((2026, 11, 21, 15, 4, 5, 0, 0, 0))
    assert copy_name("doc.txt", "B", t) == "doc (conflicted copy B 2026-11-21 150405).txt"
    assert copy_name(".bashrc", "B", t) == ".bashrc (conflicted copy B 2026-11-21 150405)"
    assert copy_name("a.tar.gz", "B", t, n=2).endswith(" 2).gz")
    long = copy_name("é" * 200 + ".txt", "laptop", t)
    assert len(long.encode()) <= 255 and long.endswith(").txt") and COPY.match(long)


def test_coalesce_folds_updates_not_across_unlink() -> None:
    bl1 = wire.Blocklist(((b"\1" * 32, 1),))
    bl2 = wire.Blocklist(((b"\2" * 32, 2),))
    ops = [
        wire.Create("c", "n1", "r", "f", 0o644, 1, bl1),
        wire.Update("u1", "n1", 0, bl1, 2),
        wire.Update("u2", "n1", 0, bl2, 3),
        wire.Unlink("x", "n2", "r", "g", 5),
        wire.Update("u3", "n2", 5, bl1, 4),
    ]
    kept, folded = coalesce([OutboxEntry(i + 1, op) for i, op in enumerate(ops)])
    assert [e.op.op_id for e in kept] == ["c", "u1", "x", "u3"]
    assert kept[1].op.blocklist == bl2 and kept[1].op.mtime_ns == 3
    assert folded == {2: [3]}


# --- against the server ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_edit_edit_makes_a_copy_on_both(drive_server: DriveServer, tmp_path: Path) -> None:
    a, b = await pair(drive_server, tmp_path)
    try:
        nid = a.create("doc.txt", b"base")
        await a.sync()
        await b.sync()
        b.update(b.store.node(b.store.lookup(1, "doc.txt")).id, b"from B")
        b.update(b.store.node(b.store.lookup(1, "doc.txt")).id, b"from B, again")
        a.update(nid, b"from A")
        await a.sync()
        await b.sync()  # stale: B's last content becomes a copy, doc.txt is A's
        await a.sync()
        for d in (a, b):
            tree = d.tree()
            assert tree["doc.txt"] == d.cid(b"from A"), tree
            copies = [n for n in tree if COPY.match(n)]
            assert len(copies) == 1 and COPY.match(copies[0]).group(2) == "B", tree
            assert tree[copies[0]] == d.cid(b"from B, again")
        assert not b.parked.exists() and b.store.outbox_len() == 0
        assert [c.kind for c in b.agent.pusher.resolver.recent] == ["update"]
    finally:
        await a.close()
        await b.close()


@pytest.mark.anyio
async def test_create_create_then_update(drive_server: DriveServer, tmp_path: Path) -> None:
    a, b = await pair(drive_server, tmp_path)
    try:
        a.create("new.txt", b"A's")
        await a.sync()
        nb = b.create("new.txt", b"B's first")
        b.update(nb, b"B's second")
        await b.sync()  # create refused (name taken) -> copy name; its update follows it
        await a.sync()
        for d in (a, b):
            tree = d.tree()
            assert tree["new.txt"] == d.cid(b"A's"), tree
            (copy,) = [n for n in tree if COPY.match(n)]
            assert tree[copy] == d.cid(b"B's second")
        assert not b.parked.exists()
    finally:
        await a.close()
        await b.close()


@pytest.mark.anyio
async def test_edit_delete_keeps_the_edit(drive_server: DriveServer, tmp_path: Path) -> None:
    a, b = await pair(drive_server, tmp_path)
    try:
        nid = a.create("doc.txt", b"base")
        await a.sync()
        await b.sync()
        b.unlink("doc.txt")
        a.update(nid, b"edited")
        await a.sync()
        await b.sync()  # B's delete is refused (stale): the edited file comes back
        assert b.tree() == {"doc.txt": b.cid(b"edited")}
        # and the other way round: the delete lands first, the edit is re-created
        b.unlink("doc.txt")
        await b.sync()
        a.update(nid, b"edited twice")
        await a.sync()
        await b.sync()
        for d in (a, b):
            assert d.tree() == {"doc.txt": d.cid(b"edited twice")}
    finally:
        await a.close()
        await b.close()


@pytest.mark.anyio
async def test_rename_pushed_after_a_skipped_pull_takes_the_other_edit(
    drive_server: DriveServer, tmp_path: Path
) -> None:
    a, b = await pair(drive_server, tmp_path)
    try:
        nid = a.create("doc.txt", b"base")
        await a.sync()
        await b.sync()
        b.rename("doc.txt", "renamed.txt")
        a.update(nid, b"edited on A")
        await a.sync()
        await b.agent.puller.pull_once()  # B's rename is queued: A's edit is skipped here
        assert b.tree() == {"renamed.txt": b.cid(b"base")}
        await b.agent.pusher.push_once()  # the rename applies; B takes the server's node
        assert b.tree() == {"renamed.txt": b.cid(b"edited on A")}
        await a.sync()
        assert a.tree() == {"renamed.txt": a.cid(b"edited on A")}
    finally:
        await a.close()
        await b.close()


@pytest.mark.anyio
async def test_delete_behind_a_refused_edit_keeps_the_other_version(
    drive_server: DriveServer, tmp_path: Path
) -> None:
    """Issue 5, shrunk from the random test (seed 702987668): B edits then deletes a file
    (both queued, one commit) while A's edit lands first. B's update is refused as stale;
    its unlink must not be chained onto the revision that update would have made — that
    is A's revision, and the delete would remove A's version unseen."""
    a, b = await pair(drive_server, tmp_path)
    try:
        nid = a.create("doc.txt", b"base")
        await a.sync()
        await b.sync()
        b.update(nid, b"from B")
        b.unlink("doc.txt")
        a.update(nid, b"from A")
        await a.sync()
        await b.sync()  # update stale -> copy; the delete is stale too -> A's file comes back
        await a.sync()
        for d in (a, b):
            tree = d.tree()
            assert tree.get("doc.txt") == d.cid(b"from A"), tree
        assert a.tree() == b.tree() and not b.parked.exists()
        assert b.store.outbox_len() == 0
    finally:
        await a.close()
        await b.close()


@pytest.mark.anyio
async def test_edit_after_an_unanswered_commit_is_not_folded_away(
    drive_server: DriveServer, tmp_path: Path
) -> None:
    """The server applies B's update but the answer is lost (connection cut); B edits
    again. The new content must not be folded into the sent op: the server answers that
    op id with its stored result and the newer content would be dropped."""
    a, b = await pair(drive_server, tmp_path)
    try:
        nid = a.create("doc.txt", b"base")
        await a.sync()
        await b.sync()
        real_commit = b.client.commit
        lose = [True]

        async def commit_losing_one_answer(*args, **kwargs):  # type: ignore[no-untyped-def]
            results = await real_commit(*args, **kwargs)
            if lose:
                lose.clear()
                raise Unavailable("answer lost on the way back")
            return results

        b.client.commit = commit_losing_one_answer  # type: ignore[method-assign]
        b.update(nid, b"B one")
        with pytest.raises(Unavailable):
            await b.agent.pusher.push_once()
        b.update(nid, b"B two")
        await b.sync()
        await a.sync()
        for d in (a, b):
            assert d.tree() == {"doc.txt": d.cid(b"B two")}
        assert b.store.outbox_len() == 0
    finally:
        await a.close()
        await b.close()


@pytest.mark.anyio
@pytest.mark.expect_warnings
async def test_mass_delete_held_then_confirmed(drive_server: DriveServer, tmp_path: Path) -> None:
    a, b = await pair(drive_server, tmp_path)
    try:
        for i in range(10):
            a.create(f"f{i}", b"%d" % i)
        await a.sync()
        await b.sync()
        for i in range(6):
            a.unlink(f"f{i}")
        await a.sync()
        await b.agent.puller.pull_once()
        assert len(b.tree()) == 10 and b.agent.puller.held is not None
        assert b.agent.puller.held["deletes"] == 6
        assert (await b.agent.status())["held_deletes"]["files"] == 10
        assert b.agent.confirm_deletes()
        await b.agent.puller.pull_once()
        assert sorted(b.tree()) == [f"f{i}" for i in range(6, 10)]
        assert b.agent.puller.held is None
        # fewer than MIN_HALF deletions of a small tree go through at once
        a.unlink("f6")
        await a.sync()
        await b.agent.puller.pull_once()
        assert sorted(b.tree()) == ["f7", "f8", "f9"] and b.agent.puller.held is None
    finally:
        await a.close()
        await b.close()


@pytest.mark.anyio
async def test_hints_wake_the_puller(drive_server: DriveServer, tmp_path: Path) -> None:
    a, b = await pair(drive_server, tmp_path)
    woken: list[float] = []
    event = trio.Event()

    def wake() -> None:
        woken.append(time.monotonic())
        event.set()

    listener = HintListener(b.client, b.store.cursor, wake)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listener.run)
            with trio.fail_after(20):
                await event.wait()  # the first message after connecting always wakes
            assert listener.connected and listener.status()["mode"] == "websocket"
            event = trio.Event()
            a.create("x", b"x")
            await a.sync()
            with trio.fail_after(20):
                await event.wait()  # a's commit moved the feed
            nursery.cancel_scope.cancel()
    finally:
        await a.close()
        await b.close()


@pytest.mark.anyio
async def test_kick_reconnects_hints_at_once_after_a_cut(
    drive_server: DriveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a cut, the listener's backoff would wait (here: 60 s, by patching the bounds)
    before reopening the socket; ``kick()`` — called by the agent when a push or pull
    reaches the server again — reopens it at once, so commits other devices make right
    after the reconnect wake the puller without waiting for the safety pull."""
    monkeypatch.setattr(hints_mod, "BASE", 60.0)
    monkeypatch.setattr(hints_mod, "CAP", 60.0)
    a, b = await pair(drive_server, tmp_path)
    offline, online = trio.Event(), [trio.Event()]
    with NetProxy(("127.0.0.1", drive_server.port)) as proxy:
        client = Client(proxy.url, b.client.token)
        listener = HintListener(
            client, b.store.cursor, lambda: None,
            on_online=lambda: online[-1].set(), on_offline=lambda e: offline.set(),
        )  # fmt: skip
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(listener.run)
                with trio.fail_after(20):
                    await online[-1].wait()
                online.append(trio.Event())
                proxy.cut()
                with trio.fail_after(20):
                    await offline.wait()  # the fallback poll failed: waiting out the backoff
                assert not listener.connected
                proxy.restore()
                listener.kick()
                with trio.fail_after(20):  # without kick(): 60 s
                    await online[-1].wait()
                assert listener.connected
                nursery.cancel_scope.cancel()
        finally:
            await client.aclose()
            await a.close()
            await b.close()


@pytest.mark.anyio
async def test_catch_up_does_not_apply_a_mid_batch_state(
    drive_server: DriveServer, tmp_path: Path
) -> None:
    """A commit result shows a node as its op left it, before later ops of the same batch.
    Batch [update X, rename E over X's name]: applying X's result (alive, at "c") after the
    commit brought the replaced X back and took "c" from E (fsx seed 10). Only a node's
    current state may be applied."""
    a, b = await pair(drive_server, tmp_path)
    try:
        x_id = a.create("c", b"x v1")
        a.create("e", b"e v1")
        await a.sync()
        a.update(x_id, b"x v2")
        a.agent.puller.skipped.add(x_id)  # a pull saw X while the update was queued
        txn = a.store.txn()
        x = txn.node(txn.lookup(1, "c"))
        e = txn.node(txn.lookup(1, "e"))
        txn.remove_name(x, 1, "c")
        txn.drop_node(x)
        txn.remove_name(e, 1, "e")
        txn.add_name(e, 1, "c")
        txn.put_node(e)
        r = a.root_id
        txn.outbox_append(
            wire.Rename(new_op_id(), e.id, r, "e", r, "c", replace=True), held=(x_id,)
        )
        txn.commit(sync=True)
        await a.agent.pusher.push_once()  # one batch: [update X, rename E over "c"]
        assert a.tree() == {"c": a.cid(b"e v1")}
        await a.agent.puller.pull_once()
        assert a.tree() == {"c": a.cid(b"e v1")}
    finally:
        await a.close()
        await b.close()


@pytest.mark.anyio
async def test_edit_then_delete_here_while_deleted_elsewhere_stays_deleted(
    drive_server: DriveServer, tmp_path: Path
) -> None:
    """A edits a file and then deletes it (both queued); B deletes it meanwhile. A's edit
    is refused (``deleted``) but A deleted it itself afterwards: nothing comes back (it
    used to be re-created in the root under its node id)."""
    a, b = await pair(drive_server, tmp_path)
    try:
        x_id = a.create("doc", b"v1")
        await a.sync()
        await b.sync()
        b.unlink("doc")
        await b.sync()
        a.update(x_id, b"v2 on A")
        a.unlink("doc")
        for _ in range(3):
            await a.sync()
        assert a.tree() == {} and not a.parked.exists()
        await b.sync()
        assert b.tree() == {}
    finally:
        await a.close()
        await b.close()


@pytest.mark.anyio
@pytest.mark.expect_warnings
async def test_files_replaced_by_new_ones_are_not_a_mass_delete(
    drive_server: DriveServer, tmp_path: Path
) -> None:
    """Most files of a tree deleted and re-created (new nodes, same names) in one push
    round is editing, not a mass deletion: the tree does not shrink (fsx seed 2, five of
    five files, was held)."""
    a, b = await pair(drive_server, tmp_path)
    try:
        for i in range(10):
            a.create(f"f{i}", b"old %d" % i)
        await a.sync()
        await b.agent.puller.pull_once()
        for i in range(8):
            a.unlink(f"f{i}")
            a.create(f"f{i}", b"new %d" % i)
        await a.sync()
        await b.agent.puller.pull_once()
        assert b.agent.puller.held is None
        assert b.tree() == {f"f{i}": b.cid(b"%s %d" % (b"new" if i < 8 else b"old", i))
                            for i in range(10)}  # fmt: skip
        for i in range(7):  # a real deletion of most of the tree is still held
            a.unlink(f"f{i}")
        a.create("g", b"one new file")
        await a.sync()
        await b.agent.puller.pull_once()
        assert b.agent.puller.held is not None and b.agent.puller.held["deletes"] == 6
    finally:
        await a.close()
        await b.close()
