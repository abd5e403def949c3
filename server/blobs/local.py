"""``LocalBlobStore``: blobs as files in a directory, fanned out by id prefix.

Layout: ``ROOT/ab/abcd…(64 hex)``: one level of 256 directories, all created (and fsynced)
when the store opens, so a put never creates a directory and costs exactly two fsyncs (the
file, then its directory after the rename). 256 directories keep each one near 40,000
entries at ten million blobs, which ext4/xfs hashed directories handle without trouble.

Crash safety: a blob is written to a temporary file in its final directory (name starting
with ``.tmp-``), fsynced, renamed over its final name and the directory is fsynced. A crash
leaves either nothing or a complete blob under the final name, plus at worst a stray
temporary file; ``iter_ids`` only lists names that are 64 hex digits, so temporary files are
never reported, and ``remove_stale_temps`` deletes leftovers (call it at start-up).

All blocking file system calls run in a private, bounded ``ThreadPoolExecutor`` so the event
loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import time
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from .base import BlobNotFound, BlobStore, BlobStoreError, check_id

T = TypeVar("T")

TEMP_PREFIX = ".tmp-"
_HEX_NAME = re.compile(r"^[0-9a-f]{64}$")
_HEX_DIR = re.compile(r"^[0-9a-f]{2}$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBlobStore(BlobStore):
    """Blob store on a local directory (created if missing). ``threads`` bounds disk I/O."""

    def __init__(self, path: str | os.PathLike[str], *, threads: int = 8) -> None:
        self.root = Path(path)
        try:
            self._create_fanout()
        except OSError as e:
            raise BlobStoreError(f"cannot create blob directory {self.root}: {e}") from e
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="blobs-local")

    def _create_fanout(self) -> None:
        """Create ROOT and its 256 fan-out directories, durably; cheap when they exist."""
        self.root.mkdir(parents=True, exist_ok=True)
        created = False
        for n in range(256):
            try:
                (self.root / f"{n:02x}").mkdir()
                created = True
            except FileExistsError:
                continue
        if created:
            _fsync_dir(self.root)

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    def _path(self, hexid: str) -> Path:
        return self.root / hexid[:2] / hexid

    async def _run(self, what: str, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, fn, *args)
        except OSError as e:
            raise BlobStoreError(f"local blob store {what} failed: {e}") from e

    # --- blocking halves, run in the pool ------------------------------------------------

    def _put(self, hexid: str, data: bytes) -> None:
        final = self._path(hexid)
        if final.exists():
            return  # content-addressed: an existing final name holds these very bytes
        tmp = final.parent / f"{TEMP_PREFIX}{hexid[:16]}-{secrets.token_hex(6)}"
        try:
            # "xb": O_EXCL, so two puts of one id never share a temporary file.
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):  # keep the original error, not the cleanup's
                tmp.unlink()
            raise
        _fsync_dir(final.parent)

    def _get(self, hexid: str) -> bytes:
        try:
            with open(self._path(hexid), "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            raise BlobNotFound(f"no blob {hexid}") from None

    def _has(self, hexid: str) -> bool:
        return self._path(hexid).is_file()

    def _delete(self, hexid: str) -> None:
        final = self._path(hexid)
        try:
            final.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        _fsync_dir(final.parent)

    def _list_dir(self, top: str) -> list[bytes]:
        """Ids stored in one fan-out directory."""
        try:
            with os.scandir(self.root / top) as it:
                return [
                    bytes.fromhex(e.name)
                    for e in it
                    if _HEX_NAME.match(e.name) and e.name.startswith(top)
                ]
        except FileNotFoundError:
            return []

    def _tops(self) -> list[str]:
        with os.scandir(self.root) as it:
            return sorted(e.name for e in it if e.is_dir() and _HEX_DIR.match(e.name))

    def _remove_stale_temps(self, older_than: float) -> int:
        cutoff = time.time() - older_than
        removed = 0
        for tmp in self.root.glob(f"[0-9a-f][0-9a-f]/{TEMP_PREFIX}*"):
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:
                continue  # a concurrent put renamed or cleaned it
        return removed

    # --- the async interface -------------------------------------------------------------

    async def put(self, cid: bytes, data: bytes) -> None:
        await self._run("put", self._put, check_id(cid), data)

    async def get(self, cid: bytes) -> bytes:
        return await self._run("get", self._get, check_id(cid))

    async def has(self, cid: bytes) -> bool:
        return await self._run("has", self._has, check_id(cid))

    async def delete(self, cid: bytes) -> None:
        await self._run("delete", self._delete, check_id(cid))

    async def iter_ids(self) -> AsyncGenerator[bytes, None]:
        # One pool call per fan-out directory bounds both memory and each blocking call.
        for top in await self._run("list", self._tops):
            for cid in await self._run("list", self._list_dir, top):
                yield cid

    async def remove_stale_temps(self, older_than: float = 3600.0) -> int:
        """Delete temporary files left by interrupted puts that are older than
        ``older_than`` seconds (younger ones may belong to a put in progress). Returns the
        number removed."""
        return await self._run("cleanup", self._remove_stale_temps, older_than)

    async def close(self) -> None:
        self._pool.shutdown(wait=True)
