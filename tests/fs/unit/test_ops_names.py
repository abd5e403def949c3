"""Operations on names and attributes: lookup, mkdir, create, unlink, rmdir, rename (with
flags), link, symlink, setattr, xattrs, readdir, statfs, mknod — and the outbox ops each
change queues, and the errno of each kind of bad input."""

from __future__ import annotations

import errno
import os
import stat

import pyfuse3
import pytest

from cairn.core import wire
from tests.fs.unit.helpers import CTX, ROOT_ID, ROOT_INO, Fields, create, errno_of, read_all

pytestmark = pytest.mark.anyio


def kinds(drive) -> list[str]:  # type: ignore[no-untyped-def]
    return [e.op.kind for e in drive.store.outbox_peek(None)]


async def test_mkdir_create_lookup_getattr_and_outbox(drive) -> None:
    ops = drive.ops
    d = await ops.mkdir(ROOT_INO, b"docs", 0o750, CTX)
    assert stat.S_ISDIR(d.st_mode) and stat.S_IMODE(d.st_mode) == 0o750
    assert d.st_uid == CTX.uid and d.st_gid == CTX.gid
    ino = await create(ops, d.st_ino, "a.txt", b"hello")
    got = await ops.lookup(d.st_ino, b"a.txt", CTX)
    assert got.st_ino == ino and got.st_size == 5 and stat.S_ISREG(got.st_mode)
    assert got.entry_timeout > 0 and got.attr_timeout > 0
    assert (await ops.lookup(d.st_ino, b"..", CTX)).st_ino == ROOT_INO
    assert await read_all(ops, ino) == b"hello"

    entries = drive.store.outbox_peek(None)
    # the first content of a new file rides in its create (nothing had peeked it yet)
    assert [e.op.kind for e in entries] == ["mkdir", "create"]
    mk, cr = (e.op for e in entries)
    assert isinstance(mk, wire.Mkdir) and mk.parent == ROOT_ID and mk.name == "docs"
    assert mk.mode == 0o750
    assert isinstance(cr, wire.Create) and cr.parent == mk.node and cr.name == "a.txt"
    assert cr.blocklist.size == 5 and len(cr.blocklist) == 1
    # once the pusher has peeked (maybe sending) the create, edits queue an update
    fi = await ops.open(ino, os.O_WRONLY, CTX)
    await ops.write(fi.fh, 5, b"!")
    await ops.release(fi.fh)
    entries = drive.store.outbox_peek(None)
    assert entries[1].op.blocklist.size == 5
    up = entries[2].op
    assert isinstance(up, wire.Update) and up.node == cr.node and up.base_rev == 0
    assert up.blocklist.size == 6
    # node ids are the wire's: 32 hex, and inode <-> node id both ways
    assert drive.store.ino_of(cr.node) == ino and drive.store.node(ino).id == cr.node


async def test_errnos_for_bad_input(drive) -> None:
    ops = drive.ops
    f = await create(ops, ROOT_INO, "f")
    d = (await ops.mkdir(ROOT_INO, b"d", 0o755, CTX)).st_ino
    await create(ops, d, "inner")
    assert await errno_of(ops.lookup(ROOT_INO, b"missing", CTX)) == errno.ENOENT
    assert await errno_of(ops.mkdir(ROOT_INO, b"f", 0o755, CTX)) == errno.EEXIST
    assert await errno_of(ops.create(ROOT_INO, b"d", 0o644, 0, CTX)) == errno.EEXIST
    assert await errno_of(ops.lookup(f, b"x", CTX)) == errno.ENOTDIR
    assert await errno_of(ops.mkdir(f, b"x", 0o755, CTX)) == errno.ENOTDIR
    assert await errno_of(ops.rmdir(ROOT_INO, b"d", CTX)) == errno.ENOTEMPTY
    assert await errno_of(ops.rmdir(ROOT_INO, b"f", CTX)) == errno.ENOTDIR
    assert await errno_of(ops.unlink(ROOT_INO, b"d", CTX)) == errno.EISDIR
    assert await errno_of(ops.open(d, os.O_RDONLY, CTX)) == errno.EISDIR
    assert await errno_of(ops.create(ROOT_INO, b"x" * 256, 0o644, 0, CTX)) == errno.ENAMETOOLONG
    assert await errno_of(ops.create(ROOT_INO, b"\xff\xfe", 0o644, 0, CTX)) == errno.EINVAL
    assert await errno_of(ops.getattr(99999, CTX)) == errno.ENOENT
    assert await errno_of(ops.readlink(f, CTX)) == errno.EINVAL
    assert await errno_of(ops.link(d, ROOT_INO, b"dl", CTX)) == errno.EPERM
    ln = (await ops.symlink(ROOT_INO, b"sl", b"f", CTX)).st_ino
    assert await errno_of(ops.link(ln, ROOT_INO, b"sl2", CTX)) == errno.EPERM
    # nothing of the failed calls reached the outbox
    assert kinds(drive) == ["create", "mkdir", "create", "symlink"]


