"""One RocksDB write of a group of key changes, shared by the store's and the chunk cache's
grouped writes (``fs/store.py``, ``fs/cache.py``)."""

from __future__ import annotations

from collections.abc import Mapping

import rocksdict


def write_changes(db: rocksdict.Rdict, changes: Mapping[bytes, bytes | None]) -> None:
    """Write ``changes`` (a value of None deletes the key) to ``db`` as ONE WriteBatch, not
    synced: all of them land or none (a crash in between loses the whole group)."""
    wb = rocksdict.WriteBatch(raw_mode=True)
    for k, v in changes.items():
        if v is None:
            wb.delete(k)
        else:
            wb.put(k, v)
    db.write(wb)
