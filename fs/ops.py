"""The drive's pyfuse3 ``Operations``: POSIX on top of the local state, cache and staging.

This module holds attributes, directories, xattrs, statfs and remote-change handling; the
name handlers are in ``fs/tree.py`` and the file content handlers in ``fs/files.py``
(mixins). Errors become errno values in ``fs/errmap.py`` only.

Construction (by the mount runner, ``fs/mount.py``)::

    ops = Operations(store, cache, source, dedupe_key=...)  # staging: <db dir>/../staging
    ops.mounted = True            # after pyfuse3.init(); enables kernel invalidation
    await nursery.start(ops.run)  # background framing of streamed writes + readahead
    ...
    await ops.seal_all()          # before unmount (then cancel ops.run)

Mount options the runner must pass to ``pyfuse3.init``: ``default_permissions`` (the kernel
checks modes and owners; this class does no permission checks), ``fsname=cairn``,
``subtype=cairn``, and ``allow_other`` when the user asks for it.

What the sync side calls:
- ``await ops.apply_remote(nodes, cursor=...)``: ``Store.apply_remote`` + kernel cache
  invalidation + refresh of open, unmodified files (``invalidate(changes)`` alone exists
  too; both are safe when not mounted).
- ``ops.set_quota(total, used)`` for ``statfs``.
- ``await ops.seal_all()`` before unmount: seals every file with unsealed writes.
The outbox, base revisions and cursor live in ``fs/store.py``; uploadable frames in
``fs/cache.py``.

Behaviour notes
- Node types: file, dir, symlink. ``mknod`` of a FIFO, socket or device fails with EPERM
  (mknod(2): "the file system does not support the type of node"); of a regular file it
  creates one. Only ``user.*`` xattrs exist (others: ENOTSUP); missing ones ENODATA;
  values up to 64 KiB, 64 per node (E2BIG beyond), synced as ``setattr`` ops.
- Ownership (uid/gid) is local only; the server has no owners. Directory mtimes follow
  entry changes locally and are not synced (a pull may reset them to the server's).
- Timeouts: entry and attr 60 s (remote changes invalidate explicitly). ``keep_cache`` on open when size and mtime are what the
  kernel saw at the previous open (remote changes also invalidate explicitly).
- ``RENAME_EXCHANGE`` is three ``rename`` ops through a temporary name in the same outbox
  batch (the API has no exchange); the server applies them in one transaction when the
  pusher sends them together.
- readdir: a directory's listing is built once (entries with attributes) and served again
  while ``Store.listing_stamp`` is unchanged (no commit touched its entries or a child's
  record); open files get their current attributes at every serve.
- FLUSH answers ENOSYS (the kernel then stops sending it): nothing happens at close, the
  seal runs at the last release.
- ``requests`` counts the requests served (roughly: bumped in ``_node``, ``_attr``,
  ``_file``); the sync agent's pusher waits while it moves (``Pusher._gather``).
- Writes: sequential writes stream through the chunker (``fs/staging.py``); others go to a
  sparse staging file and are re-chunked around the edits at seal (``fs/seal.py``). Seal
  on the last release and on fsync; fsync makes chunk files durable, then writes the batch
  and syncs the WAL, both grouped (``fs/durable.py``).

Concurrency (trio, one thread; CPU and disk work on worker threads)
- Handlers that only touch the store (lookup, mkdir, rename, unlink, setattr without size,
  xattrs, ...) run without an ``await`` between reading the state and committing their
  batch, so they are atomic with respect to each other. Keep it so: an ``await`` inside
  such a section would let another handler interleave between check and write.
- A file's ``FileContent.lock`` serialises writes, truncates and seals of that file (they
  await worker threads). Reads take no lock (see ``fs/staging.py``).
- A seal writes its batch after awaits (chunk fsync); it re-reads the node record just
  before writing, so metadata changed meanwhile (chmod, rename) is not overwritten.
- The store's commits reach RocksDB in groups (``fs/store.py``); ``run`` writes each group
  ``FLUSH_DELAY_S`` after its first commit.
- ``GroupSync`` instances serialise durable syncs; ``PlainLRU`` and ``ChunkCache`` are
  thread-safe. ``_unsynced`` (chunk ids awaiting fsync) is guarded by ``_unsynced_lock``
  (sync groups read it on worker threads). Every WAL sync fsyncs those chunks first, so a
  synced batch never names a chunk file a power cut could lose; the one window left is a
  batch committed between that chunk snapshot and the WAL sync (microseconds).
"""

from __future__ import annotations