async def test_mknod_regular_ok_devices_eperm(drive) -> None:
    ops = drive.ops
    attr = await ops.mknod(ROOT_INO, b"plain", stat.S_IFREG | 0o600, 0, CTX)
    assert stat.S_ISREG(attr.st_mode) and attr.st_size == 0
    for kind in (stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK):
        assert await errno_of(ops.mknod(ROOT_INO, b"dev", kind | 0o600, 0, CTX)) == errno.EPERM
    assert await errno_of(ops.lookup(ROOT_INO, b"dev", CTX)) == errno.ENOENT


async def test_unlink_rmdir_and_outbox(drive) -> None:
    ops = drive.ops
    d = (await ops.mkdir(ROOT_INO, b"d", 0o755, CTX)).st_ino
    f = await create(ops, d, "f", b"x")
    fid = drive.store.node(f).id
    await ops.unlink(d, b"f", CTX)
    assert await errno_of(ops.lookup(d, b"f", CTX)) == errno.ENOENT
    assert drive.store.node(f) is None and drive.store.ino_of(fid) is None
    await ops.rmdir(ROOT_INO, b"d", CTX)
    assert await errno_of(ops.getattr(d, CTX)) == errno.ENOENT
    ops_ = [e.op for e in drive.store.outbox_peek(None)]
    assert [o.kind for o in ops_] == ["mkdir", "create", "unlink", "unlink"]
    assert ops_[2].node == fid and ops_[2].name == "f" and ops_[2].base_rev is None


async def test_unlink_open_file_keeps_data_until_release(drive) -> None:
    ops = drive.ops
    ino = await create(ops, ROOT_INO, "tmp", b"still here")
    fi = await ops.open(ino, os.O_RDWR, CTX)
    await ops.unlink(ROOT_INO, b"tmp", CTX)
    assert await ops.read(fi.fh, 0, 100) == b"still here"
    await ops.write(fi.fh, 0, b"STILL")
    assert await ops.read(fi.fh, 0, 100) == b"STILL here"
    await ops.release(fi.fh)
    assert drive.store.node(ino) is None
    assert kinds(drive)[-1] == "unlink"  # no update for a deleted node


