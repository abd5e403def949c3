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

Shape: one planner task reads the frames from the cache in order (``READ_AHEAD`` small
ones side by side) and cuts them into requests; ``concurrency`` sender tasks send them. A
handful of ids (the pusher's steady trickle while files are being created) thus makes one
request, not one per sender, and a long run of small frames keeps every sender busy.

Memory: each sender holds one request (a batch ≤ BATCH_BYTES, or one large frame ≤ 16 MiB
+ header) and the planner the batch it is filling plus its read window (one large frame at
a time: after a large frame it reads one by one), so uploading a 10 GiB file costs a few
frames, not the file.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import trio

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
READ_AHEAD = 8  # small frames read from the cache side by side

FrameReader = Callable[[bytes], Awaitable[bytes]]
FramesReader = Callable[[Sequence[bytes]], Awaitable[list[bytes]]]
Batch = list[tuple[bytes, bytes]]


class Uploader:
    def __init__(
        self,
        client: Client,
        read_frame: FrameReader,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        read_frames: FramesReader | None = None,
    ) -> None:
        """``read_frame(id)`` gives one chunk's plain frame; ``read_frames(ids)``, when given,
        gives several in order in one go (one thread hop for a window of small frames
        instead of one each)."""
        self._client = client
        self._read_frame = read_frame
        self._read_frames = read_frames
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

    async def _read_many(self, ids: Sequence[bytes]) -> list[bytes]:
        if len(ids) == 1:
            return [await self._read_frame(ids[0])]
        if self._read_frames is not None:
            frames = await self._read_frames(ids)
            if len(frames) != len(ids):
                raise ValueError("read_frames returned the wrong number of frames")
            return frames
        frames: list[bytes] = [b""] * len(ids)

        async def one(i: int) -> None:
            frames[i] = await self._read_frame(ids[i])

        async with trio.open_nursery() as nursery:
            for i in range(len(ids)):
                nursery.start_soon(one, i)
        return frames

    async def _plan(self, ids: Sequence[bytes], send: trio.MemorySendChannel[Batch]) -> None:
        """Read the frames (a few at a time) and hand the senders one request at a time:
        a batch of small frames, or one large frame."""
        batch: Batch = []
        size = 0
        pos = 0
        window = READ_AHEAD
        while pos < len(ids):
            group = ids[pos : pos + window]
            pos += len(group)
            frames = await self._read_many(group)
            # After a large frame read one at a time: large frames come in runs (a big
            # file), and a window of them would hold READ_AHEAD large frames at once.
            window = READ_AHEAD if all(len(f) <= SMALL_FRAME for f in frames) else 1
            for cid, frame in zip(group, frames, strict=True):
                if len(frame) > SMALL_FRAME:
                    await send.send([(cid, frame)])
                    continue
                if batch and (len(batch) >= BATCH_CHUNKS or size + len(frame) > BATCH_BYTES):
                    await send.send(batch)
                    batch, size = [], 0
                batch.append((cid, frame))
                size += len(frame)
        if batch:
            await send.send(batch)

    async def _sender(self, recv: trio.MemoryReceiveChannel[Batch]) -> None:
        async with recv:
            async for batch in recv:
                await self._put_batch(batch)

    async def upload(self, ids: Sequence[bytes]) -> None:
        if not ids:
            return
        unique = list(dict.fromkeys(ids))
        send, recv = trio.open_memory_channel[Batch](0)
        try:
            async with trio.open_nursery() as nursery:
                async with recv:
                    for _ in range(self._concurrency):
                        nursery.start_soon(self._sender, recv.clone())
                async with send:
                    await self._plan(unique, send)
        except BaseExceptionGroup as group:
            # The contract is one error, as a single call would raise it (the agent's loop
            # tells Unavailable from the rest); a group of cancellations stays as it is.
            _, errors = group.split(trio.Cancelled)
            if errors is None:
                raise
            raise _first_leaf(errors) from None
        log.debug("uploaded %d chunks in %d requests so far", len(unique), self.requests)


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
