"""``cairn-server run`` with ``workers = N``: N server processes on one port.

One Python process serves at most one core's worth of requests (the event loop and the
SQLite writer thread share the GIL). With ``workers > 1`` the ``run`` process becomes a
supervisor: it applies the migrations once (N processes must not race Alembic), creates the
peer mesh (peers.py), forks the workers and waits. Each worker is a complete server
(``cli._serve``) listening with SO_REUSEPORT, so the kernel spreads connections over them;
they share the database (SQLite in WAL: readers never wait, one writer at a time through the
file lock, ``BEGIN IMMEDIATE`` with the busy timeout; PostgreSQL: as several servers would)
and tell each other hints and rate-limit events through the mesh. Commits stay idempotent
across workers: stored op results live in the database and are read under the write lock.

Supervision: SIGTERM/SIGINT are passed on to every worker, which shuts down gracefully; the
supervisor reports READY=1 to systemd once every worker listens, and exits when all workers
have exited: 0 if they all stopped cleanly, 1 if any failed (a worker that dies makes the
supervisor stop the others, so systemd restarts the whole server rather than running it
short-handed).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from cairn.core.errors import CairnError

from . import peers as peers_mod
from .config import Config
from .peers import Peers

log = logging.getLogger("cairn.server.workers")

Serve = Callable[[Config, Peers, Callable[[], None]], Awaitable[None]]


async def _migrate(cfg: Config) -> None:
    from .app import open_meta

    meta = await open_meta(cfg)
    await meta.close()


def _worker(cfg: Config, serve: Serve, mesh: list[Any], index: int, ready_fd: int) -> int:
    """The body of forked worker ``index``; returns its exit status."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)  # _serve installs the loop's own handlers

    def ready() -> None:
        os.write(ready_fd, b"r")
        os.close(ready_fd)

    try:
        asyncio.run(serve(cfg, peers_mod.for_worker(mesh, index), ready))
    except CairnError as e:
        print(f"cairn-server: worker {index}: {e}", file=sys.stderr)
        return 1
    except Exception:
        log.exception("worker %d failed", index)
        return 1
    return 0


def run(cfg: Config, serve: Serve, notify: Callable[[str], None]) -> None:
    """Supervise ``cfg.workers`` forked workers until they exit (see the module docstring).

    Raises ``CairnError`` if a worker failed.
    """
    asyncio.run(_migrate(cfg))
    mesh = peers_mod.mesh(cfg.workers)
    ready_r, ready_w = os.pipe()
    pids: set[int] = set()
    for index in range(cfg.workers):
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError:  # EAGAIN/ENOMEM: leave no worker of a half-started server behind
            for started in pids:
                os.kill(started, signal.SIGTERM)
            for started in pids:
                os.waitpid(started, 0)
            raise
        if pid == 0:  # the worker
            os.close(ready_r)
            code = 1
            try:
                code = _worker(cfg, serve, mesh, index, ready_w)
            finally:
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        pids.add(pid)
    os.close(ready_w)
    for rx, tx in mesh:
        rx.close()
        tx.close()

    stopping = False

    def stop_all(signum: int = signal.SIGTERM, _frame: Any = None) -> None:
        nonlocal stopping
        if not stopping:
            notify("STOPPING=1")
        stopping = True
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)

    # One byte per worker that listens; EOF early if a worker died before it was ready.
    got = 0
    while got < cfg.workers:
        data = os.read(ready_r, cfg.workers - got)
        if not data:
            break
        got += len(data)
    os.close(ready_r)
    if got == cfg.workers and not stopping:
        log.info("cairn-server ready at %s with %d workers", cfg.url, cfg.workers)
        notify("READY=1")

    failed = 0
    while pids:
        pid, status = os.wait()
        if pid not in pids:
            continue
        pids.discard(pid)
        code = os.waitstatus_to_exitcode(status)
        if stopping and code == -signal.SIGTERM:
            # Our SIGTERM reached it before it had installed its handlers: it was not
            # serving yet, so nothing was cut short.
            code = 0
        if code != 0 and not stopping:
            log.error("worker (pid %d) exited with status %d: stopping the others", pid, code)
        if code != 0:
            failed += 1
            stop_all()
    log.info("stopped")
    if failed:
        raise CairnError(f"{failed} of {cfg.workers} workers failed (see the log above)")
