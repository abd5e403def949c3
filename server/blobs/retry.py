"""``RetryingBlobStore``: bounded retries with exponential backoff and full jitter.

Only ``BlobStoreError`` (the medium failed: I/O, network, S3 5xx) is retried; ``BlobNotFound``
and invalid arguments are answers, not failures, and pass through at once. Every operation is
idempotent (see ``base.py``), so repeating one is safe. ``iter_ids`` is retried only until it
has yielded its first id: restarting a listing half-way would report ids twice.

Each retry is logged at WARNING (trouble the store survived); the final failure is raised
unchanged to the caller.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TypeVar

from .base import BlobStore, BlobStoreError

T = TypeVar("T")
log = logging.getLogger("cairn.server.blobs")

RetryHook = Callable[[str, int, BlobStoreError], Awaitable[None] | None]


class RetryingBlobStore(BlobStore):
    """Wrap ``inner``: up to ``attempts`` tries per operation; the delay before try n+1 is
    uniform in ``[0, min(max_delay, base_delay * 2**(n-1))]``. ``on_retry(op, attempt,
    error)``, if given, runs before each backoff (observability and tests)."""

    def __init__(
        self,
        inner: BlobStore,
        *,
        attempts: int = 4,
        base_delay: float = 0.05,
        max_delay: float = 2.0,
        on_retry: RetryHook | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.inner = inner
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.on_retry = on_retry

    def __repr__(self) -> str:
        return f"RetryingBlobStore({self.inner!r}, attempts={self.attempts})"

    async def _backoff(self, op: str, attempt: int, err: BlobStoreError) -> None:
        log.warning(
            "blob store %s failed (try %d of %d), retrying: %s", op, attempt, self.attempts, err
        )
        if self.on_retry is not None:
            res = self.on_retry(op, attempt, err)
            if res is not None:
                await res
        await asyncio.sleep(
            random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))
        )

    async def _call(self, op: str, fn: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return await fn()
            except BlobStoreError as e:
                if attempt == self.attempts:
                    raise
                await self._backoff(op, attempt, e)
        raise AssertionError("unreachable")  # the loop returns or raises

    async def put(self, cid: bytes, data: bytes) -> None:
        await self._call("put", lambda: self.inner.put(cid, data))

    async def get(self, cid: bytes) -> bytes:
        return await self._call("get", lambda: self.inner.get(cid))

    async def has(self, cid: bytes) -> bool:
        return await self._call("has", lambda: self.inner.has(cid))

    async def delete(self, cid: bytes) -> None:
        await self._call("delete", lambda: self.inner.delete(cid))

    async def iter_ids(self) -> AsyncGenerator[bytes, None]:
        for attempt in range(1, self.attempts + 1):
            it = self.inner.iter_ids()
            try:
                first = await it.__anext__()
            except StopAsyncIteration:
                return
            except BlobStoreError as e:
                await it.aclose()
                if attempt == self.attempts:
                    raise
                await self._backoff("iter_ids", attempt, e)
                continue
            try:
                yield first
                async for cid in it:
                    yield cid
            finally:
                await it.aclose()
            return

    async def close(self) -> None:
        await self.inner.close()
