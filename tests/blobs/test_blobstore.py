"""The shared BlobStore suite: every test runs against the local directory store and the S3
store (moto server mode on 127.0.0.1), both built by ``open_blobstore`` exactly as the server
builds them (retry and metrics wrappers included)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from cairn.core.errors import InvalidArgument, NotFound, Unavailable
from cairn.server.blobs import BlobNotFound, BlobStore, BlobStoreError, open_blobstore

pytestmark = pytest.mark.anyio

MiB = 1 << 20


def new_id() -> bytes:
    return os.urandom(32)


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[BlobStore]:
    if request.param == "local":
        cfg = {"kind": "local", "path": str(tmp_path / "blobs")}
    else:
        moto = request.getfixturevalue("moto_s3")
        cfg = moto.blob_config(request.getfixturevalue("s3_bucket"), prefix="chunks/")
    s = open_blobstore(cfg)
    try:
        yield s
    finally:
        await s.close()


async def all_ids(store: BlobStore) -> list[bytes]:
    return [cid async for cid in store.iter_ids()]


async def test_round_trip(store: BlobStore) -> None:
    cid, data = new_id(), os.urandom(1000)
    assert not await store.has(cid)
    await store.put(cid, data)
    assert await store.has(cid)
    assert await store.get(cid) == data


async def test_empty_blob(store: BlobStore) -> None:
    cid = new_id()
    await store.put(cid, b"")
    assert await store.has(cid)
    assert await store.get(cid) == b""


async def test_missing_blob_is_blob_not_found(store: BlobStore) -> None:
    with pytest.raises(BlobNotFound) as info:
        await store.get(new_id())
    assert isinstance(info.value, NotFound)
    assert not await store.has(new_id())


async def test_put_is_idempotent(store: BlobStore) -> None:
    cid, data = new_id(), os.urandom(300)
    await store.put(cid, data)
    await store.put(cid, data)
    assert await store.get(cid) == data
    assert await all_ids(store) == [cid]


async def test_delete_is_idempotent(store: BlobStore) -> None:
    keep, gone = new_id(), new_id()
    await store.put(keep, b"keep")
    await store.put(gone, b"gone")
    await store.delete(gone)
    await store.delete(gone)
    await store.delete(new_id())  # never stored
    assert not await store.has(gone)
    with pytest.raises(BlobNotFound):
        await store.get(gone)
    assert await store.get(keep) == b"keep"
    assert await all_ids(store) == [keep]


async def test_iter_ids_lists_each_blob_once(store: BlobStore) -> None:
    assert await all_ids(store) == []
    ids = {new_id() for _ in range(40)}
    await asyncio.gather(*(store.put(cid, cid * 3) for cid in ids))
    listed = await all_ids(store)
    assert len(listed) == len(ids)
    assert set(listed) == ids


async def test_concurrent_puts_of_one_id(store: BlobStore) -> None:
    cid, data = new_id(), os.urandom(256 * 1024)
    await asyncio.gather(*(store.put(cid, data) for _ in range(12)))
    assert await store.get(cid) == data
    assert await all_ids(store) == [cid]


async def test_large_blob(store: BlobStore) -> None:
    cid, data = new_id(), os.urandom(16 * MiB)
    await store.put(cid, data)
    got = await store.get(cid)
    assert len(got) == len(data) and got == data


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33, "ab" * 32])
async def test_bad_id_is_invalid_argument(store: BlobStore, bad) -> None:
    for call in (store.get(bad), store.has(bad), store.delete(bad), store.put(bad, b"x")):
        with pytest.raises(InvalidArgument):
            await call


async def test_errors_are_typed(store: BlobStore) -> None:
    # BlobStoreError is the retryable kind; BlobNotFound is an answer, not a failure.
    assert issubclass(BlobStoreError, Unavailable)
    assert not issubclass(BlobNotFound, Unavailable)