async def test_rename_replace_noreplace_exchange(drive) -> None:
    ops = drive.ops
    a = await create(ops, ROOT_INO, "a", b"A")
    b = await create(ops, ROOT_INO, "b", b"B")
    d = (await ops.mkdir(ROOT_INO, b"d", 0o755, CTX)).st_ino
    n0 = len(kinds(drive))

    assert (
        await errno_of(ops.rename(ROOT_INO, b"a", ROOT_INO, b"b", pyfuse3.RENAME_NOREPLACE, CTX))
        == errno.EEXIST
    )
    assert await errno_of(ops.rename(ROOT_INO, b"zz", ROOT_INO, b"b", 0, CTX)) == errno.ENOENT
    assert (
        await errno_of(ops.rename(ROOT_INO, b"a", ROOT_INO, b"zz", pyfuse3.RENAME_EXCHANGE, CTX))
        == errno.ENOENT
    )
    assert await errno_of(ops.rename(ROOT_INO, b"a", ROOT_INO, b"d", 0, CTX)) == errno.EISDIR
    assert await errno_of(ops.rename(ROOT_INO, b"d", ROOT_INO, b"a", 0, CTX)) == errno.ENOTDIR
    assert await errno_of(ops.rename(ROOT_INO, b"d", d, b"self", 0, CTX)) == errno.EINVAL
    assert await errno_of(ops.rename(ROOT_INO, b"a", ROOT_INO, b"b", 3, CTX)) == errno.EINVAL
    assert len(kinds(drive)) == n0

    # exchange: both names stay, contents swap
    await ops.rename(ROOT_INO, b"a", ROOT_INO, b"b", pyfuse3.RENAME_EXCHANGE, CTX)
    assert (await ops.lookup(ROOT_INO, b"a", CTX)).st_ino == b
    assert (await ops.lookup(ROOT_INO, b"b", CTX)).st_ino == a
    ex = [e.op for e in drive.store.outbox_peek(None)][n0:]
    assert [o.kind for o in ex] == ["rename"] * 3
    assert ex[0].new_name.startswith(".cairn-exchange-") and ex[1].new_name == "b"
    assert ex[2].name == ex[0].new_name and ex[2].new_name == "a"

    # replace: b (now node a) replaced by a (node b); the replaced node is gone
    await ops.rename(ROOT_INO, b"a", d, b"moved", 0, CTX)
    await ops.rename(d, b"moved", ROOT_INO, b"b", 0, CTX)
    assert (await ops.lookup(ROOT_INO, b"b", CTX)).st_ino == b
    assert drive.store.node(a) is None
    last = drive.store.outbox_peek(None)[-1].op
    assert isinstance(last, wire.Rename) and last.replace and last.new_name == "b"
    assert await read_all(ops, b) == b"B"

    # directory replaces an empty directory; not a non-empty one
    e = (await ops.mkdir(ROOT_INO, b"e", 0o755, CTX)).st_ino
    await ops.rename(ROOT_INO, b"d", ROOT_INO, b"e", 0, CTX)
    assert (await ops.lookup(ROOT_INO, b"e", CTX)).st_ino == d and drive.store.node(e) is None
    await create(ops, d, "x")
    f = (await ops.mkdir(ROOT_INO, b"f", 0o755, CTX)).st_ino
    assert await errno_of(ops.rename(ROOT_INO, b"f", ROOT_INO, b"e", 0, CTX)) == errno.ENOTEMPTY
    assert drive.store.node(f) is not None


async def test_hard_links(drive) -> None:
    ops = drive.ops
    ino = await create(ops, ROOT_INO, "one", b"shared")
    d = (await ops.mkdir(ROOT_INO, b"d", 0o755, CTX)).st_ino
    attr = await ops.link(ino, d, b"two", CTX)
    assert attr.st_ino == ino and attr.st_nlink == 2
    assert await errno_of(ops.link(ino, d, b"two", CTX)) == errno.EEXIST
    op = drive.store.outbox_peek(None)[-1].op
    assert isinstance(op, wire.Link) and op.new_name == "two"
    fi = await ops.open(ino, os.O_WRONLY, CTX)
    await ops.write(fi.fh, 0, b"SHARED")
    await ops.release(fi.fh)
    assert await read_all(ops, (await ops.lookup(d, b"two", CTX)).st_ino) == b"SHARED"
    # renaming one name onto the other name of the same node does nothing
    await ops.rename(ROOT_INO, b"one", d, b"two", 0, CTX)
    assert (await ops.getattr(ino, CTX)).st_nlink == 2
    await ops.unlink(ROOT_INO, b"one", CTX)
    assert (await ops.getattr(ino, CTX)).st_nlink == 1
    assert await read_all(ops, ino) == b"SHARED"


async def test_symlink_readlink(drive) -> None:
    ops = drive.ops
    attr = await ops.symlink(ROOT_INO, b"ln", b"../some/where", CTX)
    assert stat.S_ISLNK(attr.st_mode) and attr.st_size == len(b"../some/where")
    assert await ops.readlink(attr.st_ino, CTX) == b"../some/where"
    op = drive.store.outbox_peek(None)[-1].op
    assert isinstance(op, wire.Symlink) and op.target == "../some/where"


