"""The chunk batch layout: round trips, and every framing fault refused before any record."""

from __future__ import annotations

import os
import struct

import pytest

from cairn.core import chunkbatch
from cairn.core.errors import FormatError, TooLarge


def _records(n: int) -> list[tuple[bytes, bytes]]:
    return [(os.urandom(32), os.urandom(1 + i * 7)) for i in range(n)]


def test_round_trip_and_size() -> None:
    recs = _records(50)
    body = chunkbatch.encode(recs)
    assert len(body) == chunkbatch.encoded_size([len(f) for _, f in recs])
    assert [(c, bytes(f)) for c, f in chunkbatch.decode(body)] == recs


def test_encode_refuses_what_decode_would() -> None:
    for bad in ([], _records(chunkbatch.MAX_RECORDS + 1), [(b"short", b"x")], [(bytes(32), b"")]):
        with pytest.raises(ValueError):
            chunkbatch.encode(bad)


def test_decode_refuses_every_framing_fault() -> None:
    body = chunkbatch.encode(_records(3))
    faults = [b"", body[:5], b"CRNX" + body[4:], body[:4] + b"\x02" + body[5:], body[:-1],
              body + b"\x00", struct.pack(">4sBI", b"CRNB", 1, 0)]  # fmt: skip
    for bad in faults:
        with pytest.raises(FormatError):
            chunkbatch.decode(bad)
    with pytest.raises(TooLarge):
        chunkbatch.decode(body, max_records=2)
