"""``POST /api/v1/chunks/batch``: many uploads per request, each verified like a single PUT;
malformed or oversized bodies refused whole with a JSON 4xx and nothing stored."""

from __future__ import annotations

import os
import struct
import urllib.request

import pytest

from cairn.core import chunkbatch, frame, ids
from tests.server.helpers import login
from tests.support.server import api_client

BATCH = "/api/v1/chunks/batch"
LIMIT = 256 * 1024  # limits.chunk_body of this module's server


@pytest.fixture(scope="module")
def srv(module_server_factory):  # type: ignore[no-untyped-def]
    s = module_server_factory(config={"limits": {"chunk_body": LIMIT}})
    s.add_user("alice", "a")
    s.add_user("bob", "b")
    return s


def _chunk(key: bytes, data: bytes) -> tuple[bytes, bytes]:
    cid = ids.chunk_id(key, data)
    return cid, frame.encode(cid, data)


def _bytes_in(srv) -> float:  # type: ignore[no-untyped-def]
    with urllib.request.urlopen(srv.url + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("cairn_chunk_bytes_in_total "):
                return float(line.split()[1])
    raise AssertionError("no cairn_chunk_bytes_in_total on /metrics")


def _missing(session, cids: list[bytes]) -> list[str]:  # type: ignore[no-untyped-def]
    r = session.http.post("/api/v1/chunks/missing", json={"ids": [c.hex() for c in cids]})
    assert r.status_code == 200, r.text
    return r.json()["missing"]  # type: ignore[no-any-return]


def test_batch_stores_every_chunk_once_and_serves_it(srv) -> None:  # type: ignore[no-untyped-def]
    a = login(srv, "alice", "a")
    datas = [os.urandom(4096), b"text text " * 500, os.urandom(10)]
    records = [_chunk(a.dedupe_key, d) for d in datas]
    body = chunkbatch.encode(records)
    before = _bytes_in(srv)
    r = a.http.post(BATCH, content=body)
    assert r.status_code == 200, r.text
    assert r.json() == {"results": [{"id": c.hex(), "stored": True} for c, _ in records]}
    assert _bytes_in(srv) - before == sum(len(f) for _, f in records)
    # a retry of the same batch is answered the same, without storing anything again
    r = a.http.post(BATCH, content=body)
    assert r.json() == {"results": [{"id": c.hex(), "stored": False} for c, _ in records]}
    assert _missing(a, [c for c, _ in records]) == []
    for (cid, _), data in zip(records, datas, strict=True):
        got = a.http.get(f"/api/v1/chunks/{cid.hex()}")
        assert got.status_code == 200
        assert frame.decode(got.content, cid, dedupe_key=a.dedupe_key) == data


def test_a_bad_record_fails_alone(srv) -> None:  # type: ignore[no-untyped-def]
    a = login(srv, "alice", "a")
    good1, good2 = _chunk(a.dedupe_key, os.urandom(3000)), _chunk(a.dedupe_key, os.urandom(3000))
    data = os.urandom(3000)
    right = ids.chunk_id(a.dedupe_key, data)
    wrong = ids.chunk_id(a.dedupe_key, data + b"!")
    flipped = bytearray(good2[1])
    flipped[-1] ^= 1
    records = [good1, (wrong, frame.encode(right, data)), (good2[0], bytes(flipped)), good2]
    r = a.http.post(BATCH, content=chunkbatch.encode(records))
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["id"] for x in results] == [c.hex() for c, _ in records]
    assert results[0] == {"id": good1[0].hex(), "stored": True}
    assert results[1]["error"] == "id_mismatch" and results[1]["message"]
    assert results[2]["error"] == "id_mismatch"  # a flipped payload byte changes the id
    assert results[3] == {"id": good2[0].hex(), "stored": True}  # same id, good frame
    assert a.http.get(f"/api/v1/chunks/{wrong.hex()}").status_code == 404
    assert a.http.get(f"/api/v1/chunks/{right.hex()}").status_code == 404
    assert _missing(a, [good1[0], wrong, good2[0]]) == [wrong.hex()]
    junk = (os.urandom(32), b"garbage" * 10)
    r = a.http.post(BATCH, content=chunkbatch.encode([junk]))
    assert r.status_code == 200 and r.json()["results"][0]["error"] == "frame_corrupt"


