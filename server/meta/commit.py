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
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update

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

from .chunks import referenced_by
from .db import batched
from .nodes import NodeState, child_id, load_nodes
from .schema import chunks, journal, names, namespaces, nodes, op_results, revisions, users, xattrs

MAX_DEPTH = 4096

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

    def __init__(self, conn: Connection, user_id: int, device_id: int, ns: int, now: int) -> None:
        self.conn = conn
        self.user_id = user_id
        self.device_id = device_id
        self.ns = ns
        self.now = now
        self.seq = 0
        self.used = 0
        self.quota: int | None = None
        self.other_used = 0
        self.cache: dict[str, NodeState | None] = {}
        self.journal_rows: list[dict[str, Any]] = []
        self.result_rows: list[dict[str, Any]] = []
        self.refs: Counter[bytes] = Counter()

    # --- setup and teardown --------------------------------------------------------------

    def lock(self) -> None:
        """Lock the namespace row and load seq, usage and the owner's quota; ``NotFound``
        unless the committing user owns the namespace."""
        if type(self.ns) is not int:
            raise NotFound("namespace not found")
        row = self.conn.execute(_LOCK, {"ns": self.ns}).first()
        if row is None or row.owner_id != self.user_id:
            raise NotFound(f"namespace {self.ns} not found")
        self.seq, self.used, self.quota = row.seq, row.used, row.quota
        if self.quota is not None:
            others = self.conn.execute(_OTHER_USED, {"owner": row.owner_id, "ns": self.ns})
            self.other_used = sum(r[0] for r in others)

    def stored_results(self, op_ids: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for part in batched(op_ids):
            rows = self.conn.execute(_STORED, {"device": self.device_id, "ids": list(part)})
            found.update((op_id, json.loads(result)) for op_id, result in rows)
        return found

    def preload(self, ops: list[wire.Op]) -> None:
        ids: list[str] = []
        for op in ops:
            ids.append(op.node)
            for attr in ("parent", "new_parent"):
                value = getattr(op, attr, None)
                if value is not None:
                    ids.append(value)
        found = load_nodes(self.conn, ids)
        for node_id in ids:
            self.cache[node_id] = found.get(node_id)

    def finish(self) -> None:
        c = self.conn
        if self.journal_rows:
            c.execute(_INSERT_JOURNAL, self.journal_rows)
        if self.result_rows:
            c.execute(_INSERT_RESULT, self.result_rows)
        if self.refs and c.dialect.name == "postgresql":
            # Two commits in different namespaces may touch the same chunks: take the row
            # locks in one global order (by id) first so their updates cannot deadlock.
            for part in batched(sorted(self.refs)):
                c.execute(_LOCK_CHUNKS, {"ids": list(part)}).all()
        by_delta: dict[int, list[bytes]] = {}
        for cid, n in sorted(self.refs.items()):
            by_delta.setdefault(n, []).append(cid)
        for delta, ids in by_delta.items():
            for part in batched(ids):
                c.execute(_ADD_REFS, {"ids": list(part), "delta": delta})
        c.execute(_SAVE_NS, {"b_ns": self.ns, "b_seq": self.seq, "b_used": self.used})

    # --- lookups -------------------------------------------------------------------------

    def get(self, node_id: str) -> NodeState | None:
        """The node if it exists in this namespace (deleted or not)."""
        if node_id not in self.cache:
            self.cache[node_id] = (load_nodes(self.conn, [node_id])).get(node_id)
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
        holder = child_id(self.conn, self.ns, parent, name)
        if holder is not None:
            raise _conflict("name_taken", self.get(holder))

    def check_new_id(self, node_id: str) -> None:
        if node_id not in self.cache:
            self.get(node_id)
        if self.cache[node_id] is not None:
            raise AlreadyExists(f"node id {node_id} already exists")

    def has_children(self, dir_id: str) -> bool:
        return self.conn.execute(_HAS_CHILD, {"ns": self.ns, "parent": dir_id}).first() is not None

    def is_within(self, ancestor: str, node_id: str) -> bool:
        """True if ``node_id`` is ``ancestor`` or lies below it (directories have one name)."""
        current: str | None = node_id
        for _ in range(MAX_DEPTH):
            if current is None:
                return False
            if current == ancestor:
                return True
            current = self.conn.execute(_PARENT_OF, {"node": current}).scalar()
        raise InvalidArgument(f"directory tree deeper than {MAX_DEPTH}")

    def check_content(self, bl: wire.Blocklist, delta: int) -> None:
        ids = bl.chunk_ids()
        if ids:
            present = referenced_by(self.conn, self.user_id, ids)
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
        self.journal_rows.append(
            {"ns": self.ns, "seq": self.seq, "node": state.id, "op": kind,
             "device_id": self.device_id, "created_ns": self.now}
        )  # fmt: skip
        return self.seq

    def save(self, state: NodeState, kind: str) -> None:
        """Allocate a seq for ``state`` and write its row."""
        self.bump(state, kind)
        self.conn.execute(
            _SAVE_NODE,
            {"b_id": state.id, "b_mode": state.mode, "b_mtime_ns": state.mtime_ns,
             "b_rev": state.rev, "b_size": state.size, "b_used": state.used,
             "b_deleted": state.deleted, "b_deleted_ns": state.deleted_ns,
             "b_last_parent": state.last_parent, "b_last_name": state.last_name,
             "b_seq": state.seq},
        )  # fmt: skip

    def insert_node(self, state: NodeState, parent: str, name: str, kind: str) -> None:
        self.bump(state, kind)
        state.names = [(parent, name)]
        self.conn.execute(
            _INSERT_NODE,
            {"id": state.id, "ns": self.ns, "type": state.type, "mode": state.mode,
             "mtime_ns": state.mtime_ns, "rev": state.rev, "size": state.size,
             "used": state.used, "target": state.target, "deleted": False, "seq": state.seq},
        )  # fmt: skip
        self.conn.execute(
            _INSERT_NAME, {"ns": self.ns, "parent": parent, "name": name, "node": state.id}
        )
        if state.xattrs:
            self.conn.execute(
                _INSERT_XATTR,
                [{"node": state.id, "name": k, "value": v} for k, v in state.xattrs.items()],
            )
        self.cache[state.id] = state

    def add_revision(self, state: NodeState, bl: wire.Blocklist) -> None:
        blob = bl.encode()
        self.conn.execute(
            _INSERT_REVISION,
            {"node": state.id, "rev": state.rev, "blocklist": blob, "size": state.size,
             "used": state.used, "mtime_ns": state.mtime_ns, "mode": state.mode,
             "device_id": self.device_id, "created_ns": self.now},
        )  # fmt: skip
        state.blocklist = blob
        self.refs.update(bl.chunk_ids())

    def drop_name(self, state: NodeState, parent: str, name: str) -> None:
        """Remove one name of ``state``; the last one moves the node to the trash. The
        caller saves the node."""
        self.conn.execute(_DELETE_NAME, {"b_ns": self.ns, "b_parent": parent, "b_name": name})
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
            self.conn.execute(_DELETE_XATTRS, {"node": state.id, "names": gone})
        if op.xattrs_set:
            self.conn.execute(
                _INSERT_XATTR,
                [{"node": state.id, "name": k, "value": v} for k, v in op.xattrs_set.items()],
            )
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
        holder_id = child_id(self.conn, self.ns, op.new_parent, op.new_name)
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
        self.conn.execute(
            _MOVE_NAME,
            {"b_ns": self.ns, "b_parent": op.parent, "b_name": op.name,
             "b_new_parent": op.new_parent, "b_new_name": op.new_name},
        )  # fmt: skip
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
        self.conn.execute(
            _INSERT_NAME,
            {"ns": self.ns, "parent": op.new_parent, "name": op.new_name, "node": state.id},
        )
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


def apply_batch(
    conn: Connection, user_id: int, device_id: int, ns: int, ops: list[wire.Op]
) -> list[dict[str, Any]]:
    """Apply ``ops`` in order on ``conn`` (an open write transaction); RESULT per op."""
    batch = Batch(conn, user_id, device_id, ns, time.time_ns())
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
            {"device_id": device_id, "op_id": op.op_id, "ns": ns, "seq": state.seq,
             "result": json.dumps(result, separators=(",", ":")), "created_ns": batch.now}
        )  # fmt: skip
    batch.finish()
    return results


__all__ = ["apply_batch"]
