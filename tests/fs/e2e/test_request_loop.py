"""The mount's request loop under a burst (``fs/fuse_wait.py``), through the kernel: a
client that never pauses gets every answer right, the drive's other tasks (the control
socket behind ``cairn status``) still answer meanwhile, and the busy poll is what served
most of the burst."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from tests.support.drive import wait_until

pytestmark = pytest.mark.fuse

# Creates 400 files (distinct content) and stats them, over and over until the stop file
# appears or 60 s pass; prints the rounds done. Bounded in time and in rounds.
STORM = textwrap.dedent(
    """
    import os, sys, time
    top, stop = sys.argv[1], sys.argv[2]
    os.makedirs(top, exist_ok=True)
    end = time.monotonic() + 60
    rounds = 0
    while not os.path.exists(stop) and time.monotonic() < end and rounds < 1000:
        for i in range(400):
            p = os.path.join(top, f"f{i}")
            with open(p, "wb") as f:
                f.write(b"%d:%d|" % (rounds, i) * 50)
            os.stat(p)
        rounds += 1
    print(rounds)
    """
)


def test_status_answers_during_a_request_storm(devices, tmp_path) -> None:
    dev = devices("a")
    dev.mount()
    stop = tmp_path / "stop"
    storm = subprocess.Popen(
        [sys.executable, "-c", STORM, str(dev.mnt / "storm"), str(stop)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        for _ in range(3):
            # the control socket is served by a trio task next to the request loop
            res = dev.cli("status", "--state", str(dev.state), timeout=30)
            assert res.returncode == 0, res.stderr
            assert "pending" in res.stdout
    finally:
        stop.touch()
        out, err = storm.communicate(timeout=90)
    assert storm.returncode == 0, err
    rounds = int(out)
    assert rounds >= 1
    last = rounds - 1
    for i in range(400):
        assert (dev.mnt / "storm" / f"f{i}").read_bytes() == b"%d:%d|" % (last, i) * 50
    dev.unmount()
    log = (dev.state / "mount.log").read_text()
    m = re.search(r"served requests: (\d+) waits for the device, (\d+) answered by polling", log)
    assert m, log[-2000:]
    waits, polled = int(m[1]), int(m[2])
    assert waits >= rounds * 400 * 2
    assert polled > waits // 2, (waits, polled)  # a client that never pauses is polled for


def test_spin_can_be_turned_off(devices, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CAIRN_FUSE_SPIN_US", "0")
    dev = devices("a")
    dev.mount()
    (dev.mnt / "x").write_bytes(b"plain trio")
    assert (dev.mnt / "x").read_bytes() == b"plain trio"
    dev.unmount()
    assert "answered by polling" not in (dev.state / "mount.log").read_text()


def test_bad_spin_setting_is_one_line(devices, monkeypatch) -> None:
    monkeypatch.setenv("CAIRN_FUSE_SPIN_US", "fast")
    dev = devices("a")
    res = dev.cli("mount", str(dev.mnt), "--state", str(dev.state))
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "CAIRN_FUSE_SPIN_US" in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_the_mount_raises_its_readahead(devices) -> None:
    """Sequential reads reach the drive in 1 MiB requests, not the kernel's default 128 KiB
    (``fs/readahead.py``); the tests run as root, so the mount may set it."""
    dev = devices("a")
    dev.mount()
    st_dev = os.stat(dev.mnt).st_dev
    knob = f"/sys/class/bdi/{os.major(st_dev)}:{os.minor(st_dev)}/read_ahead_kb"

    def raised() -> bool:
        with open(knob) as f:
            return int(f.read()) >= 1024

    # set right after the kernel's INIT is answered: by the first stat, or just after it
    wait_until(raised, 10, "the mount's readahead to be 1 MiB")
