"""Incremental re-chunking: the new chunk list of an edited file, reading only near the edits.

Given the chunk lengths of the old version of a file, the edits that turn it into the new
version (in old-file coordinates) and a reader of the new content, ``rechunk`` yields the
chunks that chunking the whole new file from scratch would give, each marked as either an old
chunk reused unchanged or a new one (with its bytes). It reads and chunks only around the
edits: from the old boundary at or before each edit until a cut of the new file lands on a
(shifted) old boundary again.

Why this equals chunking from scratch (see ``cairn.core.chunker`` for what a cut depends on):
FastCDC cuts a file left to right, and the chunk starting at a cut ``s`` depends only on the
bytes ``s .. s+length`` (the byte at the cut is hashed) and, within ``max`` of the end, on
where the data ends. Call old chunk ``j`` (bytes ``B[j] .. B[j+1]``) *clean* when no edit
touches the old bytes ``B[j] .. B[j+1]+1`` (closed; an insertion touches when it lands after
``B[j]`` and at or before ``B[j+1]+1``; an append at the old end touches the last chunks).
If the new file has a true cut at ``q`` where old byte ``B[j]`` now sits and chunk ``j`` is
clean, the new chunk at ``q`` sees the same bytes and, as far as it can tell, the same end of
data: pyfastcdc tests cut positions in pairs, so a cut at ``c`` is only found when byte
``c+1`` exists too, and that byte is untouched, so the data either ends where it did or at
least two bytes past the cut. Hence it is old chunk ``j`` again and ``q + len(j)`` is the
next true cut. Clean chunks in a run follow each other without gaps (an insertion between
two of them would touch the first), so the whole run is reused. Elsewhere this module runs
the real chunker from a true cut and accepts a cut only when it is final (found before the
end of the bytes read so far, at ``max``, or at the end of the data; see
``chunker.first_cut``), so those cuts are true by construction. Cut 0 is true, so by
induction every cut yielded is. (A test truncating a file one byte past a cut shows that the
``+1`` is needed.)

Work: each edit costs the bytes from the start of the first chunk it dirties (at most
``max + 1`` before it) through the edit, to the first new cut that lands on an old boundary
(on non-degenerate data usually the first or second cut past the edit), plus at most
``max/4`` read ahead. Low-entropy data (e.g. long runs of zeros, where every chunk is ``max``
long) may not realign after an insertion that is not a multiple of ``max``; the result is
still correct, it just costs the rest of the file.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate

from .chunker import DEFAULT, Params, first_cut
from .errors import InvalidArgument

Reader = Callable[[int, int], bytes]
"""``read(offset, length)`` returns exactly ``length`` bytes of the new file at ``offset``.

