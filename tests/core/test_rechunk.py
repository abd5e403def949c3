"""Incremental re-chunking equals chunking from scratch, and reads only near the edits."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cairn.core.chunker import DEFAULT, TINY, Params, chunk_buffer
from cairn.core.errors import InvalidArgument
from cairn.core.rechunk import Edit, Piece, edits_for_writes, rechunk

MiB = 1024 * 1024


def _rand(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


@dataclass
class CountingReader:
    """The new file's bytes, counting what re-chunking reads."""

    data: bytes
    bytes_read: int = 0
    calls: list[tuple[int, int]] = field(default_factory=list)

    def __call__(self, offset: int, length: int) -> bytes:
        self.calls.append((offset, length))
        self.bytes_read += length
        return self.data[offset : offset + length]


def apply_edits(old: bytes, edits: list[Edit], fill: bytes) -> bytes:
    """The new file: ``edits`` (sorted, non-overlapping) applied to ``old``."""
    out, pos, used = [], 0, 0
    for e in edits:
        out += [old[pos : e.offset], fill[used : used + e.new_len]]
        used += e.new_len
        pos = e.offset + e.old_len
    out.append(old[pos:])
    return b"".join(out)


@st.composite
def edit_lists(draw: st.DrawFn, size: int, max_edits: int = 6) -> list[Edit]:
    """Random insert / delete / overwrite / replace / append / truncate edits on ``size`` bytes."""
    n = draw(st.integers(0, max_edits))
    cuts = sorted(draw(st.lists(st.integers(0, size), min_size=2 * n, max_size=2 * n)))
    edits: list[Edit] = []
    for i in range(n):
        a, b = cuts[2 * i], cuts[2 * i + 1]
        kind = draw(st.sampled_from(["insert", "delete", "overwrite", "replace"]))
        if kind == "insert":
            b = a
        if edits and edits[-1].offset == a and edits[-1].old_len == 0 and a == b:
            continue  # two insertions at one offset are one insertion
        if kind == "insert":
            new_len = draw(st.integers(1, 700))
        elif kind == "delete":
            new_len = 0
        elif kind == "overwrite":
            new_len = b - a
        else:
            new_len = draw(st.integers(0, 700))
        edits.append(Edit(a, b - a, new_len))
    tail = draw(st.sampled_from(["none", "append", "truncate"]))
    end = edits[-1].offset + edits[-1].old_len if edits else 0
    if tail == "append" and not (edits and edits[-1].offset == size and edits[-1].old_len == 0):
        edits.append(Edit(size, 0, draw(st.integers(1, 3000))))
    elif tail == "truncate" and end < size:
        cut = draw(st.integers(end, size - 1))
        edits.append(Edit(cut, size - cut, 0))
    return edits


def _check(old: bytes, edits: list[Edit], fill: bytes, params: Params) -> CountingReader:
    """Run rechunk and assert it matches chunking from scratch; return the reader."""
    new = apply_edits(old, edits, fill)
    old_spans = list(chunk_buffer(old, params))
    reader = CountingReader(new)
    shuffled = list(edits)
    random.Random(len(edits)).shuffle(shuffled)  # order of edits does not matter
    pieces = list(rechunk([n for _, n in old_spans], shuffled, len(new), reader, params))
    assert [(p.offset, p.length) for p in pieces] == list(chunk_buffer(new, params))
    for p in pieces:
        chunk = new[p.offset : p.offset + p.length]
        if p.old_index is not None:
            o, n = old_spans[p.old_index]
            assert old[o : o + n] == chunk and p.data is None
        else:
            assert p.data == chunk
    # the documented call pattern: ascending, non-overlapping, at most max/4 per call
    assert all(a[0] + a[1] <= b[0] for a, b in zip(reader.calls, reader.calls[1:], strict=False))
    assert all(0 < n <= params.max_size // 4 for _, n in reader.calls)
    return reader


def _budget(edits: list[Edit], params: Params) -> int:
    return sum(e.new_len for e in edits) + (2 * len(edits) + 2) * params.max_size


# Files of random bytes, runs of zeros, and periodic patterns (which defeat CDC resync).
def _file(draw: st.DrawFn) -> bytes:
    parts = draw(
        st.lists(
            st.one_of(
                st.builds(_rand, st.integers(0, 2**32), st.integers(0, 8000)),
                st.integers(0, 3000).map(bytes),
                st.tuples(st.binary(min_size=1, max_size=30), st.integers(1, 100)).map(
                    lambda t: t[0] * t[1]
                ),
            ),
            max_size=4,
        )
    )
    return b"".join(parts)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_equals_chunking_from_scratch(data: st.DataObject) -> None:
    old = _file(data.draw)
    edits = data.draw(edit_lists(len(old)))
    fill = _rand(data.draw(st.integers(0, 2**32)), sum(e.new_len for e in edits))
    _check(old, edits, fill, TINY)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32), st.integers(0, 40_000), st.data())
