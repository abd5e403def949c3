"""S3 behaviour beyond the shared suite: key prefixes, foreign objects, listing pages."""

from __future__ import annotations

import os

import pytest

from cairn.server.blobs import BlobStoreError, S3BlobStore, open_blobstore
from cairn.server.blobs import s3 as s3mod
from tests.support.s3 import MotoS3

pytestmark = pytest.mark.anyio


async def test_prefixes_isolate_stores_in_one_bucket(moto_s3, s3_bucket) -> None:
    a = open_blobstore(moto_s3.blob_config(s3_bucket, prefix="a/"))
    b = open_blobstore(moto_s3.blob_config(s3_bucket, prefix="b/"))
    try:
        cid = os.urandom(32)
        await a.put(cid, b"only in a")
        assert await a.has(cid) and not await b.has(cid)
        assert [c async for c in b.iter_ids()] == []
        key = f"a/{cid.hex()}"
        assert moto_s3.client().get_object(Bucket=s3_bucket, Key=key)["Body"].read() == b"only in a"
    finally:
        await a.close()
        await b.close()


async def test_foreign_objects_are_not_listed(moto_s3, s3_bucket) -> None:
    store = open_blobstore(moto_s3.blob_config(s3_bucket, prefix="c/"))
    try:
        cid = os.urandom(32)
        await store.put(cid, b"blob")
        client = moto_s3.client()
        client.put_object(Bucket=s3_bucket, Key="c/notes.txt", Body=b"x")
        client.put_object(Bucket=s3_bucket, Key="c/" + "AB" * 32, Body=b"x")  # not lowercase
        assert [c async for c in store.iter_ids()] == [cid]
    finally:
        await store.close()


async def test_listing_follows_continuation_pages(moto_s3, s3_bucket, monkeypatch) -> None:
    monkeypatch.setattr(s3mod, "_LIST_PAGE", 7)  # small pages, so 30 blobs need 5 of them
    store = open_blobstore(moto_s3.blob_config(s3_bucket))
    try:
        ids = {os.urandom(32) for _ in range(30)}
        for cid in ids:
            await store.put(cid, b"")
        listed = [c async for c in store.iter_ids()]
        assert len(listed) == 30 and set(listed) == ids
    finally:
        await store.close()


async def test_missing_bucket_is_blob_store_error(moto_s3) -> None:
    store = S3BlobStore(
        "no-such-bucket-here",
        endpoint_url=moto_s3.url,
        access_key="testing",
        secret_key="testing",
    )
    try:
        with pytest.raises(BlobStoreError, match="no-such-bucket-here"):
            await store.put(os.urandom(32), b"x")
    finally:
        await store.close()


async def test_store_without_conditional_puts_falls_back_to_plain_puts(s3_bucket) -> None:
    plain = MotoS3(conditional_puts=False)  # shares moto's state, so s3_bucket exists here
    plain.start()
    store = open_blobstore(plain.blob_config(s3_bucket))
    try:
        first, second = os.urandom(32), os.urandom(32)
        await store.put(first, b"one")  # refused as conditional, then stored plainly
        await store.put(second, b"two")
        await store.put(first, b"one")  # idempotent without the condition too
        assert await store.get(first) == b"one" and await store.get(second) == b"two"
        assert sorted([c async for c in store.iter_ids()]) == sorted([first, second])
    finally:
        await store.close()
        plain.stop()
