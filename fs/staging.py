"""Per-inode write staging: what a file holds between its last seal and the next one.

A ``FileContent`` is the committed blocklist (``base``) with edits on top, in one of two modes:

* **streaming** (``stream`` is set): the file is being written strictly sequentially at its
  end (cp, downloads, appends). Written bytes go to a ``cairn.core.chunker.StreamChunker``;
  each chunk that becomes final is hashed, framed and put into the cache as a dirty chunk by
  ``feed`` (CPU work, run on a worker thread) and appended to ``base``. Only the not yet final
  tail (``tail``, at most about two max-size chunks) is held in memory. ``seal`` then only has
  to cut the tail. A write elsewhere, or a truncate, ends streaming (``unstream``): the tail
  moves to the staging file and the file continues in random mode.
* **random**: written ranges go to a sparse staging file (``staging_dir/<ino>.<n>``) at their
  file offsets, and ``extents`` records which ranges hold new bytes. ``base_len`` is how much
  of ``base`` is still valid after truncates; beyond it, and outside extents, bytes are zero
  (holes). ``cairn.fs.seal`` re-chunks only around the extents.

Reading (``read``) overlays extents, the streaming tail and base chunks, and zero-fills holes;
it is synchronous and calls ``get_chunk(cid) -> plaintext`` for base chunks, so it runs on a
worker thread when chunks may need decoding or fetching.

Concurrency: the trio thread mutates a ``FileContent`` only while holding ``lock`` (writes,
truncates, seals). ``read`` takes no lock: it runs between mutations (trio) or on a worker
thread while the lock holder is parked in an await that does not change the fields it reads
(``feed`` and ``seal`` only read them; their results are installed on the trio thread).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from cairn.core import ids
from cairn.core.chunker import DEFAULT, Params, StreamChunker
from cairn.core.wire import Entry

from .blocks import BlockIndex, ExtentMap
from .cache import ChunkCache

GetChunk = Callable[[bytes], bytes]
_counter = itertools.count(1)


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
        self.tail = bytearray()  # bytes [base_len, size) while streaming
        self._fed = 0  # bytes of tail already handed to the stream chunker
        self.dirty = False
        self.mtime_ns: int | None = None  # set by writes; the node's mtime at seal
        self.new_chunks: list[bytes] = []  # written since the last durable point
        self.lock = trio.Lock()
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
        if size < self.size:
            self.extents.clip(size)
            self.base_len = min(self.base_len, size)
        self.size = size
        self.dirty = True

    def unstream(self) -> None:
        """Leave streaming mode: the unchunked tail becomes a staged extent."""
        if self.tail:
            os.pwrite(self._staging_fd(), self.tail, self.base_len)
            self.extents.add(self.base_len, self.base_len + len(self.tail))
        self.tail = bytearray()
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

    def start_stream(self, get_chunk: GetChunk) -> None:
        """Begin streaming at the end of the file (blocking when the last chunk must be
        read back: the new bytes continue its data run, so it is cut again with them)."""
        self.stream = StreamChunker(self.params)
        self.tail = bytearray()
        self._fed = 0
        if self.base.entries and self.base.entries[-1][0] is not None:
            cid, length = self.base.entries.pop()
            self.base.starts.pop()
            self.base_len -= length
            self.tail += get_chunk(cid)

    def append(self, data: bytes) -> bool:
        """Add sequential bytes; True when enough is buffered that ``feed`` should run."""
        self.tail += data
        self.size += len(data)
        self.dirty = True
        return len(self.tail) - self._fed >= self.params.max_size

    def feed(self, dedupe_key: bytes, cache: ChunkCache, final: bool = False) -> list[Entry]:
        """Chunk what was appended (worker thread): hash, frame and cache each chunk that is
        final (all of them when ``final``). Install the result with ``install_fed``."""
        assert self.stream is not None
        with memoryview(self.tail) as view:
            chunks = self.stream.feed_data(view[self._fed :])
        if final:
            chunks += self.stream.finish_data()
        self._fed = len(self.tail)
        out: list[Entry] = []
        for _, data in chunks:
            cid = ids.chunk_id(dedupe_key, data)
            cache.put(cid, data)
            out.append((cid, len(data)))
        return out

    def install_fed(self, entries: list[Entry], final: bool = False) -> None:
        done = 0
        for cid, length in entries:
            self.base.append(cid, length)
            self.new_chunks.append(cid)  # type: ignore[arg-type]
            done += length
        self.base_len += done
        del self.tail[:done]
        self._fed -= done
        if final:
            self.stream = None
            self.tail = bytearray()
            self._fed = 0

    # --- after a seal ---------------------------------------------------------------------

    def install(self, entries: Sequence[Entry]) -> None:
        """Make ``entries`` (the sealed content) the new base; staged bytes are dropped."""
        self.base = BlockIndex(entries)
        self.base_len = self.size = self.base.size
        self.extents.clear()
        self.dirty = False
        if self._fd is not None:
            os.ftruncate(self._fd, 0)

    def discard(self) -> None:
        """Release the staging file (the file is closed or deleted)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._path is not None:
            self._path.unlink(missing_ok=True)
            self._path = None

    # --- reading --------------------------------------------------------------------------

    def chunks_for(self, off: int, n: int) -> list[bytes]:
        """Base chunk ids that a read of ``[off, off+n)`` may need (outside extents too)."""
        end = min(off + n, self.base_len)
        if off >= end:
            return []
        i, j = self.base.locate(off), self.base.locate(end - 1)
        return [c for c, _ in self.base.entries[i : j + 1] if c is not None]

    def read(self, off: int, n: int, get_chunk: GetChunk) -> bytes:
        """Bytes ``[off, off+n)`` clipped to the size; holes read as zeros."""
        end = min(off + n, self.size)
        parts: list[bytes] = []
        x = off
        while x < end:
            ext_end = self.extents.covering(x)
            if ext_end is not None:
                m = min(ext_end, end) - x
                got = os.pread(self._staging_fd(), m, x)
                parts.append(got + bytes(m - len(got)))
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
                if cid is None:
                    parts.append(bytes(stop - x))
                else:
                    parts.append(get_chunk(cid)[x - s : stop - s])
                x = stop
            elif self.stream is not None:
                t = x - self.base_len
                parts.append(bytes(self.tail[t : t + lim - x]))
                x = lim
            else:
                parts.append(bytes(lim - x))
                x = lim
        return b"".join(parts)
