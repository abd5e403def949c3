"""Bad input and failures at the command line: one line on stderr, a non-zero exit status,
never a traceback."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.drive import CAIRN, PASSWORD, Device, free_port_url, wait_until

pytestmark = pytest.mark.fuse


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None):
    return subprocess.run(
        [CAIRN, *args], input=input, capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def one_line(res: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert res.returncode == code, (res.returncode, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("cairn: "), res.stderr
    assert "Traceback" not in res.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_wrong_password(drive_server, tmp_path: Path) -> None:
    res = run("login", drive_server.url, "--user", "alice", "--password-stdin",
              "--state", str(tmp_path / "st"), input="not-the-password\n")  # fmt: skip
    one_line(res, 4, "wrong user name or password")
    assert not (tmp_path / "st" / "token").exists()


def test_unknown_user(drive_server, tmp_path: Path) -> None:
    res = run("login", drive_server.url, "--user", "nobody", "--password-stdin",
              "--state", str(tmp_path / "st"), input=PASSWORD + "\n")  # fmt: skip
    one_line(res, 4)


def test_unreachable_server(tmp_path: Path) -> None:
    res = run("login", free_port_url(), "--user", "alice", "--password-stdin",
              "--state", str(tmp_path / "st"), input="x\n")  # fmt: skip
    one_line(res, 3, "cannot reach server")


def test_bad_server_url(tmp_path: Path) -> None:
    res = run("login", "ftp://example", "--user", "a", "--password-stdin",
              "--state", str(tmp_path / "st"), input="x\n")  # fmt: skip
    one_line(res, 2, "server URL")


def test_mount_without_login(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    res = run("mount", str(tmp_path / "m"), "--state", str(tmp_path / "nothing"))
    one_line(res, 1, "does not exist")
    res = run("status", "--state", str(tmp_path / "nothing"))
    one_line(res, 1, "does not exist")


def test_bad_mountpoints(devices, tmp_path: Path) -> None:
    a: Device = devices("A")
    missing = tmp_path / "missing"
    res = a.cli("mount", str(missing), "--state", str(a.state))
    one_line(res, 1, "does not exist")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    res = a.cli("mount", str(busy), "--state", str(a.state))
    one_line(res, 1, "not empty")
    afile = tmp_path / "afile"
    afile.write_text("x")
    res = a.cli("mount", str(afile), "--state", str(a.state))
    one_line(res, 1, "not a directory")
    res = a.cli("mount", str(a.mnt), "--state", str(a.state), "-o", "bogus")
    one_line(res, 1, "bogus")
    assert not os.path.ismount(a.mnt)


def test_already_mounted(devices, tmp_path: Path) -> None:
    a: Device = devices("A")
    a.mount()
    res = a.cli("mount", str(a.mnt), "--state", str(a.state))
    one_line(res, 1, "already mounted")
    other = tmp_path / "other"
    other.mkdir()
    res = a.cli("mount", str(other), "--state", str(a.state))
    one_line(res, 1, "already mounted")
    res = a.cli("unmount", str(other))
    one_line(res, 1, "not mounted")
    (a.mnt / "f.txt").write_text("x")
    wait_until(lambda: "pending:  0 changes" in a.status(), 30, "the upload")
    st = a.status()
    assert f"mounted:  {a.mnt}" in st and "reachable: yes" in st and "errors:   none" in st
    a.unmount()
    assert not os.path.ismount(a.mnt)
    assert a.pid() is None
    st = a.status()  # not mounted: read from the state dir itself
    assert "mounted:  no" in st and "pending:  0 changes" in st and "reachable: yes" in st