def test_repeated_id_in_one_batch_is_stored_once(srv) -> None:  # type: ignore[no-untyped-def]
    a = login(srv, "alice", "a")
    rec = _chunk(a.dedupe_key, os.urandom(2000))
    r = a.http.post(BATCH, content=chunkbatch.encode([rec, rec]))
    assert r.json()["results"] == [
        {"id": rec[0].hex(), "stored": True},
        {"id": rec[0].hex(), "stored": False},
    ]


def test_dedupe_across_users_reveals_nothing(srv) -> None:  # type: ignore[no-untyped-def]
    a, b = login(srv, "alice", "a"), login(srv, "bob", "b")
    cid, fr = _chunk(a.dedupe_key, b"shared " + os.urandom(64))
    r = a.http.post(BATCH, content=chunkbatch.encode([(cid, fr)]))
    assert r.json()["results"] == [{"id": cid.hex(), "stored": True}]
    # stored for alice, yet bob is told to upload it and cannot read it ...
    assert _missing(b, [cid]) == [cid.hex()]
    assert b.http.get(f"/api/v1/chunks/{cid.hex()}").status_code == 404
    # ... and his upload is verified and deduplicated
    r = b.http.post(BATCH, content=chunkbatch.encode([(cid, fr)]))
    assert r.json()["results"] == [{"id": cid.hex(), "stored": False}]
    assert _missing(b, [cid]) == []
    assert b.http.get(f"/api/v1/chunks/{cid.hex()}").status_code == 200


def _head(count: int, version: int = 1, magic: bytes = b"CRNB") -> bytes:
    return struct.pack(">4sBI", magic, version, count)


def _rec(cid: bytes, fr: bytes, length: int | None = None) -> bytes:
    return struct.pack(">32sI", cid, len(fr) if length is None else length) + fr


def test_malformed_bodies_are_400_and_store_nothing(srv) -> None:  # type: ignore[no-untyped-def]
    a = login(srv, "alice", "a")
    cid, fr = _chunk(a.dedupe_key, os.urandom(1000))
    one = _rec(cid, fr)
    bodies = {
        "empty": b"",
        "short header": b"CRNB\x01",
        "garbage": os.urandom(500),
        "a single frame": fr,
        "bad magic": _head(1, magic=b"CRNX") + one,
        "version 2": _head(1, version=2) + one,
        "no records": _head(0),
        "count beyond records": _head(2) + one,
        "truncated frame": _head(1) + one[:-1],
        "truncated record header": _head(1) + one[:20],
        "zero length": _head(2) + _rec(cid, b"", 0) + one,
        "length past the end": _head(1) + _rec(cid, fr, len(fr) + 1),
        "huge length": _head(1) + _rec(cid, fr, 0xFFFFFFFF),
        "trailing byte": _head(1) + one + b"\x00",
    }
    for what, body in bodies.items():
        r = a.http.post(BATCH, content=body)
        assert r.status_code == 400, (what, r.status_code, r.text)
        assert r.json()["error"] == "bad_format", what
    assert a.http.get(f"/api/v1/chunks/{cid.hex()}").status_code == 404
    assert _missing(a, [cid]) == [cid.hex()]


def test_oversized_bodies_are_413(srv) -> None:  # type: ignore[no-untyped-def]
    a = login(srv, "alice", "a")
    records = [_chunk(a.dedupe_key, os.urandom(100 * 1024)) for _ in range(3)]
    r = a.http.post(BATCH, content=chunkbatch.encode(records))  # > limits.chunk_body
    assert r.status_code == 413 and r.json()["error"] == "too_large"

    def stream():  # chunked transfer: no Content-Length, the bound is hit mid-stream
        for _ in range(10):
            yield b"z" * 64 * 1024

    r = a.http.post(BATCH, content=stream())
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    tiny = _chunk(a.dedupe_key, b"x")
    r = a.http.post(BATCH, content=_head(1025) + _rec(*tiny) * 1025)
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    assert _missing(a, [c for c, _ in records] + [tiny[0]]) == [
        c.hex() for c, _ in records + [tiny]
    ]


def test_needs_a_token(srv) -> None:  # type: ignore[no-untyped-def]
    a = login(srv, "alice", "a")
    rec = _chunk(a.dedupe_key, b"anonymous")
    with api_client(srv) as anon:
        r = anon.post(BATCH, content=chunkbatch.encode([rec]))
    assert r.status_code == 401 and r.json()["error"] == "unauthenticated"
    assert _missing(a, [rec[0]]) == [rec[0].hex()]
