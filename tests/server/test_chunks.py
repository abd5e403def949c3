"""Chunk upload verification, at-rest encryption, dedupe without a presence side channel."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cairn.core import frame, ids
from tests.server.helpers import login


@pytest.fixture(scope="module")
def srv(module_server_factory):  # type: ignore[no-untyped-def]
    s = module_server_factory(config={"limits": {"chunk_body": 256 * 1024}})
    s.add_user("alice", "a")
    s.add_user("bob", "b")
    return s


def test_upload_stores_encrypted_and_serves_plain_frame(srv) -> None:  # type: ignore[no-untyped-def]
    a = login(srv, "alice", "a")
    data = b"hello cairn " * 1000
    cid = ids.chunk_id(a.dedupe_key, data)
    sent = frame.encode(cid, data)
    r = a.http.put(f"/api/v1/chunks/{cid.hex()}", content=sent)
    assert r.status_code == 201 and r.json() == {"stored": True}
    r = a.http.put(f"/api/v1/chunks/{cid.hex()}", content=sent)  # idempotent retry
    assert r.status_code == 200 and r.json() == {"stored": False}
    r = a.http.get(f"/api/v1/chunks/{cid.hex()}")
    assert r.status_code == 200
    assert frame.decode(r.content, cid, dedupe_key=a.dedupe_key) == data
    assert r.headers["ETag"] == f'"{cid.hex()}"'
    assert "immutable" in r.headers["Cache-Control"]
    r = a.http.get(f"/api/v1/chunks/{cid.hex()}", headers={"If-None-Match": f'"{cid.hex()}"'})
    assert r.status_code == 304
    # at rest: no stored file holds the plaintext or the plain frame
    stored = [p.read_bytes() for p in Path(srv.data_dir / "blobs").rglob("*") if p.is_file()]
    assert stored and not any(b"hello cairn" in blob for blob in stored)
    assert any(frame.peek(blob).encrypted for blob in stored if blob[:4] == frame.MAGIC)


def test_tampered_frames_are_422(srv) -> None:  # type: ignore[no-untyped-def]
    a = login(srv, "alice", "a")
    data = os.urandom(5000)
    cid = ids.chunk_id(a.dedupe_key, data)
    other = ids.chunk_id(a.dedupe_key, data + b"!")
    good = frame.encode(cid, data, level=None)
    r = a.http.put(f"/api/v1/chunks/{other.hex()}", content=good)
    assert r.status_code == 422 and r.json()["error"] == "id_mismatch"
    flipped = bytearray(good)
    flipped[-1] ^= 1
    r = a.http.put(f"/api/v1/chunks/{cid.hex()}", content=bytes(flipped))
    assert r.status_code == 422 and r.json()["error"] == "id_mismatch"
    for junk in (b"", b"CRNF", b"garbage" * 10, good[:-1]):
        r = a.http.put(f"/api/v1/chunks/{cid.hex()}", content=junk)
        assert r.status_code == 422 and r.json()["error"] == "frame_corrupt", junk[:10]
    # a frame keyed with another dedupe key does not verify either
    foreign = ids.chunk_id(bytes(32), data)
    r = a.http.put(f"/api/v1/chunks/{foreign.hex()}", content=frame.encode(foreign, data))
    assert r.status_code == 422
    assert a.http.get(f"/api/v1/chunks/{cid.hex()}").status_code == 404  # nothing stored


def test_bad_ids_and_oversized_bodies(srv) -> None:  # type: ignore[no-untyped-def]
    a = login(srv, "alice", "a")
    for bad in ("xyz", "A" * 64, "0" * 63, "0" * 65):
        r = a.http.put(f"/api/v1/chunks/{bad}", content=b"x")
        assert r.status_code == 400 and r.json()["error"] == "invalid_argument"
        assert a.http.get(f"/api/v1/chunks/{bad}").status_code == 400
    big = os.urandom(300 * 1024)
    cid = ids.chunk_id(a.dedupe_key, big)
    r = a.http.put(f"/api/v1/chunks/{cid.hex()}", content=frame.encode(cid, big, level=None))
    assert r.status_code == 413 and r.json()["error"] == "too_large"

    def stream():  # chunked transfer: no Content-Length, the bound is hit mid-stream
        for _ in range(10):
            yield b"z" * 64 * 1024

    r = a.http.put(f"/api/v1/chunks/{cid.hex()}", content=stream())
    assert r.status_code == 413


def test_missing_reveals_nothing_about_other_users(srv) -> None:  # type: ignore[no-untyped-def]
    a, b = login(srv, "alice", "a"), login(srv, "bob", "b")
    data = b"shared content " + os.urandom(64)
    cid = ids.chunk_id(a.dedupe_key, data)
    assert a.dedupe_key == b.dedupe_key  # standard volumes share the server's dedupe key
    body = {"ids": [cid.hex()]}
    assert a.http.post("/api/v1/chunks/missing", json=body).json() == {"missing": [cid.hex()]}
    a.upload(data)
    assert a.http.post("/api/v1/chunks/missing", json=body).json() == {"missing": []}
    # stored for alice, but bob must still be told to upload it ...
    assert b.http.post("/api/v1/chunks/missing", json=body).json() == {"missing": [cid.hex()]}
    assert b.http.get(f"/api/v1/chunks/{cid.hex()}").status_code == 404
    # ... and his upload is verified and deduplicated
    r = b.http.put(f"/api/v1/chunks/{cid.hex()}", content=frame.encode(cid, data))
    assert r.status_code == 200 and r.json() == {"stored": False}
    assert b.http.post("/api/v1/chunks/missing", json=body).json() == {"missing": []}
    assert b.http.get(f"/api/v1/chunks/{cid.hex()}").status_code == 200


@pytest.mark.parametrize(
    "body",
    [{"ids": "x"}, {"ids": ["zz"]}, {"ids": [1]}, {"idz": []}, [], "s"],
)
def test_missing_rejects_garbage(srv, body) -> None:  # type: ignore[no-untyped-def]
    a = login(srv, "alice", "a")
    r = a.http.post("/api/v1/chunks/missing", json=body)
    assert r.status_code == 400 and r.json()["error"] == "invalid_argument"


def test_missing_bounds_the_batch(srv) -> None:  # type: ignore[no-untyped-def]
    a = login(srv, "alice", "a")
    r = a.http.post("/api/v1/chunks/missing", json={"ids": ["0" * 64] * 1001})
    assert r.status_code == 413 and r.json()["error"] == "too_large"
