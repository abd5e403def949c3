"""Concurrent commits through separate engines (separate connection pools, as two server
processes would have) on the same database: real concurrent transactions."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from cairn.core.wire import parse_ops
from cairn.server.meta import MetaStore
from cairn.server.meta.schema import journal, namespaces
from cairn.server.meta.store import TOKEN_CACHE_TTL

from .helpers import World, create, mkdir, nid, update

pytestmark = pytest.mark.anyio


@pytest.fixture
async def second_store(db_url: str, store: MetaStore) -> AsyncIterator[MetaStore]:
    other = await MetaStore.open(db_url)
    try:
        yield other
    finally:
        await other.close()


async def test_two_devices_same_base_exactly_one_wins(
    world: World, second_store: MetaStore
) -> None:
    phone = await world.store.add_device(world.user.id, "phone", os.urandom(32))
    c1, c2 = await world.upload(), await world.upload()
    for round_ in range(15):
        f = await world.mkfile(name=f"f{round_}")
        a = parse_ops({"ops": [update(f["id"], 1, [(c1, 100)]) | {"op_id": f"a{round_}"}]})
        b = parse_ops({"ops": [update(f["id"], 1, [(c2, 100)]) | {"op_id": f"b{round_}"}]})
        (ra,), (rb,) = await asyncio.gather(
            world.store.commit(world.user.id, world.device.id, world.ns, a),
            second_store.commit(world.user.id, phone.id, world.ns, b),
        )
        statuses = sorted([ra["status"], rb["status"]])
        assert statuses == ["applied", "conflict"], (ra, rb)
        loser = ra if ra["status"] == "conflict" else rb
        winner = rb if loser is ra else ra
        assert loser["reason"] == "stale_base"
        assert loser["current"]["rev"] == 2
        assert loser["current"]["blocklist"] == winner["node"]["blocklist"]
        node = await world.node(f["id"])
        assert node["rev"] == 2 and node["blocklist"] == winner["node"]["blocklist"]


async def test_concurrent_batches_get_distinct_contiguous_seqs(
    world: World, second_store: MetaStore
) -> None:
    stores = [world.store, second_store]
    c = await world.upload()

    async def writer(i: int) -> list[int]:
        ops = [mkdir(world.root, f"w{i}-d{k}") if k % 2 else create(world.root, f"w{i}-f{k}", [(c, 100)])
               for k in range(5)]  # fmt: skip
        for k, op in enumerate(ops):
            op["op_id"] = f"w{i}-{k}"
        results = await stores[i % 2].commit(
            world.user.id, world.device.id, world.ns, parse_ops({"ops": ops})
        )
        assert all(r["status"] == "applied" for r in results), results
        return [r["seq"] for r in results]

    batches = await asyncio.gather(*[writer(i) for i in range(8)])
    seqs = [s for batch in batches for s in batch]
    assert sorted(seqs) == list(range(2, 42))  # seq 1 is the root's creation
    head = await world.store.seqs(world.user.id)
    assert head == {world.ns: 41}
    logged = await world.store.db.read(
        lambda conn: [r[0] for r in conn.execute(select(journal.c.seq).order_by(journal.c.seq))]
    )
    assert logged == list(range(1, 42))
    assert (await world.store.chunk_refcounts([c]))[c] == 8 * 3  # three creates per batch
    # Each batch's seqs are contiguous: a batch holds the namespace for its whole transaction.
    for batch in batches:
        assert batch == list(range(batch[0], batch[0] + 5))


async def test_same_name_created_concurrently_one_wins(
    world: World, second_store: MetaStore
) -> None:
    for round_ in range(10):
        ops = [parse_ops({"ops": [mkdir(world.root, f"same{round_}", node=nid()) | {"op_id": f"s{round_}-{i}"}]})
               for i in range(2)]  # fmt: skip
        (r1,), (r2,) = await asyncio.gather(
            world.store.commit(world.user.id, world.device.id, world.ns, ops[0]),
            second_store.commit(world.user.id, world.device.id, world.ns, ops[1]),
        )
        assert sorted([r1["status"], r2["status"]]) == ["applied", "conflict"]
        assert {r1.get("reason"), r2.get("reason")} == {None, "name_taken"}


async def test_reads_do_not_wait_for_an_open_write_transaction(
    world: World, second_store: MetaStore
) -> None:
    """A write transaction that is still open (holding SQLite's write lock, or the
    PostgreSQL namespace row lock a commit takes) does not block readers."""

    async def reads() -> None:
        assert (await world.node(world.root))["id"] == world.root
        page = await world.store.changes(world.user.id, None, 10)
        assert page["entries"][0]["node"]["id"] == world.root

    lock = namespaces.update().where(namespaces.c.id == world.ns).values(seq=namespaces.c.seq)
    if not world.store.db.is_sqlite:
        engine = second_store.db.async_engine
        assert engine is not None
        async with engine.connect() as conn, conn.begin():
            await conn.execute(lock)
            await reads()
        return

    # SQLite: the transaction runs on the writer thread and waits there for the test.
    entered, release = threading.Event(), threading.Event()

    def slow_write(conn):  # type: ignore[no-untyped-def]
        conn.execute(lock)
        entered.set()
        if not release.wait(timeout=30):  # bounded: released right after the reads
            raise AssertionError("writer was never released")

    writer = asyncio.ensure_future(world.store.db.write(slow_write))
    try:
        for _ in range(3000):
            if entered.is_set() or writer.done():
                break
            await asyncio.sleep(0.01)  # polling interval of a bounded wait
        assert entered.is_set(), writer
        await reads()
        assert not writer.done()
    finally:
        release.set()
        await writer


async def test_revocation_by_another_process_is_seen_within_the_cache_ttl(
    world: World, second_store: MetaStore
) -> None:
    token = os.urandom(32)
    device = await world.store.add_device(world.user.id, "tablet", token)
    assert await world.store.device_by_token(token) == device  # now cached
    assert await second_store.revoke_device(world.user.id, "tablet") == 1
    deadline = time.monotonic() + 10 * TOKEN_CACHE_TTL
    while await world.store.device_by_token(token) is not None:
        assert time.monotonic() < deadline, "revocation never became visible"
        await asyncio.sleep(0.05)  # polling interval of a bounded wait


async def test_concurrent_commits_in_two_namespaces_sharing_chunks_count_right(
    store: MetaStore, second_store: MetaStore
) -> None:
    alice = await World.new(store, "alice")
    bob = await World.new(store, "bob")
    x, y = os.urandom(32), os.urandom(32)
    for w in (alice, bob):
        for c in (x, y):
            await store.record_upload(w.user.id, c, 100, 90)
    rounds = 10
    for r in range(rounds):
        # Opposite orders and per-chunk counts (a lock-order inversion if row locks were
        # taken per delta group; commit.py locks chunk rows in id order first).
        a_ops = [create(alice.root, f"a{r}-{i}", [(c, 100)]) | {"op_id": f"a{r}-{i}"}
                 for i, c in enumerate((x, y, y))]  # fmt: skip
        b_ops = [create(bob.root, f"b{r}-{i}", [(c, 100)]) | {"op_id": f"b{r}-{i}"}
                 for i, c in enumerate((y, x, x))]  # fmt: skip
        ra, rb = await asyncio.gather(
            store.commit(alice.user.id, alice.device.id, alice.ns, parse_ops({"ops": a_ops})),
            second_store.commit(bob.user.id, bob.device.id, bob.ns, parse_ops({"ops": b_ops})),
        )
        assert [res["status"] for res in ra + rb] == ["applied"] * 6
    assert await store.chunk_refcounts([x, y]) == {x: 3 * rounds, y: 3 * rounds}
