"""The statements a commit runs (``commit.Batch``), spelled in SQLAlchemy Core.

``commit.py`` decides what a batch does; a ``CommitSql`` object only reads and writes rows.
This one is the PostgreSQL path (and runs on SQLite too, where the equivalence test of
tests/server/meta/test_sqlite_writes.py uses it as the reference for ``sqlite_writes``).

Every method runs inside the caller's open write transaction.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from .chunks import referenced_by
from .db import batched
from .nodes import NodeState, child_id, load_nodes
from .schema import chunks, journal, names, namespaces, nodes, op_results, revisions, users, xattrs

# Statements built once: a commit runs a dozen of them, and building a construct per call
# (cache-key generation, coercions) costs more than executing it on SQLite.
_b = bindparam
_LOCK = (
    select(namespaces.c.seq, namespaces.c.used, namespaces.c.owner_id, users.c.quota)
    .select_from(namespaces.join(users, users.c.id == namespaces.c.owner_id))
    .where(namespaces.c.id == _b("ns"))
    .with_for_update(of=namespaces)
)
_OTHER_USED = select(namespaces.c.used).where(
    namespaces.c.owner_id == _b("owner"), namespaces.c.id != _b("ns")
)
_STORED = select(op_results.c.op_id, op_results.c.result).where(
    op_results.c.device_id == _b("device"), op_results.c.op_id.in_(_b("ids", expanding=True))
)
_HAS_CHILD = (
    select(names.c.node).where(names.c.ns == _b("ns"), names.c.parent == _b("parent")).limit(1)
)
_PARENT_OF = select(names.c.parent).where(names.c.node == _b("node")).limit(1)
_SAVE_NODE = (
    update(nodes)
    .where(nodes.c.id == _b("b_id"))
    .values(
        mode=_b("b_mode"), mtime_ns=_b("b_mtime_ns"), rev=_b("b_rev"), size=_b("b_size"),
        used=_b("b_used"), deleted=_b("b_deleted"), deleted_ns=_b("b_deleted_ns"),
        last_parent=_b("b_last_parent"), last_name=_b("b_last_name"), seq=_b("b_seq"),
    )
)  # fmt: skip
_INSERT_NODE = insert(nodes)
_INSERT_NAME = insert(names)
_INSERT_XATTR = insert(xattrs)
_INSERT_REVISION = insert(revisions)
_INSERT_JOURNAL = insert(journal)
_INSERT_RESULT = insert(op_results)
_NAME_WHERE = (
    names.c.ns == _b("b_ns"),
    names.c.parent == _b("b_parent"),
    names.c.name == _b("b_name"),
)
_DELETE_NAME = delete(names).where(*_NAME_WHERE)
_MOVE_NAME = (
    update(names).where(*_NAME_WHERE).values(parent=_b("b_new_parent"), name=_b("b_new_name"))
)
_DELETE_XATTRS = delete(xattrs).where(
    xattrs.c.node == _b("node"), xattrs.c.name.in_(_b("names", expanding=True))
)
_ADD_REFS = (
    update(chunks)
    .where(chunks.c.id.in_(_b("ids", expanding=True)))
    .values(refcount=chunks.c.refcount + _b("delta"))
)
_LOCK_CHUNKS = (
    select(chunks.c.id)
    .where(chunks.c.id.in_(_b("ids", expanding=True)))
    .order_by(chunks.c.id)
    .with_for_update()
)
_SAVE_NS = (
    update(namespaces)
    .where(namespaces.c.id == _b("b_ns"))
    .values(seq=_b("b_seq"), used=_b("b_used"))
)

JOURNAL_COLUMNS = ("ns", "seq", "node", "op", "device_id", "created_ns")
RESULT_COLUMNS = ("device_id", "op_id", "ns", "seq", "result", "created_ns")
REVISION_COLUMNS = (
    "node", "rev", "blocklist", "size", "used", "mtime_ns", "mode", "device_id", "created_ns"
)  # fmt: skip


class AlchemySql:
    """``CommitSql`` on a SQLAlchemy ``Connection`` (either backend)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def lock_namespace(self, ns: int) -> tuple[int, int, int, int | None] | None:
        row = self.conn.execute(_LOCK, {"ns": ns}).first()
        return None if row is None else (row.seq, row.used, row.owner_id, row.quota)

    def other_used(self, owner: int, ns: int) -> int:
        return sum(r[0] for r in self.conn.execute(_OTHER_USED, {"owner": owner, "ns": ns}))

    def stored_results(self, device: int, op_ids: Sequence[str]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for part in batched(op_ids):
            rows = self.conn.execute(_STORED, {"device": device, "ids": list(part)})
            out.extend((op_id, result) for op_id, result in rows)
        return out

    def load_nodes(self, ids: Sequence[str]) -> dict[str, NodeState]:
        return load_nodes(self.conn, ids)

    def child_id(self, ns: int, parent: str, name: str) -> str | None:
        return child_id(self.conn, ns, parent, name)

    def has_child(self, ns: int, parent: str) -> bool:
        return self.conn.execute(_HAS_CHILD, {"ns": ns, "parent": parent}).first() is not None

    def parent_of(self, node: str) -> str | None:
        parent: str | None = self.conn.execute(_PARENT_OF, {"node": node}).scalar()
        return parent

    def referenced(self, user_id: int, ids: Sequence[bytes]) -> set[bytes]:
        return referenced_by(self.conn, user_id, ids)

    def insert_node(self, s: NodeState) -> None:
        self.conn.execute(
            _INSERT_NODE,
            {"id": s.id, "ns": s.ns, "type": s.type, "mode": s.mode, "mtime_ns": s.mtime_ns,
             "rev": s.rev, "size": s.size, "used": s.used, "target": s.target,
             "deleted": s.deleted, "seq": s.seq},
        )  # fmt: skip

    def save_node(self, s: NodeState) -> None:
        self.conn.execute(
            _SAVE_NODE,
            {"b_id": s.id, "b_mode": s.mode, "b_mtime_ns": s.mtime_ns, "b_rev": s.rev,
             "b_size": s.size, "b_used": s.used, "b_deleted": s.deleted,
             "b_deleted_ns": s.deleted_ns, "b_last_parent": s.last_parent,
             "b_last_name": s.last_name, "b_seq": s.seq},
        )  # fmt: skip

    def insert_name(self, ns: int, parent: str, name: str, node: str) -> None:
        self.conn.execute(_INSERT_NAME, {"ns": ns, "parent": parent, "name": name, "node": node})

    def delete_name(self, ns: int, parent: str, name: str) -> None:
        self.conn.execute(_DELETE_NAME, {"b_ns": ns, "b_parent": parent, "b_name": name})

    def move_name(self, ns: int, parent: str, name: str, new_parent: str, new_name: str) -> None:
        self.conn.execute(
            _MOVE_NAME,
            {"b_ns": ns, "b_parent": parent, "b_name": name, "b_new_parent": new_parent,
             "b_new_name": new_name},
        )  # fmt: skip

    def insert_xattrs(self, node: str, items: dict[str, bytes]) -> None:
        self.conn.execute(
            _INSERT_XATTR, [{"node": node, "name": k, "value": v} for k, v in items.items()]
        )

    def delete_xattrs(self, node: str, keys: list[str]) -> None:
        self.conn.execute(_DELETE_XATTRS, {"node": node, "names": keys})

    def insert_revision(self, row: tuple[Any, ...]) -> None:
        self.conn.execute(_INSERT_REVISION, dict(zip(REVISION_COLUMNS, row, strict=True)))

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
            c.execute(
                _INSERT_JOURNAL, [dict(zip(JOURNAL_COLUMNS, r, strict=True)) for r in journal_rows]
            )
        if result_rows:
            c.execute(
                _INSERT_RESULT, [dict(zip(RESULT_COLUMNS, r, strict=True)) for r in result_rows]
            )
        if refs and c.dialect.name == "postgresql":
            # Two commits in different namespaces may touch the same chunks: take the row
            # locks in one global order (by id) first so their updates cannot deadlock.
            for part in batched(sorted(refs)):
                c.execute(_LOCK_CHUNKS, {"ids": list(part)}).all()
        by_delta: dict[int, list[bytes]] = {}
        for cid, n in sorted(refs.items()):
            by_delta.setdefault(n, []).append(cid)
        for delta, ids in by_delta.items():
            for part in batched(ids):
                c.execute(_ADD_REFS, {"ids": list(part), "delta": delta})
        c.execute(_SAVE_NS, {"b_ns": ns, "b_seq": seq, "b_used": used})