async def test_setattr_chmod_chown_utimens_and_outbox(drive) -> None:
    ops = drive.ops
    ino = await create(ops, ROOT_INO, "f", b"data")
    attr = pyfuse3.EntryAttributes()
    attr.st_mode = stat.S_IFREG | 0o600
    attr.st_uid, attr.st_gid = 4242, 4343
    attr.st_mtime_ns = 1_700_000_000_123_456_789
    got = await ops.setattr(ino, attr, Fields(mode=True, uid=True, gid=True, mtime=True), None, CTX)
    assert stat.S_IMODE(got.st_mode) == 0o600 and got.st_uid == 4242 and got.st_gid == 4343
    assert got.st_mtime_ns == 1_700_000_000_123_456_789
    op = drive.store.outbox_peek(None)[-1].op
    assert isinstance(op, wire.Setattr)
    assert op.mode == 0o600 and op.mtime_ns == 1_700_000_000_123_456_789
    n = len(kinds(drive))
    await ops.setattr(ino, attr, Fields(uid=True), None, CTX)  # ownership is local only
    assert len(kinds(drive)) == n


async def test_truncate_through_setattr(drive) -> None:
    ops = drive.ops
    ino = await create(ops, ROOT_INO, "f", bytes(range(256)) * 100)
    attr = pyfuse3.EntryAttributes()
    attr.st_size = 1000
    assert (await ops.setattr(ino, attr, Fields(size=True), None, CTX)).st_size == 1000
    assert await read_all(ops, ino) == (bytes(range(256)) * 100)[:1000]
    attr.st_size = 5000
    await ops.setattr(ino, attr, Fields(size=True), None, CTX)
    assert await read_all(ops, ino) == (bytes(range(256)) * 100)[:1000] + bytes(4000)
    (cr,) = (e.op for e in drive.store.outbox_peek(None))  # folded into the create
    assert isinstance(cr, wire.Create) and cr.blocklist.size == 5000
    assert cr.blocklist.entries[-1] == (None, 4000)
    d = (await ops.mkdir(ROOT_INO, b"d", 0o755, CTX)).st_ino
    assert await errno_of(ops.setattr(d, attr, Fields(size=True), None, CTX)) == errno.EISDIR


async def test_xattrs(drive) -> None:
    ops = drive.ops
    ino = await create(ops, ROOT_INO, "f")
    await ops.setxattr(ino, b"user.color", b"red", CTX)
    await ops.setxattr(ino, b"user.empty", b"", CTX)
    assert await ops.getxattr(ino, b"user.color", CTX) == b"red"
    assert sorted(await ops.listxattr(ino, CTX)) == [b"user.color", b"user.empty"]
    assert await errno_of(ops.getxattr(ino, b"user.none", CTX)) == errno.ENODATA
    assert await errno_of(ops.removexattr(ino, b"user.none", CTX)) == errno.ENODATA
    assert await errno_of(ops.setxattr(ino, b"security.selinux", b"x", CTX)) == errno.ENOTSUP
    assert await errno_of(ops.getxattr(ino, b"trusted.x", CTX)) == errno.ENOTSUP
    assert await errno_of(ops.setxattr(ino, b"user.big", bytes(65537), CTX)) == errno.E2BIG
    await ops.removexattr(ino, b"user.color", CTX)
    assert await ops.listxattr(ino, CTX) == [b"user.empty"]
    sets = [e.op for e in drive.store.outbox_peek(None) if e.op.kind == "setattr"]
    assert sets[0].xattrs_set == {"user.color": b"red"}
    assert sets[-1].xattrs_remove == ("user.color",)


async def test_statfs_reports_quota(drive) -> None:
    ops = drive.ops
    drive.ops.set_quota(10 << 30, 4 << 30)
    s = await ops.statfs(CTX)
    assert s.f_blocks * s.f_frsize == 10 << 30
    assert s.f_bavail * s.f_frsize == 6 << 30 and s.f_namemax == 255


