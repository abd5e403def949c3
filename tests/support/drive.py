"""Fixtures for the drive's real-mount tier: a real ``cairn-server`` process, logged-in
devices, drives mounted by the ``cairn`` CLI.

Everything started here is stopped by pid in teardown, and every mount is lazily unmounted
(``fusermount3 -u -z``). Waiting is always polling a condition with a deadline.

``ServerProcess`` can be stopped and started again on the same port and data dir (the
offline test needs that); ``Device`` wraps one state dir + mountpoint and drives the CLI.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

BIN = Path(sys.executable).parent
CAIRN = str(BIN / "cairn")
CAIRN_SERVER = str(BIN / "cairn-server")
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
            if done == pid:
                return
            time.sleep(0.02)


class ServerProcess:
    """A real ``cairn-server`` on 127.0.0.1 with its own data dir."""

    def __init__(self, root: Path) -> None:
        self.data = root / "srv"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "srv.log"
        res = subprocess.run(
            [CAIRN_SERVER, "init", str(self.data)], capture_output=True, text=True, timeout=60
        )
        assert res.returncode == 0, f"cairn-server init failed: {res.stderr}"

    def add_user(self, name: str, password: str = PASSWORD) -> None:
        res = subprocess.run(
            [CAIRN_SERVER, "--data", str(self.data), "user", "add", name, "--password-stdin"],
            input=password + "\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 0, f"user add failed: {res.stderr}"

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    CAIRN_SERVER,
                    "run",
                    "--data",
                    str(self.data),
                    "--listen",
                    f"127.0.0.1:{self.port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        proc = self.proc
        wait_until(
            lambda: proc.poll() is None and self.healthy() or proc.poll() is not None,
            30,
            "the server to answer /healthz",
        )
        assert proc.poll() is None, f"server exited: {self.log.read_text()[-2000:]}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_pid(self.proc.pid)
        self.proc = None


class Device:
    """One device: a state dir and a mountpoint, driven through the ``cairn`` CLI."""

    def __init__(self, root: Path, name: str, server: ServerProcess) -> None:
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
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.02)
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
def cairn_server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path)
    srv.add_user("alice")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def devices(tmp_path: Path, cairn_server: ServerProcess) -> Iterator[Callable[[str], Device]]:
    """A factory of logged-in devices for user ``alice``; all unmounted and stopped after."""
    made: list[Device] = []

    def make(name: str, *, login: bool = True) -> Device:
        d = Device(tmp_path, name, cairn_server)
        if login:
            d.login("alice")
        made.append(d)
        return d

    try:
        yield make
    finally:
        for d in made:
            d.teardown()