Calls come in ascending order and never read a byte twice, each for at most
``max_size // 4`` bytes (1 MiB with the format's parameters): a reader that decodes whole
stored chunks should keep the last one it decoded."""


@dataclass(frozen=True)
class Edit:
    """Old bytes ``[offset, offset + old_len)`` replaced by ``new_len`` new bytes.

    Overwrite: ``old_len == new_len``; insert: ``old_len == 0``; delete: ``new_len == 0``;
    append: insert at the old size; truncate: delete of the tail.
    """

    offset: int
    old_len: int
    new_len: int


@dataclass(frozen=True)
class Piece:
    """One chunk of the new file: reused old chunk ``old_index``, or new with its ``data``."""

    offset: int
    length: int
    old_index: int | None = None
    data: bytes | None = None

    @property
    def reused(self) -> bool:
        return self.old_index is not None


def rechunk(
    old_lengths: Sequence[int],
    edits: Iterable[Edit],
    new_size: int,
    read: Reader,
    params: Params = DEFAULT,
) -> Iterator[Piece]:
    """Yield the chunks of the new file in order (see the module docstring for the contract).

    ``edits`` may come in any order but must not overlap (two insertions at the same offset
    count as overlapping); ``new_size`` must equal the old size plus the edits' growth.
    Inputs are checked before anything is read: violations raise ``InvalidArgument``, as
    does a reader that returns the wrong number of bytes. New pieces carry their bytes, so a
    caller that keeps every piece keeps the re-chunked bytes in memory.

    What the result relies on: each old chunk that no edit touches is the chunk ``params``
    cut from its own start in the old content (true of every chunk of a Cairn blocklist's
    data run). Pieces that are not (e.g. placeholders for a filled hole or a chunk cut short)
    are fine when an edit covers them: they are never reused. Otherwise the pieces still tile
    the new file and reused pieces hold the bytes their old chunk held, but the cuts may not
    be canonical.
    """
    plan = _Plan(old_lengths, edits, new_size, params)
    return plan.run(read)


def edits_for_writes(
    old_size: int, new_size: int, written: Iterable[tuple[int, int]]
) -> list[Edit]:
    """The edits of a file changed in place (POSIX writes and truncates, no insertions).

    ``written`` holds ``(offset, length)`` ranges of the new file written since the old
    version, in any order, overlapping or not. Bytes past the old size are an append, bytes
    cut off a truncate; ranges written inside the shorter of the two sizes are overwrites.
    A file that was truncated and grown again must report the range it zero-filled as written.
    """
    if old_size < 0 or new_size < 0:
        raise InvalidArgument("file sizes must be >= 0")
    common = min(old_size, new_size)
    spans = sorted(
        (max(o, 0), min(o + n, common)) for o, n in written if n > 0 and o < common and o + n > 0
    )
    edits: list[Edit] = []
    start, end = -1, -1
    for a, b in spans:
        if a > end:  # a gap: close the current run
            if end > start:
                edits.append(Edit(start, end - start, end - start))
            start = a
        end = max(end, b)
    if end > start >= 0:
        edits.append(Edit(start, end - start, end - start))
    if new_size > old_size:
        edits.append(Edit(old_size, 0, new_size - old_size))
    elif new_size < old_size:
        edits.append(Edit(new_size, old_size - new_size, 0))
    return edits


class _Plan:
    def __init__(
        self, old_lengths: Sequence[int], edits: Iterable[Edit], new_size: int, params: Params
    ) -> None:
        if any(not isinstance(n, int) or n <= 0 for n in old_lengths):
            raise InvalidArgument("old chunk lengths must be positive integers")
        self.params = params
        self.lengths = list(old_lengths)
        self.bounds = [0, *accumulate(self.lengths)]
        self.n = len(self.lengths)
        old_size = self.bounds[-1]
        self.edits = _check_edits(edits, old_size)
        deltas = [0, *accumulate(e.new_len - e.old_len for e in self.edits)]
        if new_size != old_size + deltas[-1]:
            raise InvalidArgument(
                f"new size {new_size} does not match old size {old_size} plus the edits"
            )
        self.new_size = new_size
        self.delta = deltas  # delta[k]: growth from the first k edits
        self.old_ends = [e.offset + e.old_len for e in self.edits]
        self.new_ends = [e.offset + e.old_len + deltas[k + 1] for k, e in enumerate(self.edits)]
        self.dirty_lo, self.dirty_hi = self._dirty_ranges()
        self._carry = bytearray()  # new-file bytes read past the last re-chunked region
        self._carry_base = 0

    # --- coordinates ----------------------------------------------------------------------

    def to_new(self, p: int) -> int:
        """New offset of old byte ``p`` (which no edit touches)."""
        return p + self.delta[bisect_right(self.old_ends, p)]

    def to_old(self, q: int) -> int | None:
        """Old offset of the byte at new offset ``q``, or None if an edit wrote it."""
        k = bisect_right(self.new_ends, q)
        p = q - self.delta[k]
        if k < len(self.edits) and p >= self.edits[k].offset:
            return None
        return p

    # --- which old chunks an edit may change ----------------------------------------------

    def _dirty_ranges(self) -> tuple[list[int], list[int]]:
        ranges: list[tuple[int, int]] = []
        b = self.bounds
        for e in self.edits:
            # chunk j is touched when B[j] < offset + old_len and B[j+1] + 1 >= offset
            lo = bisect_left(b, e.offset - 1, 1) - 1
            hi = min(bisect_left(b, e.offset + e.old_len) - 1, self.n - 1)
            if lo <= hi:
                if ranges and lo <= ranges[-1][1] + 1:
                    ranges[-1] = (ranges[-1][0], max(hi, ranges[-1][1]))
                else:
                    ranges.append((lo, hi))
        return [r[0] for r in ranges], [r[1] for r in ranges]

    def is_clean(self, j: int) -> bool:
        i = bisect_right(self.dirty_lo, j) - 1
        return i < 0 or j > self.dirty_hi[i]

    def next_dirty(self, j: int) -> int:
        """The first dirty chunk index >= j, or n."""
        i = bisect_right(self.dirty_lo, j) - 1
        if i >= 0 and j <= self.dirty_hi[i]:
            return j
        return self.dirty_lo[i + 1] if i + 1 < len(self.dirty_lo) else self.n

    # --- the walk ---------------------------------------------------------------------------

    def run(self, read: Reader) -> Iterator[Piece]:
        q, j = 0, 0
        while q < self.new_size:
            if j < self.n and self.is_clean(j) and self.to_new(self.bounds[j]) == q:
                stop = self.next_dirty(j)
                for k in range(j, stop):
                    yield Piece(q, self.lengths[k], old_index=k)
                    q += self.lengths[k]
                j = stop
                continue
            q, j = yield from self._chunk_from(q, read)

    def _resync(self, q: int) -> int | None:
        """Index of the clean old chunk that starts where new offset ``q`` is, if any."""
        p = self.to_old(q)
        if p is None:
            return None
        j = bisect_left(self.bounds, p)
        if j < self.n and self.bounds[j] == p and self.is_clean(j):
            return j
        return None

    def _chunk_from(self, q: int, read: Reader) -> Generator[Piece, None, tuple[int, int]]:
        """Chunk the new file from true cut ``q`` until a cut meets a clean old chunk."""
        cutter = self.params.cutter()
        max_size = self.params.max_size
        step = max(max_size // 4, 1)
        # Bytes read ahead past the previous region's end are kept: the next region may start
        # within them (edits closer than a read step), and reading them twice would be waste.
        buf, base = self._carry, self._carry_base  # base: new offset of buf[0]
        if base <= q <= base + len(buf):
            del buf[: q - base]
        else:
            buf.clear()
        base = q
        while True:
            end = base + len(buf)
            with memoryview(buf) as view:
                length = first_cut(cutter, view[q - base :], end == self.new_size, max_size)
                data = bytes(view[q - base : q - base + length]) if length else b""
            if length is None:
                want = min(step, self.new_size - end)
                got = read(end, want)
                if len(got) != want:
                    raise InvalidArgument(
                        f"reader returned {len(got)} bytes at {end}, expected {want}"
                    )
                buf += got
                continue
            yield Piece(q, length, data=data)
            q += length
            del buf[: q - base]
            base = q
            if q == self.new_size:
                return q, self.n
            j = self._resync(q)
            if j is not None:
                self._carry_base = base
                return q, j


def _check_edits(edits: Iterable[Edit], old_size: int) -> list[Edit]:
    out: list[Edit] = []
    for e in edits:
        if not all(isinstance(v, int) and v >= 0 for v in (e.offset, e.old_len, e.new_len)):
            raise InvalidArgument(f"edit {e} has a negative or non-integer field")
        if e.offset + e.old_len > old_size:
            raise InvalidArgument(f"edit {e} reaches past the old size {old_size}")
        if e.old_len or e.new_len:
            out.append(e)
    out.sort(key=lambda e: (e.offset, e.old_len))
    for a, b in zip(out, out[1:], strict=False):
        if a.offset + a.old_len > b.offset or (
            a.offset == b.offset and a.old_len == 0 == b.old_len
        ):
            raise InvalidArgument(f"edits {a} and {b} overlap")
    return out
