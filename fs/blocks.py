"""Small data structures of the drive's data path: extent maps, blocklist indexes, and an
in-memory LRU of decoded chunks.

None of them does I/O. ``ExtentMap`` and ``BlockIndex`` are used from one thread at a time
(guarded by the owning file's lock in ``fs/ops.py``); ``PlainLRU`` is thread-safe because
reads decode chunks on worker threads.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from itertools import accumulate

from cairn.core.wire import Entry

# A reader waits at most this long for another thread's load of the same chunk (a fetch
# gives up well before), then loads it itself.
LOAD_WAIT_S = 60.0


class ExtentMap:
    """A set of byte ranges as sorted, disjoint, non-adjacent ``[start, end)`` intervals."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def __bool__(self) -> bool:
        return bool(self.starts)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self.starts, self.ends, strict=True)

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        # every interval touching [start, end] merges into one
        i = bisect_left(self.ends, start)
        j = bisect_right(self.starts, end)
        if i < j:
            start = min(start, self.starts[i])
            end = max(end, self.ends[j - 1])
        self.starts[i:j] = [start]
        self.ends[i:j] = [end]

    def clip(self, size: int) -> None:
        """Drop everything at or beyond ``size``."""
        i = bisect_left(self.ends, size + 1)
        del self.starts[i + 1 :], self.ends[i + 1 :]
        if i < len(self.starts):
            if self.starts[i] >= size:
                del self.starts[i], self.ends[i]
            else:
                self.ends[i] = size

    def clear(self) -> None:
        self.starts.clear()
        self.ends.clear()

    def covering(self, pos: int) -> int | None:
        """End of the extent holding byte ``pos``, or None."""
        i = bisect_right(self.starts, pos) - 1
        return self.ends[i] if i >= 0 and pos < self.ends[i] else None

    def next_start(self, pos: int) -> int | None:
        """Start of the first extent beginning after ``pos``, or None."""
        i = bisect_right(self.starts, pos)
        return self.starts[i] if i < len(self.starts) else None

    def overlapping(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of extents inside ``[start, end)``."""
        i = bisect_right(self.ends, start)
        out = []
        while i < len(self.starts) and self.starts[i] < end:
            out.append((max(start, self.starts[i]), min(end, self.ends[i])))
            i += 1
        return out


class BlockIndex:
    """A blocklist with cumulative offsets: ``locate(pos)`` is a bisect, so 50k-entry files
    stay cheap to read."""

    def __init__(self, entries: Sequence[Entry] = ()) -> None:
        self.entries: list[Entry] = list(entries)
        self.starts: list[int] = [0, *accumulate(n for _, n in self.entries)]

    @property
    def size(self) -> int:
        return self.starts[-1]

    def locate(self, pos: int) -> int:
        """Index of the entry holding byte ``pos`` (``pos < size``)."""
        return bisect_right(self.starts, pos) - 1

    def append(self, cid: bytes | None, length: int) -> None:
        self.entries.append((cid, length))
        self.starts.append(self.starts[-1] + length)

    def data_bytes(self) -> int:
        return sum(n for cid, n in self.entries if cid is not None)


def merge_holes(entries: list[Entry]) -> list[Entry]:
    """Join adjacent holes and drop empty entries (the wire wants holes of length >= 1)."""
    out: list[Entry] = []
    for cid, n in entries:
        if n <= 0:
            continue
        if cid is None and out and out[-1][0] is None:
            out[-1] = (None, out[-1][1] + n)
        else:
            out.append((cid, n))
    return out


class ByteQueue:
    """Bytes appended at the end and dropped from the front, as a deque of the appended
    buffers: appending and dropping never copy what is already held (a ``bytearray`` used
    this way moves its whole content on most growths)."""

    def __init__(self) -> None:
        self._parts: deque[bytes] = deque()
        self._head = 0  # bytes of _parts[0] already dropped
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def append(self, data: bytes | bytearray | memoryview) -> None:
        if len(data):
            self._parts.append(data if type(data) is bytes else bytes(data))
            self._len += len(data)

    def drop(self, n: int) -> None:
        """Forget the first ``n`` bytes (``n <= len``)."""
        if n > self._len:
            raise ValueError("drop beyond the end")
        self._len -= n
        n += self._head
        while self._parts and n >= len(self._parts[0]):  # bounded by the part count
            n -= len(self._parts.popleft())
        self._head = n if self._parts else 0

    def slice(self, start: int, stop: int) -> bytes:
        """A copy of bytes ``[start, stop)`` (clipped to the held bytes)."""
        return b"".join(self.views(start, stop))

    def views(self, start: int, stop: int) -> list[memoryview]:
        """Bytes ``[start, stop)`` (clipped) as views of the held buffers, without a copy;
        they stay valid after a ``drop`` (the buffers are immutable)."""
        stop = min(stop, self._len)
        if start >= stop:
            return []
        out: list[memoryview] = []
        pos = -self._head  # offset of the current part's first byte
        for part in self._parts:
            end = pos + len(part)
            if end > start:
                out.append(memoryview(part)[max(start - pos, 0) : min(stop, end) - pos])
            if end >= stop:
                break
            pos = end
        return out


class PlainLRU:
    """Decoded chunks kept in memory (bounded by bytes), so 128 KiB kernel reads of a 1 MiB
    chunk decode it once, not eight times."""

    def __init__(self, limit: int = 32 * 1024 * 1024) -> None:
        self.limit = limit
        self._d: OrderedDict[bytes, bytes] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()
        self._loading: dict[bytes, threading.Event] = {}  # chunks some thread is decoding

    def get_or_load(self, cid: bytes, load: Callable[[], bytes]) -> bytes:
        """The chunk from memory, else ``load()`` it (blocking; worker threads) and keep it.

        Concurrent callers for the same chunk (a read catching up with its readahead) wait
        for the one load in progress instead of decoding the chunk a second time; if that
        load fails (or its result is evicted at once) they load it themselves.
        """
        with self._lock:
            data = self._d.get(cid)
            if data is not None:
                self._d.move_to_end(cid)
                return data
            event = self._loading.get(cid)
            mine = event is None
            if event is None:
                event = self._loading[cid] = threading.Event()
        if not mine:
            event.wait(LOAD_WAIT_S)
            data = self.get(cid)
            if data is not None:
                return data
            data = load()
            self.put(cid, data)
            return data
        try:
            data = load()
            self.put(cid, data)
            return data
        finally:
            with self._lock:
                self._loading.pop(cid, None)
            event.set()

    def get(self, cid: bytes) -> bytes | None:
        with self._lock:
            data = self._d.get(cid)
            if data is not None:
                self._d.move_to_end(cid)
            return data

    def put(self, cid: bytes, data: bytes) -> None:
        with self._lock:
            if cid in self._d:
                return
            self._d[cid] = data
            self._used += len(data)
            while self._used > self.limit and len(self._d) > 1:
                _, old = self._d.popitem(last=False)
                self._used -= len(old)
