"""The SQLite writer thread, with group commit.

SQLite admits one writer, and with ``synchronous=FULL`` every COMMIT waits for an fsync of
the WAL, which costs more than the SQL of a small commit. The writer thread therefore takes
every write job queued when it wakes (up to ``MAX_GROUP``), runs each inside its own
SAVEPOINT of ONE transaction, and commits once: a job that raises is rolled back to its
savepoint alone and gets its exception; the others commit together. No job's result is
handed back before the COMMIT returned, so an acknowledged write is exactly as durable as
with one transaction per job.

Several server processes on one SQLite file (``workers = N``) each have such a thread. When
one of them holds the write lock, SQLite makes the others poll for it with sleeps of up to
100 ms (its busy handler), which turned a 5 ms commit into hundreds of milliseconds under
load. So each group first takes an exclusive ``flock`` on a lock file beside the database
(``LOCK_SUFFIX``): the writers of all processes queue in the kernel and the next one wakes
as soon as the lock is released. Other programs (``cairn-server user add``) do not take it
and still meet the busy timeout, as before.

Jobs come from the event loop (``submit``) and finish through
``loop.call_soon_threadsafe``. A job whose awaiting task was cancelled still runs (commits
are idempotent per op id, so a client's retry is safe).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine

MAX_GROUP = 32
LOCK_SUFFIX = "-cairn-writer.lock"


@dataclass
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    plain: bool  # run on a connection with no transaction (migrations, settings checks)
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = None


def _settle(job: _Job) -> None:
    if job.future.done():  # cancelled by the caller meanwhile
        return
    if job.error is not None:
        job.future.set_exception(job.error)
    else:
        job.future.set_result(job.result)


def _settle_all(jobs: list[_Job]) -> None:
    for job in jobs:
        _settle(job)


def _deliver(jobs: list[_Job]) -> None:
    """Hand the results back: one wake-up of each caller loop per group, not per job."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
    for job in jobs:
        by_loop.setdefault(job.loop, []).append(job)
    for loop, mine in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_all, mine)
        except RuntimeError:  # the caller's loop is closed: nobody waits any more
            pass


class Writer:
    """One thread that runs every write transaction of a SQLite database."""

    def __init__(self, engine: Engine, db_path: str | None = None) -> None:
        """``db_path``: the SQLite file, whose ``LOCK_SUFFIX`` file serializes the writers
        of all processes (None: no such lock)."""
        self.engine = engine
        self._lock_fd = (
            os.open(db_path + LOCK_SUFFIX, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            if db_path
            else None
        )
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        # The transaction connection, kept for the thread's life: checking one out of the
        # pool and back in for every group cost as much CPU as a small commit's SQL.
        self._conn: Connection | None = None
        self._thread = threading.Thread(target=self._run, name="cairn-meta-write", daemon=True)
        self._thread.start()

    async def submit(self, plain: bool, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        job = _Job(fn, args, kwargs, plain, loop, loop.create_future())
        self._queue.put(job)
        return await job.future

    def stop(self) -> None:
        """Run the jobs already queued, then end the thread (blocking)."""
        self._queue.put(None)
        self._thread.join()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- on the writer thread ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            group = [job]
            stop = False
            while len(group) < MAX_GROUP:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                group.append(nxt)
            if self._lock_fd is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                for j in group:
                    if j.plain:
                        self._run_plain(j)
                txn = [j for j in group if not j.plain]
                if txn:
                    self._run_transaction(txn)
            finally:
                if self._lock_fd is not None:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            if stop:
                return

    def _run_plain(self, job: _Job) -> None:
        try:
            with self.engine.connect() as conn:
                job.result = job.fn(conn, *job.args, **job.kwargs)
        except BaseException as exc:  # handed to the caller
            job.error = exc
        _deliver([job])

    def _run_transaction(self, jobs: list[_Job]) -> None:
        single = len(jobs) == 1
        conn = self._conn
        job_raised = False
        try:
            if conn is None or conn.closed or conn.invalidated:
                conn = self.engine.connect().execution_options(cairn_immediate=True)
                self._conn = conn
            with conn.begin():
                for job in jobs:
                    nested = None if single else conn.begin_nested()
                    try:
                        job.result = job.fn(conn, *job.args, **job.kwargs)
                    except BaseException as exc:
                        job.error = exc
                        if nested is None:
                            job_raised = True
                            raise
                        nested.rollback()
                    else:
                        if nested is not None:
                            nested.commit()
        except BaseException as exc:
            # BEGIN or COMMIT failed (or the single job raised): nothing of this group is
            # durable, so no job may report success.
            for job in jobs:
                if job.error is None:
                    job.error = exc
            if not job_raised:
                # BEGIN, a savepoint or COMMIT failed: the connection may be unusable
                # (disk error, closed file), so the next group opens a fresh one.
                self._conn = None
                if conn is not None:
                    conn.close()
        _deliver(jobs)
