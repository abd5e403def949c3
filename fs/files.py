"""File content handlers of the drive's ``Operations``: open, read, write, release, fsync,
sealing, chunk fetching and readahead (a mixin; ``fs/ops.py`` composes it).

Write path: sequential writes stream (``fs/staging.py``): every ``max_size`` bytes the new
tail bytes become a background batch (``_batch``) that cuts them — batches take turns, the
chunker is sequential — and hashes, frames and caches the final chunks, while the kernel
sends the next writes. At most ``MAX_BATCHES`` batches per file are in flight: a write that
would start another waits for one to finish (backpressure keeps memory at a few chunks per
file), and the batch it starts is compressed with the faster ``STREAM_FAST`` setting (the
framing is what holds the writer back). Each framed batch's chunk files are fsynced in the
background (``_sync_early``), so the file's fsync finds most of them durable already.
Without a running ``Operations.run`` service (unit tests) the same work runs inline.
Other writes stage to the sparse file.

Seal (last release, fsync, truncate of a closed file, ``seal_all``): under the file's lock,
wait for the batches, cut and frame the tail, re-chunk around staged extents
(``fs/seal.py``), then write blocklist + node + outbox ``update`` in ONE batch. Durable
(fsync): chunk files are fsynced first (grouped), then the batch is written and the WAL
synced (grouped), so a durable blocklist never names a chunk that is not on disk.

Read path: ``plan`` on the trio thread; if every chunk it needs is decoded in memory it is
executed right there, else on a worker thread (cache → ``ChunkSource.fetch`` → verify →
cache). Sequential reads prefetch the next chunk(s) into memory (bounded).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

import pyfuse3
import trio

from cairn.core import errors as E
from cairn.core import frame, wire
from cairn.core.wire import Blocklist

from . import seal
from .errmap import ChunkMissing, translate
from .staging import STREAM_FAST, STREAM_LEVEL, Batch, FileContent, frame_chunks
from .store import Node, new_op_id

log = logging.getLogger("cairn.fs.ops")
MAX_BATCHES = 2
# Chunks prefetched ahead of a sequential reader (decoded into ``PlainLRU``, 32 MiB, through
# the read limiter's 4 threads). 8 rather than 4: cold reads 0.92x -> 1.08x and 0.71x ->
# 0.98x of gocryptfs in two A/B pairs (docs/benchmarks.md, session 5).
MAX_READAHEAD = 8
# Up to this many bytes, the final cut and framing of a streamed file run on the trio thread
# (~0.1 ms of CPU) instead of costing two worker-thread round trips: small files are common.
INLINE_BYTES = 64 * 1024
KERNEL_SEEN_MAX = 100_000  # open files remembered for keep_cache


class FileOps:
    """Mixin over ``Operations`` state: ``store``, ``cache``, ``source``, ``dedupe_key``,
    ``params``, ``staging_dir``, ``mem``, limiters, ``_files``, sync groups, ``_nursery``."""

    store: Any
    cache: Any
    source: Any
    dedupe_key: bytes
    params: Any
    staging_dir: Any
    mem: Any
    cpu_limiter: trio.CapacityLimiter
    read_limiter: trio.CapacityLimiter
    _files: dict[int, FileContent]
    _unsynced: set[bytes]
    _unsynced_lock: threading.Lock
    _chunk_sync: Any
    _wal_sync: Any
    _kernel_seen: dict[int, tuple[int, int]]
    _readahead: set[bytes]
    _nursery: trio.Nursery | None
    requests: int

    if TYPE_CHECKING:

        def _node(self, ino: int) -> Node: ...  # provided by Operations

    # --- chunks ---------------------------------------------------------------------------

    def _get_chunk(self, cid: bytes) -> bytes:
        """Plaintext of a chunk: memory, cache, else the network. Worker threads only."""
        return self.mem.get_or_load(cid, lambda: self._load_chunk(cid))  # type: ignore[no-any-return]

    def _load_chunk(self, cid: bytes) -> bytes:
        data = self.cache.get(cid)
        if data is None:
            data = trio.from_thread.run(self._fetch, cid)
        return data  # type: ignore[no-any-return]

    async def _fetch(self, cid: bytes) -> bytes:
        try:
            raw = await self.source.fetch(cid)
        except E.Unavailable as e:
            log.warning(
                "chunk %s is not cached and the server is unavailable: %s", cid.hex()[:16], e
            )
            raise
        except E.NotFound:
            # A blocklist names a chunk nobody has: an I/O error for the reader, not ENOENT.
            log.error("chunk %s is neither cached nor on the server", cid.hex()[:16])
            raise ChunkMissing(f"chunk {cid.hex()} is missing") from None
        plain = await trio.to_thread.run_sync(
            lambda: frame.decode(raw, cid, dedupe_key=self.dedupe_key)
        )
        await trio.to_thread.run_sync(self.cache.put_frame, cid, raw)
        return plain

    def _fsync_chunks(self) -> None:
        """Make every chunk file written so far durable (worker thread)."""
        with self._unsynced_lock:
            pending = list(self._unsynced)
        self.cache.fsync(pending)
        with self._unsynced_lock:
            self._unsynced.difference_update(pending)

    def _sync_all(self) -> None:
        """Chunk files first, then the WAL: a synced batch never names a chunk that a power
        cut could lose, including batches of files that were only released (worker thread).
        """
        self._fsync_chunks()
        self.store.sync_wal()

    # --- open files -----------------------------------------------------------------------

    def _content(self, node: Node) -> FileContent:
        content = self._files.get(node.ino)
        if content is None:
            bl = self.store.blocklist(node.ino)
            content = FileContent(node.ino, bl.entries, node.size, self.staging_dir, self.params)
            self._files[node.ino] = content
        return content

    def _maybe_close(self, content: FileContent) -> None:
        """Forget an in-memory content that is neither open nor dirty (and a node whose last
        name went while it was open)."""
        if content.opens or content.dirty or self._files.get(content.ino) is not content:
            return
        content.discard()
        del self._files[content.ino]
        attrs = self.store.attrs(content.ino)  # header only: its link count is len(names)
        node = None if attrs is None or attrs.nlink else self.store.node(content.ino)
        if node is not None and not node.names:
            txn = self.store.txn()
            txn.drop_node(node)
            txn.commit()

    def _file(self, fh: int) -> FileContent:
        self.requests += 1  # see Operations.requests
        content = self._files.get(fh)
        if content is None:
            raise E.InvalidArgument(f"no open file {fh}")
        return content

    @translate
    async def open(self, inode: int, flags: int, ctx: Any = None) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if node.type == "dir":
            raise E.IsADirectory("open of a directory for I/O")
        content = self._content(node)
        content.opens += 1
        if flags & os.O_TRUNC and content.size:
            # the kernel uses atomic O_TRUNC: no separate setattr(size=0) comes
            try:
                await self._truncate(content, 0)
            except BaseException:
                content.opens -= 1
                raise
        seen = (node.size, node.mtime_ns)
        keep = self._kernel_seen.get(inode) == seen and not content.dirty
        if len(self._kernel_seen) >= KERNEL_SEEN_MAX:
            self._kernel_seen.clear()  # forgetting only costs a page-cache refill
        self._kernel_seen[inode] = seen
        return pyfuse3.FileInfo(fh=inode, keep_cache=keep)

    # --- reading --------------------------------------------------------------------------

    @translate
    async def read(self, fh: int, off: int, size: int) -> bytes:
        content = self._file(fh)
        if off < 0:
            raise E.InvalidArgument("negative offset")
        plan = content.plan(off, size)
        chunks = {p[1]: self.mem.get(p[1]) for p in plan if p[0] == "chunk"}
        if all(v is not None for v in chunks.values()):
            # everything decoded already: no thread hop (the dict keeps them referenced)
            data = content.execute(plan, chunks.__getitem__)
        else:
            data = await trio.to_thread.run_sync(
                content.execute, plan, self._get_chunk, limiter=self.read_limiter
            )
        self._maybe_readahead(content, off + size)
        return data

    def _maybe_readahead(self, content: FileContent, end: int) -> None:
        if self._nursery is None or end >= content.base_len:
            return
        j = content.base.locate(end)
        for cid, _ in content.base.entries[j : j + MAX_READAHEAD]:
            if len(self._readahead) >= MAX_READAHEAD:
                return
            if cid is not None and cid not in self._readahead and self.mem.get(cid) is None:
                self._readahead.add(cid)
                self._nursery.start_soon(self._prefetch, cid)

    async def _prefetch(self, cid: bytes) -> None:
        try:
            await trio.to_thread.run_sync(self._get_chunk, cid, limiter=self.read_limiter)
        except (E.CairnError, OSError):
            pass  # a real read of this chunk reports the problem
        finally:
            self._readahead.discard(cid)

    # --- writing --------------------------------------------------------------------------

    @translate
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        content = self._file(fh)
        if off < 0 or off + len(buf) > wire.MAX_FILE_SIZE:
            raise E.InvalidArgument("offset out of range")
        async with content.lock:
            if content.error is not None:
                raise content.error
            if content.can_stream(off):
                if content.stream is None:
                    restart = content.restart_chunk()
                    data = None
                    if restart is not None:
                        data = await trio.to_thread.run_sync(
                            self._get_chunk, restart, limiter=self.read_limiter
                        )
                    content.start_stream(data)
                if content.append(buf):
                    await self._cut_and_frame(content)
            else:
                await self._drain(content)
                content.write_random(off, buf)
            content.mtime_ns = time.time_ns()
        return len(buf)

    async def _cut_and_frame(self, content: FileContent, final: bool = False) -> None:
        """Cut what was appended and frame the chunks that became final: in a background
        batch when the service runs (and not ``final``), else here. Caller holds
        ``content.lock``."""
        assert content.stream is not None
        if final:
            await self._drain(content)  # earlier pieces are cut before the last one
        piece = content.take_uncut()
        if not final and self._nursery is not None:
            # The framing holds the writer back: frame this batch with the faster setting
            # (larger frames, but the write does not wait on compression as long).
            level = STREAM_FAST if len(content.batches) >= MAX_BATCHES else STREAM_LEVEL
            while len(content.batches) >= MAX_BATCHES:
                await content.batch_done.wait()
            batch = Batch(content.next_batch)
            content.next_batch += 1
            content.batches.append(batch)
            self._nursery.start_soon(self._batch, content, batch, piece, level)
            return
        held = content.stream.total - content.stream.offset
        if final and held + sum(map(len, piece)) <= INLINE_BYTES:
            # a small file's last bytes: cheaper here than two thread hops
            chunks = content.cut(piece, True)
            content.install_fed(frame_chunks(chunks, self.dedupe_key, self.cache))
            return
        chunks = await trio.to_thread.run_sync(content.cut, piece, final)
        if chunks:
            entries = await trio.to_thread.run_sync(
                frame_chunks, chunks, self.dedupe_key, self.cache, limiter=self.cpu_limiter
            )
            content.install_fed(entries)

    async def _batch(self, content: FileContent, batch: Batch, piece: list[memoryview],
                     level: frame.Level) -> None:  # fmt: skip
        """Cut ``piece`` (strictly in batch order: the chunker is sequential) and frame the
        chunks (zstd ``level``), then install every finished batch at the head of the
        queue."""
        try:
            while content.cut_turn != batch.number:
                await content.cut_done.wait()
            try:
                chunks = await trio.to_thread.run_sync(content.cut, piece)
            finally:
                content.cut_turn += 1
                content.cut_done.fire()
            batch.entries = await trio.to_thread.run_sync(
                frame_chunks, chunks, self.dedupe_key, self.cache, level,
                limiter=self.cpu_limiter,
            )  # fmt: skip
        except trio.Cancelled:
            batch.error = E.Unavailable("the drive is shutting down")
            raise
        except Exception as e:  # surfaced to the next write/seal of this file as an errno
            log.error("chunking inode %d failed: %r", content.ino, e)
            batch.error = e
        finally:
            batch.done = True
            # install finished batches in stream order; no await in here
            while content.batches and content.batches[0].done:
                b = content.batches.popleft()
                if b.error is not None or content.error is not None:
                    content.error = content.error or b.error
                else:
                    content.install_fed(b.entries)
            content.batch_done.fire()
        if batch.entries and batch.error is None:
            await self._sync_early(content, [cid for cid, _ in batch.entries])

    async def _sync_early(self, content: FileContent, ids: list[bytes]) -> None:
        """Make a streaming file's framed chunks durable while the file is still being
        written, off the write path (the batch is installed already): its fsync then finds
        them synced (``ChunkCache.fsync`` skips them) and only syncs the last few. One sync
        at a time per file; chunks framed meanwhile join the next one. A failure is the
        seal's to report: the cache keeps it for every later ``fsync`` of those chunks."""
        content.to_sync += ids
        if content.syncing:
            return
        content.syncing = True
        try:
            while content.to_sync:  # bounded: each pass takes what the batches queued
                todo, content.to_sync = content.to_sync, []
                await trio.to_thread.run_sync(self.cache.fsync, todo)
        except OSError as e:
            log.warning("early sync of inode %d's chunks failed: %r", content.ino, e)
        finally:
            content.syncing = False

    async def _drain(self, content: FileContent) -> None:
        """Wait until no framing batch of ``content`` is in flight (bounded by the batches:
        each finishes or fails)."""
        while content.batches:
            await content.batch_done.wait()
        if content.error is not None:
            raise content.error

    async def _truncate(self, content: FileContent, size: int) -> None:
        async with content.lock:
            await self._drain(content)
            content.truncate(size)
            content.mtime_ns = time.time_ns()

    async def flush(self, fh: int) -> None:
        # Nothing to do at close (the seal runs at release), and ENOSYS tells the kernel
        # to stop sending FLUSH at all: one request less per closed file.
        raise pyfuse3.FUSEError(errno.ENOSYS)

    @translate
    async def release(self, fh: int) -> None:
        content = self._files.get(fh)
        if content is None:
            return
        content.opens -= 1
        if content.opens > 0:
            return
        try:
            await self._seal(content)
        finally:
            self._maybe_close(content)

    @translate
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self._seal(self._file(fh), durable=True)

    # --- sealing --------------------------------------------------------------------------

    async def _seal(self, content: FileContent, *, durable: bool = False) -> None:
        """Seal staged writes: new blocklist + node attrs + outbox ``update`` in one batch.

        With ``durable``, new chunk files are fsynced before the batch is written and the
        WAL is synced after it (both grouped with concurrent callers)."""
        async with content.lock:
            changed = content.dirty
            if content.stream is not None:
                await self._cut_and_frame(content, final=True)
                content.end_stream()
            if changed:
                if (
                    content.extents
                    or content.base_len != content.base.size
                    or content.size != content.base.size
                ):
                    entries, new = await trio.to_thread.run_sync(
                        self._compute_seal, content, limiter=self.cpu_limiter
                    )
                    content.new_chunks += new
                    content.install(entries)
                content.dirty = False
                with self._unsynced_lock:
                    self._unsynced.update(content.new_chunks)
                content.new_chunks = []
                if durable:
                    await self._chunk_sync.sync()
                self._commit_seal(content)
        if durable:
            await self._wal_sync.sync()

    def _compute_seal(self, content: FileContent) -> tuple[list[wire.Entry], list[bytes]]:
        return seal.compute(content, dedupe_key=self.dedupe_key, cache=self.cache,
                            params=self.params, get_chunk=self._get_chunk)  # fmt: skip

    def _commit_seal(self, content: FileContent) -> None:
        node = self.store.node(content.ino)
        if node is None or not node.names:
            return  # deleted meanwhile; its unlink is queued already
        node.size = content.size
        node.alloc = content.base.data_bytes()
        if content.mtime_ns is not None:
            node.mtime_ns = content.mtime_ns
        node.ctime_ns = time.time_ns()
        bl = Blocklist(tuple(content.base.entries))
        txn = self.store.txn()
        txn.put_blocklist(node.ino, bl)
        txn.put_node(node, indexed=True)
        if not txn.fold_into_create(node.id, bl, node.mtime_ns):
            txn.outbox_append(wire.Update(new_op_id(), node.id, node.base_rev, bl, node.mtime_ns))
        txn.commit()

    async def seal_all(self, *, durable: bool = True) -> None:
        """Seal every file with unsealed writes (before unmount)."""
        for content in list(self._files.values()):
            if content.dirty:
                await self._seal(content, durable=durable)
        if durable:
            await self._wal_sync.sync()
