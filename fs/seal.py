"""Sealing: turning a ``FileContent``'s staged edits into the file's new blocklist.

``compute(content, ...)`` (blocking; run it on a worker thread) returns the new blocklist
entries and the ids of the chunks it framed into the cache (dirty). It equals chunking the
new content from scratch: content-defined chunking runs over each run of data between holes
on its own (docs/api.md), and inside a run that has edits ``cairn.core.rechunk`` re-chunks
only from the old boundary before each edit until a cut lands on an old boundary again.
Runs without edits keep their entries as they are, so a small edit in a huge file costs
O(edit + chunk) bytes of chunking, plus O(entries) list work.

The new file's data runs are the old data below ``base_len`` plus the staged extents; the
rest up to ``size`` is holes. Within one run, the pieces rechunk sees as "old chunks" are
the old data entries, plus pseudo-entries (an old hole being filled, a chunk cut short by a
truncate, the region past the old end) that are always marked edited, so only real old
chunks can be reused.

The caller installs the result (``FileContent.install``) and writes blocklist, attributes
and the outbox ``update`` in one batch (``fs/ops.py``).
"""

from __future__ import annotations

from cairn.core import ids
from cairn.core.chunker import Params
from cairn.core.rechunk import Edit, rechunk
from cairn.core.wire import Entry

from .blocks import merge_holes
from .cache import ChunkCache
from .staging import FileContent, GetChunk


def _union(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(intervals):
        if e <= s:
            continue
        if out and s <= out[-1][1]:
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def data_runs(content: FileContent) -> list[tuple[int, int]]:
    """The maximal ``[start, end)`` ranges of the new content that hold data."""
    old: list[tuple[int, int]] = []
    base = content.base
    for (cid, _), s, e in zip(base.entries, base.starts, base.starts[1:], strict=False):
        if s >= content.base_len:
            break
        if cid is not None:
            if old and old[-1][1] == s:
                old[-1] = (old[-1][0], min(e, content.base_len))
            else:
                old.append((s, min(e, content.base_len)))
    return _union(old + list(content.extents))


def _segments(
    content: FileContent, a: int, b: int
) -> tuple[list[tuple[int, int, int]], list[Edit]]:
    """Pieces of run ``[a, b)``: ``(offset, length, old entry index or -1)`` and the edits
    (relative to ``a``) that rechunk must treat as changed."""
    base, base_len = content.base, content.base_len
    segs: list[tuple[int, int, int]] = []
    dirty: list[tuple[int, int]] = []
    x = a
    while x < b:
        if x < base_len:
            j = base.locate(x)
            cid, length = base.entries[j]
            end = base.starts[j] + length
            if cid is not None and base.starts[j] == x and end <= base_len and end <= b:
                segs.append((x, length, j))
                x = end
                continue
            stop = min(end, base_len, b)
        else:
            stop = b
        if segs and segs[-1][2] == -1:
            segs[-1] = (segs[-1][0], stop - segs[-1][0], -1)
        else:
            segs.append((x, stop - x, -1))
        dirty.append((x, stop))
        x = stop
    dirty += content.extents.overlapping(a, b)
    edits = [Edit(s - a, e - s, e - s) for s, e in _union(dirty)]
    return segs, edits


def compute(content: FileContent, *, dedupe_key: bytes, cache: ChunkCache, params: Params,
            get_chunk: GetChunk) -> tuple[list[Entry], list[bytes]]:  # fmt: skip
    """The new blocklist of ``content`` and the ids of chunks newly put into the cache."""
    out: list[Entry] = []
    new: list[bytes] = []
    x = 0
    for a, b in data_runs(content):
        if a > x:
            out.append((None, a - x))
        segs, edits = _segments(content, a, b)
        if not edits:
            out.extend(content.base.entries[j] for _, _, j in segs)
        else:

            def read(off: int, n: int, a: int = a) -> bytes:
                return content.read(a + off, n, get_chunk)

            lengths = [n for _, n, _ in segs]
            for piece in rechunk(lengths, edits, b - a, read, params):
                if piece.old_index is not None:
                    j = segs[piece.old_index][2]
                    assert j >= 0, "rechunk reused an edited piece"
                    out.append(content.base.entries[j])
                else:
                    assert piece.data is not None
                    cid = ids.chunk_id(dedupe_key, piece.data)
                    cache.put(cid, piece.data)
                    new.append(cid)
                    out.append((cid, piece.length))
        x = b
    if content.size > x:
        out.append((None, content.size - x))
    return merge_holes(out), new


def from_scratch(layout: list[tuple[bytes | None, int]], dedupe_key: bytes,
                 params: Params) -> list[Entry]:  # fmt: skip
    """Reference chunking of a whole file given as ``(data | None for a hole, length)`` runs
    (tests compare seals against it)."""
    from cairn.core.chunker import chunk_buffer

    out: list[Entry] = []
    for data, n in layout:
        if data is None:
            out.append((None, n))
            continue
        for off, length in chunk_buffer(data, params):
            out.append((ids.chunk_id(dedupe_key, data[off : off + length]), length))
    return merge_holes(out)
