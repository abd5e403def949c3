"""The chunk cache: encrypted frames on disk, keyed by chunk id, LRU-bounded; and the
``ChunkSource`` protocol the network half implements for chunks the cache lacks.

Layout under the cache root::

    dirty/ab/<hex id>   chunks written here and not yet uploaded (never evicted)
    clean/ab/<hex id>   chunks the server holds (fetched, or uploaded and ``mark_clean``-ed)
    tmp/                files being written (removed at start: a crash leaves no half entry)
    small/              RocksDB of small frames (<= ``SMALL_FRAME`` bytes): key ``d``+id
                        (dirty) or ``c``+id (clean), value the frame

Every entry is one frame encrypted with the device ``DataKey`` (``cairn.core.frame``), the
chunk id bound as associated data, so a swapped or altered entry fails to decode instead of
returning wrong bytes. Files appear by ``rename`` only; ``put``/``put_frame`` are idempotent.

Small frames (a 4 KiB file is one) live in the ``small`` database instead of a file each:
one unsynced RocksDB write instead of open, write, close and rename (~1 ms on a busy ext4),
which is most of what creating a small file cost. The same rules hold for them: LRU,
dirty never evicted, encrypted at rest, dirty-ness in the key. Changes to the small
database are grouped like the drive's state (``fs/store.py``): they wait in memory,
visible to every read, until ``flush_small`` writes them as one batch. That happens when
``SMALL_GROUP_BYTES`` are waiting, at ``fsync`` of a small entry and at ``close``, and
whenever the store writes a group (the ops layer makes ``flush_small`` the store's
``before_flush``), so a store batch naming a chunk never reaches RocksDB before the
chunk's frame does.

Dirty-ness is the directory (or key prefix) an entry lives in, so it survives a crash
without an index.
``mark_clean`` renames dirty→clean and then evicts least-recently-used clean chunks until the
total is at most ``limit`` (dirty bytes count towards the total but are never evicted, so a
cache full of unuploaded data may exceed its limit).

Durability: nothing is synced by ``put``; ``fsync(ids)`` makes the given entries durable
(file and directory fsyncs, and one WAL sync of the small database for small ones). A
write that was not synced survives a ``kill -9`` (page cache) but not a power cut.
A dirty file entry synced once is remembered as durable until it moves (``mark_clean``,
a concurrent re-install, a drop), so a later ``fsync`` naming it costs nothing: every
``fsync`` on this ext4 issues a disk flush, synced or not, and a streamed file's chunks are
synced in the background while it is still being written (``fs/files.py``), leaving its
``fsync`` only the last few. An entry whose ``fsync`` failed stays failed: the kernel
reports a write-back error to one ``fsync`` only, so a later one would wrongly succeed.

Every method is blocking file I/O and thread-safe (one lock over the index); the drive calls
them from worker threads (``trio.to_thread.run_sync``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

import rocksdict

from cairn.core import frame
from cairn.core.errors import FrameError, NotFound
from cairn.core.keys import DataKey, keyring

from .kvbatch import write_changes

log = logging.getLogger("cairn.fs.cache")

_SYNC_FILE_RANGE_WRITE = 2
SMALL_FRAME = 64 * 1024  # frames up to this size live in the small database
SMALL_GROUP_BYTES = 1 << 20  # small-database changes waiting that make a put write them
_DIRTY, _CLEAN = b"d", b"c"  # key prefixes in the small database
_UNSTAGED = object()


def _writeback_starter() -> Callable[[int], None]:
    """``start(fd)``: ask the kernel to begin writing ``fd``'s dirty pages back, without
    waiting (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``; a no-op where unavailable).
    Only an optimisation: durability still comes from ``fsync``."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return lambda fd: None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int

    def start(fd: int) -> None:
        fn(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)  # a failure here is harmless: fsync follows

    return start


_start_writeback = _writeback_starter()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ChunkSource(Protocol):
    """Where chunks missing from the cache come from (the server, through ``fs/client.py``).

    ``fetch`` returns the PLAIN frame (as ``GET /api/v1/chunks/{id}`` serves it); the drive
    verifies it with the dedupe key before trusting it. It must give up within a few
    seconds when the server is unreachable and raise ``cairn.core.errors.Unavailable``
    (a read then fails with EIO); ``NotFound`` when the server does not have it.
    """

    async def fetch(self, cid: bytes) -> bytes: ...


