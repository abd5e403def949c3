"""``mount.cairn`` in mount(8)'s calling convention."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cairn.fs.cli import UsageError
from cairn.fs.mount_helper import parse
from tests.support.drive import BIN, Device


def test_parse_fstab_call() -> None:
    argv, fake = parse(["/st", "/mnt", "-n", "-o", "rw,allow_other,_netdev", "-t", "cairn"])
    assert argv == ["mount", "/mnt", "--state", "/st", "-o", "rw,allow_other,_netdev"]
    assert not fake
    assert parse(["-f", "/st", "/mnt"]) == (["mount", "/mnt", "--state", "/st"], True)
    with pytest.raises(UsageError):
        parse(["/st"])
    with pytest.raises(UsageError):
        parse(["/st", "/mnt", "-x"])


@pytest.mark.fuse
def test_mount_helper_mounts(devices, tmp_path: Path) -> None:
    a: Device = devices("A")
    res = subprocess.run(
        [str(BIN / "mount.cairn"), str(a.state), str(a.mnt), "-o", "rw,allow_other,nofail,_netdev"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert os.path.ismount(a.mnt)
    opts = next(
        line for line in Path("/proc/self/mounts").read_text().splitlines() if str(a.mnt) in line
    )
    assert "fuse.cairn" in opts and "allow_other" in opts and "default_permissions" in opts
    (a.mnt / "f").write_text("x")
    a.unmount()
    res = subprocess.run(
        [str(BIN / "mount.cairn"), str(a.state)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "usage" in res.stderr
