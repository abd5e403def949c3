"""File content through ``Operations``: streaming writes, random writes sealed with the
incremental re-chunker (checked against chunking from scratch), sparse files, fsync
grouping, keep_cache, and the outbox ``update`` a seal queues."""

from __future__ import annotations

import os
import random

import pyfuse3
import pytest
import trio

from cairn.core import wire
from cairn.fs.blocks import ExtentMap
from cairn.fs.seal import from_scratch
from tests.fs.unit.helpers import CTX, DEDUPE, ROOT_INO, SMALL, Fields, create, read_all

pytestmark = pytest.mark.anyio
TIB = 1 << 40


class Reference:
    """What the file must hold: bytes plus which ranges are data (the rest are holes)."""

    def __init__(self, data: bytes = b"") -> None:
        self.buf = bytearray(data)
        self.data = ExtentMap()
        self.data.add(0, len(data))

    def write(self, off: int, chunk: bytes) -> None:
        if off > len(self.buf):
            self.buf += bytes(off - len(self.buf))
        self.buf[off : off + len(chunk)] = chunk
        self.data.add(off, off + len(chunk))

    def truncate(self, size: int) -> None:
        if size < len(self.buf):
            del self.buf[size:]
            self.data.clip(size)
        else:
            self.buf += bytes(size - len(self.buf))

    def layout(self) -> list[tuple[bytes | None, int]]:
        out: list[tuple[bytes | None, int]] = []
        x = 0
        for s, e in self.data:
            if s > x:
                out.append((None, s - x))
            out.append((bytes(self.buf[s:e]), e - s))
            x = e
        if len(self.buf) > x:
            out.append((None, len(self.buf) - x))
        return out


def blocklist(drive, ino: int) -> list[wire.Entry]:  # type: ignore[no-untyped-def]
    return list(drive.store.blocklist(ino).entries)


