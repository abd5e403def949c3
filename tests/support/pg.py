"""A real PostgreSQL for tests, from Debian's ``postgresql`` package.

``PostgresCluster`` runs ``initdb`` into a fresh temp dir owned by the unprivileged
``postgres`` system user (commands go through ``runuser -u postgres --`` when the tests run
as root), starts the server on a free 127.0.0.1 port with ``fsync=on`` and
``synchronous_commit=on`` and its unix socket inside the temp dir, and polls until it
accepts connections. ``stop()`` runs ``pg_ctl stop -m fast`` and kills the postmaster by
pid if that does not work, then removes the dir.

Fixtures: ``pg_cluster`` (one per session) and ``pg_database`` (a factory: each call
creates a fresh database and returns its ``postgresql+asyncpg://`` URL; the databases go
away with the cluster).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30
_counter = itertools.count(1)


def pg_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` holding ``initdb``, if any."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresCluster:
    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.as_postgres = os.geteuid() == 0
        self.dir = Path(tempfile.mkdtemp(prefix="cairn-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = 0
        self.pid: int | None = None
        if self.as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)

    def _run(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_postgres else []
        return subprocess.run(
            prefix + list(args), capture_output=True, text=True, timeout=timeout, check=check,
            cwd=self.dir,
        )  # fmt: skip

    def start(self) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")  # fmt: skip
        self.port = _free_port()
        opts = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1"
            f" -c unix_socket_directories={self.dir} -c fsync=on -c synchronous_commit=on"
            " -c max_connections=200 -c shared_buffers=64MB"
        )
        self._run(str(self.bin / "pg_ctl"), "start", "-D", str(self.data), "-l", str(self.log),
                  "-o", opts, "-W")  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            self.pid = self._postmaster_pid()
            ready = self._run(str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p",
                              str(self.port), "-U", "postgres", timeout=10, check=False)  # fmt: skip
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
                self.stop()
                raise RuntimeError(f"PostgreSQL did not accept connections in time:\n{log}")
            time.sleep(0.1)  # polling interval of a bounded wait, not synchronization

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return self.pid

    def psql(self, sql: str, db: str = "postgres") -> str:
        out = self._run(str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                        "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql,
                        timeout=60)  # fmt: skip
        return out.stdout

    def create_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy asyncpg URL."""
        name = f"cairn_test_{os.getpid()}_{next(_counter)}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def url(self, db: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if self.data.exists():
            self._run(str(self.bin / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast",
                      "-w", "-t", str(STOP_TIMEOUT), timeout=STOP_TIMEOUT + 10, check=False)  # fmt: skip
        pid = self.pid
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)
        self.pid = None
        shutil.rmtree(self.dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours would still answer; the postmaster is not our child (pg_ctl
    # forks it off), so existence means it is running.
    return True


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        pytest.skip("Debian's postgresql package is not installed (/usr/lib/postgresql/*/bin)")
    cluster = PostgresCluster(bin_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_database(pg_cluster: PostgresCluster) -> Callable[[], str]:
    """Factory: each call returns the URL of a new empty database."""
    return pg_cluster.create_database
