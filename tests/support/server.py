"""A real ``cairn-server`` process for tests (server HTTP tier and drive tiers alike).

Usage::

    def test_x(cairn_server):                 # SQLite, started, stopped at teardown
        cairn_server.add_user("alice", "pw")
        session = cairn_server.login("alice", "pw", "laptop")   # {"token", "home", ...}

    def test_y(server_factory, tmp_path):     # several servers or custom config
        srv = server_factory(config={"limits": {"chunk_body": 4096}})

``ServerProcess`` inits a temp DATA_DIR with ``cairn-server init``, adds users through the
CLI, runs ``cairn-server run`` on a free 127.0.0.1 port, waits for ``/healthz`` with a
deadline and is stopped by pid (SIGTERM, then SIGKILL after a deadline) at teardown.
PostgreSQL: pass ``database_url`` (see ``tests/support/pg.py``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


def cairn_server_command() -> list[str]:
    script = Path(sys.executable).with_name("cairn-server")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "cairn.server.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return json.dumps(str(v))  # a JSON string is a valid TOML basic string


def write_toml(path: Path, doc: dict[str, Any]) -> None:
    """Write a flat TOML document (top-level scalars and one level of tables)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for k, v in doc.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines += [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
    path.write_text("\n".join(lines) + "\n")


class ServerProcess:
    def __init__(
        self,
        data_dir: Path,
        *,
        database_url: str | None = None,
        config: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.config = config or {}
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = data_dir.with_name(data_dir.name + ".log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- command line ---------------------------------------------------------------------

    def cli(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cairn-server ARGS --data DATA_DIR`` (``--data`` appended to the subcommand)."""
        cmd = [*cairn_server_command(), *args]
        if args and args[0] != "init":
            cmd += ["--data", str(self.data_dir)]
        res = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=120, env=self.env
        )
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({res.returncode}): {res.stderr}")
        return res

    def init(self) -> None:
        self.cli("init", str(self.data_dir))
        if self.database_url or self.config:
            path = self.data_dir / "cairn-server.toml"
            doc = tomllib.loads(path.read_text())
            if self.database_url:
                doc["database_url"] = self.database_url
            for key, value in self.config.items():
                if isinstance(value, dict) and key != "blobs":  # blobs: a whole new table
                    doc.setdefault(key, {}).update(value)
                else:
                    doc[key] = value
            write_toml(path, doc)
            if self.database_url:  # init migrated the default SQLite DB; migrate this one
                self.cli("user", "list")

    def add_user(self, name: str, password: str, quota: str | None = None) -> None:
        extra = ["--quota", quota] if quota else []
        self.cli("user", "add", name, "--password-stdin", *extra, input=password + "\n")

    # --- process --------------------------------------------------------------------------

    def start(self) -> None:
        assert self.proc is None, "already running"
        self.port = free_port()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*cairn_server_command(), "run", "--data", str(self.data_dir),
             "--listen", f"127.0.0.1:{self.port}"],
            stdout=log, stderr=subprocess.STDOUT, env=self.env,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"cairn-server exited at start:\n{self.log_tail()}")
            if self._healthy():
                return
            time.sleep(0.05)  # polling a condition with a deadline, not synchronizing
        self.stop()
        raise AssertionError(f"cairn-server not healthy after {START_TIMEOUT}s:\n{self.log_tail()}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Signal the process and wait for it; SIGKILL after ``STOP_TIMEOUT``. Exit status."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        return proc.returncode

    def log_errors(self) -> list[str]:
        """ERROR/CRITICAL lines and tracebacks the process logged (a test expects none)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        marks = (" ERROR ", " CRITICAL ", "Traceback (most recent call last)")
        return [line for line in text.splitlines() if any(m in line for m in marks)]

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    # --- HTTP helpers ---------------------------------------------------------------------

    def login(self, user: str, password: str, device: str = "test-device") -> dict[str, Any]:
        req = urllib.request.Request(
            self.url + "/api/v1/login",
            data=json.dumps({"user": user, "password": password, "device": device}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]


class ServerPool:
    """Creates servers under one directory and stops them all at ``close``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.servers: list[ServerProcess] = []

    def make(self, name: str = "srv", start: bool = True, **kwargs: Any) -> ServerProcess:
        srv = ServerProcess(self.root / f"{name}{len(self.servers)}", **kwargs)
        self.servers.append(srv)
        srv.init()
        if start:
            srv.start()
        return srv

    def close(self) -> None:
        """Stop every server; fail if one logged an error (like tests/conftest.py does for
        in-process warnings), showing the end of its log."""
        for srv in self.servers:
            srv.stop()
        for srv in self.servers:
            if srv.log_errors():
                pytest.fail(f"{srv.log_path} logged errors:\n{srv.log_tail(60)}")


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    """``server_factory(name="srv", start=True, database_url=None, config=None)`` →
    an initialized (and by default started) ``ServerProcess``, stopped at teardown."""
    pool = ServerPool(tmp_path)
    yield pool.make
    pool.close()


@pytest.fixture
def cairn_server(server_factory: Any) -> ServerProcess:
    """A started SQLite-backed server with no users."""
    return server_factory()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def module_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Like ``server_factory`` but shared by the tests of one module (fewer process starts)."""
    pool = ServerPool(tmp_path_factory.mktemp("servers"))
    yield pool.make
    pool.close()


def api_client(srv: ServerProcess, token: str | None = None) -> Any:
    """An ``httpx.Client`` on the server, with the bearer token if given (close it after)."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=srv.url, headers=headers, timeout=60)
