"""Helpers of the fast tier of the drive: ``Operations`` called directly, without the kernel.

Each test gets a real RocksDB store, a real chunk cache and a ``FrameSource`` that serves
plain frames produced by the real codec from a dict — it stands in for the server, not for
anything under test. Small chunking parameters make multi-chunk files out of a few KiB.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path

import pyfuse3

from cairn.core import frame, ids
from cairn.core.chunker import Params
from cairn.core.errors import NotFound, Unavailable
from cairn.core.keys import DataKey
from cairn.fs.cache import ChunkCache
from cairn.fs.ops import Operations
from cairn.fs.store import ROOT_INO, Store

ROOT_ID = "0" * 31 + "1"
DEDUPE = bytes(range(32))
SMALL = Params(1024, 4096, 16384)  # min, pyfastcdc avg, max: ~5 KiB chunks


class FrameSource:
    """Chunks "on the server": plain frames by id; ``online = False`` simulates no network."""

    def __init__(self) -> None:
        self.frames: dict[bytes, bytes] = {}
        self.online = True
        self.fetches = 0

    def add(self, data: bytes) -> bytes:
        cid = ids.chunk_id(DEDUPE, data)
        self.frames[cid] = frame.encode(cid, data)
        return cid

    async def fetch(self, cid: bytes) -> bytes:
        self.fetches += 1
        if not self.online:
            raise Unavailable("server unreachable (test)")
        try:
            return self.frames[cid]
        except KeyError:
            raise NotFound(f"chunk {cid.hex()}") from None


@dataclass
class Ctx:
    uid: int = 1000
    gid: int = 1000
    pid: int = 1
    umask: int = 0o022


class Fields:
    """Duck-typed ``pyfuse3.SetattrFields`` (whose attributes are read-only)."""

    def __init__(self, **kw: bool) -> None:
        for f in ("atime", "mtime", "ctime", "mode", "uid", "gid", "size"):
            setattr(self, f"update_{f}", kw.get(f, False))


@dataclass
class Drive:
    ops: Operations
    store: Store
    cache: ChunkCache
    source: FrameSource
    root: Path
    key: DataKey


def open_drive(root: Path, key: DataKey, source: FrameSource, limit: int = 1 << 30) -> Drive:
    store = Store.open(root / "db", ROOT_ID)
    cache = ChunkCache(root / "cache", key, limit)
    ops = Operations(store, cache, source, dedupe_key=DEDUPE, params=SMALL)
    return Drive(ops, store, cache, source, root, key)


CTX = Ctx()


async def create(
    ops: Operations, parent: int, name: str, data: bytes = b"", mode: int = 0o644
) -> int:
    fi, attr = await ops.create(parent, name.encode(), mode, 0, CTX)
    if data:
        await ops.write(fi.fh, 0, data)
    await ops.release(fi.fh)
    return attr.st_ino


async def read_all(ops: Operations, ino: int, bs: int = 128 * 1024) -> bytes:
    fi = await ops.open(ino, 0, CTX)
    try:
        size = (await ops.getattr(ino, CTX)).st_size
        parts = []
        off = 0
        while off < size:
            parts.append(await ops.read(fi.fh, off, bs))
            off += len(parts[-1])
            if not parts[-1]:
                break
        return b"".join(parts)
    finally:
        await ops.release(fi.fh)


async def errno_of(coro) -> int:  # type: ignore[no-untyped-def]
    try:
        await coro
    except pyfuse3.FUSEError as e:
        return e.errno
    raise AssertionError("expected a FUSEError")


__all__ = ["CTX", "DEDUPE", "Ctx", "Drive", "Fields", "FrameSource", "ROOT_ID", "ROOT_INO",
           "SMALL", "create", "errno", "errno_of", "open_drive", "read_all"]  # fmt: skip
