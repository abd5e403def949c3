"""Per-inode write staging: what a file holds between its last seal and the next one.

A ``FileContent`` is the committed blocklist (``base``) with edits on top, in one of two modes:

* **streaming** (``stream`` is set): the file is being written strictly sequentially at its
  end (cp, downloads, appends). Written bytes collect in ``tail``; every ``max_size`` bytes
  they are cut by a ``cairn.core.chunker.StreamChunker`` (``take_uncut`` + ``cut``), and the
  chunks that became final are hashed, framed and put into the cache as dirty chunks
  (``frame_chunks``) on worker threads while further writes arrive (``fs/ops.py`` keeps at
  most two such batches in flight per file, in ``batches``). ``install_fed`` appends their
  entries to ``base`` in stream order and drops their bytes from ``tail``, so memory stays
  at a few max-size chunks whatever the file size, and ``seal`` only cuts the last bytes.
  A write elsewhere, or a truncate, ends streaming (``unstream``, after the batches
  drained): the tail moves to the staging file and the file continues in random mode.
* **random**: written ranges go to a sparse staging file (``staging_dir/<ino>.<n>``) at their
  file offsets, and ``extents`` records which ranges hold new bytes. ``base_len`` is how much
  of ``base`` is still valid after truncates; beyond it, and outside extents, bytes are zero
  (holes). ``cairn.fs.seal`` re-chunks only around the extents.

Reading is split in two: ``plan`` (trio thread, no I/O, consistent with the current state)
lists the pieces — staged ranges, base chunk slices, tail bytes (copied), zeros — and
``execute`` (any thread) reads them, calling ``get_chunk(cid) -> plaintext`` for chunks.

Concurrency: fields change only on the trio thread: under ``lock`` (writes, truncates,
seals) and in ``install_fed`` (a background batch finishing; no await inside, and it only
appends to ``base`` and trims ``tail``, which a plan already copied). Worker threads touch
only the stream chunker (``cut``: one at a time, batches take turns by number, and the
final cut waits for them), the cache, and — during a seal,
while ``lock`` is held and no batch is in flight — read the state through ``read``.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from cairn.core import frame, ids
from cairn.core.chunker import DEFAULT, Params, StreamChunker
from cairn.core.ids import Buffer
from cairn.core.wire import Entry

from .blocks import BlockIndex, ByteQueue, ExtentMap
from .cache import ChunkCache
from .quicklock import QuickLock

GetChunk = Callable[[bytes], bytes]
Piece = tuple[Any, ...]
"""A read piece: ``("staged", off, n)``, ``("zero", n)``, ``("chunk", id, start, stop)`` or
``("bytes", data)``."""
_counter = itertools.count(1)


class Batch:
    """One framing job of a streaming file: its result once ``done``."""

    __slots__ = ("done", "entries", "error", "number")

    def __init__(self, number: int) -> None:
        self.number = number  # batches cut their pieces in this order
        self.done = False
        self.entries: list[Entry] = []
        self.error: BaseException | None = None


class Signal:
    """Wakes whoever waits at the time of ``fire`` (a ``trio.Event`` that re-arms). The
    event is made on the first wait: most files never run a batch, and making one costs
    more than the rest of a small file's staging state."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: trio.Event | None = None

    async def wait(self) -> None:
        if self._event is None:
            self._event = trio.Event()
        await self._event.wait()

    def fire(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None


class FileContent:
    def __init__(self, ino: int, entries: Sequence[Entry], size: int, staging_dir: Path,
                 params: Params = DEFAULT) -> None:  # fmt: skip
        self.ino = ino
        self.params = params
        self.base = BlockIndex(entries)
        self.base_len = min(self.base.size, size)
        self.size = size
        self.extents = ExtentMap()
        self.stream: StreamChunker | None = None
        self.tail = ByteQueue()  # bytes [base_len, size) while streaming
        self._fed = 0  # bytes of tail already handed to the stream chunker
        self.dirty = False
        self.mtime_ns: int | None = None  # set by writes; the node's mtime at seal
        self.new_chunks: list[bytes] = []  # written since the last durable point
        self.lock = QuickLock()
        self.batches: deque[Batch] = deque()  # framing jobs in flight, in stream order
        self.batch_done = Signal()  # fired whenever a batch finishes
        self.next_batch = 0  # number of the next batch
        self.cut_turn = 0  # number of the batch whose piece is cut next
        self.cut_done = Signal()  # fired whenever a batch's cut ends
        self.error: BaseException | None = None  # a failed batch: later writes/seals fail
        self.to_sync: list[bytes] = []  # framed stream chunks for the background fsync
        self.syncing = False  # that fsync is running (one at a time per file)
        self.opens = 0
        self._dir = staging_dir
        self._path: Path | None = None
        self._fd: int | None = None

    # --- random mode ----------------------------------------------------------------------

    def _staging_fd(self) -> int:
        if self._fd is None:
            self._path = self._dir / f"{self.ino}.{next(_counter)}"
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        return self._fd

    def write_random(self, off: int, data: bytes) -> None:
        """Stage ``data`` at ``off`` (page-cache write into a sparse file; fast)."""
        if self.stream is not None:
            self.unstream()
        if data:
            os.pwrite(self._staging_fd(), data, off)
            self.extents.add(off, off + len(data))
            self.size = max(self.size, off + len(data))
        self.dirty = True

    def truncate(self, size: int) -> None:
        if self.stream is not None:
            self.unstream()
        if size == 0:
            # the common "open with O_TRUNC, write it all again": start from nothing, so the
            # new content can stream
            self.base = BlockIndex()
            self.base_len = 0
            self.extents.clear()
        elif size < self.size:
            self.extents.clip(size)
            self.base_len = min(self.base_len, size)
        self.size = size
        self.dirty = True

    def unstream(self) -> None:
        """Leave streaming mode: the unchunked tail becomes a staged extent. The caller has
        drained ``batches`` (their bytes are still in ``tail`` until installed)."""
        assert not self.batches
        if self.tail:
            os.pwrite(self._staging_fd(), self.tail.slice(0, len(self.tail)), self.base_len)
            self.extents.add(self.base_len, self.base_len + len(self.tail))
        self.tail = ByteQueue()
        self._fed = 0
        self.stream = None

    # --- streaming mode -------------------------------------------------------------------

    def can_stream(self, off: int) -> bool:
        """True when a write at ``off`` continues (or may start) a sequential stream."""
        if off != self.size:
            return False
        if self.stream is not None:
            return True
        return not self.extents and self.base_len == self.base.size == self.size

    def restart_chunk(self) -> bytes | None:
        """The id of the chunk a new stream must cut again (the last one, when it is data:
        the new bytes continue its data run), or None."""
        if self.base.entries and self.base.entries[-1][0] is not None:
            return self.base.entries[-1][0]
        return None

    def start_stream(self, restart: bytes | None) -> None:
        """Begin streaming at the end of the file; ``restart`` is the plaintext of
        ``restart_chunk()`` (trio thread)."""
        self.stream = StreamChunker(self.params)
        self.tail = ByteQueue()
        self._fed = 0
        if restart is not None:
            _, length = self.base.entries.pop()
            self.base.starts.pop()
            self.base_len -= length
            self.tail.append(restart)

    def append(self, data: bytes) -> bool:
        """Add sequential bytes; True when enough is buffered that ``take_uncut`` should run."""
        self.tail.append(data)
        self.size += len(data)
        self.dirty = True
        return len(self.tail) - self._fed >= self.params.max_size

    def take_uncut(self) -> list[memoryview]:
        """The appended bytes not yet handed to the chunker, as views of the write buffers
        (no copy on the trio thread: the chunker copies them once anyway)."""
        piece = self.tail.views(self._fed, len(self.tail))
        self._fed = len(self.tail)
        return piece

    def cut(self, piece: Sequence[Buffer], final: bool = False) -> list[bytes]:
        """Feed ``piece`` (buffers in order) to the stream chunker and return the chunks that
        became final (all when ``final``). Worker thread, one cut at a time: touches only
        the chunker."""
        assert self.stream is not None
        chunks: list[tuple[int, bytes]] = []
        for part in piece:
            chunks += self.stream.feed_data(part)
        if final:
            chunks += self.stream.finish_data()
        return [data for _, data in chunks]

    def install_fed(self, entries: list[Entry]) -> None:
        """Append framed chunks (in stream order) to ``base``; trio thread, no await."""
        done = 0
        for cid, length in entries:
            self.base.append(cid, length)
            self.new_chunks.append(cid)  # type: ignore[arg-type]
            done += length
        self.base_len += done
        self.tail.drop(done)
        self._fed -= done

    def end_stream(self) -> None:
        assert not self.tail, "stream ended with unchunked bytes"
        self.stream = None
        self._fed = 0

    # --- after a seal ---------------------------------------------------------------------

    def install(self, entries: Sequence[Entry]) -> None:
        """Make ``entries`` (the sealed content) the new base; staged bytes are dropped."""
        self.base = BlockIndex(entries)
        self.base_len = self.size = self.base.size
        self.extents.clear()
        self.dirty = False
        # The staging file is left as it is: a read planned before this may still pread it,
        # and new writes overwrite it. It goes with ``discard``.

    def discard(self) -> None:
        """Release the staging file (the file is closed or deleted)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._path is not None:
            self._path.unlink(missing_ok=True)
            self._path = None

    # --- reading --------------------------------------------------------------------------

    def plan(self, off: int, n: int) -> list[Piece]:
        """What a read of ``[off, off+n)`` (clipped to the size) is made of. No I/O: taken on
        the trio thread, so it is consistent; ``execute`` then runs anywhere."""
        end = min(off + n, self.size)
        out: list[Piece] = []
        x = off
        while x < end:
            ext_end = self.extents.covering(x)
            if ext_end is not None:
                m = min(ext_end, end) - x
                out.append(("staged", x, m))
                x += m
                continue
            lim = end
            nxt = self.extents.next_start(x)
            if nxt is not None:
                lim = min(lim, nxt)
            if x < self.base_len:
                j = self.base.locate(x)
                cid, length = self.base.entries[j]
                s = self.base.starts[j]
                stop = min(lim, s + length, self.base_len)
                out.append(("zero", stop - x) if cid is None else ("chunk", cid, x - s, stop - s))
                x = stop
            elif self.stream is not None:
                t = x - self.base_len
                out.append(("bytes", self.tail.slice(t, t + lim - x)))
                x = lim
            else:
                out.append(("zero", lim - x))
                x = lim
        return out

    def execute(self, plan: list[Piece], get_chunk: GetChunk) -> bytes:
        """The bytes of a ``plan`` (blocking: staging-file reads, chunk decoding)."""
        parts: list[bytes] = []
        for piece in plan:
            match piece:
                case ("staged", off, n):
                    got = os.pread(self._staging_fd(), n, off)
                    parts.append(got + bytes(n - len(got)))
                case ("zero", n):
                    parts.append(bytes(n))
                case ("chunk", cid, start, stop):
                    parts.append(get_chunk(cid)[start:stop])
                case ("bytes", data):
                    parts.append(data)
        return b"".join(parts)

    def read(self, off: int, n: int, get_chunk: GetChunk) -> bytes:
        """Plan and execute in one go (when nothing can change meanwhile)."""
        return self.execute(self.plan(off, n), get_chunk)


# zstd level for chunks framed while a file streams in. Level 1 compresses text-like data
# about twice as fast as the format's default (3) for ~25% larger frames: sequential writes
# are CPU-bound on a small machine, and the frame format lets any level decode.
STREAM_LEVEL: frame.Level = 1
# ... and while the framing holds the writer back (``fs/files.py`` ``_cut_and_frame``): a
# faster setting that still entropy-codes literals (see ``cairn.core.frame.FAST``).
STREAM_FAST: frame.Level = frame.FAST


def frame_chunks(chunks: list[bytes], dedupe_key: bytes, cache: ChunkCache,
                 level: frame.Level = STREAM_LEVEL) -> list[Entry]:  # fmt: skip
    """Hash, frame (zstd ``level``) and cache (dirty) each chunk; CPU-heavy, worker
    thread."""
    out: list[Entry] = []
    for data in chunks:
        cid = ids.chunk_id(dedupe_key, data)
        cache.put(cid, data, level=level)
        out.append((cid, len(data)))
    return out
