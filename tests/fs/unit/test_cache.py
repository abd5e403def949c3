"""The chunk cache: encrypted at rest, uploadable plain frames, LRU eviction that never drops
dirty chunks, state that survives a reopen, corrupt entries dropped — each for small frames
(kept in the cache's RocksDB) and large ones (a file each); and the in-memory
``ByteQueue`` (a streaming file's tail) and ``PlainLRU`` (decoded chunks, one load each)."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cairn.core import frame, ids
from cairn.core.errors import NotFound
from cairn.core.keys import DataKey
from cairn.fs import cache as cache_module
from cairn.fs.blocks import ByteQueue, PlainLRU
from cairn.fs.cache import SMALL_FRAME, ChunkCache
from tests.fs.unit.helpers import DEDUPE

SMALL, LARGE = 4000, SMALL_FRAME + 4000  # random data: frames as large as the chunk
SIZES = pytest.mark.parametrize("n", [SMALL, LARGE], ids=["small", "large"])


def chunk(i: int, n: int = SMALL) -> tuple[bytes, bytes]:
    data = os.urandom(n - 8) + i.to_bytes(8, "big")
    return ids.chunk_id(DEDUPE, data), data


def frame_files(root: Path) -> list[Path]:
    return [p for sub in ("dirty", "clean") for p in (root / sub).rglob("*") if p.is_file()]


@SIZES
def test_roundtrip_encrypted_at_rest_and_plain_frame(tmp_path: Path, n: int) -> None:
    key = DataKey.generate()
    cache = ChunkCache(tmp_path, key, 1 << 20)
    data = b"secret text " * 10 + os.urandom(n - 120)  # random: the frame stays this large
    cid = ids.chunk_id(DEDUPE, data)
    assert cache.put(cid, data) is True
    assert cache.put(cid, data) is False  # idempotent
    assert cache.get(cid) == data
    cache.fsync([cid])
    on_disk = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert b"secret text" not in on_disk
    assert len(frame_files(tmp_path)) == (0 if n == SMALL else 1)  # small: in the database
    stored = cache._read(cid)
    assert stored is not None and frame.peek(stored).encrypted
    plain = cache.plain_frame(cid)
    assert not frame.peek(plain).encrypted
    assert frame.decode(plain, cid, dedupe_key=DEDUPE) == data
    with pytest.raises(NotFound):
        cache.plain_frame(b"\0" * 32)
    assert cache.get(b"\0" * 32) is None


@SIZES
def test_eviction_never_drops_dirty_chunks(tmp_path: Path, n: int) -> None:
    limit = 5 * n
    cache = ChunkCache(tmp_path, DataKey.generate(), limit=limit)
    dirty = [chunk(i, n) for i in range(8)]  # 8 chunks of dirty data: over the limit
    for cid, data in dirty:
        cache.put(cid, data, level=None)
    clean = [chunk(100 + i, n) for i in range(5)]
    for cid, data in clean:
        cache.put_frame(cid, frame.encode(cid, data, level=None))
    assert all(cache.get(cid) == data for cid, data in dirty)
    assert all(not cache.has(cid) for cid, _ in clean)  # evicted at once: over the limit
    assert set(cache.dirty_ids()) == {cid for cid, _ in dirty}

    # after upload they become evictable, least recently used first
    cache.get(dirty[7][0])
    cache.mark_clean([cid for cid, _ in dirty])
    assert cache.used <= limit
    assert cache.has(dirty[7][0]) and not cache.has(dirty[0][0])
    assert cache.dirty_ids() == []
    assert cache.get(dirty[7][0]) == dirty[7][1]
    cache.close()
    again = ChunkCache(tmp_path, DataKey.generate(), limit=limit)
    assert again.used == cache.used  # evicted entries are gone from disk too


@SIZES
def test_state_survives_reopen(tmp_path: Path, n: int) -> None:
    key = DataKey.generate()
    cache = ChunkCache(tmp_path, key, 1 << 20)
    (c1, d1), (c2, d2) = chunk(1, n), chunk(2, n)
    cache.put(c1, d1)
    cache.put(c2, d2)
    cache.mark_clean([c2])
    (tmp_path / "tmp" / "half-written").write_bytes(b"junk")
    cache.close()
    again = ChunkCache(tmp_path, key, 1 << 20)
    assert again.dirty_ids() == [c1] and again.has(c2) and not again.is_dirty(c2)
    assert again.get(c1) == d1 and again.get(c2) == d2
    assert not (tmp_path / "tmp" / "half-written").exists()
    assert again.used == cache.used


@SIZES
@pytest.mark.expect_warnings
def test_corrupt_entry_is_dropped_not_returned(tmp_path: Path, n: int) -> None:
    cache = ChunkCache(tmp_path, DataKey.generate(), 1 << 20)
    cid, data = chunk(3, n)
    cache.put_frame(cid, frame.encode(cid, data))
    if n == SMALL:
        cache.flush_small()  # on disk, to corrupt it there
        raw = bytearray(cache._db[b"c" + cid])
        raw[-1] ^= 1
        cache._db[b"c" + cid] = bytes(raw)
    else:
        path = next(iter(frame_files(tmp_path)))
        raw = bytearray(path.read_bytes())
        raw[-1] ^= 1
        path.write_bytes(bytes(raw))
    assert cache.get(cid) is None
    assert not cache.has(cid)
    cache.close()
    assert not ChunkCache(tmp_path, DataKey.generate(), 1 << 20).has(cid)  # gone for good


# --- in-memory structures of the data path -------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 300)), max_size=40))
def test_byte_queue_matches_a_bytearray(steps: list[tuple[bool, int]]) -> None:
    q, model = ByteQueue(), bytearray()
    for is_append, k in steps:
        if is_append:
            data = os.urandom(k)
            q.append(data)
            model += data
        else:
            k = min(k, len(model))
            q.drop(k)
            del model[:k]
        assert len(q) == len(model)
        assert q.slice(0, len(q)) == bytes(model)
        for a, b in ((0, 1), (1, 7), (len(model) // 3, len(model) // 2 + 5), (5, 4)):
            assert q.slice(a, b) == bytes(model[a:b])
    with pytest.raises(ValueError):
        q.drop(len(model) + 1)


def test_plain_lru_loads_a_chunk_once_for_concurrent_readers() -> None:
    lru = PlainLRU()
    calls: list[int] = []
    started, release = threading.Event(), threading.Event()

    def load() -> bytes:
        calls.append(1)
        started.set()
        assert release.wait(10)
        return b"chunk"

    results: list[bytes] = []
    first = threading.Thread(target=lambda: results.append(lru.get_or_load(b"k", load)))
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=lambda: results.append(lru.get_or_load(b"k", load)))
    second.start()
    release.set()
    first.join(10)
    second.join(10)
    assert results == [b"chunk", b"chunk"]
    assert len(calls) == 1


def test_plain_lru_reader_loads_itself_after_a_failed_load() -> None:
    lru = PlainLRU()

    def bad() -> bytes:
        raise OSError("disk gone")

    with pytest.raises(OSError):
        lru.get_or_load(b"k", bad)
    assert lru.get_or_load(b"k", lambda: b"ok") == b"ok"
    assert lru.get(b"k") == b"ok"


def test_small_entry_under_both_prefixes_stays_dirty(tmp_path: Path) -> None:
    """Should a small frame ever be found both dirty and clean, it is dirty: never evicted
    before its upload."""
    key = DataKey.generate()
    cache = ChunkCache(tmp_path, key, 1 << 20)
    cid, data = chunk(5)
    cache.put(cid, data)
    cache.flush_small()
    cache._db[b"c" + cid] = cache._db[b"d" + cid]
    cache.close()
    again = ChunkCache(tmp_path, key, limit=0)  # everything clean would be evicted at once
    again.mark_clean([])
    assert (
        again.is_dirty(cid)
        and again.get(cid) == data
        and again.used == len(again._read(cid) or b"")
    )
    again.close()


_real_fsync = os.fsync


class _Fsyncs:
    """Counts the real ``os.fsync`` calls of the cache module; ``fail`` makes the next one
    raise EIO instead (a write-back error, which the kernel reports to one fsync only)."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    def __call__(self, fd: int) -> None:
        self.calls += 1
        if self.fail:
            self.fail = False
            raise OSError(errno.EIO, "injected write-back error")
        _real_fsync(fd)


