"""The database handle: engines per backend, how a transaction runs, and the one place where
SQLAlchemy/driver exceptions become ``cairn.core.errors``.

All query code in this package is synchronous: a function ``fn(conn, *args)`` taking a
SQLAlchemy ``Connection`` inside an open transaction. ``Database.read``/``write`` run such a
function as one transaction and await the result:

- SQLite: the sync ``pysqlite`` driver in worker threads, one thread hop per transaction
  (aiosqlite costs a hop per *statement*, ~4x slower on the hot paths). Reads run on a small
  reader pool with a plain ``BEGIN`` (WAL snapshot; never waits for writers). ``read_inline``
  (the hot per-request reads: a handful of indexed statements) runs its transaction on the
  calling event loop thread itself, on one dedicated connection: a WAL reader does not wait
  for the writer, and the thread hand-off (queue put, wake-up, GIL ping-pong, future
  callback) costs more than such a query. That connection has a short busy timeout
  (``INLINE_BUSY_TIMEOUT_MS``) so the rare SQLITE_BUSY of a reader (WAL recovery by another
  process) stalls the loop at most that long; the read is then retried on the pool. Writes run on
  ONE writer thread, which serializes them in this process, and start with
  ``BEGIN IMMEDIATE`` so the file's write lock is held from the first statement; another
  process (``cairn-server user add``) waits up to ``busy_timeout``. Every connection runs
  with WAL, ``synchronous=FULL``, ``busy_timeout`` and foreign keys on. ``read_raw`` is
  ``read_inline`` for the hottest reads written against plain ``sqlite3``
  (``sqlite_reads.py``): its own dedicated connection (``query_only``), prepared statements
  from ``sqlite3``'s statement cache, tuples instead of SQLAlchemy rows.
- PostgreSQL: asyncpg through SQLAlchemy's async engine; ``fn`` runs via
  ``AsyncConnection.run_sync`` (greenlet adaptation, no threads). Writers run concurrently;
  commit.py serializes commits per namespace with ``SELECT ... FOR UPDATE``. Reads run in
  autocommit mode: under READ COMMITTED each statement has its own snapshot anyway, so the
  read functions already tolerate changes between their statements (changes.py).

A cancelled caller does not abort a transaction already handed to a worker thread: it runs
to its end (commits are idempotent per op id, so the client's retry is safe).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cairn.core.errors import CairnError, ConfigError, Unavailable

from .writer import Writer

log = logging.getLogger("cairn.server.meta")

BUSY_TIMEOUT_MS = 10_000
# Max bound parameters per IN list: far below SQLite's 32766 and asyncpg's 32767.
IN_BATCH = 500
SQLITE_READERS = 3
INLINE_BUSY_TIMEOUT_MS = 50

P = ParamSpec("P")
T = TypeVar("T")


def batched(items: Sequence[T], size: int = IN_BATCH) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def translated(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Turn every database exception escaping ``fn`` into ``Unavailable`` (logged once).

    Domain errors (``CairnError``) pass through untouched. A lost race on a unique key that
    the code did not anticipate is also ``Unavailable``: the caller may retry.
    """

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except CairnError:
            raise
        except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
            log.error("metadata database error in %s: %s", fn.__name__, exc)
            raise Unavailable("metadata database unavailable; retry") from exc

    return wrapper


def _sqlite_sync_url(url: str) -> str:
    return (
        "sqlite://" + url[len("sqlite+aiosqlite://") :]
        if url.startswith("sqlite+aiosqlite://")
        else url
    )


