"""The chunk batch: many chunk uploads in one request body (``POST /api/v1/chunks/batch``).

Uploading 10,000 small files one ``PUT chunks/{id}`` each costs 10,000 requests; a batch
carries a few hundred of them at once. The drive encodes, the server decodes; this module is
the one definition of the byte layout (docs/api.md, "Chunks"). All integers big-endian::

    0   4  magic  b"CRNB"
    4   1  version (1)
    5   4  record count N (1 .. MAX_RECORDS)
    9      N records, back to back:
           0   32  chunk id (raw bytes)
           32   4  frame length L (1 .. MAX_FRAME)
           36   L  the plain frame, exactly as ``PUT chunks/{id}`` takes it (core/frame.py)

Nothing may follow the last record. The layout only frames records: whether each frame
matches its id is checked by the receiver, record by record, like a single upload.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from .errors import FormatError, TooLarge
from .frame import HEADER_SIZE, MAX_PLAIN, NONCE_SIZE, TAG_SIZE

MAGIC = b"CRNB"
VERSION = 1
MAX_RECORDS = 1024
# The largest frame a record may carry: a full-size chunk stored raw and encrypted, plus
# headroom for a zstd frame that failed to shrink (the frame codec then stores it raw).
MAX_FRAME = MAX_PLAIN + HEADER_SIZE + NONCE_SIZE + TAG_SIZE + 1024
ID_SIZE = 32

_HEAD = struct.Struct(">4sBI")
_RECORD = struct.Struct(">32sI")
HEAD_SIZE = _HEAD.size  # 9
RECORD_OVERHEAD = _RECORD.size  # 36


def encoded_size(frame_sizes: Sequence[int]) -> int:
    """Bytes of the body ``encode`` builds for frames of these sizes."""
    return HEAD_SIZE + sum(RECORD_OVERHEAD + n for n in frame_sizes)


def encode(records: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The body for ``records`` of ``(chunk id, plain frame)``; ``ValueError`` if a record
    breaks the layout's bounds (a bug of the caller, not bad input)."""
    if not 1 <= len(records) <= MAX_RECORDS:
        raise ValueError(f"a chunk batch holds 1..{MAX_RECORDS} records, not {len(records)}")
    parts = [_HEAD.pack(MAGIC, VERSION, len(records))]
    for cid, frame in records:
        if len(cid) != ID_SIZE or not 1 <= len(frame) <= MAX_FRAME:
            raise ValueError("a chunk batch record needs a 32-byte id and a 1..MAX_FRAME frame")
        parts.append(_RECORD.pack(cid, len(frame)))
        parts.append(frame)
    return b"".join(parts)


def decode(
    body: bytes | memoryview, max_records: int = MAX_RECORDS
) -> list[tuple[bytes, memoryview]]:
    """The ``(chunk id, frame)`` records of ``body``, in order; frames are views into it.

    Checks the framing only. Raises ``FormatError`` for anything malformed (wrong magic or
    version, truncated, a zero or oversized length, trailing bytes) and ``TooLarge`` for more
    than ``max_records`` records, so no record is looked at before the whole body is known
    to be well formed.
    """
    view = memoryview(body)
    if len(view) < HEAD_SIZE:
        raise FormatError("chunk batch is shorter than its header")
    magic, version, count = _HEAD.unpack_from(view)
    if magic != MAGIC:
        raise FormatError("not a chunk batch (bad magic)")
    if version != VERSION:
        raise FormatError(f"unknown chunk batch version {version}")
    if count < 1:
        raise FormatError("a chunk batch holds at least one record")
    if count > max_records:
        raise TooLarge(f"a chunk batch holds at most {max_records} records")
    out: list[tuple[bytes, memoryview]] = []
    pos = HEAD_SIZE
    end = len(view)
    for i in range(count):
        if end - pos < RECORD_OVERHEAD:
            raise FormatError(f"chunk batch truncated in the header of record {i}")
        cid, length = _RECORD.unpack_from(view, pos)
        pos += RECORD_OVERHEAD
        if not 1 <= length <= MAX_FRAME:
            raise FormatError(f"record {i} of the chunk batch has an invalid length {length}")
        if end - pos < length:
            raise FormatError(f"chunk batch truncated in the frame of record {i}")
        out.append((cid, view[pos : pos + length]))
        pos += length
    if pos != end:
        raise FormatError(f"{end - pos} bytes follow the last record of the chunk batch")
    return out