import bisect
import errno
import logging
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyfuse3
import trio

from cairn.core import errors as E
from cairn.core import wire
from cairn.core.chunker import DEFAULT, Params
from cairn.core.names import MAX_NAME_BYTES

from .blocks import PlainLRU
from .cache import ChunkCache, ChunkSource
from .durable import GroupSync
from .errmap import NoAttribute, NotSupported, quick_error, translate
from .files import FileOps
from .records import NODE_HEADER, TYPE_NAMES
from .staging import FileContent
from .store import FLUSH_DELAY_S, ROOT_INO, Changes, Node, NodeAttrs, Store, new_op_id
from .tree import TreeOps, check_child_name

log = logging.getLogger("cairn.fs.ops")

_TYPE_BITS = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}
_TYPE_CODE_BITS = tuple(_TYPE_BITS[t] for t in TYPE_NAMES)  # by the record's type code
_DIR_CODE = TYPE_NAMES.index("dir")
# Directory listings kept built (entries in all cached listings together; a directory with
# more is listed straight from the store every time).
LISTING_CACHE_ENTRIES = 100_000


class _Listing:
    """A directory's built readdir entries at one ``Store.listing_stamp``, cookie order."""

    __slots__ = ("stamp", "cookies", "rows")

    def __init__(self, stamp: int, rows: list[tuple[bytes, pyfuse3.EntryAttributes, int, int]]):
        self.stamp = stamp
        self.rows = rows  # (name, attributes, cookie, child ino)
        self.cookies = [row[2] for row in rows]


def _now() -> int:
    return time.time_ns()


_name = check_child_name


def _xname(raw: bytes) -> str:
    """A kernel-given xattr name as text: only ``user.*`` names exist on the drive, others
    get ENOTSUP straight from errmap's table (the kernel asks for ``security.capability``
    before every write)."""
    if not raw.startswith(b"user.") or raw == b"user.":
        raise quick_error(NotSupported)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NotSupported("xattr name is not UTF-8") from None


