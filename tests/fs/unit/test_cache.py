"""The chunk cache: encrypted at rest, uploadable plain frames, LRU eviction that never drops
dirty chunks, state that survives a reopen, corrupt entries dropped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cairn.core import frame, ids
from cairn.core.errors import NotFound
from cairn.core.keys import DataKey
from cairn.fs.cache import ChunkCache
from tests.fs.unit.helpers import DEDUPE


def chunk(i: int, n: int = 4000) -> tuple[bytes, bytes]:
    data = os.urandom(n - 8) + i.to_bytes(8, "big")
    return ids.chunk_id(DEDUPE, data), data


def test_roundtrip_encrypted_at_rest_and_plain_frame(tmp_path: Path) -> None:
    key = DataKey.generate()
    cache = ChunkCache(tmp_path, key, 1 << 20)
    data = b"secret text " * 300
    cid = ids.chunk_id(DEDUPE, data)
    assert cache.put(cid, data) is True
    assert cache.put(cid, data) is False  # idempotent
    assert cache.get(cid) == data
    on_disk = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert b"secret text" not in on_disk and frame.peek(on_disk).encrypted
    plain = cache.plain_frame(cid)
    assert not frame.peek(plain).encrypted
    assert frame.decode(plain, cid, dedupe_key=DEDUPE) == data
    with pytest.raises(NotFound):
        cache.plain_frame(b"\0" * 32)
    assert cache.get(b"\0" * 32) is None


def test_eviction_never_drops_dirty_chunks(tmp_path: Path) -> None:
    cache = ChunkCache(tmp_path, DataKey.generate(), limit=20_000)
    dirty = [chunk(i) for i in range(8)]  # ~32 KB of dirty data: over the limit
    for cid, data in dirty:
        cache.put(cid, data, level=None)
    clean = [chunk(100 + i) for i in range(5)]
    for cid, data in clean:
        cache.put_frame(cid, frame.encode(cid, data, level=None))
    assert all(cache.get(cid) == data for cid, data in dirty)
    assert all(not cache.has(cid) for cid, _ in clean)  # evicted at once: over the limit
    assert set(cache.dirty_ids()) == {cid for cid, _ in dirty}

    # after upload they become evictable, least recently used first
    cache.get(dirty[7][0])
    cache.mark_clean([cid for cid, _ in dirty])
    assert cache.used <= 20_000
    assert cache.has(dirty[7][0]) and not cache.has(dirty[0][0])
    assert cache.dirty_ids() == []


def test_state_survives_reopen(tmp_path: Path) -> None:
    key = DataKey.generate()
    cache = ChunkCache(tmp_path, key, 1 << 20)
    (c1, d1), (c2, d2) = chunk(1), chunk(2)
    cache.put(c1, d1)
    cache.put(c2, d2)
    cache.mark_clean([c2])
    (tmp_path / "tmp" / "half-written").write_bytes(b"junk")
    again = ChunkCache(tmp_path, key, 1 << 20)
    assert again.dirty_ids() == [c1] and again.has(c2)
    assert again.get(c1) == d1 and again.get(c2) == d2
    assert not (tmp_path / "tmp" / "half-written").exists()
    assert again.used == cache.used


@pytest.mark.expect_warnings
def test_corrupt_entry_is_dropped_not_returned(tmp_path: Path) -> None:
    cache = ChunkCache(tmp_path, DataKey.generate(), 1 << 20)
    cid, data = chunk(3)
    cache.put_frame(cid, frame.encode(cid, data))
    path = next(p for p in (tmp_path / "clean").rglob("*") if p.is_file())
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    assert cache.get(cid) is None
    assert not cache.has(cid)