def text_like(rng: random.Random, n: int) -> bytes:
    words = [rng.randbytes(rng.randint(2, 9)).hex() for _ in range(200)]
    out = " ".join(rng.choice(words) for _ in range(n // 8 + 1)).encode()
    return out[:n]


async def test_sequential_write_streams_and_matches_from_scratch(drive) -> None:
    ops = drive.ops
    rng = random.Random(1)
    data = rng.randbytes(200_000) + text_like(rng, 100_000)
    fi, _ = await ops.create(ROOT_INO, b"seq", 0o644, os.O_WRONLY, CTX)
    content = ops._files[fi.fh]
    peak_tail = 0
    for off in range(0, len(data), 4096):
        await ops.write(fi.fh, off, data[off : off + 4096])
        assert content.stream is not None and not content.extents  # never staged to disk
        peak_tail = max(peak_tail, len(content.tail))
        # chunks become final and go to the cache while the file is still being written
    assert len(content.base.entries) > 10
    assert peak_tail <= 2 * SMALL.max_size + 4096  # bounded memory
    assert await ops.read(fi.fh, 1000, 50) == data[1000:1050]  # reads see unsealed bytes
    await ops.release(fi.fh)
    assert blocklist(drive, fi.fh) == from_scratch([(data, len(data))], DEDUPE, SMALL)
    assert all(drive.cache.is_dirty(cid) for cid, _ in blocklist(drive, fi.fh))
    assert await read_all(drive.ops, fi.fh) == data
    (cr,) = (e.op for e in drive.store.outbox_peek(None))
    assert isinstance(cr, wire.Create) and list(cr.blocklist.entries) == blocklist(drive, fi.fh)


async def test_append_after_reopen_streams_and_realigns(drive) -> None:
    ops = drive.ops
    rng = random.Random(2)
    first, more = rng.randbytes(60_000), rng.randbytes(70_000)
    ino = await create(ops, ROOT_INO, "log", first)
    fi = await ops.open(ino, os.O_WRONLY, CTX)
    for off in range(0, len(more), 8192):
        await ops.write(fi.fh, len(first) + off, more[off : off + 8192])
    assert ops._files[ino].stream is not None
    await ops.fsync(fi.fh, False)
    await ops.release(fi.fh)
    whole = first + more
    assert blocklist(drive, ino) == from_scratch([(whole, len(whole))], DEDUPE, SMALL)
    assert await read_all(ops, ino) == whole


async def random_session(drive, seed: int) -> None:  # type: ignore[no-untyped-def]
    """Seeded random writes, appends, truncates, reads, fsyncs and reopens of one file,
    checked against a reference after every read and seal."""
    ops = drive.ops
    rng = random.Random(seed)
    base = rng.randbytes(120_000)
    ino = await create(ops, ROOT_INO, f"rand{seed}", base)
    ref = Reference(base)
    fi = await ops.open(ino, os.O_RDWR, CTX)
    attr = pyfuse3.EntryAttributes()
    for step in range(80):
        r = rng.random()
        size = len(ref.buf)
        if r < 0.4:
            off = rng.randint(0, size + 20_000)
            n = rng.randint(1, 9000)
            chunk = rng.randbytes(n) if rng.random() < 0.5 else bytes(n)
            await ops.write(fi.fh, off, chunk)
            ref.write(off, chunk)
        elif r < 0.55:  # sequential appends: the streaming path
            for _ in range(rng.randint(1, 12)):
                chunk = rng.randbytes(rng.randint(1, 20_000))
                await ops.write(fi.fh, len(ref.buf), chunk)
                ref.write(len(ref.buf), chunk)
        elif r < 0.67:
            new = rng.randint(0, size + 30_000)
            attr.st_size = new
            await ops.setattr(ino, attr, Fields(size=True), fi.fh, CTX)
            ref.truncate(new)
        elif r < 0.85:
            off = rng.randint(0, max(size, 1))
            got = await ops.read(fi.fh, off, 5000)
            assert got == bytes(ref.buf[off : off + 5000]), f"seed {seed} step {step}"
        elif r < 0.95:
            await ops.fsync(fi.fh, False)
            want = from_scratch(ref.layout(), DEDUPE, SMALL)
            assert blocklist(drive, ino) == want, f"seed {seed} step {step}"
        else:
            await ops.release(fi.fh)
            fi = await ops.open(ino, os.O_RDWR, CTX)
    await ops.release(fi.fh)
    assert blocklist(drive, ino) == from_scratch(ref.layout(), DEDUPE, SMALL), f"seed {seed}"
    assert await read_all(ops, ino) == bytes(ref.buf), f"seed {seed}"


@pytest.mark.parametrize("background", [False, True], ids=["inline", "background"])
@pytest.mark.parametrize("seed", [20260, 7, 99])
async def test_random_writes_seal_equals_chunking_from_scratch(drive, seed, background) -> None:  # type: ignore[no-untyped-def]
    if not background:
        await random_session(drive, seed)
        return
    async with trio.open_nursery() as nursery:
        await nursery.start(drive.ops.run)
        await random_session(drive, seed)
        nursery.cancel_scope.cancel()


async def test_small_edit_rechunks_only_near_it(drive) -> None:
    ops = drive.ops
    data = random.Random(3).randbytes(1_000_000)
    ino = await create(ops, ROOT_INO, "big", data)
    before = blocklist(drive, ino)
    assert len(before) > 100
    fi = await ops.open(ino, os.O_RDWR, CTX)
    await ops.write(fi.fh, 500_000, b"X")
    await ops.release(fi.fh)
    after = blocklist(drive, ino)
    new = [e for e in after if e not in before]
    assert 1 <= len(new) <= 4
    edited = data[:500_000] + b"X" + data[500_001:]
    assert after == from_scratch([(edited, len(edited))], DEDUPE, SMALL)


async def test_sparse_files_cost_nothing_for_holes(drive) -> None:
    ops = drive.ops
    fi, _ = await ops.create(ROOT_INO, b"sparse", 0o644, os.O_RDWR, CTX)
    attr = pyfuse3.EntryAttributes()
    attr.st_size = TIB
    used = drive.cache.used
    await ops.setattr(fi.fh, attr, Fields(size=True), fi.fh, CTX)
    await ops.fsync(fi.fh, False)
    assert blocklist(drive, fi.fh) == [(None, TIB)]
    assert drive.cache.used == used  # no chunk for the hole
    assert await ops.read(fi.fh, TIB // 2, 4096) == bytes(4096)
    await ops.write(fi.fh, TIB, b"tail")
    await ops.release(fi.fh)
    bl = blocklist(drive, fi.fh)
    assert bl[0] == (None, TIB) and len(bl) == 2 and bl[1][1] == 4
    assert (await ops.getattr(fi.fh, CTX)).st_size == TIB + 4
    assert (await ops.getattr(fi.fh, CTX)).st_blocks <= 8
    fi = await ops.open(fi.fh, os.O_RDONLY, CTX)
    assert await ops.read(fi.fh, TIB - 2, 10) == b"\0\0tail"

    # a write far out in a fresh file: hole first, no chunk for it either
    fi2, _ = await ops.create(ROOT_INO, b"far", 0o644, os.O_RDWR, CTX)
    await ops.write(fi2.fh, TIB, b"x" * 100)
    await ops.release(fi2.fh)
    bl2 = blocklist(drive, fi2.fh)
    assert bl2[0] == (None, TIB) and sum(n for _, n in bl2) == TIB + 100
    await ops.release(fi.fh)


async def test_concurrent_fsyncs_share_syncs(drive) -> None:
    ops = drive.ops
    fhs = []
    for i in range(30):
        fi, _ = await ops.create(ROOT_INO, f"f{i}".encode(), 0o644, os.O_WRONLY, CTX)
        await ops.write(fi.fh, 0, f"content {i}".encode())
        fhs.append(fi.fh)
    async with trio.open_nursery() as n:
        for fh in fhs:
            n.start_soon(ops.fsync, fh, False)
    assert 1 <= ops._wal_sync.calls < 30
    assert 1 <= ops._chunk_sync.calls < 30
    for fh in fhs:
        await ops.release(fh)
        assert await read_all(ops, fh) == f"content {fhs.index(fh)}".encode()


async def test_keep_cache_only_when_unchanged(drive) -> None:
    ops = drive.ops
    ino = await create(ops, ROOT_INO, "k", b"v1")
    fi = await ops.open(ino, os.O_RDONLY, CTX)
    await ops.release(fi.fh)
    fi = await ops.open(ino, os.O_RDONLY, CTX)
    assert fi.keep_cache
    await ops.release(fi.fh)
    fi = await ops.open(ino, os.O_WRONLY, CTX)
    await ops.write(fi.fh, 0, b"v2")
    await ops.release(fi.fh)
    fi = await ops.open(ino, os.O_RDONLY, CTX)
    assert not fi.keep_cache
    await ops.release(fi.fh)


async def test_reads_decode_each_chunk_once(drive) -> None:
    ops = drive.ops
    data = random.Random(5).randbytes(SMALL.max_size * 3)
    ino = await create(ops, ROOT_INO, "r", data)
    ops.mem = type(ops.mem)()  # start cold
    decoded: list[bytes] = []
    real_get = drive.cache.get

    def counting_get(cid: bytes) -> bytes | None:
        decoded.append(cid)
        return real_get(cid)

    drive.cache.get = counting_get  # type: ignore[method-assign]
    assert await read_all(ops, ino, bs=512) == data
    assert len(decoded) == len(set(decoded)) == len(blocklist(drive, ino))


async def test_streaming_with_background_batches(drive) -> None:
    ops = drive.ops
    data = random.Random(8).randbytes(400_000)
    async with trio.open_nursery() as nursery:
        await nursery.start(ops.run)
        fi, _ = await ops.create(ROOT_INO, b"bg", 0o644, os.O_WRONLY, CTX)
        content = ops._files[fi.fh]
        in_flight = 0
        for off in range(0, len(data), 4096):
            await ops.write(fi.fh, off, data[off : off + 4096])
            in_flight = max(in_flight, len(content.batches))
            assert len(content.batches) <= 2
            if off % (64 * 4096) == 0:  # reads while batches are in flight see every byte
                assert (
                    await ops.read(fi.fh, max(off - 30_000, 0), 40_000)
                    == data[max(off - 30_000, 0) : off + 4096][:40_000]
                )
        assert in_flight >= 1  # the batches really ran in the background
        await ops.fsync(fi.fh, False)
        assert not content.batches and content.stream is None
        await ops.release(fi.fh)
        assert blocklist(drive, fi.fh) == from_scratch([(data, len(data))], DEDUPE, SMALL)
        assert await read_all(ops, fi.fh) == data
        nursery.cancel_scope.cancel()


async def test_open_with_o_trunc_truncates_and_streams_again(drive) -> None:
    ops = drive.ops
    ino = await create(ops, ROOT_INO, "t", random.Random(9).randbytes(50_000))
    fi = await ops.open(ino, os.O_WRONLY | os.O_TRUNC, CTX)  # atomic O_TRUNC: no setattr
    assert (await ops.getattr(ino, CTX)).st_size == 0
    assert not fi.keep_cache
    new = random.Random(10).randbytes(30_000)
    for off in range(0, len(new), 4096):
        await ops.write(fi.fh, off, new[off : off + 4096])
    assert ops._files[ino].stream is not None and not ops._files[ino].extents
    await ops.release(fi.fh)
    assert await read_all(ops, ino) == new
    assert blocklist(drive, ino) == from_scratch([(new, len(new))], DEDUPE, SMALL)
