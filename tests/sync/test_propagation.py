"""Changes made on device A reach a mounted device B without a remount: new files, edits
(B's kernel caches invalidated), whole-tree renames and case-only renames (as renames: B
keeps the same inode for the moved node)."""

from __future__ import annotations

import os

import pytest

from tests.support.drive import wait_until
from tests.sync.tree import converge, snapshot, write_file

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

DEADLINE = 30


def reads(path: os.PathLike[str], want: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read() == want
    except OSError:
        return False


def test_new_file_and_edit_reach_mounted_b(sync_devices) -> None:
    a, b = sync_devices("A"), sync_devices("B")
    write_file(a.mnt / "hello.txt", b"first version\n")
    wait_until(lambda: reads(b.mnt / "hello.txt", b"first version\n"), DEADLINE, "B sees hello")
    # B has read it (page cache + attributes cached); A edits: B must show the new bytes.
    assert (b.mnt / "hello.txt").stat().st_size == len(b"first version\n")
    write_file(a.mnt / "hello.txt", b"second, longer version\n")
    wait_until(
        lambda: reads(b.mnt / "hello.txt", b"second, longer version\n"), DEADLINE, "B sees edit"
    )
    assert (b.mnt / "hello.txt").stat().st_size == len(b"second, longer version\n")
    # in-place overwrite of the same size (only the page cache can hide it)
    with open(a.mnt / "hello.txt", "r+b") as f:
        f.write(b"SECOND")
    wait_until(
        lambda: reads(b.mnt / "hello.txt", b"SECOND, longer version\n"),
        DEADLINE,
        "B sees same-size edit",
    )
    # a listing on B shows a new entry and loses a deleted one
    assert "later.txt" not in os.listdir(b.mnt)
    write_file(a.mnt / "later.txt", b"x")
    wait_until(lambda: "later.txt" in os.listdir(b.mnt), DEADLINE, "B lists later.txt")
    os.unlink(a.mnt / "later.txt")
    wait_until(lambda: "later.txt" not in os.listdir(b.mnt), DEADLINE, "B drops later.txt")
    converge([a, b], DEADLINE)


def test_tree_rename_travels_as_rename(sync_devices) -> None:
    a, b = sync_devices("A"), sync_devices("B")
    top = a.mnt / "proj"
    (top / "src" / "pkg").mkdir(parents=True)
    for i in range(30):
        write_file(top / "src" / "pkg" / f"m{i}.py", f"# module {i}\n".encode() * 50)
    write_file(top / "README", b"readme\n")
    os.symlink("src/pkg/m1.py", top / "link")
    want = converge([a, b], DEADLINE)
    ino_dir = os.stat(b.mnt / "proj").st_ino
    ino_file = os.stat(b.mnt / "proj" / "src" / "pkg" / "m7.py").st_ino
    os.rename(top, a.mnt / "renamed")
    wait_until(lambda: (b.mnt / "renamed").exists(), DEADLINE, "B sees the renamed tree")
    got = converge([a, b], DEADLINE)
    assert got == {k.replace("proj", "renamed", 1): v for k, v in want.items()}
    # A rename, not delete + re-create: B's nodes keep their inode numbers.
    assert os.stat(b.mnt / "renamed").st_ino == ino_dir
    assert os.stat(b.mnt / "renamed" / "src" / "pkg" / "m7.py").st_ino == ino_file


def test_case_only_rename(sync_devices) -> None:
    a, b = sync_devices("A"), sync_devices("B")
    write_file(a.mnt / "a.txt", b"case matters\n")
    converge([a, b], DEADLINE)
    ino = os.stat(b.mnt / "a.txt").st_ino
    os.rename(a.mnt / "a.txt", a.mnt / "A.txt")
    wait_until(lambda: os.listdir(b.mnt) == ["A.txt"], DEADLINE, "B lists only A.txt")
    snap = converge([a, b], DEADLINE)
    assert list(snap) == ["A.txt"]
    assert (b.mnt / "A.txt").read_bytes() == b"case matters\n"
    assert os.stat(b.mnt / "A.txt").st_ino == ino
    assert snapshot(a.mnt) == snapshot(b.mnt)
