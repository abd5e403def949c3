"""Fixture: the test-only ``hellofs`` mounted in a subprocess on a temporary mountpoint.

Deliberately no skip when ``/dev/fuse`` or ``fusermount3`` is missing: this tier exists to
make broken FUSE plumbing in CI fail loudly. Deselect it with ``-m "not fuse"`` on machines
without FUSE.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MOUNT_DEADLINE_S = 20.0
EXIT_DEADLINE_S = 10.0


def _wait_until(predicate, deadline_s: float, what: str, proc: subprocess.Popen) -> None:
    """Poll ``predicate`` until true; fail with the process's stderr if it dies or time runs out."""
    end = time.monotonic() + deadline_s
    delay = 0.01
    while not predicate():
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            pytest.fail(f"hellofs exited with {proc.returncode} before {what}: {err.strip()}")
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline_s:.0f} s waiting for {what}")
        time.sleep(delay)  # polling interval of a condition check, not synchronization
        delay = min(delay * 2, 0.2)


def _lazy_unmount(mountpoint: Path) -> None:
    if os.path.ismount(mountpoint):
        subprocess.run(
            ["fusermount3", "-u", "-z", str(mountpoint)],
            check=False,
            capture_output=True,
            timeout=EXIT_DEADLINE_S,
        )


@pytest.fixture
def hellofs_mount(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen]]:
    """Mount hellofs at a fresh directory; yield (mountpoint, process); always unmount and reap."""
    assert os.path.exists("/dev/fuse"), "/dev/fuse is missing: FUSE is not available here"
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fuse_plumbing.hellofs", str(mountpoint)],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_until(lambda: os.path.ismount(mountpoint), MOUNT_DEADLINE_S, "the mount", proc)
        yield mountpoint, proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=EXIT_DEADLINE_S)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=EXIT_DEADLINE_S)
        _lazy_unmount(mountpoint)
        if proc.stderr:
            proc.stderr.close()
