"""Cairn's metadata database: schema, migrations and the ``MetaStore`` service.

Modules: ``schema`` (tables), ``migrate`` + ``migrations/`` (Alembic, run by
``MetaStore.migrate``), ``db`` (engines, transactions, error translation), ``writer``
(SQLite writer thread with group commit), ``auth`` (users, devices), ``chunks`` (chunk
references), ``nodes`` (node loading and the node object), ``commit`` (applying a batch),
``changes`` (compacted feed and cursors), ``store`` (the ``MetaStore`` facade).

For callers: every ``MetaStore`` method raises only ``cairn.core.errors`` classes
(``Unavailable`` for any database failure); reads return the wire JSON of docs/api.md;
``commit`` takes ``cairn.core.wire.parse_ops`` output.
"""

from .models import Device, NamespaceInfo, User
from .store import MetaStore

__all__ = ["Device", "MetaStore", "NamespaceInfo", "User"]