def test_work_is_proportional_to_the_edits(seed: int, size: int, data: st.DataObject) -> None:
    """On random (CDC-friendly) data, bytes read stay within edits + (2 x edits + 2) x max."""
    old = _rand(seed, size)
    edits = data.draw(edit_lists(size))
    fill = _rand(seed + 1, sum(e.new_len for e in edits))
    reader = _check(old, edits, fill, TINY)
    assert reader.bytes_read <= _budget(edits, TINY)
    if not edits:
        assert reader.bytes_read == 0


def test_no_edits_reuses_every_chunk_without_reading() -> None:
    old = _rand(1, 30_000)
    lengths = [n for _, n in chunk_buffer(old, TINY)]
    reader = CountingReader(old)
    pieces = list(rechunk(lengths, [], len(old), reader, TINY))
    assert [p.old_index for p in pieces] == list(range(len(lengths)))
    assert reader.calls == []


def test_from_and_to_empty_file() -> None:
    new = _rand(2, 5000)
    _check(b"", [Edit(0, 0, len(new))], new, TINY)
    _check(new, [Edit(0, len(new), 0)], b"", TINY)
    assert list(rechunk([], [], 0, CountingReader(b""), TINY)) == []


def test_insert_at_start_of_file_realigns() -> None:
    old = _rand(3, 50_000)
    reader = _check(old, [Edit(0, 0, 10)], b"x" * 10, TINY)
    assert reader.bytes_read <= 10 + 3 * TINY.max_size


def test_small_edit_in_large_file_at_production_parameters() -> None:
    old = _rand(4, 24 * MiB)
    edits = [Edit(10 * MiB + 12345, 100, 4000), Edit(20 * MiB, 0, 1)]
    fill = _rand(5, 4001)
    reader = _check(old, edits, fill, DEFAULT)
    assert reader.bytes_read <= _budget(edits, DEFAULT)
    new = apply_edits(old, edits, fill)
    pieces = list(rechunk([n for _, n in chunk_buffer(old)], edits, len(new), CountingReader(new)))
    assert sum(p.reused for p in pieces) >= len(pieces) - 6


def test_low_entropy_file_is_still_correct() -> None:
    """Zeros cut at every max: an insertion never realigns, so the tail is re-chunked."""
    old = bytes(20_000)
    reader = _check(old, [Edit(100, 0, 7)], bytes(7), TINY)
    assert reader.bytes_read >= 20_000 - TINY.max_size


