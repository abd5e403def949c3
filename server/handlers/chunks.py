"""Chunk upload, download and the "which are missing?" query.

Upload is trust-but-verify: the plain frame is decoded with the dedupe key and its id
recomputed (422 on any mismatch) before anything is stored; the stored copy is the same
payload re-encrypted under the server's data key. Storage is shared by all users, but
presence is only ever revealed to users who already reference a chunk (docs/api.md).

``POST chunks/batch`` does the same for many chunks in one request (core/chunkbatch.py): the
framing is checked first (a malformed body is refused whole, 400), then every record is
verified on its own exactly like a single upload and answered on its own, so one bad frame
does not cost the good ones beside it. Per batch the server does one verification pass in
the CPU pool, one "which are stored?" query, the blob writes side by side, and one metadata
transaction, instead of one of each per chunk.

Order matters for crash safety: the blob is durable in the store before ``record_upload``
makes the metadata point at it, so a crash in between leaves at worst an unreferenced blob
(collected later), never a reference to nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from cairn.core import chunkbatch, frame, ids
from cairn.core.errors import FrameError, InvalidArgument, NotFound, TooLarge
from cairn.core.keys import DataKey

from .. import metrics
from ..appkeys import BLOBS, CONFIG, KEYS, META, UPLOADS, run_cpu
from ..auth import caller
from ..blobs import BlobStore
from ..limits import read_body, read_json_object


def _cid(request: web.Request) -> bytes:
    try:
        return ids.from_hex(request.match_info["id"])
    except ValueError:
        raise InvalidArgument("a chunk id is 64 lowercase hex digits") from None


def _verify_and_seal(
    body: bytes | memoryview, cid: bytes, dedupe_key: bytes, key: DataKey
) -> tuple[int, bytes]:
    """(plain length, frame encrypted for storage); raises FrameError subclasses (422)."""
    plain = frame.decode(body, cid, dedupe_key=dedupe_key)
    return len(plain), frame.encrypt_frame(body, cid, key)


def _verify_batch(
    records: list[tuple[bytes, memoryview]], dedupe_key: bytes, key: DataKey
) -> list[tuple[int, bytes] | FrameError]:
    """``_verify_and_seal`` of every record; a record that fails gets its error instead."""
    out: list[tuple[int, bytes] | FrameError] = []
    for cid, body in records:
        try:
            out.append(_verify_and_seal(body, cid, dedupe_key, key))
        except FrameError as e:
            out.append(e)
    return out


async def _put_all(blobs: BlobStore, sealed: list[tuple[bytes, bytes]]) -> None:
    """Store every blob (side by side: the store bounds its own I/O); all are durable, or
    the first failure is raised once every put has finished."""
    done = await asyncio.gather(*(blobs.put(cid, b) for cid, b in sealed), return_exceptions=True)
    for result in done:
        if isinstance(result, BaseException):
            raise result


def _check_length(request: web.Request, limit: int) -> int | None:
    declared = request.content_length
    if declared is not None and declared > limit:
        raise TooLarge(f"request body of {declared} bytes exceeds the limit of {limit}")
    return declared


async def missing(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG]
    body = await read_json_object(request, cfg.limits.json_body)
    raw = body.get("ids")
    if not isinstance(raw, list):
        raise InvalidArgument('the body must be {"ids": [...]}')
    if len(raw) > cfg.limits.missing_ids:
        raise TooLarge(f"at most {cfg.limits.missing_ids} ids per request")
    try:
        wanted = [ids.from_hex(x) for x in raw]
    except ValueError:
        raise InvalidArgument("ids must be 64 lowercase hex digits each") from None
    gone = await request.app[META].missing_chunks(caller(request).user_id, wanted)
    return web.json_response({"missing": [c.hex() for c in gone]})


@contextlib.asynccontextmanager
async def _upload_budget(request: web.Request) -> AsyncIterator[int]:
    """Hold the upload budget for this request's body (its declared length, else the
    limit) and yield the body limit. The budget bounds the upload bodies held in memory at
    once, by bytes; it is released when the block ends, so the handler drops the body (and
    what it made of it) inside the block and does its metadata write after it, never
    holding up other uploads' bodies."""
    limit = request.app[CONFIG].limits.chunk_body
    declared = _check_length(request, limit)
    budget = request.app[UPLOADS]
    held = await budget.acquire(limit if declared is None else declared)
    try:
        yield limit
    finally:
        budget.release(held)


