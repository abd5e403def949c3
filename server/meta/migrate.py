"""Schema migrations: Alembic, run programmatically (no alembic.ini at run time).

``upgrade`` brings a database to the newest revision; it is idempotent and safe to call at
every server start. On PostgreSQL an advisory lock keeps two starting servers from
migrating at once.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from .db import Database

MIGRATIONS = Path(__file__).with_name("migrations")
_PG_LOCK_KEY = 0x6361_6972_6E00  # "cairn\0": arbitrary, fixed


def _config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def _upgrade(connection: Connection) -> None:
    command.upgrade(_config(connection), "head")


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade_locked(connection: Connection) -> None:
    postgres = connection.dialect.name == "postgresql"
    if postgres:
        connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
    try:
        _upgrade(connection)
        connection.commit()
    finally:
        if postgres:
            connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
            connection.commit()


async def upgrade(db: Database) -> None:
    await db.run_plain(_upgrade_locked)


async def current_revision(db: Database) -> str | None:
    return await db.run_plain(_current)