async def test_readdir_offsets_survive_concurrent_changes(drive) -> None:
    ops = drive.ops
    d = (await ops.mkdir(ROOT_INO, b"d", 0o755, CTX)).st_ino
    names = {f"f{i:03d}" for i in range(60)}
    for n in sorted(names):
        await create(ops, d, n)
    fh = await ops.opendir(d, CTX)
    seen: list[str] = []
    cookie = 0
    created = removed = None
    for step in range(1000):
        batch = []
        for name, _attr, nxt in ops.readdir_entries(fh, cookie):
            batch.append((name.decode(), nxt))
            if len(batch) == 7:
                break
        if not batch:
            break
        seen += [n for n, _ in batch]
        cookie = batch[-1][1]
        if step == 2:
            # between pages: remove a name already listed and one not yet listed, add one
            removed = next(n for n in sorted(names) if n not in seen)
            await ops.unlink(d, removed.encode(), CTX)
            await ops.unlink(d, seen[0].encode(), CTX)
            created = "new-entry"
            await create(ops, d, created)
    assert len(seen) == len(set(seen)), "an entry was listed twice"
    # every name that existed throughout was listed exactly once
    assert names - {removed, seen[0]} <= set(seen)
    assert removed not in seen


async def test_remote_changes_apply_and_keep_local_edits(drive) -> None:
    ops = drive.ops
    cid = drive.source.add(b"remote bytes")
    remote_id = "ab" * 16

    def node(nid, rev, names, *, size=12, deleted=False, bl=((cid, 12),)):  # type: ignore[no-untyped-def]
        return wire.Node(nid, 1, "file", 0o644, 1, rev, size, tuple(names), None, {},
                         wire.Blocklist(bl), deleted, rev)  # fmt: skip

    dir_id = "cd" * 16
    child = node(remote_id, 1, [(dir_id, "r.txt")])
    parent = wire.Node(
        dir_id, 1, "dir", 0o755, 1, 1, 0, ((ROOT_ID, "rdir"),), None, {}, None, False, 2
    )
    ch = await ops.apply_remote([child, parent], cursor="c1")  # child before its parent
    assert drive.store.cursor() == "c1"
    rdir = (await ops.lookup(ROOT_INO, b"rdir", CTX)).st_ino
    ino = (await ops.lookup(rdir, b"r.txt", CTX)).st_ino
    assert (rdir, "r.txt") in ch.entries and not drive.store.outbox_peek(None)
    assert await read_all(ops, ino) == b"remote bytes"  # fetched, verified, cached
    assert drive.cache.has(cid) and not drive.cache.is_dirty(cid)

    # remote rename moves the name
    await ops.apply_remote([node(remote_id, 1, [(ROOT_ID, "moved.txt")])])
    assert await errno_of(ops.lookup(rdir, b"r.txt", CTX)) == errno.ENOENT
    assert (await ops.lookup(ROOT_INO, b"moved.txt", CTX)).st_ino == ino

    # a local edit not yet pushed wins over a remote change (kept, reported)
    fi = await ops.open(ino, os.O_WRONLY, CTX)
    await ops.write(fi.fh, 0, b"LOCAL")
    await ops.release(fi.fh)
    cid2 = drive.source.add(b"other remote")
    ch = await ops.apply_remote([node(remote_id, 2, [(ROOT_ID, "moved.txt")], bl=((cid2, 12),))])
    assert ch.kept_local == [remote_id]
    assert await read_all(ops, ino) == b"LOCALe bytes"

    # once pushed, the next remote change applies; remote delete removes the name
    drive.store.outbox_done([e.seq for e in drive.store.outbox_peek(None)], {remote_id: 2})
    await ops.apply_remote([node(remote_id, 3, [(ROOT_ID, "moved.txt")], bl=((cid2, 12),))])
    assert await read_all(ops, ino) == b"other remote"
    await ops.apply_remote([node(remote_id, 4, [], deleted=True)])
    assert await errno_of(ops.lookup(ROOT_INO, b"moved.txt", CTX)) == errno.ENOENT


