"""The statements a commit runs (``commit.Batch``), on plain ``sqlite3``: the SQLite path.

Why a second spelling of ``commit_sql.AlchemySql``: a commit of a few small files runs about
fifteen statements on the writer thread, and under the metadata mix of
bench/server_load.py SQLAlchemy's per-execute work on them (compiled-cache lookup, parameter
processing, Row objects) was most of a commit's CPU, taken under the GIL the event loop
needs. Here every statement is fixed SQL text that ``sqlite3`` keeps prepared, and rows are
tuples. What a batch does is decided once, in ``commit.py``; both spellings only move rows,
and tests/server/meta/test_sqlite_writes.py checks that they leave identical databases and
answers.

It runs on the DBAPI connection under the writer's SQLAlchemy transaction (``BEGIN
IMMEDIATE``, one SAVEPOINT per job of a group), so the group commit, the rollback of a
failing job and the durability settings stay those of ``writer.py``. The schema is owned by
``schema.py`` and Alembic; the statements below name its columns.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .nodes import NodeState
from .sqlite_reads import MAX_IN, in_list, names_xattrs_sql, padded, referenced

_NODE_COLS = (
    "n.id, n.ns, n.type, n.mode, n.mtime_ns, n.rev, n.size, n.used, n.target, n.deleted, "
    "n.seq, n.last_parent, n.last_name, n.deleted_ns, r.blocklist"
)
_LOCK = (
    "SELECT s.seq, s.used, s.owner_id, u.quota FROM namespaces s "
    "JOIN users u ON u.id = s.owner_id WHERE s.id = ?"
)
_OTHER_USED = "SELECT used FROM namespaces WHERE owner_id = ? AND id != ?"
_CHILD = "SELECT node FROM names WHERE ns = ? AND parent = ? AND name = ?"
_HAS_CHILD = "SELECT node FROM names WHERE ns = ? AND parent = ? LIMIT 1"
_PARENT_OF = "SELECT parent FROM names WHERE node = ? LIMIT 1"
_INSERT_NODE = (
    "INSERT INTO nodes (id, ns, type, mode, mtime_ns, rev, size, used, target, deleted, seq) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SAVE_NODE = (
    "UPDATE nodes SET mode = ?, mtime_ns = ?, rev = ?, size = ?, used = ?, deleted = ?, "
    "deleted_ns = ?, last_parent = ?, last_name = ?, seq = ? WHERE id = ?"
)
_INSERT_NAME = "INSERT INTO names (ns, parent, name, node) VALUES (?, ?, ?, ?)"
_DELETE_NAME = "DELETE FROM names WHERE ns = ? AND parent = ? AND name = ?"
_MOVE_NAME = "UPDATE names SET parent = ?, name = ? WHERE ns = ? AND parent = ? AND name = ?"
_INSERT_XATTR = "INSERT INTO xattrs (node, name, value) VALUES (?, ?, ?)"
_DELETE_XATTR = "DELETE FROM xattrs WHERE node = ? AND name = ?"
_INSERT_REVISION = (
    "INSERT INTO revisions (node, rev, blocklist, size, used, mtime_ns, mode, device_id, "
    "created_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_JOURNAL = (
    "INSERT INTO journal (ns, seq, node, op, device_id, created_ns) VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_RESULT = (
    "INSERT INTO op_results (device_id, op_id, ns, seq, result, created_ns) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_ADD_REF = "UPDATE chunks SET refcount = refcount + ? WHERE id = ?"
_SAVE_NS = "UPDATE namespaces SET seq = ?, used = ? WHERE id = ?"


def _nodes_sql(n: int) -> str:
    return (
        f"SELECT {_NODE_COLS} FROM nodes n "
        "LEFT JOIN revisions r ON r.node = n.id AND r.rev = n.rev "
        f"WHERE n.id IN ({in_list(n)})"
    )


def _stored_sql(n: int) -> str:
    return f"SELECT op_id, result FROM op_results WHERE device_id = ? AND op_id IN ({in_list(n)})"


class SqliteSql:
    """``CommitSql`` on a plain ``sqlite3.Connection`` inside an open write transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def lock_namespace(self, ns: int) -> tuple[int, int, int, int | None] | None:
        # The write lock is already held (BEGIN IMMEDIATE): nothing to lock per row.
        row: tuple[int, int, int, int | None] | None = self.conn.execute(_LOCK, (ns,)).fetchone()
        return row

    def other_used(self, owner: int, ns: int) -> int:
        return sum(r[0] for r in self.conn.execute(_OTHER_USED, (owner, ns)))

    def stored_results(self, device: int, op_ids: Sequence[str]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for start in range(0, len(op_ids), MAX_IN):
            size, part = padded(op_ids[start : start + MAX_IN])
            out.extend(self.conn.execute(_stored_sql(size), [device, *part]))
        return out

    def load_nodes(self, ids: Sequence[str]) -> dict[str, NodeState]:
        # An IN list names a row once however often the padding repeats its id.
        unique = list(dict.fromkeys(ids))
        found: dict[str, NodeState] = {}
        for start in range(0, len(unique), MAX_IN):
            size, part = padded(unique[start : start + MAX_IN])
            for r in self.conn.execute(_nodes_sql(size), part):
                found[r[0]] = NodeState(
                    r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], bool(r[9]), r[10],
                    r[11], r[12], r[13], r[14],
                )  # fmt: skip
        have = list(found)
        for start in range(0, len(have), MAX_IN):
            size, part = padded(have[start : start + MAX_IN])
            for node, kind, a, b, value in self.conn.execute(names_xattrs_sql(size), part + part):
                if kind == 0:
                    found[node].names.append((a, b))
                else:
                    found[node].xattrs[a] = value
        return found

    def child_id(self, ns: int, parent: str, name: str) -> str | None:
        row = self.conn.execute(_CHILD, (ns, parent, name)).fetchone()
        return None if row is None else row[0]

    def has_child(self, ns: int, parent: str) -> bool:
        return self.conn.execute(_HAS_CHILD, (ns, parent)).fetchone() is not None

    def parent_of(self, node: str) -> str | None:
        row = self.conn.execute(_PARENT_OF, (node,)).fetchone()
        return None if row is None else row[0]

    def referenced(self, user_id: int, ids: Sequence[bytes]) -> set[bytes]:
        return referenced(self.conn, user_id, ids)

    def insert_node(self, s: NodeState) -> None:
        self.conn.execute(
            _INSERT_NODE,
            (s.id, s.ns, s.type, s.mode, s.mtime_ns, s.rev, s.size, s.used, s.target,
             s.deleted, s.seq),
        )  # fmt: skip

    def save_node(self, s: NodeState) -> None:
        self.conn.execute(
            _SAVE_NODE,
            (s.mode, s.mtime_ns, s.rev, s.size, s.used, s.deleted, s.deleted_ns,
             s.last_parent, s.last_name, s.seq, s.id),
        )  # fmt: skip

    def insert_name(self, ns: int, parent: str, name: str, node: str) -> None:
        self.conn.execute(_INSERT_NAME, (ns, parent, name, node))

    def delete_name(self, ns: int, parent: str, name: str) -> None:
        self.conn.execute(_DELETE_NAME, (ns, parent, name))

    def move_name(self, ns: int, parent: str, name: str, new_parent: str, new_name: str) -> None:
        self.conn.execute(_MOVE_NAME, (new_parent, new_name, ns, parent, name))

    def insert_xattrs(self, node: str, items: dict[str, bytes]) -> None:
        self.conn.executemany(_INSERT_XATTR, [(node, k, v) for k, v in items.items()])

    def delete_xattrs(self, node: str, keys: list[str]) -> None:
        self.conn.executemany(_DELETE_XATTR, [(node, k) for k in keys])

    def insert_revision(self, row: tuple[Any, ...]) -> None:
        self.conn.execute(_INSERT_REVISION, row)

    def finish(
        self,
        journal_rows: list[tuple[Any, ...]],
        result_rows: list[tuple[Any, ...]],
        refs: Counter[bytes],
        ns: int,
        seq: int,
        used: int,
    ) -> None:
        c = self.conn
        if journal_rows:
            c.executemany(_INSERT_JOURNAL, journal_rows)
        if result_rows:
            c.executemany(_INSERT_RESULT, result_rows)
        if refs:
            c.executemany(_ADD_REF, [(n, cid) for cid, n in sorted(refs.items())])
        c.execute(_SAVE_NS, (seq, used, ns))
