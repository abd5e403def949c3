"""Every operation through the kernel on device A; a fresh device B sees the same tree,
byte for byte, with modes, mtimes, symlinks, xattrs, hard links and a sparse 1 TiB file."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest

from tests.fs.e2e.treeview import snapshot
from tests.support.drive import Device, wait_until

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

TIB = 1 << 40
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
_libc = ctypes.CDLL(None, use_errno=True)


def renameat2(src: Path, dst: Path, flags: int) -> None:
    AT_FDCWD = -100
    if _libc.renameat2(AT_FDCWD, bytes(src), AT_FDCWD, bytes(dst), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(dst))


def build_tree(m: Path) -> None:
    (m / "docs" / "deep").mkdir(parents=True)
    blob = os.urandom(3_000_000) + b"text-like " * 200_000
    (m / "docs" / "deep" / "blob.bin").write_bytes(blob)
    (m / "docs" / "a.txt").write_text("hello\n")
    os.symlink("a.txt", m / "docs" / "link")
    os.symlink("/absolute/target/elsewhere", m / "dangling")
    os.rename(m / "docs" / "a.txt", m / "docs" / "b.txt")
    os.chmod(m / "docs" / "b.txt", 0o640)
    os.utime(m / "docs" / "b.txt", ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    # rename replacing an existing file
    (m / "old.txt").write_text("old")
    (m / "new.txt").write_text("new content")
    os.rename(m / "new.txt", m / "old.txt")
    # rename flags: NOREPLACE refuses an existing target, EXCHANGE swaps two names
    (m / "left").write_text("L")
    (m / "right").write_text("R")
    try:
        renameat2(m / "left", m / "right", RENAME_NOREPLACE)
        raise AssertionError("RENAME_NOREPLACE replaced an existing file")
    except FileExistsError:
        pass
    renameat2(m / "left", m / "right", RENAME_EXCHANGE)
    assert (m / "left").read_text() == "R" and (m / "right").read_text() == "L"
    # move between directories, and a directory rename
    (m / "docs" / "moved.txt").write_text("moving")
    os.rename(m / "docs" / "moved.txt", m / "docs" / "deep" / "moved.txt")
    (m / "dir1").mkdir()
    (m / "dir1" / "inner").write_text("inner")
    os.rename(m / "dir1", m / "dir2")
    os.chmod(m / "dir2", 0o700)
    # hard link
    (m / "linked").write_text("shared by two names")
    os.link(m / "linked", m / "docs" / "hardlink")
    # xattrs
    os.setxattr(m / "docs" / "b.txt", "user.color", b"red")
    os.setxattr(m / "docs", "user.tag", b"\x00binary\xff")
    # overwrite in the middle, append, truncate
    with open(m / "docs" / "deep" / "blob.bin", "r+b") as f:
        f.seek(1_000_000)
        f.write(b"X" * 10_000)
    with open(m / "docs" / "b.txt", "a") as f:
        f.write("appended\n")
    os.utime(m / "docs" / "b.txt", ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    (m / "shrink").write_bytes(b"y" * 100_000)
    os.truncate(m / "shrink", 1234)
    # sparse: a 1 TiB truncate and a write far out
    with open(m / "sparse", "wb") as f:
        f.truncate(TIB)
    with open(m / "sparse2", "wb") as f:
        f.seek(TIB)
        f.write(b"end")
    # delete a file and an empty dir
    (m / "gone.txt").write_text("bye")
    os.unlink(m / "gone.txt")
    (m / "emptydir").mkdir()
    os.rmdir(m / "emptydir")
    (m / "keepdir").mkdir()
    for i in range(50):
        (m / "keepdir" / f"small.{i}").write_text(f"f{i}")


def test_second_device_sees_everything(devices) -> None:
    a: Device = devices("A")
    a.mount()
    build_tree(a.mnt)
    want = snapshot(a.mnt)
    assert want["sparse"][3] == TIB and want["sparse2"][3] == TIB + 3
    assert os.stat(a.mnt / "sparse").st_blocks < 1024  # the hole costs nothing
    with open(a.mnt / "sparse", "rb") as f:
        f.seek(TIB // 2)
        assert f.read(8) == bytes(8)

    b: Device = devices("B")
    b.mount()
    wait_until(lambda: snapshot(b.mnt) == want, 90, "device B to converge on A's tree")
    assert os.stat(b.mnt / "linked").st_ino == os.stat(b.mnt / "docs" / "hardlink").st_ino
    assert os.stat(b.mnt / "linked").st_nlink == 2
    assert os.readlink(b.mnt / "docs" / "link") == "a.txt"
    assert not (b.mnt / "docs" / "link").exists()  # a.txt was renamed: the link dangles
    assert (b.mnt / "docs" / "b.txt").read_text() == "hello\nappended\n"

    # A's outbox is empty and status says so; unmount drains and exits.
    assert "pending:  0 changes" in a.status()
    res = a.unmount()
    assert not os.path.ismount(a.mnt)
    assert "not uploaded" not in res.stderr


def test_remount_keeps_tree(devices) -> None:
    a: Device = devices("A")
    a.mount()
    build_tree(a.mnt)
    want = snapshot(a.mnt)
    a.unmount()
    a.mount()
    assert snapshot(a.mnt) == want
