"""Alembic environment for Cairn's metadata DB.

Migrations only run programmatically (``cairn.server.meta.migrate``): the caller passes an
open synchronous connection in ``config.attributes["connection"]``; there is no alembic.ini
and no URL here.
"""

from __future__ import annotations

from alembic import context

from cairn.server.meta.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("Cairn migrations run through cairn.server.meta.migrate only")

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things in place; batch mode recreates tables when needed.
    render_as_batch=connection.dialect.name == "sqlite",
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
