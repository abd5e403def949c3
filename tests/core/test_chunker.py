"""FastCDC chunking: determinism, coverage, bounds, locality of edits, streaming == buffer."""

from __future__ import annotations

import io
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cairn.core import chunker
from cairn.core.chunker import TINY, StreamChunker, chunk_buffer, chunk_file

MiB = 1024 * 1024


def _rand(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


# Data worth chunking at the TINY parameters: random, runs of zeros, a short repeated pattern
# (periodic data cuts at max or at the period), and mixtures of them.
def _piece() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.builds(_rand, st.integers(0, 2**32), st.integers(0, 6000)),
        st.integers(0, 3000).map(bytes),
        st.tuples(st.binary(min_size=1, max_size=40), st.integers(1, 200)).map(
            lambda t: t[0] * t[1]
        ),
    )


data_st = st.lists(_piece(), max_size=4).map(b"".join)


def _spans(data: bytes) -> list[tuple[int, int]]:
    return list(chunk_buffer(data, TINY))


@settings(deadline=None)  # no timing assertions; the machine is shared
@given(data_st)
def test_chunks_tile_the_input_and_respect_bounds(data: bytes) -> None:
    spans = _spans(data)
    assert b"".join(data[o : o + n] for o, n in spans) == data
    pos = 0
    for i, (o, n) in enumerate(spans):
        assert o == pos and n > 0
        pos += n
        assert n <= TINY.max_size
        if i < len(spans) - 1:
            assert n >= TINY.min_size  # only the last chunk may be short
    assert pos == len(data)


@settings(deadline=None)  # no timing assertions; the machine is shared
@given(data_st)
def test_chunking_is_deterministic(data: bytes) -> None:
    assert _spans(data) == _spans(bytes(data)) == list(chunk_buffer(bytearray(data), TINY))


@settings(deadline=None)  # no timing assertions; the machine is shared
@given(data_st, st.lists(st.integers(1, 5000), min_size=1, max_size=30))
def test_streaming_equals_buffer_whatever_the_feed_sizes(data: bytes, sizes: list[int]) -> None:
    sc = StreamChunker(TINY)
    got: list[tuple[int, int]] = []
    pos, i = 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        got += sc.feed(memoryview(data)[pos : pos + n])
        pos, i = pos + n, i + 1
        # never holds much more than one max-size window plus the last piece fed
        assert sc.total - sc.offset < TINY.max_size + n
    got += sc.finish()
    assert got == _spans(data)
    assert sc.offset == len(data)


@settings(deadline=None)  # no timing assertions; the machine is shared
@given(data_st, st.integers(1, 3000))
def test_stream_with_data_returns_the_chunk_bytes(data: bytes, step: int) -> None:
    sc = StreamChunker(TINY)
    got: list[tuple[int, bytes]] = []
    for pos in range(0, len(data), step):
        got += sc.feed_data(data[pos : pos + step])
    got += sc.finish_data()
    assert [(o, len(b)) for o, b in got] == _spans(data)
    assert all(data[o : o + len(b)] == b for o, b in got)


@pytest.mark.parametrize("n", [1, TINY.min_size - 1, TINY.min_size, TINY.min_size + 1,
                               2 * TINY.min_size + 1])  # fmt: skip
def test_short_streams_cut_as_a_buffer_does(n: int) -> None:
    """A stream of at most min_size bytes is one chunk (a shortcut without a scan); one
    byte more goes through the scan: both agree with chunk_buffer."""
    data = _rand(n, n)
    sc = StreamChunker(TINY)
    got = sc.feed_data(data) + sc.finish_data()
    assert [(o, len(b)) for o, b in got] == _spans(data)
    assert b"".join(b for _, b in got) == data


def test_stream_refuses_use_after_finish() -> None:
    sc = StreamChunker(TINY)
    sc.feed(b"abc")
    assert sc.finish() == [(0, 3)]
    with pytest.raises(ValueError):
        sc.feed(b"more")


def test_empty_input_has_no_chunks() -> None:
    assert _spans(b"") == []
    assert StreamChunker(TINY).finish() == []
    assert list(chunk_file(io.BytesIO(b""))) == []


@settings(deadline=None)  # no timing assertions; the machine is shared
@given(data_st)
def test_chunk_file_equals_buffer(data: bytes) -> None:
    assert list(chunk_file(io.BytesIO(data), TINY)) == _spans(data)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32), st.integers(40_000, 100_000), st.integers(0, 300))
def test_edit_changes_only_nearby_boundaries(seed: int, size: int, ins: int) -> None:
    """Inserting bytes in the middle leaves the cuts well before and well after it alone."""
    data = _rand(seed, size)
    at = size // 2
    edited = data[:at] + _rand(seed + 1, ins) + data[at:]
    old = _spans(data)
    new = _spans(edited)
    far = 6 * TINY.max_size
    before_old = [s for s in old if s[0] + s[1] < at - far]
    before_new = [s for s in new if s[0] + s[1] < at - far]
    assert before_old == before_new
    after_old = {o + ins for o, _ in old if o > at + far}
    after_new = {o for o, _ in new if o > at + ins + far}
    assert after_old == after_new


def test_production_parameters_on_a_few_mib() -> None:
    data = _rand(7, 12 * MiB)
    spans = list(chunk_buffer(data))
    assert b"".join(data[o : o + n] for o, n in spans) == data
    lengths = [n for _, n in spans]
    assert all(chunker.MIN_SIZE <= n <= chunker.MAX_SIZE for n in lengths[:-1])
    # effective average near 1 MiB (12 MiB of random data gives a handful of chunks)
    assert 4 <= len(spans) <= 40
    sc = StreamChunker()
    got = []
    for pos in range(0, len(data), 128 * 1024):  # FUSE-sized writes
        got += sc.feed(data[pos : pos + 128 * 1024])
    assert got + sc.finish() == spans
    assert list(chunk_file(io.BytesIO(data))) == spans


def test_parameters_are_the_documented_ones() -> None:
    p = chunker.DEFAULT
    assert (p.min_size, p.fastcdc_avg_size, p.max_size) == (256 * 1024, 768 * 1024, 4 * MiB)
    assert (p.normalization, p.seed) == (1, 0)
    # Pin the cut points themselves: a change here is a format change (docs/format.md).
    spans = list(chunk_buffer(_rand(2026, 6 * MiB)))
    assert [n for _, n in spans] == PINNED_LENGTHS


PINNED_LENGTHS = [873887, 861289, 1294895, 1281340, 756061, 899956, 324028]