class Database:
    """Engines plus the transaction discipline of the backend (see module docstring)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith(("sqlite+aiosqlite://", "sqlite://"))
        self.sync_engine: Engine | None = None
        self.async_engine: AsyncEngine | None = None
        self._pg_reads: AsyncEngine | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._writer: Writer | None = None
        self._inline: Connection | None = None
        self._raw_inline: sqlite3.Connection | None = None
        self._raw_local = threading.local()  # the reader pool threads' raw connections
        self._raw_conns: list[sqlite3.Connection] = []
        self._raw_lock = threading.Lock()
        self.inline_fallbacks = 0  # inline reads that hit SQLITE_BUSY and went to the pool
        try:
            if self.is_sqlite:
                sync_url = _sqlite_sync_url(url)
                if sync_url in ("sqlite://", "sqlite:///:memory:"):
                    raise ConfigError("database url: an in-memory SQLite database is not durable")
                self.sync_engine = create_engine(
                    sync_url,
                    pool_size=SQLITE_READERS + 2,
                    max_overflow=2,
                    connect_args={"check_same_thread": False},
                )
                _setup_sqlite(self.sync_engine)
                self._readers = ThreadPoolExecutor(SQLITE_READERS, "cairn-meta-read")
                self._writer = Writer(self.sync_engine, self.sync_engine.url.database)
            elif url.startswith("postgresql+asyncpg://"):
                # No pre-ping: it cost a round trip per transaction; a connection that
                # died (PostgreSQL restarted) fails one request with Unavailable (503,
                # retried by clients) and is then discarded by the pool.
                self.async_engine = create_async_engine(url, pool_size=20, max_overflow=10)
                # Reads run in autocommit: under READ COMMITTED (the default, kept) every
                # statement takes its own snapshot whether or not it sits in a transaction,
                # so BEGIN and COMMIT were two round trips that changed no answer.
                self._pg_reads = self.async_engine.execution_options(isolation_level="AUTOCOMMIT")
            else:
                raise ConfigError(
                    "database url must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
                )
        except (ArgumentError, NoSuchModuleError, ValueError) as exc:
            raise ConfigError(f"database url is not valid: {exc}") from None
        self.dialect = "sqlite" if self.is_sqlite else "postgresql"

    async def close(self) -> None:
        if self._inline is not None:
            self._inline.close()
            self._inline = None
        if self.sync_engine is not None:
            assert self._readers is not None and self._writer is not None
            loop = asyncio.get_running_loop()
            # Let queued transactions finish, then close the pooled connections.
            await loop.run_in_executor(None, self._writer.stop)
            await loop.run_in_executor(None, self._readers.shutdown, True)
            with self._raw_lock:
                raw, self._raw_conns, self._raw_inline = self._raw_conns, [], None
            for c in raw:
                c.close()
            self.sync_engine.dispose()
        if self.async_engine is not None:
            await self.async_engine.dispose()

    # --- running transactions ------------------------------------------------------------

    async def read(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(conn, *args)`` in a read transaction (a snapshot on SQLite)."""
        return await self._run(False, fn, *args, **kwargs)

    async def read_one(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Like ``read`` for a function that runs ONE statement: on SQLite it runs in
        autocommit mode, saving the BEGIN and COMMIT round trips."""
        if self.sync_engine is None:
            return await self._run(False, fn, *args, **kwargs)
        call = functools.partial(self._sqlite_txn, None, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._readers, call)

    async def read_inline(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Like ``read`` for a SHORT transaction (a few indexed statements, bounded rows): on
        SQLite it runs on the event loop thread, on the dedicated read connection, without a
        thread hand-off (see the module docstring). ``fn`` must not await or block."""
        if self.sync_engine is None:
            return await self._run(False, fn, *args, **kwargs)
        try:
            return self._inline_txn(fn, *args, **kwargs)
        except OperationalError as exc:
            if not _is_busy(exc):
                raise
        self.inline_fallbacks += 1
        return await self._run(False, fn, *args, **kwargs)

    def _inline_txn(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        conn = self._inline
        if conn is None or conn.closed or conn.invalidated:
            assert self.sync_engine is not None
            conn = self.sync_engine.connect()
            # Owned for the life of this Database, never handed back to the pool (which
            # would pass the short busy timeout on to a pool thread).
            conn.detach()
            conn.exec_driver_sql(f"PRAGMA busy_timeout={INLINE_BUSY_TIMEOUT_MS}")
            conn.commit()  # end SQLAlchemy's autobegun (driver-autocommit) transaction
            self._inline = conn
        with conn.begin():
            return fn(conn, *args, **kwargs)

    async def read_raw(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """SQLite only: ``fn(conn, *args)`` on a plain ``sqlite3`` connection in a read
        transaction (``sqlite_reads``), run like ``read_inline``: on the event loop thread,
        on a dedicated connection with the short busy timeout, and on SQLITE_BUSY once more
        on the reader pool (a per-thread connection with the normal busy timeout)."""
        assert self.sync_engine is not None, "read_raw is the SQLite backend's path"
        conn = self._raw_inline
        if conn is None:
            conn = self._raw_inline = self._raw_connect(INLINE_BUSY_TIMEOUT_MS)
        try:
            return _raw_txn(conn, fn, *args, **kwargs)
        except sqlite3.OperationalError as exc:
            if not _is_busy_text(str(exc)):
                raise
        self.inline_fallbacks += 1
        call = functools.partial(self._raw_pooled, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._readers, call)

    def _raw_pooled(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        conn = getattr(self._raw_local, "conn", None)
        if conn is None:
            conn = self._raw_local.conn = self._raw_connect(BUSY_TIMEOUT_MS)
        return _raw_txn(conn, fn, *args, **kwargs)

    def _raw_connect(self, busy_timeout_ms: int) -> sqlite3.Connection:
        assert self.sync_engine is not None
        path = self.sync_engine.url.database
        assert path, "in-memory databases are refused in __init__"
        # isolation_level=None: no implicit transactions, _raw_txn says BEGIN itself.
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, cached_statements=256
        )
        conn.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        conn.execute("PRAGMA query_only=ON")  # a read path: refuse any write outright
        with self._raw_lock:
            self._raw_conns.append(conn)
        return conn

    async def write(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(conn, *args)`` in a write transaction, committed if ``fn`` returns."""
        return await self._run(True, fn, *args, **kwargs)

    async def _run(self, writing: bool, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.sync_engine is not None:
            if writing:
                assert self._writer is not None
                result: T = await self._writer.submit(False, fn, *args, **kwargs)
                return result
            call = functools.partial(self._sqlite_txn, False, fn, *args, **kwargs)
            return await asyncio.get_running_loop().run_in_executor(self._readers, call)
        assert self.async_engine is not None
        if not writing:
            async with self._pg_reads.connect() as conn:
                return await conn.run_sync(fn, *args, **kwargs)
        async with self.async_engine.connect() as conn:
            async with conn.begin():
                return await conn.run_sync(fn, *args, **kwargs)

    def _sqlite_txn(
        self, writing: bool | None, fn: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T:
        """``writing``: True BEGIN IMMEDIATE, False BEGIN, None no transaction at all."""
        assert self.sync_engine is not None
        with self.sync_engine.connect() as conn:
            if writing:
                conn = conn.execution_options(cairn_immediate=True)
            elif writing is None:
                conn = conn.execution_options(cairn_autocommit=True)
            with conn.begin():
                return fn(conn, *args, **kwargs)

    async def run_plain(self, fn: Callable[[Connection], T]) -> T:
        """``fn(conn)`` on a connection with no transaction begun (migrations, checks)."""
        if self._writer is not None:
            result: T = await self._writer.submit(True, fn)
            return result
        assert self.async_engine is not None
        async with self.async_engine.connect() as aconn:
            return await aconn.run_sync(fn)

    # --- helpers -------------------------------------------------------------------------

    def insert_ignore(self, table: Any) -> Any:
        """``INSERT ... ON CONFLICT DO NOTHING`` for this backend."""
        mod = sqlite if self.is_sqlite else postgresql
        return mod.insert(table).on_conflict_do_nothing()

    async def durability_problems(self) -> list[str]:
        """Settings that would let an acknowledged commit be lost on power failure."""
        return await self.run_plain(self._durability_problems)

    def _durability_problems(self, conn: Connection) -> list[str]:
        problems: list[str] = []
        if self.is_sqlite:
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
            sync = conn.exec_driver_sql("PRAGMA synchronous").scalar()
            if str(mode).lower() != "wal":
                problems.append(f"SQLite journal_mode is {mode}, not wal")
            if sync is None or int(sync) < 2:
                problems.append(f"SQLite synchronous is {sync}, not FULL (2)")
        else:
            fsync = conn.exec_driver_sql("SHOW fsync").scalar()
            commit = conn.exec_driver_sql("SHOW synchronous_commit").scalar()
            if fsync != "on":
                problems.append(f"PostgreSQL fsync is {fsync}, not on")
            if commit == "off":
                problems.append("PostgreSQL synchronous_commit is off")
        return problems

    async def ping(self) -> None:
        await self.run_plain(lambda conn: conn.execute(text("SELECT 1")).scalar())


def _is_busy(exc: OperationalError) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED as pysqlite reports them."""
    return _is_busy_text(str(exc.orig))


def _is_busy_text(message: str) -> bool:
    text_ = message.lower()
    return "locked" in text_ or "busy" in text_


def _raw_txn(conn: sqlite3.Connection, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(conn, ...)`` inside BEGIN ... COMMIT (one WAL snapshot; read-only, so COMMIT
    only ends it)."""
    conn.execute("BEGIN")
    try:
        result = fn(conn, *args, **kwargs)
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _setup_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Driver-level autocommit: the "begin" hook below issues BEGIN itself, so write
        # transactions can say IMMEDIATE (pysqlite's implicit BEGIN is DEFERRED).
        dbapi_conn.isolation_level = None
        for pragma in (
            f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=FULL",
            "PRAGMA foreign_keys=ON",
        ):
            dbapi_conn.execute(pragma)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        options = conn.get_execution_options()
        if options.get("cairn_autocommit"):
            return  # each statement is its own transaction (driver autocommit)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("cairn_immediate") else "BEGIN")
