"""The uploader pool: puts chunks the server is missing, a few at a time.

Contract: ``upload(ids)`` returns once every chunk in ``ids`` is stored on the server, or
raises the first non-retryable error (or ``Unavailable`` after the retries ran out). Chunks
are content-addressed and ``PUT`` is idempotent, so an upload cut short by a crash or a lost
connection is simply done again; nothing needs to be remembered between attempts.

Memory: at most ``concurrency`` frames (each ≤ 16 MiB + header) are held at once, read from
the cache just before their PUT, so uploading a 10 GiB file costs a few frames, not the file.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import trio

from ..client import Client
from .backoff import Backoff, retrying

log = logging.getLogger("cairn.fs.sync")

DEFAULT_CONCURRENCY = 4
# Give up on one round after this many attempts per chunk; the pusher backs off and tries
# the whole batch again later, so nothing is lost by giving up.
ATTEMPTS = 4

FrameReader = Callable[[bytes], Awaitable[bytes]]


class Uploader:
    def __init__(
        self, client: Client, read_frame: FrameReader, *, concurrency: int = DEFAULT_CONCURRENCY
    ) -> None:
        self._client = client
        self._read_frame = read_frame
        self._limit = trio.CapacityLimiter(concurrency)
        self.uploaded_chunks = 0
        self.uploaded_bytes = 0

    async def _one(self, cid: bytes) -> None:
        async with self._limit:
            frame = await self._read_frame(cid)
            await retrying(
                lambda: self._client.put_chunk(cid.hex(), frame),
                attempts=ATTEMPTS,
                backoff=Backoff(0.2, 3.0),
                what=f"upload of chunk {cid.hex()[:12]}",
            )
            self.uploaded_chunks += 1
            self.uploaded_bytes += len(frame)

    async def upload(self, ids: Sequence[bytes]) -> None:
        if not ids:
            return
        # Feed the nursery lazily: starting 10,000 tasks at once for a 10 GiB file would be
        # harmless for memory (frames are read inside the limiter) but a queue keeps the
        # task count at the concurrency bound.
        send, recv = trio.open_memory_channel[bytes](0)

        async def worker(mine: trio.MemoryReceiveChannel[bytes]) -> None:
            async with mine:
                async for cid in mine:
                    await self._one(cid)

        async with trio.open_nursery() as nursery:
            async with recv:
                for _ in range(int(self._limit.total_tokens)):
                    nursery.start_soon(worker, recv.clone())
            async with send:
                for cid in ids:
                    await send.send(cid)
        log.debug("uploaded %d chunks", len(ids))