class ChunkCache:
    def __init__(self, root: Path | str, key: DataKey, limit: int) -> None:
        self.root = Path(root)
        self.key = key
        self._keys = keyring(key)
        self.limit = limit
        self._lock = threading.Lock()
        self._clean: OrderedDict[bytes, int] = OrderedDict()  # LRU order: oldest first
        self._dirty: dict[bytes, int] = {}
        self._used = 0
        self._dirs: set[Path] = set()  # sub-directories known to exist
        self._small: set[bytes] = set()  # ids whose frame is in the small database
        self._small_unsynced = False  # small writes since the last WAL sync
        # small-database changes not written yet (None: a delete); see the docstring
        self._staged: dict[bytes, bytes | None] = {}
        self._staged_bytes = 0
        # dirty file entries whose file and directory entry are durable (see the docstring)
        self._synced: set[bytes] = set()
        self._failed: dict[bytes, OSError] = {}  # entries whose fsync failed
        self._new_dirs = False  # sub-directories made since the top directories were synced
        self._top_lock = threading.Lock()  # held while the top directories are synced
        for sub in ("dirty", "clean", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        for leftover in (self.root / "tmp").iterdir():
            leftover.unlink()
        opts = rocksdict.Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.set_write_buffer_size(16 << 20)  # bounds the memtable's share of the RSS
        self._db = rocksdict.Rdict(str(self.root / "small"), opts)
        self._scan()

    def close(self) -> None:
        """Write the staged small changes and close the small database (the cache is
        unusable afterwards)."""
        try:
            self.flush_small()
        finally:
            self._db.close()

    # --- the small database's staged changes (callers hold _lock) -------------------------

    def _small_get(self, key: bytes) -> bytes | None:
        value = self._staged.get(key, _UNSTAGED)
        if value is not _UNSTAGED:
            return value  # type: ignore[return-value]
        raw = self._db.get(key)
        return None if raw is None else bytes(raw)

    def _stage(self, key: bytes, value: bytes | None) -> None:
        self._staged[key] = value
        self._staged_bytes += len(key) + (0 if value is None else len(value))
        self._small_unsynced = True
        if self._staged_bytes >= SMALL_GROUP_BYTES:
            self._write_staged()

    def _write_staged(self) -> None:
        if not self._staged:
            return
        write_changes(self._db, self._staged)
        self._staged = {}
        self._staged_bytes = 0

    def flush_small(self) -> None:
        """Write the staged small-database changes as one batch (not synced). Any thread.
        On failure they stay staged (and readable) for the next flush."""
        with self._lock:
            self._write_staged()

    def _scan(self) -> None:
        for key, value in self._db.items():  # c... before d...
            cid, size = bytes(key[1:]), len(value)
            if key[:1] == _DIRTY:
                old = self._clean.pop(cid, None)
                if old is not None:  # under both prefixes (mark_clean's batch is atomic, so
                    self._used -= old  # this should not happen): dirty wins, never evicted
                self._dirty[cid] = size
            else:
                self._clean[cid] = size  # no access times: the oldest clean entries
            self._small.add(cid)
            self._used += size
        found: list[tuple[float, bytes, int]] = []
        for state in ("dirty", "clean"):
            for sub in (self.root / state).iterdir():
                for f in sub.iterdir():
                    try:
                        cid = bytes.fromhex(f.name)
                    except ValueError:
                        continue
                    st = f.stat()
                    if state == "dirty":
                        self._dirty[cid] = st.st_size
                        self._used += st.st_size
                    else:
                        found.append((st.st_atime, cid, st.st_size))
        for _, cid, size in sorted(found):
            self._clean[cid] = size
            self._used += size

    def _path(self, state: str, cid: bytes) -> Path:
        h = cid.hex()
        return self.root / state / h[:2] / h

    # --- state ----------------------------------------------------------------------------

    @property
    def used(self) -> int:
        return self._used

    @property
    def dirty_bytes(self) -> int:
        with self._lock:
            return sum(self._dirty.values())

    def dirty_ids(self) -> list[bytes]:
        with self._lock:
            return list(self._dirty)

    def has(self, cid: bytes) -> bool:
        with self._lock:
            return cid in self._dirty or cid in self._clean

    def is_dirty(self, cid: bytes) -> bool:
        with self._lock:
            return cid in self._dirty

    # --- writing --------------------------------------------------------------------------

    def _subdir(self, dest: Path) -> None:
        parent = dest.parent
        if parent not in self._dirs:
            parent.mkdir(exist_ok=True, mode=0o700)
            self._dirs.add(parent)
            self._new_dirs = True

    def _install(self, cid: bytes, data: bytes, dirty: bool) -> None:
        if len(data) <= SMALL_FRAME:
            self._install_small(cid, data, dirty)
            return
        state = "dirty" if dirty else "clean"
        dest = self._path(state, cid)
        self._subdir(dest)
        tmp = self.root / "tmp" / f"{cid.hex()}.{threading.get_ident()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with memoryview(data) as view:
                done = 0
                while done < len(view):  # bounded: each write makes progress or raises
                    done += os.write(fd, view[done:])
            if dirty:
                # Start writing the frame to disk now, while the CPU frames the next chunks,
                # so the fsync that makes it durable later mostly finds it written already.
                _start_writeback(fd)
        finally:
            os.close(fd)
        os.replace(tmp, dest)
        with self._lock:
            if cid in self._dirty or cid in self._clean:
                # another thread cached the same chunk meanwhile: count it once; the file is
                # a new inode now, not the one a sync may have covered
                self._synced.discard(cid)
                return
            self._count(cid, len(data), dirty)
        if not dirty:
            self._evict()

    def _count(self, cid: bytes, n: int, dirty: bool) -> None:
        """Index a newly stored frame of ``n`` bytes (caller holds the lock)."""
        if dirty:
            self._dirty[cid] = n
        else:
            self._clean[cid] = n
        self._used += n

    def _install_small(self, cid: bytes, data: bytes, dirty: bool) -> None:
        with self._lock:
            if cid in self._dirty or cid in self._clean:
                return  # another thread cached the same chunk meanwhile
            # under the lock: a concurrent mark_clean or eviction of this id cannot
            # interleave between the index and the key
            self._small.add(cid)
            self._count(cid, len(data), dirty)
            self._stage((_DIRTY if dirty else _CLEAN) + cid, data)
        if not dirty:
            self._evict()

    def put(self, cid: bytes, plain: bytes | bytearray | memoryview, *, dirty: bool = True,
            level: frame.Level | None = frame.DEFAULT_LEVEL) -> bool:  # fmt: skip
        """Frame (compress, encrypt) and store a chunk written on this device.

        Returns False when the id was already cached (nothing written). CPU-heavy.
        """
        if self.has(cid):
            return False
        self._install(cid, frame.encode(cid, plain, level=level, key=self.key), dirty)
        return True

    def put_frame(self, cid: bytes, plain_frame: bytes) -> None:
        """Store a plain frame that the caller has verified (``frame.decode`` with the
        dedupe key), as a clean entry."""
        if self.has(cid):
            return
        self._install(cid, frame.encrypt_frame(plain_frame, cid, self.key), False)

    def fsync(self, cids: Iterable[bytes]) -> None:
        """Make the given entries (and their directory entries) durable. Entries synced
        before (and not moved since) cost nothing; unknown ids are skipped. Raises the
        ``OSError`` of a failed sync, also on every later call naming that entry."""
        todo: list[bytes] = []
        small = False
        with self._lock:
            for cid in cids:
                if cid in self._failed:
                    raise self._failed[cid]
                if cid in self._small:
                    small = True
                elif cid not in self._synced:
                    todo.append(cid)
        dirs: set[Path] = set()
        done: list[bytes] = []
        for cid in todo:
            p = self._path("dirty", cid)
            if not p.exists():
                p = self._path("clean", cid)
            try:
                fd = os.open(p, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            except OSError as e:
                with self._lock:
                    self._failed[cid] = e
                raise
            finally:
                os.close(fd)
            dirs.add(p.parent)
            done.append(cid)
        if dirs:
            try:
                for d in dirs:
                    _fsync_dir(d)
                with self._top_lock:  # a concurrent call's sync of them must finish first
                    if self._new_dirs:
                        self._new_dirs = False
                        try:
                            for d in ("dirty", "clean"):
                                _fsync_dir(self.root / d)
                        except OSError:
                            self._new_dirs = True
                            raise
            except OSError as e:
                with self._lock:
                    for cid in done:
                        self._failed[cid] = e
                raise
            with self._lock:
                # only entries still dirty: one cleaned meanwhile moved to clean/ (a rename
                # these syncs did not cover) and is no longer covered
                self._synced.update(cid for cid in done if cid in self._dirty)
        if small and self._small_unsynced:
            # cleared before the sync: a write racing with it sets it again
            self._small_unsynced = False
            try:
                self.flush_small()
                self._db.flush_wal(True)
            except BaseException:
                self._small_unsynced = True
                raise

    def mark_clean(self, cids: Iterable[bytes]) -> None:
        """After upload: dirty entries become clean (evictable). Unknown ids are ignored."""
        for cid in cids:
            with self._lock:
                if cid in self._small:
                    self._clean_small(cid)
                    continue
                size = self._dirty.pop(cid, None)
                self._synced.discard(cid)  # its rename to clean/ is not synced
            if size is None:
                continue
            dest = self._path("clean", cid)
            self._subdir(dest)
            os.replace(self._path("dirty", cid), dest)
            with self._lock:
                self._clean[cid] = size
        self._evict()

    def _clean_small(self, cid: bytes) -> None:
        """Move a small dirty entry to clean (caller holds ``_lock``)."""
        size = self._dirty.pop(cid, None)
        if size is None:
            return
        value = self._small_get(_DIRTY + cid)
        if value is None:  # cannot happen while the index says dirty; keep them equal
            self._small.discard(cid)
            self._used -= size
            return
        # clean first: were a group written between the two, the entry would be under
        # both prefixes for a moment (``_scan`` keeps the dirty one), never under neither
        self._stage(_CLEAN + cid, value)
        self._stage(_DIRTY + cid, None)
        self._clean[cid] = size

    def _evict(self) -> None:
        while True:
            with self._lock:
                if self._used <= self.limit or not self._clean:
                    return
                cid, size = self._clean.popitem(last=False)
                self._used -= size
                if cid in self._small:
                    self._small.discard(cid)
                    self._stage(_CLEAN + cid, None)
                    continue
            self._path("clean", cid).unlink(missing_ok=True)

    def _drop(self, cid: bytes) -> None:
        with self._lock:
            self._synced.discard(cid)
            self._failed.pop(cid, None)  # gone: a new put of it starts afresh
            size = self._clean.pop(cid, None)
            if size is None:
                size = self._dirty.pop(cid, None)
            if size is not None:
                self._used -= size
            if cid in self._small:
                self._small.discard(cid)
                self._stage(_DIRTY + cid, None)
                self._stage(_CLEAN + cid, None)
                return
        for state in ("dirty", "clean"):
            self._path(state, cid).unlink(missing_ok=True)

    # --- reading --------------------------------------------------------------------------

    def _read(self, cid: bytes) -> bytes | None:
        with self._lock:
            if cid in self._dirty:
                state = "dirty"
            elif cid in self._clean:
                self._clean.move_to_end(cid)
                state = "clean"
            else:
                return None
            if cid in self._small:
                return self._small_get((_DIRTY if state == "dirty" else _CLEAN) + cid)
        try:
            return self._path(state, cid).read_bytes()
        except FileNotFoundError:
            # Evicted between the index check and the read.
            return None

    def get(self, cid: bytes) -> bytes | None:
        """The verified plaintext of a cached chunk, or None when not cached.

        A cached frame that does not decode (disk corruption) is dropped with one warning
        and reported as not cached, so the caller fetches it again.
        """
        data = self._read(cid)
        if data is None:
            return None
        try:
            return frame.decode(data, cid, keys=self._keys)
        except FrameError as e:
            log.warning("dropping corrupt cache entry %s: %s", cid.hex(), e)
            self._drop(cid)
            return None

    def plain_frame(self, cid: bytes) -> bytes:
        """The uploadable plain frame (compressed, not encrypted) of a cached chunk.

        Raises ``NotFound`` when the chunk is not cached, ``FrameError`` when corrupt.
        """
        data = self._read(cid)
        if data is None:
            raise NotFound(f"chunk {cid.hex()} is not in the cache")
        return frame.decrypt_frame(data, cid, self._keys)