async def put_chunk(request: web.Request) -> web.Response:
    cid = _cid(request)
    app = request.app
    me = caller(request)
    async with _upload_budget(request) as limit:
        body = await read_body(request, limit)
        metrics.CHUNK_BYTES_IN.inc(len(body))
        keys = app[KEYS]
        plain_len, sealed = await run_cpu(
            request, _verify_and_seal, body, cid, keys.dedupe_key, keys.data_key
        )
        meta = app[META]
        stored = not await meta.chunk_known(cid)
        if stored:
            await app[BLOBS].put(cid, sealed)
            metrics.CHUNKS_STORED.inc()
        else:
            metrics.DEDUPE_HITS.inc()
        stored_len = len(sealed)
        del body, sealed
    await meta.record_upload(me.user_id, cid, plain_len, stored_len)
    return web.json_response({"stored": stored}, status=201 if stored else 200)


async def post_batch(request: web.Request) -> web.Response:
    app = request.app
    me = caller(request)
    # A batch body is bounded like one chunk body, so the upload budget bounds memory for
    # batches and single uploads alike.
    async with _upload_budget(request) as limit:
        body = await read_body(request, limit)
        records = chunkbatch.decode(body)
        metrics.CHUNK_BYTES_IN.inc(sum(len(f) for _, f in records))
        keys = app[KEYS]
        outcomes = await run_cpu(request, _verify_batch, records, keys.dedupe_key, keys.data_key)
        cids = [cid for cid, _ in records]
        del records, body  # the frames are views into the body; only sealed copies stay
        verified: dict[bytes, tuple[int, bytes]] = {}
        failed: dict[int, FrameError] = {}
        for i, (cid, outcome) in enumerate(zip(cids, outcomes, strict=True)):
            if isinstance(outcome, FrameError):
                failed[i] = outcome
            else:
                verified.setdefault(cid, outcome)  # a repeated id is stored once
        del outcomes
        meta = app[META]
        known = await meta.known_chunks(list(verified))
        new = [cid for cid in verified if cid not in known]
        await _put_all(app[BLOBS], [(cid, verified[cid][1]) for cid in new])
        metrics.CHUNKS_STORED.inc(len(new))
        metrics.DEDUPE_HITS.inc(len(verified) - len(new))
        uploads = [(cid, plain, len(sealed)) for cid, (plain, sealed) in verified.items()]
        del verified  # the sealed copies: nothing of the body is held past the budget
    await meta.record_uploads(me.user_id, uploads)
    fresh = set(new)
    results: list[dict[str, Any]] = []
    for i, cid in enumerate(cids):
        err = failed.get(i)
        if err is not None:
            results.append({"id": cid.hex(), "error": err.code, "message": str(err)})
        else:
            results.append({"id": cid.hex(), "stored": cid in fresh})
            fresh.discard(cid)
    return web.json_response({"results": results})


async def get_chunk(request: web.Request) -> web.StreamResponse:
    cid = _cid(request)
    app = request.app
    if not await app[META].user_has_chunk(caller(request).user_id, cid):
        raise NotFound("no such chunk")
    etag = f'"{cid.hex()}"'
    headers = {"ETag": etag, "Cache-Control": "private, immutable"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    sealed = await app[BLOBS].get(cid)
    plain_frame = await run_cpu(request, frame.decrypt_frame, sealed, cid, app[KEYS].keyring)
    metrics.CHUNK_BYTES_OUT.inc(len(plain_frame))
    return web.Response(body=plain_frame, content_type="application/octet-stream", headers=headers)


ROUTES = [
    web.post("/api/v1/chunks/missing", missing, name="chunks_missing"),
    web.post("/api/v1/chunks/batch", post_batch, name="chunks_batch"),
    web.put("/api/v1/chunks/{id}", put_chunk, name="chunk_put"),
    web.get("/api/v1/chunks/{id}", get_chunk, name="chunk_get"),
]
