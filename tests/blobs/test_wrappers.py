"""Retry and metrics wrappers against real failures of real stores.

Failures are produced in the medium, never by a fake store: a regular file where the local
store needs a fan-out directory (ENOTDIR), and a stopped moto server (connection refused).
"""

from __future__ import annotations

import os

import pytest
from prometheus_client import REGISTRY

from cairn.core.errors import Unavailable
from cairn.server.blobs import (
    BlobNotFound,
    BlobStoreError,
    LocalBlobStore,
    MeteredBlobStore,
    RetryingBlobStore,
    open_blobstore,
)

pytestmark = pytest.mark.anyio


def ops(store: str, op: str, result: str) -> float:
    labels = {"store": store, "op": op, "result": result}
    return REGISTRY.get_sample_value("cairn_blobstore_operations_total", labels) or 0.0


def nbytes(store: str, direction: str) -> float:
    labels = {"store": store, "direction": direction}
    return REGISTRY.get_sample_value("cairn_blobstore_bytes_total", labels) or 0.0


def latency_count(store: str, op: str) -> float:
    labels = {"store": store, "op": op}
    return REGISTRY.get_sample_value("cairn_blobstore_operation_seconds_count", labels) or 0.0


class Retries:
    """An ``on_retry`` hook that records calls and can repair the medium on the first."""

    def __init__(self, repair=None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.repair = repair

    def __call__(self, op: str, attempt: int, err: BlobStoreError) -> None:
        assert isinstance(err, BlobStoreError)
        self.calls.append((op, attempt))
        if self.repair is not None and attempt == 1:
            self.repair()


def blocked_id(root) -> bytes:
    """An id whose fan-out directory has been replaced by a regular file (real ENOTDIR)."""
    cid = b"\xab" + os.urandom(31)
    (root / "ab").rmdir()
    (root / "ab").write_bytes(b"in the way")
    return cid


def unblock(root) -> None:
    (root / "ab").unlink()
    (root / "ab").mkdir()


def local_stack(root, hook: Retries, attempts: int = 3) -> RetryingBlobStore:
    return RetryingBlobStore(
        MeteredBlobStore(LocalBlobStore(root), "local"),
        attempts=attempts,
        base_delay=0.001,
        on_retry=hook,
    )


@pytest.mark.expect_warnings
async def test_retry_gives_up_after_bounded_attempts(tmp_path) -> None:
    hook = Retries()
    store = local_stack(tmp_path, hook, attempts=3)
    try:
        cid = blocked_id(tmp_path)
        before = ops("local", "put", "error")
        with pytest.raises(BlobStoreError) as info:
            await store.put(cid, b"data")
        assert isinstance(info.value, Unavailable)
        assert isinstance(info.value.__cause__, OSError)  # the real cause is kept
        assert hook.calls == [("put", 1), ("put", 2)]
        assert ops("local", "put", "error") - before == 3  # every attempt is metered
    finally:
        await store.close()


@pytest.mark.expect_warnings
async def test_retry_recovers_when_the_medium_recovers(tmp_path) -> None:
    hook = Retries(repair=lambda: unblock(tmp_path))
    store = local_stack(tmp_path, hook)
    try:
        cid = blocked_id(tmp_path)
        err0, ok0 = ops("local", "put", "error"), ops("local", "put", "ok")
        await store.put(cid, b"data")
        assert hook.calls == [("put", 1)]
        assert ops("local", "put", "error") - err0 == 1
        assert ops("local", "put", "ok") - ok0 == 1
        assert await store.get(cid) == b"data"
    finally:
        await store.close()


async def test_not_found_is_not_retried(tmp_path) -> None:
    hook = Retries()
    store = local_stack(tmp_path, hook)
    try:
        before = ops("local", "get", "not_found")
        with pytest.raises(BlobNotFound):
            await store.get(os.urandom(32))
        assert hook.calls == []
        assert ops("local", "get", "not_found") - before == 1
    finally:
        await store.close()


async def test_metrics_count_operations_bytes_and_latency(tmp_path) -> None:
    store = open_blobstore({"kind": "local", "path": str(tmp_path)})
    try:
        put0, get0, has0 = (
            ops("local", "put", "ok"),
            ops("local", "get", "ok"),
            ops("local", "has", "ok"),
        )
        in0, out0, lat0 = (
            nbytes("local", "in"),
            nbytes("local", "out"),
            latency_count("local", "get"),
        )
        cid = os.urandom(32)
        await store.put(cid, b"x" * 1000)
        await store.get(cid)
        await store.get(cid)
        assert await store.has(cid) and not await store.has(os.urandom(32))
        assert ops("local", "put", "ok") - put0 == 1
        assert ops("local", "get", "ok") - get0 == 2
        assert ops("local", "has", "ok") - has0 == 2
        assert nbytes("local", "in") - in0 == 1000
        assert nbytes("local", "out") - out0 == 2000
        assert latency_count("local", "get") - lat0 == 2
    finally:
        await store.close()


@pytest.mark.expect_warnings
async def test_s3_server_down_is_blob_store_error(moto_s3, s3_bucket) -> None:
    store = open_blobstore({**moto_s3.blob_config(s3_bucket), "retries": 2})
    try:
        cid = os.urandom(32)
        await store.put(cid, b"stored before the outage")
        err0 = ops("s3", "get", "error")
        moto_s3.stop()
        for call in (store.get(cid), store.put(os.urandom(32), b"x"), store.has(cid)):
            with pytest.raises(BlobStoreError):
                await call
        with pytest.raises(BlobStoreError):
            [c async for c in store.iter_ids()]
        assert ops("s3", "get", "error") - err0 == 2
    finally:
        moto_s3.start()
        await store.close()


@pytest.mark.expect_warnings
async def test_s3_retry_rides_out_a_server_restart(moto_s3, s3_bucket) -> None:
    hook = Retries(repair=moto_s3.start)
    cfg = moto_s3.blob_config(s3_bucket, prefix="p/")
    base = open_blobstore(cfg)
    store = RetryingBlobStore(base, attempts=3, base_delay=0.001, on_retry=hook)
    try:
        cid = os.urandom(32)
        moto_s3.stop()
        await store.put(cid, b"after restart")
        assert hook.calls[0] == ("put", 1)
        moto_s3.stop()
        assert [c async for c in store.iter_ids()] == [cid]
        assert hook.calls[-1] == ("iter_ids", 1)
        assert await store.get(cid) == b"after restart"
    finally:
        moto_s3.start()
        await store.close()
