"""``MeteredBlobStore``: Prometheus metrics around any BlobStore.

Metrics live in prometheus-client's default registry, defined once at import (a second
registration of one name would fail), and are labelled by ``store`` (the backend kind) so a
process may meter several stores:

- ``cairn_blobstore_operations_total{store, op, result}``: result is ``ok``, ``not_found``
  or ``error`` (``has`` answering False is ``ok``).
- ``cairn_blobstore_bytes_total{store, direction}``: ``in`` = bytes put, ``out`` = bytes got.
- ``cairn_blobstore_operation_seconds{store, op}``: latency histogram.

``open_blobstore`` places this wrapper inside the retry wrapper, so every real attempt (and
every failed one) is counted.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable
from typing import TypeVar

from prometheus_client import Counter, Histogram

from cairn.core.errors import NotFound

from .base import BlobStore

T = TypeVar("T")

OPS = Counter(
    "cairn_blobstore_operations",
    "Blob store operations by operation and result",
    ["store", "op", "result"],
)
BYTES = Counter(
    "cairn_blobstore_bytes",
    "Blob bytes written (in) and read (out)",
    ["store", "direction"],
)
LATENCY = Histogram(
    "cairn_blobstore_operation_seconds",
    "Blob store operation latency",
    ["store", "op"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class MeteredBlobStore(BlobStore):
    """Count, time and size every operation of ``inner`` under the label ``store=name``."""

    def __init__(self, inner: BlobStore, name: str) -> None:
        self.inner = inner
        self.name = name

    def __repr__(self) -> str:
        return f"MeteredBlobStore({self.inner!r})"

    async def _measure(self, op: str, aw: Awaitable[T]) -> T:
        start = time.perf_counter()
        result = "error"
        try:
            value = await aw
            result = "ok"
            return value
        except NotFound:
            result = "not_found"
            raise
        finally:
            LATENCY.labels(self.name, op).observe(time.perf_counter() - start)
            OPS.labels(self.name, op, result).inc()

    async def put(self, cid: bytes, data: bytes) -> None:
        await self._measure("put", self.inner.put(cid, data))
        BYTES.labels(self.name, "in").inc(len(data))

    async def get(self, cid: bytes) -> bytes:
        data = await self._measure("get", self.inner.get(cid))
        BYTES.labels(self.name, "out").inc(len(data))
        return data

    async def has(self, cid: bytes) -> bool:
        return await self._measure("has", self.inner.has(cid))

    async def delete(self, cid: bytes) -> None:
        await self._measure("delete", self.inner.delete(cid))

    async def iter_ids(self) -> AsyncGenerator[bytes, None]:
        start = time.perf_counter()
        result = "error"
        try:
            async for cid in self.inner.iter_ids():
                yield cid
            result = "ok"
        except GeneratorExit:
            result = "ok"  # the consumer stopped early; the store did not fail
            raise
        finally:
            LATENCY.labels(self.name, "iter_ids").observe(time.perf_counter() - start)
            OPS.labels(self.name, "iter_ids", result).inc()

    async def close(self) -> None:
        await self.inner.close()
