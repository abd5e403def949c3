"""The sync agent against a real server process, without the kernel: ops queued in one
store's outbox reach a second store through push + pull, chunks included; parked ops keep
their data or become conflicted copies; the client maps failures to typed errors."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import trio

from cairn.core import frame, ids, wire
from cairn.core.errors import Unauthenticated, Unavailable
from cairn.core.keys import DataKey
from cairn.fs.cache import ChunkCache
from cairn.fs.client import Client
from cairn.fs.store import Node, Store, new_node_id, new_op_id
from cairn.fs.sync.agent import RemoteSource, SyncAgent
from tests.support.drive import PASSWORD, DriveServer, free_port_url


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


class Side:
    """One device's store, cache, client and agent, opened in-process."""

    def __init__(self, root: Path, session: dict, url: str) -> None:
        self.session = session
        self.dedupe = bytes.fromhex(session["dedupe_key"])
        self.store = Store.open(root / "db", session["home"]["root"])
        self.cache = ChunkCache(root / "cache", DataKey.generate(), 1 << 30)
        self.client = Client(url, session["token"])
        self.agent = SyncAgent(
            self.store, self.cache, self.client, ns=session["home"]["ns"],
            parked_file=root / "parked.jsonl",
        )  # fmt: skip

    def create_file(self, name: str, data: bytes) -> str:
        cid = ids.chunk_id(self.dedupe, data)
        self.cache.put(cid, data)
        bl = wire.Blocklist(((cid, len(data)),))
        txn = self.store.txn()
        nid = new_node_id()
        node = Node(
            txn.alloc_ino(), nid, "file", 0o644, 0, 0, time.time_ns(), time.time_ns(), len(data)
        )
        txn.add_name(node, 1, name)
        txn.put_node(node)
        txn.put_blocklist(node.ino, bl)
        root = self.session["home"]["root"]
        txn.outbox_append(wire.Create(new_op_id(), nid, root, name, 0o644, node.mtime_ns, bl))
        txn.commit(sync=True)
        return nid

    def update_file(self, nid: str, data: bytes) -> None:
        cid = ids.chunk_id(self.dedupe, data)
        self.cache.put(cid, data)
        bl = wire.Blocklist(((cid, len(data)),))
        txn = self.store.txn()
        node = txn.node(txn.ino_of(nid))
        txn.put_blocklist(node.ino, bl)
        txn.outbox_append(wire.Update(new_op_id(), nid, node.base_rev, bl, time.time_ns()))
        txn.commit(sync=True)

    async def close(self) -> None:
        await self.client.aclose()
        self.store.close()


async def login(url: str, device: str) -> dict:
    async with Client(url) as c:
        return await c.login("alice", PASSWORD, device)


@pytest.mark.anyio
async def test_push_then_pull(drive_server: DriveServer, tmp_path: Path) -> None:
    a = Side(tmp_path / "a", await login(drive_server.url, "A"), drive_server.url)
    b = Side(tmp_path / "b", await login(drive_server.url, "B"), drive_server.url)
    try:
        data = os.urandom(300_000)
        nid = a.create_file("one.bin", data)
        a.update_file(nid, data + b"more")  # queued behind its create: base_rev chained
        other = a.create_file("two.txt", b"two")
        await a.agent.pusher.push_once()
        assert a.store.outbox_len() == 0
        assert a.store.node(a.store.ino_of(nid)).base_rev == 2
        assert not a.cache.dirty_ids()  # committed chunks became clean

        await b.agent.puller.pull_once()
        ino = b.store.lookup(1, "one.bin")
        assert ino is not None and b.store.lookup(1, "two.txt") == b.store.ino_of(other)
        node = b.store.node(ino)
        assert node.size == len(data) + 4 and node.base_rev == 2
        ((cid, _),) = b.store.blocklist(ino)
        plain = await RemoteSource(b.client, b.agent).fetch(cid)
        assert frame.decode(plain, cid, dedupe_key=b.dedupe) == data + b"more"
        # A pull with nothing new applies nothing and keeps the cursor.
        cursor = b.store.cursor()
        assert await b.agent.puller.pull_once() == 0
        assert b.store.cursor() == cursor
    finally:
        await a.close()
        await b.close()


@pytest.mark.anyio
async def test_refused_create_is_kept_as_a_conflicted_copy(
    drive_server: DriveServer, tmp_path: Path
) -> None:
    a = Side(tmp_path / "a", await login(drive_server.url, "A"), drive_server.url)
    b = Side(tmp_path / "b", await login(drive_server.url, "B"), drive_server.url)
    try:
        a.create_file("same.txt", b"from A")
        b.create_file("same.txt", b"from B")
        await a.agent.pusher.push_once()
        await b.agent.pusher.push_once()  # name taken: B's file must survive under a copy name
        assert b.store.outbox_len() == 0 and not (tmp_path / "b" / "parked.jsonl").exists()
        entries = (await b.client.changes(None, limit=1000))["entries"]
        live = {
            n["names"][0][1]: n["blocklist"][0][0]
            for n in (e["node"] for e in entries)
            if not n["deleted"] and n["type"] == "file"
        }
        assert live["same.txt"] == ids.chunk_id(a.dedupe, b"from A").hex()
        copies = [name for name in live if name.startswith("same (conflicted copy ")]
        assert len(copies) == 1 and copies[0].endswith(").txt")
        assert live[copies[0]] == ids.chunk_id(b.dedupe, b"from B").hex()
    finally:
        await a.close()
        await b.close()


@pytest.mark.anyio
async def test_client_errors_are_typed(drive_server: DriveServer) -> None:
    async with Client(free_port_url()) as c:
        with pytest.raises(Unavailable):
            await c.changes(None)
        assert not await c.healthz()
    async with Client(drive_server.url, "not-a-token") as c:
        with pytest.raises(Unauthenticated):
            await c.changes(None)
    async with Client(drive_server.url) as c:
        with pytest.raises(Unauthenticated):
            await c.login("alice", "wrong password", "X")


@pytest.mark.anyio
async def test_agent_drains_and_reports(drive_server: DriveServer, tmp_path: Path) -> None:
    a = Side(tmp_path / "a", await login(drive_server.url, "A"), drive_server.url)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(a.agent.run)
            a.create_file("x.bin", os.urandom(50_000))
            assert (await a.agent.status())["pending"]["files"] == 1
            a.agent.wake()
            result = await a.agent.drain(30)
            assert result == {"drained": True, "pending": 0, "reason": ""}
            st = await a.agent.status()
            assert st["online"] is True and st["pending"]["ops"] == 0 and st["last_sync"]
            nursery.cancel_scope.cancel()
    finally:
        await a.close()