def test_fsync_skips_entries_synced_before_until_they_move(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ChunkCache(tmp_path, DataKey.generate(), 1 << 30)
    fsyncs = _Fsyncs()
    monkeypatch.setattr(cache_module.os, "fsync", fsyncs)
    a, b = chunk(1, LARGE), chunk(2, LARGE)
    for cid, data in (a, b):
        cache.put(cid, data, level=None)
    cache.fsync([a[0]])
    first = fsyncs.calls
    assert first >= 2  # the file and its directory (and the top ones the first time)
    cache.fsync([a[0]])
    assert fsyncs.calls == first  # synced and not moved since: nothing to do
    cache.fsync([a[0], b[0]])
    assert fsyncs.calls == first + 2  # b's file and directory only
    cache.mark_clean([a[0]])  # renamed to clean/: that rename is not durable yet
    calls = fsyncs.calls
    cache.fsync([a[0]])
    assert fsyncs.calls > calls
    cache.close()
    again = ChunkCache(tmp_path, cache.key, 1 << 30)  # a reopen remembers nothing synced
    calls = fsyncs.calls
    again.fsync([b[0]])
    assert fsyncs.calls > calls


def test_a_failed_fsync_fails_every_later_fsync_of_that_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ChunkCache(tmp_path, DataKey.generate(), 1 << 30)
    fsyncs = _Fsyncs()
    monkeypatch.setattr(cache_module.os, "fsync", fsyncs)
    a, b = chunk(1, LARGE), chunk(2, LARGE)
    for cid, data in (a, b):
        cache.put(cid, data, level=None)
    fsyncs.fail = True
    with pytest.raises(OSError) as first:
        cache.fsync([a[0]])
    assert first.value.errno == errno.EIO
    with pytest.raises(OSError):  # the kernel would now say "fine": the cache must not
        cache.fsync([b[0], a[0]])
    cache.fsync([b[0]])  # other entries are not affected
    assert cache.get(a[0]) == a[1]  # still readable; only its durability is in doubt


def test_small_changes_are_staged_then_written_as_a_group(tmp_path: Path) -> None:
    """Small-database changes wait in memory, readable at once, and land together: at
    ``flush_small``, at the size threshold, and at close."""
    key = DataKey.generate()
    cache = ChunkCache(tmp_path, key, 1 << 30)
    (a, da), (b, db), (c, dc) = chunk(1), chunk(2), chunk(3)
    cache.put(a, da)
    cache.put(b, db)
    assert cache._db.get(b"d" + a) is None  # staged, not written ...
    assert cache.get(a) == da and cache.is_dirty(a)  # ... but served
    cache.mark_clean([a])  # moves a staged entry
    assert cache.get(a) == da and not cache.is_dirty(a)
    cache.flush_small()
    assert cache._db.get(b"c" + a) is not None and cache._db.get(b"d" + a) is None
    assert cache._db.get(b"d" + b) is not None

    cache.put(c, dc)
    cache.limit = 0  # a is the only clean entry: evicted, its delete staged
    cache.mark_clean([])
    assert not cache.has(a) and cache._db.get(b"c" + a) is not None
    cache.close()  # writes the rest
    again = ChunkCache(tmp_path, key, 1 << 30)
    assert not again.has(a)
    assert again.get(b) == db and again.get(c) == dc and again.is_dirty(c)

    many = [chunk(10 + i) for i in range(cache_module.SMALL_GROUP_BYTES // (SMALL - 8) + 2)]
    for cid, data in many:
        again.put(cid, data)
    assert again._db.get(b"d" + many[0][0]) is not None  # the threshold wrote a group
    again.close()
