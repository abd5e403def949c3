"""A tiny read-only pyfuse3 + trio file system, used only by the FUSE plumbing tests.

It is not part of Cairn. It proves that the machine can mount a pyfuse3 file system at all
(``/dev/fuse``, ``fusermount3``, the pyfuse3 build, trio's event loop), so a failure in the
drive's own mount tests can be told apart from broken CI plumbing.

Run as ``python -m tests.fuse_plumbing.hellofs MOUNTPOINT`` from the repository root. The
process serves until it receives SIGTERM or SIGINT (or is unmounted from outside), then
unmounts and exits 0. The tree it serves is fixed and described by ``FILES`` so the test can
compare what the kernel returns with what was meant:

    /hello.txt        small text file, mode 0444
    /data.bin         deterministic 300 KiB binary (several FUSE read requests)
    /sub/             directory, mode 0555
    /sub/nested.txt   small text file
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import stat
import sys

import pyfuse3
import trio


def _data_bin() -> bytes:
    # Deterministic bytes without a Python byte loop: a chain of SHA-256 digests.
    blocks = []
    seed = b"cairn-fuse-plumbing"
    for _ in range(300 * 1024 // 32):
        seed = hashlib.sha256(seed).digest()
        blocks.append(seed)
    return b"".join(blocks)


# path (relative, "/"-separated) -> content; directories are implied by paths.
FILES: dict[str, bytes] = {
    "hello.txt": b"hello from the cairn fuse plumbing tier\n",
    "data.bin": _data_bin(),
    "sub/nested.txt": b"nested\n",
}
DIRS = ("", "sub")


class HelloFS(pyfuse3.Operations):
    """Read-only operations over ``FILES``; every write-like request gets EROFS."""

    def __init__(self) -> None:
        super().__init__()
        # Inode numbers: root is pyfuse3.ROOT_INODE, the rest assigned in sorted path order.
        self._paths: dict[int, str] = {pyfuse3.ROOT_INODE: ""}
        next_ino = pyfuse3.ROOT_INODE + 1
        for path in sorted(set(DIRS[1:]) | set(FILES)):
            self._paths[next_ino] = path
            next_ino += 1
        self._inodes = {p: i for i, p in self._paths.items()}

    def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
        path = self._paths[ino]
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        if path in FILES:
            a.st_mode = stat.S_IFREG | 0o444
            a.st_size = len(FILES[path])
            a.st_nlink = 1
        else:
            a.st_mode = stat.S_IFDIR | 0o555
            a.st_size = 0
            a.st_nlink = 2
        a.st_uid = os.getuid()
        a.st_gid = os.getgid()
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = 1_700_000_000 * 10**9
        a.st_blksize = 4096
        a.st_blocks = (a.st_size + 511) // 512
        a.entry_timeout = 60
        a.attr_timeout = 60
        return a

    def _children(self, ino: int) -> list[tuple[str, int]]:
        parent = self._paths[ino]
        prefix = parent + "/" if parent else ""
        out = []
        for path, child in self._inodes.items():
            if path and path.startswith(prefix) and "/" not in path[len(prefix) :]:
                out.append((path[len(prefix) :], child))
        return sorted(out)

    def _get(self, ino: int) -> str:
        try:
            return self._paths[ino]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    async def getattr(self, inode, ctx=None):
        self._get(inode)
        return self._attr(inode)

    async def lookup(self, parent_inode, name, ctx=None):
        if self._get(parent_inode) in FILES:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        for child_name, child in self._children(parent_inode):
            if child_name.encode() == name:
                return self._attr(child)
        raise pyfuse3.FUSEError(errno.ENOENT)

    async def opendir(self, inode, ctx):
        if self._get(inode) in FILES:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    async def readdir(self, fh, start_id, token):
        # next_id is the index after the entry, so a resumed listing continues where it stopped.
        children = self._children(fh)
        for index in range(start_id, len(children)):
            name, child = children[index]
            if not pyfuse3.readdir_reply(token, name.encode(), self._attr(child), index + 1):
                break

    async def open(self, inode, flags, ctx):
        path = self._get(inode)
        if path not in FILES:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise pyfuse3.FUSEError(errno.EROFS)
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    async def read(self, fh, off, size):
        return FILES[self._paths[fh]][off : off + size]

    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = sum(len(v) for v in FILES.values()) // 4096 + 1
        s.f_bfree = s.f_bavail = 0
        s.f_files = len(self._paths)
        s.f_ffree = s.f_favail = 0
        s.f_namemax = 255
        return s


async def _serve() -> None:
    async with trio.open_nursery() as nursery:

        async def stop_on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    pyfuse3.terminate()
                    return

        nursery.start_soon(stop_on_signal)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tests.fuse_plumbing.hellofs MOUNTPOINT", file=sys.stderr)
        return 2
    mountpoint = args[0]
    if not os.path.isdir(mountpoint):
        print(f"hellofs: mountpoint {mountpoint!r} is not a directory", file=sys.stderr)
        return 2
    options = set(pyfuse3.default_options)
    options.add("fsname=cairn-hellofs")
    options.add("ro")
    try:
        pyfuse3.init(HelloFS(), mountpoint, options)
    except RuntimeError as e:
        print(f"hellofs: cannot mount {mountpoint!r}: {e}", file=sys.stderr)
        return 1
    try:
        trio.run(_serve)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
