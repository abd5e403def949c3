"""Content-defined chunking (FastCDC) over buffers, streams of appended bytes and files.

The cut points are part of Cairn's format (two devices must cut the same file the same way
for dedupe to work), so the parameters below are fixed and documented in docs/format.md.
The cutting itself runs in pyfastcdc's compiled code (GB/s); this module only decides what
to hand it and when a cut is final.

What a cut depends on (pyfastcdc 0.3.x, ``_cut_gear``): scanning from a chunk start ``s``
over ``R`` remaining bytes, the chunk is all of ``R`` when ``R <= min``; otherwise the first
position ``c`` in ``[min, min(R, max))`` where the gear hash of bytes ``s..s+c`` (the byte at
``c`` included) matches the mask, or ``min(R, max)`` when none does. So a cut depends only on
the bytes since the previous cut (plus one), and on the end of data only when the end lies
within ``max`` bytes. Two consequences used here and in ``rechunk``:

* a chunk scanned from a buffer holding ``>= max`` bytes past its start (or reaching the end
  of the data) is final;
* a chunk that ends *before* the end of the buffer it was scanned in is final too (the scan
  found a hash cut, or hit ``max``), even when more data will follow.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from pyfastcdc import FastCDC

Buffer = bytes | bytearray | memoryview
Span = tuple[int, int]
"""A chunk as ``(offset, length)`` in the chunked data."""

KiB = 1024
MiB = 1024 * KiB

# The format's chunking parameters. pyfastcdc's effective average is about avg_size + min_size
# (cut-point skipping): ~1.1 MiB on random data with these. Normalization level 1 (as in
# fastcdc-rs) rather than 2: level 2 narrows the size spread a little but makes cuts after an
# insertion realign with the old ones about twice as late, which costs dedupe and re-chunking.
MIN_SIZE = 256 * KiB
AVG_SIZE = 1 * MiB
MAX_SIZE = 4 * MiB
FASTCDC_AVG_SIZE = 768 * KiB
FASTCDC_NORMALIZATION = 1
FASTCDC_SEED = 0

_READ_SIZE = 1 * MiB


@dataclass(frozen=True)
class Params:
    """The arguments handed to pyfastcdc. ``DEFAULT`` is the format's; others are for tests."""

    min_size: int
    fastcdc_avg_size: int
    max_size: int
    normalization: int = FASTCDC_NORMALIZATION
    seed: int = FASTCDC_SEED

    def cutter(self) -> FastCDC:
        """A fresh pyfastcdc cutter (they are not thread-safe; make one per use)."""
        return FastCDC(
            self.fastcdc_avg_size,
            min_size=self.min_size,
            max_size=self.max_size,
            normalized_chunking=self.normalization,  # type: ignore[arg-type]
            seed=self.seed,
        )


DEFAULT = Params(MIN_SIZE, FASTCDC_AVG_SIZE, MAX_SIZE)
# The format's parameters scaled down 2048 times (mean chunk ~560 B), for fast property tests.
TINY = Params(128, 384, 2048)


def chunk_buffer(buf: Buffer, params: Params = DEFAULT) -> Iterator[Span]:
    """Yield ``(offset, length)`` for each chunk of ``buf``, in order, covering all of it."""
    for c in params.cutter().cut_buf(buf):
        yield c.offset, c.length


def first_cut(cutter: FastCDC, view: memoryview, at_eof: bool, max_size: int) -> int | None:
    """Length of the chunk starting at ``view[0]``, or ``None`` if ``view`` is too short to know.

    ``at_eof`` says ``view`` runs to the end of the data. Used by ``rechunk``.
    """
    if not view:
        return None
    length: int = next(iter(cutter.cut_buf(view))).length
    if length < len(view) or length == max_size or at_eof:
        return length
    return None


class StreamChunker:
    """Chunk data that arrives as a sequence of appended buffers, without holding all of it.

    ``feed(data)`` returns the chunks that became final; ``finish()`` returns the rest. The
    chunks are exactly those ``chunk_buffer`` gives for the concatenation of everything fed,
    whatever the sizes of the pieces. At most about ``max_size`` bytes plus the last fed buffer
    are held. ``feed_data``/``finish_data`` do the same and also hand back each chunk's bytes
    (a copy), for callers that hash and frame chunks as they are cut.

    Not thread-safe: one writer at a time.
    """

    def __init__(self, params: Params = DEFAULT) -> None:
        self._params = params
        # made at the first scan: most streams are small files that never need one
        self._cutter: FastCDC | None = None
        self._min = params.min_size
        self._max = params.max_size
        self._pending = bytearray()
        self._start = 0  # offset of _pending[0] in the stream
        self._finished = False

    @property
    def offset(self) -> int:
        """Offset of the first byte not yet in a returned chunk."""
        return self._start

    @property
    def total(self) -> int:
        """Bytes fed so far."""
        return self._start + len(self._pending)

    def feed(self, data: Buffer) -> list[Span]:
        return [(off, n) for off, n, _ in self._cut(data, final=False, with_data=False)]

    def finish(self) -> list[Span]:
        return [(off, n) for off, n, _ in self._cut(b"", final=True, with_data=False)]

    def feed_data(self, data: Buffer) -> list[tuple[int, bytes]]:
        return [(off, d) for off, _, d in self._cut(data, final=False, with_data=True)]

    def finish_data(self) -> list[tuple[int, bytes]]:
        return [(off, d) for off, _, d in self._cut(b"", final=True, with_data=True)]

    def _cut(self, data: Buffer, *, final: bool, with_data: bool) -> list[tuple[int, int, bytes]]:
        if self._finished:
            raise ValueError("StreamChunker used after finish()")
        self._pending += data
        # Scan only once a whole max-size window is buffered: then every chunk but possibly
        # the last one found is final, and each byte is scanned about once, not once per feed.
        if not final and len(self._pending) < self._max:
            return []
        self._finished = final
        held = len(self._pending)
        if 0 < held <= self._min:
            # final here (held < max): one chunk of all of it, as a scan would find (see the
            # module docstring), without making a cutter or scanning
            out: list[tuple[int, int, bytes]] = [
                (self._start, held, bytes(self._pending) if with_data else b"")
            ]
            self._pending.clear()
            self._start += held
            return out
        out = []
        used = 0
        if self._cutter is None:
            self._cutter = self._params.cutter()
        # pyfastcdc's iterator and chunks hold exports of the buffer; gather plain values and
        # drop them before the bytearray is resized.
        spans = [(c.offset, c.length) for c in self._cutter.cut_buf(self._pending)]
        with memoryview(self._pending) as view:
            for off, length in spans:
                end = off + length
                if not final and end == len(view) and length < self._max:
                    break  # may still grow when more data arrives
                out.append((self._start + off, length, bytes(view[off:end]) if with_data else b""))
                used = end
        del self._pending[:used]
        self._start += used
        return out


class ReadInto(Protocol):
    """A binary file object (``open(path, "rb")``, ``io.BytesIO``, a socket file, ...)."""

    def readinto(self, b: memoryview, /) -> int | None: ...


def chunk_file(fileobj: ReadInto, params: Params = DEFAULT) -> Iterator[Span]:
    """Yield ``(offset, length)`` for each chunk of an open binary file, read sequentially.

    Holds at most about ``max_size`` plus one read buffer in memory.
    """
    sc = StreamChunker(params)
    buf = bytearray(_READ_SIZE)
    with memoryview(buf) as view:
        while n := fileobj.readinto(view):
            yield from sc.feed(view[:n])
    yield from sc.finish()