async def test_remote_change_waits_while_an_open_file_has_unsealed_writes(drive) -> None:
    """A pull landing between write() and the seal (e.g. the echo of this file's previous
    push) must not roll the open file back: unsealed writes count as pending local edits."""
    ops = drive.ops
    cid = drive.source.add(b"remote bytes")
    nid = "ee" * 16
    n1 = wire.Node(nid, 1, "file", 0o644, 1, 1, 12, ((ROOT_ID, "open.txt"),), None, {},
                   wire.Blocklist(((cid, 12),)), False, 1)  # fmt: skip
    await ops.apply_remote([n1])
    ino = (await ops.lookup(ROOT_INO, b"open.txt", CTX)).st_ino
    fi = await ops.open(ino, os.O_WRONLY, CTX)
    await ops.write(fi.fh, 12, b" and local ones")  # extends the file, not sealed yet
    assert drive.store.pending(nid) and not drive.store.outbox_peek(None, sending=False)
    cid2 = drive.source.add(b"a newer remote version")
    n2 = wire.Node(nid, 1, "file", 0o644, 2, 2, 22, ((ROOT_ID, "open.txt"),), None, {},
                   wire.Blocklist(((cid2, 22),)), False, 2)  # fmt: skip
    ch = await ops.apply_remote([n2])
    assert ch.kept_local == [nid]
    assert (await ops.getattr(ino, CTX)).st_size == 27
    await ops.release(fi.fh)  # seals: the local version goes to the outbox, to be pushed
    assert not drive.store.pending(nid) or drive.store.outbox_peek(None, sending=False)
    assert await read_all(ops, ino) == b"remote bytes and local ones"


@pytest.mark.expect_warnings
async def test_offline_uncached_read_is_eio_not_hang(drive) -> None:
    ops = drive.ops
    cid = drive.source.add(b"only on the server")
    nid = "ef" * 16
    n = wire.Node(nid, 1, "file", 0o644, 1, 1, 18, ((ROOT_ID, "far"),), None, {},
                  wire.Blocklist(((cid, 18),)), False, 1)  # fmt: skip
    await ops.apply_remote([n])
    ino = (await ops.lookup(ROOT_INO, b"far", CTX)).st_ino
    drive.source.online = False
    fi = await ops.open(ino, os.O_RDONLY, CTX)
    assert await errno_of(ops.read(fi.fh, 0, 100)) == errno.EIO
    drive.source.online = True
    assert await ops.read(fi.fh, 0, 100) == b"only on the server"
    await ops.release(fi.fh)


@pytest.mark.expect_warnings
async def test_chunk_missing_everywhere_is_eio(drive) -> None:
    ops = drive.ops
    ghost = bytes(32)
    n = wire.Node("ab" * 16, 1, "file", 0o644, 1, 1, 10, ((ROOT_ID, "ghost"),), None, {},
                  wire.Blocklist(((ghost, 10),)), False, 1)  # fmt: skip
    await ops.apply_remote([n])
    ino = (await ops.lookup(ROOT_INO, b"ghost", CTX)).st_ino
    fi = await ops.open(ino, os.O_RDONLY, CTX)
    assert await errno_of(ops.read(fi.fh, 0, 10)) == errno.EIO
    await ops.release(fi.fh)


async def test_directory_times_move_with_its_entries(drive) -> None:
    ops = drive.ops
    d = (await ops.mkdir(ROOT_INO, b"d", 0o755, CTX)).st_ino
    e = (await ops.mkdir(ROOT_INO, b"e", 0o755, CTX)).st_ino
    stamps = [(await ops.getattr(d, CTX)).st_mtime_ns]

    async def moved() -> bool:
        now = (await ops.getattr(d, CTX)).st_mtime_ns
        stamps.append(now)
        return now > stamps[-2]

    await create(ops, d, "f")
    assert await moved()
    await ops.rename(d, b"f", e, b"g", 0, CTX)
    assert await moved()
    await ops.rename(e, b"g", d, b"h", 0, CTX)
    assert await moved()
    await ops.unlink(d, b"h", CTX)
    assert await moved()
    did = drive.store.node(d).id
    # directory times are local only: nothing is queued for the directory itself
    assert [e.op.kind for e in drive.store.outbox_peek(None) if e.op.node == did] == ["mkdir"]


_ATTR_FIELDS = ("st_ino", "st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks",
                "st_blksize", "st_atime_ns", "st_mtime_ns", "st_ctime_ns", "entry_timeout",
                "attr_timeout")  # fmt: skip


