"""The drive's uploader against a real server process: small chunks travel in batches, large
ones alone, nothing is sent twice; a server with a small body limit gets split batches; one
bad frame or an unreachable server surfaces as one typed error."""

from __future__ import annotations

import os
import urllib.request

import pytest

from cairn.core import frame, ids
from cairn.core.errors import IdMismatch, Unavailable
from cairn.fs.client import Client
from cairn.fs.sync.uploader import (
    BATCH_CHUNKS,
    DEFAULT_CONCURRENCY,
    READ_AHEAD,
    SMALL_FRAME,
    Uploader,
)
from tests.support.drive import PASSWORD, free_port_url
from tests.support.server import ServerProcess, server_factory  # noqa: F401


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


def _bytes_in(srv: ServerProcess) -> float:
    with urllib.request.urlopen(srv.url + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("cairn_chunk_bytes_in_total "):
                return float(line.split()[1])
    raise AssertionError("no cairn_chunk_bytes_in_total on /metrics")


class Frames:
    """An in-memory stand-in for the cache's ``plain_frame`` reader."""

    def __init__(self, dedupe: bytes) -> None:
        self.dedupe = dedupe
        self.frames: dict[bytes, bytes] = {}
        self.many_calls = 0

    def add(self, data: bytes) -> bytes:
        cid = ids.chunk_id(self.dedupe, data)
        self.frames[cid] = frame.encode(cid, data, level=None)
        return cid

    async def read(self, cid: bytes) -> bytes:
        return self.frames[cid]

    async def read_many(self, cids: list[bytes]) -> list[bytes]:
        self.many_calls += 1
        return [self.frames[c] for c in cids]


async def _session(srv: ServerProcess) -> tuple[Client, Frames]:
    async with Client(srv.url) as c:
        s = await c.login("alice", PASSWORD, "uploader-test")
    return Client(srv.url, s["token"]), Frames(bytes.fromhex(s["dedupe_key"]))


async def _missing(client: Client, cids: list[bytes]) -> list[str]:
    out: list[str] = []
    for i in range(0, len(cids), 1000):
        out += await client.missing_chunks([c.hex() for c in cids[i : i + 1000]])
    return out


@pytest.fixture
def srv(server_factory) -> ServerProcess:  # noqa: F811
    s = server_factory()
    s.add_user("alice", PASSWORD)
    return s  # type: ignore[no-any-return]


@pytest.mark.anyio
async def test_small_chunks_go_in_batches_large_ones_alone(srv: ServerProcess) -> None:
    client, frames = await _session(srv)
    async with client:
        small = [frames.add(os.urandom(4096)) for _ in range(1500)]
        large = [frames.add(os.urandom(SMALL_FRAME + 1)) for _ in range(2)]
        cids = small[:700] + large + small[700:] + small[:10]  # repeats are sent once
        before = _bytes_in(srv)
        up = Uploader(client, frames.read)
        await up.upload(cids)
        assert await _missing(client, small + large) == []
        assert up.uploaded_chunks == len(small) + len(large)
        # every frame arrived exactly once
        assert _bytes_in(srv) - before == sum(len(f) for f in frames.frames.values())
        # full batches of BATCH_CHUNKS (4 KiB frames: the byte bound is not reached) and
        # one PUT per large frame
        assert up.requests == -(-len(small) // BATCH_CHUNKS) + len(large), up.requests
        await up.upload([])  # nothing to do
        # a trickle of a few new chunks is one request, not one per sender
        few = [frames.add(os.urandom(4096)) for _ in range(DEFAULT_CONCURRENCY * 2)]
        sent = up.requests
        await up.upload(few)
        assert up.requests == sent + 1
        assert await _missing(client, few) == []


@pytest.mark.anyio
async def test_a_server_with_a_small_body_limit_gets_smaller_batches(server_factory) -> None:  # noqa: F811
    srv = server_factory(config={"limits": {"chunk_body": 64 * 1024}})
    srv.add_user("alice", PASSWORD)
    client, frames = await _session(srv)
    async with client:
        cids = [frames.add(os.urandom(10_000)) for _ in range(60)]  # 600 kB in all
        up = Uploader(client, frames.read, concurrency=2)
        await up.upload(cids)
        assert await _missing(client, cids) == []
        assert up.uploaded_chunks == len(cids)


@pytest.mark.anyio
async def test_one_bad_frame_is_one_typed_error(srv: ServerProcess) -> None:
    client, frames = await _session(srv)
    async with client:
        good = [frames.add(os.urandom(2000)) for _ in range(20)]
        bad = frames.add(b"will be swapped")
        frames.frames[bad] = frames.frames[good[0]]  # a frame under another chunk's id
        with pytest.raises(IdMismatch, match=bad.hex()):
            await Uploader(client, frames.read, concurrency=1).upload([*good, bad])
        assert await _missing(client, [*good, bad]) == [bad.hex()]


@pytest.mark.anyio
async def test_unreachable_server_is_unavailable() -> None:
    frames = Frames(bytes(32))
    cids = [frames.add(os.urandom(100)) for _ in range(10)]
    async with Client(free_port_url(), "no-token") as client:
        with pytest.raises(Unavailable):
            await Uploader(client, frames.read).upload(cids)


@pytest.mark.anyio
async def test_a_batch_reader_reads_a_window_at_once(srv: ServerProcess) -> None:
    client, frames = await _session(srv)
    async with client:
        cids = [frames.add(os.urandom(4096)) for _ in range(READ_AHEAD * 10)]
        up = Uploader(client, frames.read, read_frames=frames.read_many)
        await up.upload(cids)
        assert await _missing(client, cids) == []
        assert frames.many_calls == 10
