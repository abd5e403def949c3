"""The uploader pool: puts chunks the server is missing, a few requests at a time.

Contract: ``upload(ids)`` returns once every chunk in ``ids`` is stored on the server, or
raises the first non-retryable error (or ``Unavailable`` after the retries ran out). Chunks
are content-addressed and uploads are idempotent, so an upload cut short by a crash or a
lost connection is simply done again; nothing needs to be remembered between attempts.

Small frames (the chunks of small files) travel in batches (``POST chunks/batch``: up to
``BATCH_CHUNKS`` frames or ``BATCH_BYTES`` per request), so 10,000 small files cost a few
dozen requests instead of 10,000; a large frame keeps its own ``PUT``. A batch the server
finds too large (a server configured with a smaller body limit) is split in halves, down to
single PUTs.

Memory: each of the ``concurrency`` workers holds the batch it is filling (≤ BATCH_BYTES)
and at most one large frame (≤ 16 MiB + header), read from the cache just before it is
sent, so uploading a 10 GiB file costs a few frames, not the file.

Concurrency: the workers share one iterator over the ids; ``next()`` on it never awaits, so
each id goes to exactly one worker.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence

import trio

from cairn.core import chunkbatch
from cairn.core.errors import TooLarge

from ..client import Client
from .backoff import Backoff, retrying

log = logging.getLogger("cairn.fs.sync")

DEFAULT_CONCURRENCY = 4
# Give up on one round after this many attempts per request; the pusher backs off and tries
# the whole batch again later, so nothing is lost by giving up.
ATTEMPTS = 4
SMALL_FRAME = 1 << 20  # frames up to this size go into batches
BATCH_CHUNKS = 256
# Frame bytes per batch: no more than one full-size chunk (chunker.MAX_SIZE), so a batch in
# flight when the mount dies costs at most what one large PUT would to send again.
BATCH_BYTES = 4 << 20

FrameReader = Callable[[bytes], Awaitable[bytes]]
Batch = list[tuple[bytes, bytes]]


class Uploader:
    def __init__(
        self, client: Client, read_frame: FrameReader, *, concurrency: int = DEFAULT_CONCURRENCY
    ) -> None:
        self._client = client
        self._read_frame = read_frame
        self._concurrency = concurrency
        self.uploaded_chunks = 0
        self.uploaded_bytes = 0
        self.requests = 0  # upload requests answered (PUTs and batches)

    async def _put_one(self, cid: bytes, frame: bytes) -> None:
        await retrying(
            lambda: self._client.put_chunk(cid.hex(), frame),
            attempts=ATTEMPTS,
            backoff=Backoff(0.2, 3.0),
            what=f"upload of chunk {cid.hex()[:12]}",
        )
        self.requests += 1
        self.uploaded_chunks += 1
        self.uploaded_bytes += len(frame)

    async def _put_batch(self, batch: Batch) -> None:
        if len(batch) == 1:
            await self._put_one(*batch[0])
            return
        try:
            await retrying(
                lambda: self._client.put_chunks(batch),
                attempts=ATTEMPTS,
                backoff=Backoff(0.2, 3.0),
                what=f"upload of {len(batch)} chunks",
            )
        except TooLarge:
            half = len(batch) // 2
            log.debug("server refused a batch of %d chunks as too large; splitting", len(batch))
            await self._put_batch(batch[:half])
            await self._put_batch(batch[half:])
            return
        self.requests += 1
        self.uploaded_chunks += len(batch)
        self.uploaded_bytes += sum(len(f) for _, f in batch)

    async def _worker(self, pending: Iterator[bytes]) -> None:
        batch: Batch = []
        size = 0
        for cid in pending:
            frame = await self._read_frame(cid)
            if len(frame) > SMALL_FRAME:
                await self._put_one(cid, frame)
                continue
            if batch and (
                len(batch) >= min(BATCH_CHUNKS, chunkbatch.MAX_RECORDS)
                or size + len(frame) > BATCH_BYTES
            ):
                await self._put_batch(batch)
                batch, size = [], 0
            batch.append((cid, frame))
            size += len(frame)
        if batch:
            await self._put_batch(batch)

    async def upload(self, ids: Sequence[bytes]) -> None:
        if not ids:
            return
        pending = iter(list(dict.fromkeys(ids)))
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(min(self._concurrency, len(ids))):
                    nursery.start_soon(self._worker, pending)
        except BaseExceptionGroup as group:
            # The contract is one error, as a single call would raise it (the agent's loop
            # tells Unavailable from the rest); a group of cancellations stays as it is.
            _, errors = group.split(trio.Cancelled)
            if errors is None:
                raise
            raise _first_leaf(errors) from None
        log.debug("uploaded %d chunks", len(ids))


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