class Operations(TreeOps, FileOps, pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, store: Store, cache: ChunkCache, source: ChunkSource, *,
                 dedupe_key: bytes | str, staging_dir: Path | str | None = None, params: Params = DEFAULT,
                 entry_timeout: float = 60.0, attr_timeout: float = 60.0) -> None:  # fmt: skip
        super().__init__()
        self.store = store
        self.cache = cache
        self.source = source
        self.dedupe_key = bytes.fromhex(dedupe_key) if isinstance(dedupe_key, str) else dedupe_key
        self.params = params
        self.entry_timeout = entry_timeout
        self.attr_timeout = attr_timeout
        if staging_dir is None:
            if store.path is None:
                raise ValueError("staging_dir is needed when the store has no path")
            staging_dir = store.path.parent / "staging"
        self.staging_dir = Path(staging_dir)
        self.staging_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for leftover in self.staging_dir.iterdir():
            leftover.unlink()  # unsealed writes of a crashed mount (never fsynced)
        self.cpu_limiter = trio.CapacityLimiter(2)
        self.read_limiter = trio.CapacityLimiter(4)
        self.mem = PlainLRU()
        self._files: dict[int, FileContent] = {}
        store.unsealed = self._has_unsealed_writes
        store.before_flush = cache.flush_small  # frames before the batches naming them
        self._unsynced: set[bytes] = set()  # chunk ids written, not yet fsynced
        self._unsynced_lock = threading.Lock()
        self._chunk_sync = GroupSync(self._fsync_chunks)
        self._wal_sync = GroupSync(self._sync_all)
        self._kernel_seen: dict[int, tuple[int, int]] = {}
        self._listings: dict[int, _Listing] = {}
        self._listed = 0  # entries held in _listings
        self._readahead: set[bytes] = set()
        self._nursery: trio.Nursery | None = None
        self._group_wanted = trio.Event()  # set by commits that leave a group pending
        self.after_init: Callable[[], None] | None = None  # see init()
        self.mounted = False
        self.quota_total: int | None = None
        self.quota_used = 0
        # Requests served, roughly: bumped by the helpers nearly every handler goes through
        # (_node, _dir, _attr, _file). The sync agent's pusher waits while it moves.
        self.requests = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background service (framing batches of streaming writes, readahead). Runs until
        cancelled; start it with ``nursery.start`` (ready once it returns). Call
        ``seal_all`` before cancelling it, or in-flight batches fail their files."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.store.on_pending = self._want_group_flush
            task_status.started()
            try:
                await self._flush_groups()
            finally:
                self.store.on_pending = None
                self._nursery = None

    def _want_group_flush(self) -> None:
        self._group_wanted.set()

    async def _flush_groups(self) -> None:
        """Write each group of the store's commits ``FLUSH_DELAY_S`` after it started (see
        ``fs/store.py``); runs until cancelled."""
        while True:
            await self._group_wanted.wait()
            await trio.sleep(FLUSH_DELAY_S)
            # a new event before the flush: the next commit after it starts a new group
            self._group_wanted = trio.Event()
            try:
                self.store.flush()
            except Exception as e:  # the group stays pending; retry, and say so
                log.error("could not write %d changes to the local state (retrying): %s",
                          self.store.pending_keys(), e)  # fmt: skip
                self._group_wanted.set()
                await trio.sleep(1.0)

    def init(self) -> None:
        """pyfuse3: the kernel's INIT is being answered (trio thread, blocking). Settings the
        kernel takes from the INIT reply (the readahead) can be changed only after that
        reply: ``after_init`` runs then."""
        if self.after_init is not None:
            trio.lowlevel.current_trio_token().run_sync_soon(self.after_init)

    def set_quota(self, total: int | None, used: int) -> None:
        self.quota_total, self.quota_used = total, used

    def activity(self) -> int:
        """A counter that moves while the file system serves requests (see ``requests``)."""
        return self.requests

    # --- helpers ------------------------------------------------------------------------

    def _node(self, ino: int) -> Node:
        self.requests += 1
        node = self.store.node(ino)
        if node is None:
            raise E.NotFound(f"no inode {ino}")
        return node

    def _stat(self, ino: int) -> NodeAttrs:
        attrs = self.store.attrs(ino)
        if attrs is None:
            raise E.NotFound(f"no inode {ino}")
        return attrs

    def _dir(self, ino: int) -> Node:
        node = self._node(ino)  # counts in requests
        if node.type != "dir":
            raise E.NotADirectory(f"inode {ino} is not a directory")
        return node

    def _child(self, parent: int, name: str) -> Node:
        ino = self.store.lookup(parent, name)
        node = None if ino is None else self.store.node(ino)
        if node is None:
            raise E.NotFound(f"{name!r} not found")
        return node

    def _attr(self, node: Node | NodeAttrs) -> pyfuse3.EntryAttributes:
        self.requests += 1
        a = pyfuse3.EntryAttributes()
        a.st_ino = node.ino
        a.generation = 0
        a.entry_timeout = self.entry_timeout
        a.attr_timeout = self.attr_timeout
        a.st_mode = _TYPE_BITS[node.type] | node.mode
        a.st_nlink = node.nlink
        a.st_uid, a.st_gid = node.uid, node.gid
        a.st_rdev = 0
        size, mtime, alloc = node.size, node.mtime_ns, node.alloc
        content = self._files.get(node.ino)
        if content is not None:
            size = content.size
            if content.mtime_ns is not None:
                mtime = content.mtime_ns
            if content.dirty:  # estimate until the seal counts chunks exactly
                staged = sum(e - s for s, e in content.extents) + len(content.tail)
                alloc = min(size, content.base.data_bytes() + staged)
        a.st_size = size
        a.st_blksize = 128 * 1024
        a.st_blocks = (alloc + 511) // 512
        a.st_atime_ns = mtime
        a.st_mtime_ns = mtime
        a.st_ctime_ns = max(node.ctime_ns, mtime)
        return a

    # --- attributes -----------------------------------------------------------------------

    @translate
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: Any = None
    ) -> pyfuse3.EntryAttributes:
        if name == b"." or name == b"..":
            parent = self._dir(parent_inode)
            up = parent.names[0][0] if parent.names else ROOT_INO
            return self._attr(self._stat(parent_inode if name == b"." else up))
        text = _name(name)
        ino = self.store.lookup(parent_inode, text)
        if ino is None:
            if self._stat(parent_inode).type != "dir":  # ENOENT for a missing parent
                raise E.NotADirectory(f"inode {parent_inode} is not a directory")
            raise quick_error(E.NotFound)
        return self._attr(self._stat(ino))

    @translate
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self._attr(self._stat(inode))

    @translate
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: Any, fh: int | None,
                      ctx: Any = None) -> pyfuse3.EntryAttributes:  # fmt: skip
        node = self._node(inode)
        now = _now()
        if fields.update_size:
            if node.type == "dir":
                raise E.IsADirectory("cannot truncate a directory")
            if node.type != "file":
                raise E.InvalidArgument("cannot truncate a symlink")
            if attr.st_size < 0 or attr.st_size > wire.MAX_FILE_SIZE:
                raise E.InvalidArgument("size out of range")
            content = self._content(node)
            try:
                await self._truncate(content, attr.st_size)
                if content.opens == 0:
                    await self._seal(content)
            finally:
                self._maybe_close(content)
            node = self._node(inode)
        mode = mtime = None
        if fields.update_mode:
            node.mode = mode = attr.st_mode & 0o7777
        if fields.update_uid:
            node.uid = attr.st_uid
        if fields.update_gid:
            node.gid = attr.st_gid
        if fields.update_mtime:
            node.mtime_ns = mtime = attr.st_mtime_ns
            content = self._files.get(inode)
            if content is not None:
                content.mtime_ns = mtime
        node.ctime_ns = now
        txn = self.store.txn()
        txn.put_node(node)
        if mode is not None or mtime is not None:
            txn.outbox_append(wire.Setattr(new_op_id(), node.id, mode=mode, mtime_ns=mtime))
        txn.commit()
        return self._attr(node)

    # --- directories ----------------------------------------------------------------------

    @translate
    async def opendir(self, inode: int, ctx: Any = None) -> int:
        self._dir(inode)
        return inode

    def readdir_entries(
        self, inode: int, start_id: int
    ) -> Iterator[tuple[bytes, pyfuse3.EntryAttributes, int]]:
        """``(name, attributes, next offset)`` after offset ``start_id``, in cookie order.

        The offset of an entry is derived from its name (``store.name_cookie``), so listing
        can resume after any entry while others are created or deleted meanwhile.

        Hot path (a 5,000-entry listing should take a few ms): one prefix iteration, the
        record header unpacked here rather than through ``NodeAttrs``, and the entry
        attributes built inline. Keep it equivalent to ``_attr``.
        """
        unpack = NODE_HEADER.unpack_from
        files = self._files
        entry_t, attr_t = self.entry_timeout, self.attr_timeout
        for cookie, name, child, raw in self.store.listing(inode, start_id):
            if child in files:  # open: size and mtime may be ahead of the record
                attrs = self.store.attrs(child)
                if attrs is not None:
                    yield name, self._attr(attrs), cookie
                continue
            _, t, _, mode, uid, gid, mtime, ctime, size, _, alloc, links = unpack(raw)
            a = pyfuse3.EntryAttributes()
            a.st_ino = child
            a.entry_timeout = entry_t
            a.attr_timeout = attr_t
            a.st_mode = _TYPE_CODE_BITS[t] | mode
            a.st_nlink = 2 if t == _DIR_CODE else links
            a.st_uid = uid
            a.st_gid = gid
            a.st_size = size
            a.st_blksize = 131072
            a.st_blocks = (alloc + 511) // 512
            a.st_atime_ns = mtime
            a.st_mtime_ns = mtime
            a.st_ctime_ns = ctime if ctime > mtime else mtime
            yield name, a, cookie

    def _listing(self, inode: int, start_id: int) -> _Listing | None:
        """The built listing of ``inode`` if it is current, else (at offset 0) a new one,
        else None (list from the store). Built only from offset 0 and up to the cache's
        room: a listing that starts there usually reads to the end."""
        stamp = self.store.listing_stamp(inode)
        cached = self._listings.get(inode)
        if cached is not None:
            if cached.stamp == stamp:
                return cached
            del self._listings[inode]
            self._listed -= len(cached.rows)
        if start_id != 0:
            return None
        rows = []
        for name, attr, cookie in self.readdir_entries(inode, 0):
            rows.append((name, attr, cookie, attr.st_ino))
            if len(rows) > LISTING_CACHE_ENTRIES:
                return None
        if self._listed + len(rows) > LISTING_CACHE_ENTRIES:
            self._listings.clear()
            self._listed = 0
        listing = _Listing(stamp, rows)
        self._listings[inode] = listing
        self._listed += len(rows)
        return listing

    def readdir_listing(
        self, inode: int, start_id: int
    ) -> Iterator[tuple[bytes, pyfuse3.EntryAttributes, int]]:
        """What ``readdir_entries`` yields, from the directory's built listing while no
        commit changed the directory or a child's record since it was built
        (``Store.listing_stamp``); open files always get their current attributes."""
        listing = self._listing(inode, start_id)
        if listing is None:
            yield from self.readdir_entries(inode, start_id)
            return
        files = self._files
        rows = listing.rows
        for i in range(bisect.bisect_right(listing.cookies, start_id), len(rows)):
            name, attr, cookie, child = rows[i]
            if child in files:  # open: size and mtime may be ahead of the record
                attrs = self.store.attrs(child)
                if attrs is None:
                    continue
                attr = self._attr(attrs)
            yield name, attr, cookie

    @translate
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        # no await in here: the listing cannot change while it is being sent
        reply = pyfuse3.readdir_reply
        for name, attr, nxt in self.readdir_listing(fh, start_id):
            if not reply(token, name, attr, nxt):
                break

    async def releasedir(self, fh: int) -> None:
        return None

    @translate
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        await self._wal_sync.sync()

    @translate
    async def statfs(self, ctx: Any = None) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        bsize = 4096
        total = self.quota_total if self.quota_total is not None else 1 << 50
        free = max(total - self.quota_used, 0)
        s.f_bsize = s.f_frsize = bsize
        s.f_blocks = total // bsize
        s.f_bfree = s.f_bavail = free // bsize
        s.f_files = 1 << 32
        s.f_ffree = s.f_favail = (1 << 32) - 1
        s.f_namemax = MAX_NAME_BYTES
        return s

    # --- xattrs ---------------------------------------------------------------------------

    @translate
    async def getxattr(self, inode: int, name: bytes, ctx: Any = None) -> bytes:
        text = _xname(name)  # first: the kernel asks for security.capability on every write
        value = self._node(inode).xattrs.get(text)
        if value is None:
            raise quick_error(NoAttribute)
        return value

    @translate
    async def listxattr(self, inode: int, ctx: Any = None) -> list[bytes]:
        return [n.encode() for n in self._node(inode).xattrs]

    @translate
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any = None) -> None:
        node = self._node(inode)
        text = _xname(name)
        wire.xattr_name(text)
        if len(value) > wire.MAX_XATTR_VALUE:
            raise E.TooLarge(f"xattr value larger than {wire.MAX_XATTR_VALUE} bytes")
        if text not in node.xattrs and len(node.xattrs) >= wire.MAX_XATTRS:
            raise E.TooLarge(f"at most {wire.MAX_XATTRS} xattrs per node")
        node.xattrs[text] = bytes(value)
        node.ctime_ns = _now()
        txn = self.store.txn()
        txn.put_node(node)
        txn.outbox_append(wire.Setattr(new_op_id(), node.id, xattrs_set={text: bytes(value)}))
        txn.commit()

    @translate
    async def removexattr(self, inode: int, name: bytes, ctx: Any = None) -> None:
        node = self._node(inode)
        text = _xname(name)
        if node.xattrs.pop(text, None) is None:
            raise NoAttribute("no such attribute")
        node.ctime_ns = _now()
        txn = self.store.txn()
        txn.put_node(node)
        txn.outbox_append(wire.Setattr(new_op_id(), node.id, xattrs_remove=(text,)))
        txn.commit()

    async def forget(self, inode_list: Iterable[tuple[int, int]]) -> None:
        return None  # inodes are persistent; deleted ones are dropped at unlink/release

    # --- remote changes -------------------------------------------------------------------

    def _has_unsealed_writes(self, node_id: str) -> bool:
        """True while ``node_id`` is open with written data not sealed yet (``Store.pending``)."""
        if not self._files:  # the usual case when a pull applies an echo: skip the lookup
            return False
        ino = self.store.ino_of(node_id)
        content = None if ino is None else self._files.get(ino)
        return content is not None and content.dirty

    async def apply_remote(
        self, nodes: Iterable[wire.Node], *, cursor: str | None = None
    ) -> Changes:
        """Apply changes-feed nodes to the store (one batch) and tell the kernel."""
        changes = self.store.apply_remote(nodes, cursor=cursor)
        await self.invalidate(changes)
        return changes

    async def invalidate(self, changes: Changes) -> None:
        """Refresh open unmodified files whose content changed remotely and drop the
        kernel's cached attributes, data and names. Safe when not mounted."""
        for ino in changes.content:
            content = self._files.get(ino)
            node = self.store.node(ino)
            if content is not None and node is not None and not content.dirty:
                async with content.lock:
                    content.install(self.store.blocklist(ino).entries)
                    content.size = node.size
        if not self.mounted:
            return
        for ino in changes.inodes:
            try:
                await trio.to_thread.run_sync(
                    pyfuse3.invalidate_inode, ino, ino not in changes.content
                )
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.ENOSYS):
                    log.info("invalidate_inode(%d): %s", ino, e)
        for parent, name in changes.entries:
            pyfuse3.invalidate_entry_async(parent, name.encode("utf-8", "surrogateescape"),
                                           ignore_enoent=True)  # fmt: skip
