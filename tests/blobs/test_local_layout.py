"""``LocalBlobStore`` on-disk layout: one level of 256 fan-out directories made at open."""

from __future__ import annotations

import os

import pytest

from cairn.server.blobs import LocalBlobStore

pytestmark = pytest.mark.anyio


async def test_fanout_is_created_at_open_and_reopen_keeps_blobs(tmp_path) -> None:
    root = tmp_path / "blobs"
    store = LocalBlobStore(root)
    cid = bytes.fromhex("7f" + "00" * 31)
    try:
        assert sorted(os.listdir(root)) == [f"{n:02x}" for n in range(256)]
        await store.put(cid, b"seven-f")
        assert (root / "7f" / cid.hex()).read_bytes() == b"seven-f"
    finally:
        await store.close()
    again = LocalBlobStore(root)
    try:
        assert [c async for c in again.iter_ids()] == [cid]
        assert await again.get(cid) == b"seven-f"
    finally:
        await again.close()


async def test_misplaced_and_foreign_entries_are_not_listed(tmp_path) -> None:
    store = LocalBlobStore(tmp_path)
    try:
        good = bytes.fromhex("aa" + "11" * 31)
        await store.put(good, b"ok")
        (tmp_path / "bb" / good.hex()).write_bytes(b"copied into the wrong directory")
        (tmp_path / "lost+found").mkdir()
        (tmp_path / "zz").mkdir()
        (tmp_path / "aa" / ("AA" * 32)).write_bytes(b"upper case is not an id")
        assert [c async for c in store.iter_ids()] == [good]
    finally:
        await store.close()


def test_unusable_root_is_blob_store_error(tmp_path) -> None:
    from cairn.server.blobs import BlobStoreError

    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(BlobStoreError, match="cannot create blob directory"):
        LocalBlobStore(tmp_path / "file" / "blobs")
