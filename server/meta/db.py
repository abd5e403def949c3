"""The database handle: engine setup per backend, read and write transactions, and the one
place where SQLAlchemy/driver exceptions become ``cairn.core.errors``.

Concurrency notes:

- SQLite allows one writer. Write transactions take ``Database.write_lock`` (an asyncio
  lock: writers of this process queue here instead of spinning on SQLITE_BUSY) and start
  with ``BEGIN IMMEDIATE`` so the write lock of the file is held from the first statement
  (another process, e.g. ``cairn-server user add``, waits up to ``busy_timeout``). Reads use
  a plain ``BEGIN`` and never wait for writers (WAL snapshot).
- PostgreSQL runs writers concurrently; commit serializes per namespace with
  ``SELECT ... FOR UPDATE`` on the namespace row (see commit.py). ``write_lock`` is a no-op.
- Every connection runs with WAL + ``synchronous=FULL`` + ``busy_timeout`` (SQLite) and is
  checked by ``check_durability``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from cairn.core.errors import CairnError, ConfigError, Unavailable

log = logging.getLogger("cairn.server.meta")

BUSY_TIMEOUT_MS = 10_000
# Max bound parameters per IN list: far below SQLite's 32766 and asyncpg's 32767.
IN_BATCH = 500

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
        except (SQLAlchemyError, OSError) as exc:
            log.error("metadata database error in %s: %s", fn.__name__, exc)
            raise Unavailable("metadata database unavailable; retry") from exc

    return wrapper


class Database:
    """An async engine plus the transaction discipline of its backend."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.is_sqlite = self.dialect == "sqlite"
        self._write_lock = asyncio.Lock() if self.is_sqlite else None

    @classmethod
    def open(cls, url: str) -> Database:
        """Create the engine for ``url`` (``sqlite+aiosqlite:///PATH`` or
        ``postgresql+asyncpg://...``); raises ``ConfigError`` for anything else."""
        if url.startswith("sqlite+aiosqlite://"):
            kwargs: dict[str, Any] = {}
            if url in ("sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:"):
                raise ConfigError("database url: an in-memory SQLite database is not durable")
        elif url.startswith("postgresql+asyncpg://"):
            kwargs = {"pool_size": 10, "max_overflow": 10, "pool_pre_ping": True}
        else:
            raise ConfigError(
                "database url must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
            )
        try:
            engine = create_async_engine(url, **kwargs)
        except (ArgumentError, NoSuchModuleError, ValueError) as exc:
            raise ConfigError(f"database url is not valid: {exc}") from None
        if engine.dialect.name == "sqlite":
            _setup_sqlite(engine)
        return cls(engine)

    async def close(self) -> None:
        await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read transaction: one consistent snapshot on SQLite (WAL), statement-level
        read committed on PostgreSQL. Never waits for writers."""
        async with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction, committed when the block exits normally."""
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock:
            async with self.engine.connect() as conn:
                conn = await conn.execution_options(cairn_immediate=True)
                async with conn.begin():
                    yield conn

    def insert_ignore(self, table: Any) -> Any:
        """``INSERT ... ON CONFLICT DO NOTHING`` for this backend."""
        mod = sqlite if self.is_sqlite else postgresql
        return mod.insert(table).on_conflict_do_nothing()

    async def durability_problems(self) -> list[str]:
        """Settings that would let an acknowledged commit be lost on power failure."""
        problems: list[str] = []
        async with self.engine.connect() as conn:
            if self.is_sqlite:
                mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
                sync = (await conn.exec_driver_sql("PRAGMA synchronous")).scalar()
                if str(mode).lower() != "wal":
                    problems.append(f"SQLite journal_mode is {mode}, not wal")
                if sync is None or int(sync) < 2:
                    problems.append(f"SQLite synchronous is {sync}, not FULL (2)")
            else:
                fsync = (await conn.exec_driver_sql("SHOW fsync")).scalar()
                commit = (await conn.exec_driver_sql("SHOW synchronous_commit")).scalar()
                if fsync != "on":
                    problems.append(f"PostgreSQL fsync is {fsync}, not on")
                if commit == "off":
                    problems.append("PostgreSQL synchronous_commit is off")
        return problems

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))


def _setup_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Driver-level autocommit: SQLAlchemy's "begin" event below issues BEGIN itself, so
        # write transactions can say IMMEDIATE (pysqlite's implicit BEGIN is DEFERRED).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        for pragma in (
            f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=FULL",
            "PRAGMA foreign_keys=ON",
        ):
            cur.execute(pragma)
        cur.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("cairn_immediate")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def is_unique_violation(exc: DBAPIError) -> bool:
    """True when ``exc`` is a unique/primary-key violation on either backend."""
    orig = getattr(exc, "orig", None)
    text_ = str(orig or exc).lower()
    return "unique" in text_ or "duplicate key" in text_
