"""FUSE plumbing tier: a test-only pyfuse3 file system mounted and read through the kernel.

Guards CI's FUSE set-up (``/dev/fuse``, ``fusermount3``, the pyfuse3 build, trio) independently
of Cairn's drive: if these fail, the drive's mount tests cannot mean anything.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuse_plumbing.hellofs import FILES

pytestmark = pytest.mark.fuse


def test_files_read_through_the_kernel(hellofs_mount):
    mnt, _ = hellofs_mount
    for rel, content in FILES.items():
        with open(mnt / rel, "rb") as f:
            assert f.read() == content, rel
    # A read at an offset goes through FUSE's read with a non-zero offset.
    with open(mnt / "data.bin", "rb") as f:
        f.seek(200_000)
        assert f.read(10_000) == FILES["data.bin"][200_000:210_000]


def test_stat_and_listdir(hellofs_mount):
    mnt, _ = hellofs_mount
    assert sorted(os.listdir(mnt)) == ["data.bin", "hello.txt", "sub"]
    assert os.listdir(mnt / "sub") == ["nested.txt"]
    st = os.stat(mnt / "data.bin")
    assert stat.S_ISREG(st.st_mode)
    assert st.st_size == len(FILES["data.bin"])
    assert stat.S_IMODE(st.st_mode) == 0o444
    assert stat.S_ISDIR(os.stat(mnt / "sub").st_mode)
    assert os.statvfs(mnt).f_namemax == 255


def test_errors_come_back_as_errno(hellofs_mount):
    mnt, _ = hellofs_mount
    with pytest.raises(FileNotFoundError) as e:
        os.stat(mnt / "no-such-file")
    assert e.value.errno == errno.ENOENT
    with pytest.raises(NotADirectoryError):
        os.stat(mnt / "hello.txt" / "x")
    with pytest.raises(OSError) as e:
        open(mnt / "hello.txt", "wb")
    assert e.value.errno == errno.EROFS


def test_sigterm_unmounts_and_exits_cleanly(hellofs_mount):
    mnt, proc = hellofs_mount
    os.kill(proc.pid, signal.SIGTERM)
    try:
        assert proc.wait(timeout=10) == 0
    except subprocess.TimeoutExpired:
        pytest.fail("hellofs did not exit within 10 s of SIGTERM")
    assert not os.path.ismount(mnt)


def test_bad_mountpoint_is_one_line_on_stderr(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    r = subprocess.run(
        [sys.executable, "-m", "tests.fuse_plumbing.hellofs", str(tmp_path / "missing")],
        cwd=repo,
        capture_output=True,
        timeout=30,
    )
    assert r.returncode == 2
    assert r.stderr.decode().count("\n") == 1
    assert "not a directory" in r.stderr.decode()