@pytest.mark.parametrize(
    "edits, new_size, why",
    [
        ([Edit(0, 10, 10), Edit(5, 10, 10)], 1000, "overlap"),
        ([Edit(50, 0, 1), Edit(50, 0, 2)], 1003, "overlap"),
        ([Edit(995, 10, 10)], 1000, "past the old size"),
        ([Edit(-1, 0, 1)], 1001, "negative"),
        ([Edit(0, 0, 5)], 1000, "does not match"),
    ],
)
def test_bad_input_is_rejected_before_reading(edits: list[Edit], new_size: int, why: str) -> None:
    reader = CountingReader(bytes(2000))
    with pytest.raises(InvalidArgument, match=why):
        rechunk([500, 500], edits, new_size, reader, TINY)
    assert reader.calls == []


def test_bad_old_lengths_are_rejected() -> None:
    with pytest.raises(InvalidArgument):
        rechunk([500, 0], [], 500, CountingReader(b""), TINY)


def test_short_reader_is_a_typed_error() -> None:
    old = _rand(6, 5000)
    lengths = [n for _, n in chunk_buffer(old, TINY)]
    with pytest.raises(InvalidArgument, match="reader returned"):
        list(rechunk(lengths, [Edit(100, 0, 50)], 5050, lambda o, n: b"short", TINY))


def test_piece_reports_reuse() -> None:
    assert Piece(0, 5, old_index=3).reused and not Piece(0, 5, data=b"abcde").reused


def test_truncating_one_byte_past_a_cut_rechunks_the_chunk_before() -> None:
    """A cut at an even offset c is found only when two bytes follow it (pyfastcdc scans in
    pairs), so cutting the file to end one byte after a boundary changes the chunk before."""
    old = _rand(8, 40_000)
    spans = list(chunk_buffer(old, TINY))
    o, n = next(s for s in spans[:-1] if s[1] % 2 == 0)
    keep = o + n + 1
    edits = [Edit(keep, len(old) - keep, 0)]
    _check(old, edits, b"", TINY)
    assert list(chunk_buffer(old[:keep], TINY))[-1] != (o, n)  # the case is real


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 2**32),
    st.integers(0, 30_000),
    st.integers(0, 30_000),
    st.lists(st.tuples(st.integers(-100, 31_000), st.integers(0, 3000)), max_size=8),
)
def test_writes_and_truncates_of_a_file_in_place(
    seed: int, old_size: int, new_size: int, writes: list[tuple[int, int]]
) -> None:
    """A file changed by writes and a size change, as the drive sees it."""
    old = _rand(seed, old_size)
    new = bytearray(old[:new_size].ljust(new_size, b"\0"))
    rng = random.Random(seed + 1)
    written = []
    for o, n in writes:
        o, end = max(o, 0), min(o + n, new_size)
        if o < end:
            new[o:end] = rng.randbytes(end - o)
            written.append((o, end - o))
    edits = edits_for_writes(old_size, new_size, written)
    assert apply_edits(old, edits, _fill_from(bytes(new), edits)) == new
    reader = _check(old, edits, _fill_from(bytes(new), edits), TINY)
    assert reader.bytes_read <= _budget(edits, TINY)


def _fill_from(new: bytes, edits: list[Edit]) -> bytes:
    """The replacement bytes of ``edits`` (sorted, in old coordinates) taken from ``new``."""
    out, shift = [], 0
    for e in edits:
        out.append(new[e.offset + shift : e.offset + shift + e.new_len])
        shift += e.new_len - e.old_len
    return b"".join(out)


def test_edits_for_writes_merges_and_clips() -> None:
    assert edits_for_writes(100, 100, [(10, 5), (12, 10), (22, 3), (90, 50)]) == [
        Edit(10, 15, 15),
        Edit(90, 10, 10),
    ]
    assert edits_for_writes(100, 150, [(95, 10)]) == [Edit(95, 5, 5), Edit(100, 0, 50)]
    assert edits_for_writes(100, 40, [(30, 50)]) == [Edit(30, 10, 10), Edit(40, 60, 0)]
    assert edits_for_writes(0, 0, [(0, 10)]) == []
    with pytest.raises(InvalidArgument):
        edits_for_writes(-1, 0, [])