async def test_readdir_attributes_match_getattr_for_every_kind(drive) -> None:
    """readdir builds attributes on its own fast path; they must equal getattr's, for files
    (closed and open with unsealed writes), directories, symlinks and hard links, and every
    one carries kernel cache timeouts."""
    ops = drive.ops
    d = (await ops.mkdir(ROOT_INO, b"d", 0o755, CTX)).st_ino
    f = await create(ops, d, "file", b"x" * 5000, mode=0o640)
    await ops.mkdir(d, b"sub", 0o700, CTX)
    await ops.symlink(d, b"link", b"../somewhere", CTX)
    await ops.link(f, d, b"hard", CTX)
    fi, _ = await ops.create(d, b"open", 0o600, 0, CTX)
    await ops.write(fi.fh, 0, b"y" * 3000)  # not sealed yet: size comes from the open file
    try:
        listed = {name: attr for name, attr, _ in ops.readdir_entries(d, 0)}
        assert set(listed) == {b"file", b"sub", b"link", b"hard", b"open"}
        for name, attr in listed.items():
            want = await ops.lookup(d, name, CTX)
            got = {k: getattr(attr, k) for k in _ATTR_FIELDS}
            assert got == {k: getattr(want, k) for k in _ATTR_FIELDS}, name
            assert attr.entry_timeout > 0 and attr.attr_timeout > 0
        assert listed[b"open"].st_size == 3000 and listed[b"hard"].st_nlink == 2
        assert stat.S_ISLNK(listed[b"link"].st_mode) and listed[b"link"].st_size == 12
    finally:
        await ops.release(fi.fh)


async def test_built_listing_follows_every_change(drive) -> None:
    """readdir serves a directory's listing built once while nothing changed it; after
    each kind of change (names, child attributes, open files, links elsewhere, remote
    changes) it must equal a listing straight from the store, from any offset."""
    ops = drive.ops
    d = (await ops.mkdir(ROOT_INO, b"d", 0o755, CTX)).st_ino
    other = (await ops.mkdir(ROOT_INO, b"other", 0o755, CTX)).st_ino
    for i in range(20):
        await create(ops, d, f"f{i:02d}", b"x" * i)

    def same() -> None:
        want = [(n, c, {k: getattr(a, k) for k in _ATTR_FIELDS})
                for n, a, c in ops.readdir_entries(d, 0)]  # fmt: skip
        got = [(n, c, {k: getattr(a, k) for k in _ATTR_FIELDS})
               for n, a, c in ops.readdir_listing(d, 0)]  # fmt: skip
        assert got == want
        mid = want[len(want) // 2][1] if want else 0
        assert [n for n, _, _ in ops.readdir_listing(d, mid)] == [
            n for n, _, _ in ops.readdir_entries(d, mid)
        ]

    same()
    assert ops._listings.get(d) is not None  # built, and served from now on
    await create(ops, d, "new", b"abc")
    same()
    f3 = (await ops.lookup(d, b"f03", CTX)).st_ino
    await ops.setattr(f3, _mode(0o600), Fields(mode=True), None, CTX)
    same()
    fi = await ops.open(f3, os.O_WRONLY, CTX)
    await ops.write(fi.fh, 0, b"y" * 1000)  # unsealed: the size comes from the open file
    same()
    await ops.release(fi.fh)
    same()
    await ops.link(f3, other, b"hard", CTX)  # nlink of an entry changes from elsewhere
    same()
    await ops.setxattr(f3, b"user.k", b"v", CTX)  # ctime
    same()
    await ops.rename(d, b"f04", other, b"moved", 0, CTX)
    same()
    await ops.unlink(d, b"f05", CTX)
    same()
    names = ((drive.store.node(d).id, "remote"),)
    for rev, mode in ((1, 0o644), (2, 0o600)):  # a remote file arrives, then changes
        await ops.apply_remote(
            [
                wire.Node(
                    "ab" * 16,
                    1,
                    "file",
                    mode,
                    99_000 + rev,
                    rev,
                    0,
                    names,
                    None,
                    {},
                    wire.Blocklist(),
                    False,
                    rev,
                )
            ]  # fmt: skip
        )
        same()
    assert b"remote" in [n for n, _, _ in ops.readdir_listing(d, 0)]


def _mode(mode: int) -> pyfuse3.EntryAttributes:
    a = pyfuse3.EntryAttributes()
    a.st_mode = stat.S_IFREG | mode
    return a
