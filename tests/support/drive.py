"""Fixtures for the drive's real-mount tier: a real ``cairn-server`` process, logged-in
devices, drives mounted by the ``cairn`` CLI.

Everything started here is stopped by pid in teardown, and every mount is lazily unmounted
(``fusermount3 -u -z``). Waiting is always polling a condition with a deadline.

``DriveServer`` (the server tier's ``ServerProcess``) can be stopped and started again on
the same port and data dir (the offline test needs that); ``Device`` wraps one state dir + mountpoint and drives the CLI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cairn.fs.statedir import pid_alive
from tests.support.server import ServerProcess, cairn_server_command, free_port

BIN = Path(sys.executable).parent
CAIRN = str(BIN / "cairn")
PASSWORD = "pw-test-123456"


def wait_until(pred: Callable[[], bool], deadline_s: float, what: str) -> None:
    """Poll ``pred`` until it is true; fail the test after ``deadline_s`` seconds."""
    end = time.monotonic() + deadline_s
    delay = 0.02
    while True:
        try:
            if pred():
                return
        except OSError:
            pass
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline_s:g} s waiting for {what}")
        time.sleep(delay)  # interval between condition checks, not synchronization
        delay = min(delay * 1.5, 0.25)


def stop_pid(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM, wait, then SIGKILL: the process ``pid`` is gone when this returns."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = 0
                if not pid_alive(pid):  # gone, or a zombie its new parent has not reaped
                    return
            if done == pid:
                return
            time.sleep(0.02)


class DriveServer(ServerProcess):
    """The shared server fixture's process, restartable on the same port (a device keeps
    the URL it logged in with, so the offline test must bring the server back there)."""

    def start(self) -> None:
        if not self.port:
            super().start()
            return
        assert self.proc is None, "already running"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*cairn_server_command(), "run", "--data", str(self.data_dir),
                 "--listen", f"127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, env=self.env,
            )  # fmt: skip
        proc = self.proc
        wait_until(lambda: proc.poll() is not None or self._healthy(), 30, "server restart")
        assert proc.poll() is None, f"cairn-server exited at restart:\n{self.log_tail()}"


class Device:
    """One device: a state dir and a mountpoint, driven through the ``cairn`` CLI."""

    def __init__(self, root: Path, name: str, server: DriveServer) -> None:
        self.name = name
        self.server = server
        self.state = root / f"{name}.state"
        self.mnt = root / f"{name}.mnt"
        self.mnt.mkdir(parents=True, exist_ok=True)

    def cli(
        self, *args: str, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CAIRN, *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "CAIRN_STATE": str(self.state)},
        )

    def login(self, user: str, password: str = PASSWORD) -> None:
        res = self.cli(
            "login", self.server.url, "--user", user, "--password-stdin", "--device", self.name,
            "--state", str(self.state), input=password + "\n",
        )  # fmt: skip
        assert res.returncode == 0, f"login failed: {res.stderr}"

    def mount(self, *extra: str) -> None:
        res = self.cli("mount", str(self.mnt), "--state", str(self.state), *extra)
        assert res.returncode == 0, f"mount failed ({res.returncode}): {res.stderr}"
        assert os.path.ismount(self.mnt)

    def unmount(self, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        res = self.cli(
            "unmount", str(self.mnt), "--state", str(self.state), "--timeout", str(timeout)
        )
        assert res.returncode == 0, f"unmount failed: {res.stderr}"
        return res

    def pid(self) -> int | None:
        try:
            return int(json.loads((self.state / "mount.json").read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None

    def kill9(self) -> None:
        pid = self.pid()
        assert pid is not None, "no mount process recorded"
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 10, "the killed mount process to go away")
        lazy_unmount(self.mnt)

    def status(self) -> str:
        res = self.cli("status", "--state", str(self.state))
        assert res.returncode == 0, f"status failed: {res.stderr}"
        return res.stdout

    def teardown(self) -> None:
        pid = self.pid()
        if pid is not None:
            stop_pid(pid)
        lazy_unmount(self.mnt)


def lazy_unmount(path: Path) -> None:
    subprocess.run(
        ["fusermount3", "-u", "-z", str(path)], capture_output=True, timeout=30, check=False
    )


@pytest.fixture
def drive_server(tmp_path: Path) -> Iterator[DriveServer]:
    """A started server (SQLite, local blobs) with the user ``alice``."""
    srv = DriveServer(tmp_path / "srv")
    srv.init()
    srv.add_user("alice", PASSWORD)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def devices(tmp_path: Path, drive_server: DriveServer) -> Iterator[Callable[..., Device]]:
    """A factory of logged-in devices for user ``alice``; all unmounted and stopped after."""
    made: list[Device] = []

    def make(name: str, *, login: bool = True) -> Device:
        d = Device(tmp_path, name, drive_server)
        if login:
            d.login("alice")
        made.append(d)
        return d

    try:
        yield make
    finally:
        for d in made:
            d.teardown()


def free_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (a port that was free a moment ago)."""
    return f"http://127.0.0.1:{free_port()}"
