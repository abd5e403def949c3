"""Applying a commit batch (docs/api.md, "Commit") inside one transaction.

``apply_batch`` runs on an open write transaction after the caller has checked access:

1. lock the namespace row (``FOR UPDATE`` on PostgreSQL; SQLite already holds the file's
   write lock via ``BEGIN IMMEDIATE``), which serializes commits per namespace and makes
   seq allocation collision-free;
2. answer op ids this device already applied from ``op_results`` (idempotent retries);
3. apply the other ops in order. Each op first checks everything that can refuse it and
   only then writes, so a refused op leaves no trace and the rest of the batch goes on;
4. write the journal rows, stored results, chunk refcount increments and the namespace's
   new seq/usage in a few set-oriented statements.

Only applied results are stored: a conflict or ``missing_chunks`` answer is recomputed when
the device retries the same op id (after uploading the chunks, say).

What a batch does is decided here, once; the rows are read and written through a
``CommitSql``: plain ``sqlite3`` on SQLite (``sqlite_writes``, the cheap path the writer
thread needs), SQLAlchemy Core on PostgreSQL (``commit_sql``).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import Connection

from cairn.core import wire
from cairn.core.errors import (
    AlreadyExists,
    CairnError,
    DirectoryNotEmpty,
    InvalidArgument,
    IsADirectory,
    NotADirectory,
    NotFound,
    QuotaExceeded,
    TooLarge,
)

from .commit_sql import AlchemySql
from .nodes import NodeState
from .sqlite_writes import SqliteSql

MAX_DEPTH = 4096


class CommitSql(Protocol):
    """The rows a commit reads and writes, inside the caller's open write transaction:
    ``commit_sql.AlchemySql`` (SQLAlchemy Core, PostgreSQL) and ``sqlite_writes.SqliteSql``
    (plain ``sqlite3``, SQLite). They decide nothing; ``Batch`` does."""

    def lock_namespace(self, ns: int) -> tuple[int, int, int, int | None] | None:
        """Lock the namespace row; ``(seq, used, owner_id, owner's quota)`` or None."""

    def other_used(self, owner: int, ns: int) -> int:
        """Bytes used by the owner's other namespaces."""

    def stored_results(self, device: int, op_ids: Sequence[str]) -> list[tuple[str, str]]:
        """``(op_id, result JSON)`` stored for those of ``op_ids`` the device applied."""

    def load_nodes(self, ids: Sequence[str]) -> dict[str, NodeState]:
        """The nodes among ``ids`` that exist (any namespace), with blocklist, names and
        xattrs."""

    def child_id(self, ns: int, parent: str, name: str) -> str | None: ...
    def has_child(self, ns: int, parent: str) -> bool: ...
    def parent_of(self, node: str) -> str | None: ...
    def referenced(self, user_id: int, ids: Sequence[bytes]) -> set[bytes]: ...
    def insert_node(self, s: NodeState) -> None: ...
    def save_node(self, s: NodeState) -> None: ...
    def insert_name(self, ns: int, parent: str, name: str, node: str) -> None: ...
    def delete_name(self, ns: int, parent: str, name: str) -> None: ...
    def move_name(
        self, ns: int, parent: str, name: str, new_parent: str, new_name: str
    ) -> None: ...
    def insert_xattrs(self, node: str, items: dict[str, bytes]) -> None: ...
    def delete_xattrs(self, node: str, keys: list[str]) -> None: ...

    def insert_revision(self, row: tuple[Any, ...]) -> None:
        """``row``: the columns of ``commit_sql.REVISION_COLUMNS``."""

    def finish(
        self,
        journal_rows: list[tuple[Any, ...]],
        result_rows: list[tuple[Any, ...]],
        refs: Counter[bytes],
        ns: int,
        seq: int,
        used: int,
    ) -> None:
        """Insert the journal rows (``JOURNAL_COLUMNS``) and stored results
        (``RESULT_COLUMNS``), add ``refs`` to the chunks' refcounts and save the
        namespace's seq and usage."""


class _Refused(Exception):
    """An op that is not applied; ``result`` is its RESULT body without ``op_id``."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(result.get("reason") or result.get("status"))
        self.result = result


def _conflict(reason: str, current: NodeState | None) -> _Refused:
    return _Refused(
        {"status": "conflict", "reason": reason,
         "current": None if current is None else current.to_json()}
    )  # fmt: skip


def _data_bytes(bl: wire.Blocklist) -> int:
    return sum(length for cid, length in bl.entries if cid is not None)


class Batch:
    """State of one commit transaction. Not shared between tasks."""

    def __init__(self, sql: CommitSql, user_id: int, device_id: int, ns: int, now: int) -> None:
        self.sql = sql
        self.user_id = user_id
        self.device_id = device_id
        self.ns = ns
        self.now = now
        self.seq = 0
        self.used = 0
        self.quota: int | None = None
        self.other_used = 0
        self.cache: dict[str, NodeState | None] = {}
        self.journal_rows: list[tuple[Any, ...]] = []
        self.result_rows: list[tuple[Any, ...]] = []
        self.refs: Counter[bytes] = Counter()

    # --- setup and teardown --------------------------------------------------------------

    def lock(self) -> None:
        """Lock the namespace row and load seq, usage and the owner's quota; ``NotFound``
        unless the committing user owns the namespace."""
        if type(self.ns) is not int:
            raise NotFound("namespace not found")
        row = self.sql.lock_namespace(self.ns)
        if row is None or row[2] != self.user_id:
            raise NotFound(f"namespace {self.ns} not found")
        self.seq, self.used, owner, self.quota = row
        if self.quota is not None:
            self.other_used = self.sql.other_used(owner, self.ns)

    def stored_results(self, op_ids: list[str]) -> dict[str, dict[str, Any]]:
        rows = self.sql.stored_results(self.device_id, op_ids)
        return {op_id: json.loads(result) for op_id, result in rows}

    def preload(self, ops: list[wire.Op]) -> None:
        ids: list[str] = []
        for op in ops:
            ids.append(op.node)
            for attr in ("parent", "new_parent"):
                value = getattr(op, attr, None)
                if value is not None:
                    ids.append(value)
        found = self.sql.load_nodes(ids)
        for node_id in ids:
            self.cache[node_id] = found.get(node_id)

    def finish(self) -> None:
        self.sql.finish(
            self.journal_rows, self.result_rows, self.refs, self.ns, self.seq, self.used
        )

    # --- lookups -------------------------------------------------------------------------

    def get(self, node_id: str) -> NodeState | None:
        """The node if it exists in this namespace (deleted or not)."""
        if node_id not in self.cache:
            self.cache[node_id] = self.sql.load_nodes([node_id]).get(node_id)
        state = self.cache[node_id]
        return state if state is not None and state.ns == self.ns else None

    def existing(self, node_id: str) -> NodeState:
        state = self.get(node_id)
        if state is None:
            raise NotFound(f"node {node_id} not found")
        if state.deleted:
            raise _conflict("deleted", state)
        return state

    def directory(self, node_id: str, what: str) -> NodeState:
        state = self.get(node_id)
        if state is None or state.deleted:
            raise NotFound(f"{what} {node_id} not found")
        if state.type != "dir":
            raise NotADirectory(f"{what} {node_id} is not a directory")
        return state

    def check_free(self, parent: str, name: str) -> None:
        holder = self.sql.child_id(self.ns, parent, name)
        if holder is not None:
            raise _conflict("name_taken", self.get(holder))

    def check_new_id(self, node_id: str) -> None:
        if node_id not in self.cache:
            self.get(node_id)
        if self.cache[node_id] is not None:
            raise AlreadyExists(f"node id {node_id} already exists")

    def has_children(self, dir_id: str) -> bool:
        return self.sql.has_child(self.ns, dir_id)

    def is_within(self, ancestor: str, node_id: str) -> bool:
        """True if ``node_id`` is ``ancestor`` or lies below it (directories have one name)."""
        current: str | None = node_id
        for _ in range(MAX_DEPTH):
            if current is None:
                return False
            if current == ancestor:
                return True
            current = self.sql.parent_of(current)
        raise InvalidArgument(f"directory tree deeper than {MAX_DEPTH}")

    def check_content(self, bl: wire.Blocklist, delta: int) -> None:
        ids = bl.chunk_ids()
        if ids:
            present = self.sql.referenced(self.user_id, ids)
            missing = [cid.hex() for cid in ids if cid not in present]
            if missing:
                raise _Refused({"status": "missing_chunks", "missing": missing})
        if (
            self.quota is not None
            and delta > 0
            and self.other_used + self.used + delta > self.quota
        ):
            raise QuotaExceeded(
                f"quota of {self.quota} bytes exceeded ({self.other_used + self.used} used)"
            )

    # --- writes --------------------------------------------------------------------------

    def bump(self, state: NodeState, kind: str) -> int:
        self.seq += 1
        state.seq = self.seq
        self.journal_rows.append((self.ns, self.seq, state.id, kind, self.device_id, self.now))
        return self.seq

    def save(self, state: NodeState, kind: str) -> None:
        """Allocate a seq for ``state`` and write its row."""
        self.bump(state, kind)
        self.sql.save_node(state)

    def insert_node(self, state: NodeState, parent: str, name: str, kind: str) -> None:
        self.bump(state, kind)
        state.names = [(parent, name)]
        self.sql.insert_node(state)
        self.sql.insert_name(self.ns, parent, name, state.id)
        if state.xattrs:
            self.sql.insert_xattrs(state.id, state.xattrs)
        self.cache[state.id] = state

    def add_revision(self, state: NodeState, bl: wire.Blocklist) -> None:
        blob = bl.encode()
        self.sql.insert_revision(
            (state.id, state.rev, blob, state.size, state.used, state.mtime_ns, state.mode,
             self.device_id, self.now)
        )  # fmt: skip
        state.blocklist = blob
        self.refs.update(bl.chunk_ids())

    def drop_name(self, state: NodeState, parent: str, name: str) -> None:
        """Remove one name of ``state``; the last one moves the node to the trash. The
        caller saves the node."""
        self.sql.delete_name(self.ns, parent, name)
        state.names.remove((parent, name))
        if not state.names:
            state.deleted = True
            state.deleted_ns = self.now
            state.last_parent, state.last_name = parent, name
            self.used -= state.used

    # --- ops -----------------------------------------------------------------------------

    def apply(self, op: wire.Op) -> NodeState:
        handler = getattr(self, "op_" + op.kind)
        state: NodeState = handler(op)
        return state

    def _new(self, op: wire.Mkdir | wire.Create | wire.Symlink) -> None:
        self.check_new_id(op.node)
        self.directory(op.parent, "parent")
        self.check_free(op.parent, op.name)

    def op_mkdir(self, op: wire.Mkdir) -> NodeState:
        self._new(op)
        state = NodeState(op.node, self.ns, "dir", op.mode, op.mtime_ns, 1, 0, 0, None, False, 0)
        state.xattrs = dict(op.xattrs)
        self.insert_node(state, op.parent, op.name, "mkdir")
        return state

    def op_symlink(self, op: wire.Symlink) -> NodeState:
        self._new(op)
        state = NodeState(op.node, self.ns, "symlink", 0o777, op.mtime_ns, 1, 0, 0, op.target,
                          False, 0)  # fmt: skip
        self.insert_node(state, op.parent, op.name, "symlink")
        return state

    def op_create(self, op: wire.Create) -> NodeState:
        self._new(op)
        used = _data_bytes(op.blocklist)
        self.check_content(op.blocklist, used)
        state = NodeState(op.node, self.ns, "file", op.mode, op.mtime_ns, 1, op.blocklist.size,
                          used, None, False, 0)  # fmt: skip
        state.xattrs = dict(op.xattrs)
        self.insert_node(state, op.parent, op.name, "create")
        self.add_revision(state, op.blocklist)
        self.used += used
        return state

    def op_update(self, op: wire.Update) -> NodeState:
        state = self.existing(op.node)
        if state.type != "file":
            raise IsADirectory(f"node {op.node} is a {state.type}, not a file")
        if op.base_rev != state.rev:
            raise _conflict("stale_base", state)
        used = _data_bytes(op.blocklist)
        self.check_content(op.blocklist, used - state.used)
        self.used += used - state.used
        state.rev += 1
        state.size, state.used, state.mtime_ns = op.blocklist.size, used, op.mtime_ns
        self.add_revision(state, op.blocklist)
        self.save(state, "update")
        return state

    def op_setattr(self, op: wire.Setattr) -> NodeState:
        state = self.existing(op.node)
        merged = {k: v for k, v in state.xattrs.items() if k not in op.xattrs_remove}
        merged.update(op.xattrs_set)
        if len(merged) > wire.MAX_XATTRS:
            raise TooLarge(f"a node holds at most {wire.MAX_XATTRS} xattrs")
        gone = [k for k in state.xattrs if k not in merged or k in op.xattrs_set]
        if gone:
            self.sql.delete_xattrs(state.id, gone)
        if op.xattrs_set:
            self.sql.insert_xattrs(state.id, op.xattrs_set)
        state.xattrs = merged
        if op.mode is not None:
            state.mode = op.mode
        if op.mtime_ns is not None:
            state.mtime_ns = op.mtime_ns
        self.save(state, "setattr")
        return state

    def op_rename(self, op: wire.Rename) -> NodeState:
        state = self.existing(op.node)
        if (op.parent, op.name) not in state.names:
            raise _conflict("moved", state)
        self.directory(op.new_parent, "new_parent")
        if state.type == "dir" and self.is_within(state.id, op.new_parent):
            raise InvalidArgument("cannot move a directory into itself or its own subtree")
        holder_id = self.sql.child_id(self.ns, op.new_parent, op.new_name)
        if holder_id == state.id:
            # Already linked there (the same name, or a hard link): nothing moves, as with
            # rename(2) when both names are links to the same file.
            self.save(state, "rename")
            return state
        if holder_id is not None:
            holder = self.get(holder_id)
            assert holder is not None
            if not op.replace:
                raise _conflict("name_taken", holder)
            if op.replaces is not None and (
                holder.id != op.replaces
                or (op.replaces_rev is not None and holder.rev != op.replaces_rev)
            ):
                # the device replaced what it saw there; this is something else now
                raise _conflict("replaced_changed", holder)
            if holder.type == "dir":
                if state.type != "dir":
                    raise IsADirectory(f"{op.new_name!r} is a directory")
                if self.has_children(holder.id):
                    raise DirectoryNotEmpty(f"directory {op.new_name!r} is not empty")
            elif state.type == "dir":
                raise NotADirectory(f"{op.new_name!r} is not a directory")
            self.drop_name(holder, op.new_parent, op.new_name)
            self.save(holder, "replaced")
        self.sql.move_name(self.ns, op.parent, op.name, op.new_parent, op.new_name)
        state.names[state.names.index((op.parent, op.name))] = (op.new_parent, op.new_name)
        self.save(state, "rename")
        return state

    def op_link(self, op: wire.Link) -> NodeState:
        state = self.existing(op.node)
        if state.type == "dir":
            raise IsADirectory("hard links to directories are not allowed")
        if state.type != "file":
            raise InvalidArgument("hard links are only allowed to files")
        self.directory(op.new_parent, "new_parent")
        self.check_free(op.new_parent, op.new_name)
        self.sql.insert_name(self.ns, op.new_parent, op.new_name, state.id)
        state.names.append((op.new_parent, op.new_name))
        self.save(state, "link")
        return state

    def op_unlink(self, op: wire.Unlink) -> NodeState:
        state = self.existing(op.node)
        if (op.parent, op.name) not in state.names:
            raise _conflict("moved", state)
        if op.base_rev is not None and op.base_rev != state.rev:
            raise _conflict("stale_base", state)
        if state.type == "dir" and self.has_children(state.id):
            raise DirectoryNotEmpty(f"directory {op.name!r} is not empty")
        self.drop_name(state, op.parent, op.name)
        self.save(state, "unlink")
        return state


def sql_for(conn: Connection) -> CommitSql:
    """The statements for ``conn``'s backend: plain ``sqlite3`` on the DBAPI connection of
    a SQLite transaction (same transaction, same savepoints), SQLAlchemy Core otherwise."""
    if conn.dialect.name == "sqlite":
        raw = conn.connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        return SqliteSql(raw)
    return AlchemySql(conn)


def apply_batch(
    conn: Connection,
    user_id: int,
    device_id: int,
    ns: int,
    ops: list[wire.Op],
    sql: CommitSql | None = None,
) -> list[dict[str, Any]]:
    """Apply ``ops`` in order on ``conn`` (an open write transaction); RESULT per op.

    ``sql``: the statements to run (default ``sql_for(conn)``; the equivalence test passes
    ``AlchemySql`` on SQLite)."""
    batch = Batch(sql or sql_for(conn), user_id, device_id, ns, time.time_ns())
    batch.lock()
    done = batch.stored_results([op.op_id for op in ops])
    todo = [op for op in ops if op.op_id not in done]
    if todo:
        batch.preload(todo)
    results: list[dict[str, Any]] = []
    for op in ops:
        if op.op_id in done:
            results.append(done[op.op_id])
            continue
        try:
            state = batch.apply(op)
        except _Refused as refused:
            results.append({"op_id": op.op_id, **refused.result})
            continue
        except CairnError as exc:
            results.append(
                {"op_id": op.op_id, "status": "error", "error": exc.code, "message": str(exc)}
            )
            continue
        result = {"op_id": op.op_id, "status": "applied", "seq": state.seq,
                  "node": state.to_json()}  # fmt: skip
        results.append(result)
        batch.result_rows.append(
            (device_id, op.op_id, ns, state.seq, json.dumps(result, separators=(",", ":")),
             batch.now)
        )  # fmt: skip
    batch.finish()
    return results


__all__ = ["apply_batch"]
