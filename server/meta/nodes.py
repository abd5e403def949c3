"""Loading nodes with their names, xattrs and head blocklist, and rendering the node object
of docs/api.md.

A node is read with three set-oriented queries whatever the number of nodes (node rows
joined with their head revision, then names, then xattrs), so listing a directory or a
changes page costs the same few round trips as reading one node.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Connection,
    LargeBinary,
    Text,
    and_,
    bindparam,
    cast,
    literal_column,
    null,
    select,
    union_all,
)

from cairn.core.wire import Blocklist

from .db import batched
from .schema import names, namespaces, nodes, revisions, xattrs


@dataclass(slots=True)
class NodeState:
    """A node as stored, mutable inside one commit transaction."""

    id: str
    ns: int
    type: str
    mode: int
    mtime_ns: int
    rev: int
    size: int
    used: int
    target: str | None
    deleted: bool
    seq: int
    last_parent: str | None = None
    last_name: str | None = None
    deleted_ns: int | None = None
    blocklist: bytes | None = None
    names: list[tuple[str, str]] = field(default_factory=list)
    xattrs: dict[str, bytes] = field(default_factory=dict)

    def to_json(self, with_blocklist: bool = True) -> dict[str, Any]:
        bl = None
        if with_blocklist and self.type == "file" and self.blocklist is not None:
            bl = Blocklist.decode(self.blocklist).to_json()
        return {
            "id": self.id,
            "ns": self.ns,
            "type": self.type,
            "mode": self.mode,
            "mtime_ns": self.mtime_ns,
            "rev": self.rev,
            "size": self.size,
            "names": [[p, n] for p, n in sorted(self.names)],
            "target": self.target,
            "xattrs": {k: base64.b64encode(v).decode("ascii") for k, v in self.xattrs.items()},
            "blocklist": bl,
            "deleted": self.deleted,
            "seq": self.seq,
        }

    def trash_json(self) -> dict[str, Any]:
        out = self.to_json(with_blocklist=False)
        out["former"] = None if self.last_parent is None else [self.last_parent, self.last_name]
        out["deleted_ns"] = self.deleted_ns
        return out


NODE_COLUMNS = (
    nodes.c.id,
    nodes.c.ns,
    nodes.c.type,
    nodes.c.mode,
    nodes.c.mtime_ns,
    nodes.c.rev,
    nodes.c.size,
    nodes.c.used,
    nodes.c.target,
    nodes.c.deleted,
    nodes.c.seq,
    nodes.c.last_parent,
    nodes.c.last_name,
    nodes.c.deleted_ns,
)


def state_from_row(row: Any, blocklist: bytes | None = None) -> NodeState:
    return NodeState(
        row.id, row.ns, row.type, row.mode, row.mtime_ns, row.rev, row.size, row.used,
        row.target, bool(row.deleted), row.seq, row.last_parent, row.last_name,
        row.deleted_ns, blocklist,
    )  # fmt: skip


def select_nodes(with_blocklist: bool) -> Any:
    """SELECT of node columns (plus the head blocklist); add a WHERE and ORDER BY."""
    if not with_blocklist:
        return select(*NODE_COLUMNS)
    head = and_(revisions.c.node == nodes.c.id, revisions.c.rev == nodes.c.rev)
    return select(*NODE_COLUMNS, revisions.c.blocklist).select_from(
        nodes.outerjoin(revisions, head)
    )


# Names and xattrs of a set of nodes in one round trip: kind 0 rows are (parent, name),
# kind 1 rows are (xattr name, value).
_NAMES_XATTRS_OF = union_all(
    select(
        names.c.node, literal_column("0").label("kind"), names.c.parent.label("a"),
        cast(names.c.name, Text).label("b"), cast(null(), LargeBinary).label("v"),
    ).where(names.c.node.in_(bindparam("ids", expanding=True))),
    select(
        xattrs.c.node, literal_column("1"), cast(xattrs.c.name, Text), cast(null(), Text),
        xattrs.c.value,
    ).where(xattrs.c.node.in_(bindparam("xids", expanding=True))),
)  # fmt: skip
_NODES_BY_ID = select_nodes(True).where(nodes.c.id.in_(bindparam("ids", expanding=True)))
_NODE_IN_NS = select_nodes(True).where(nodes.c.id == bindparam("id"), nodes.c.ns == bindparam("ns"))
_HEAD = and_(revisions.c.node == nodes.c.id, revisions.c.rev == nodes.c.rev)
# The node, only if ``ns`` is visible to user ``u``: the access check rides along.
_VISIBLE_NODE = (
    select(*NODE_COLUMNS, revisions.c.blocklist)
    .select_from(
        nodes.join(namespaces, namespaces.c.id == nodes.c.ns).outerjoin(revisions, _HEAD)
    )
    .where(
        nodes.c.id == bindparam("id"), nodes.c.ns == bindparam("ns"),
        namespaces.c.owner_id == bindparam("u"),
    )
)  # fmt: skip
_CHILD = select(names.c.node).where(
    names.c.ns == bindparam("ns"), names.c.parent == bindparam("parent"),
    names.c.name == bindparam("name"),
)  # fmt: skip


def attach_names_xattrs(conn: Connection, states: Sequence[NodeState]) -> None:
    """Fill ``names`` and ``xattrs`` of ``states`` in one query (per 500 nodes)."""
    by_id = {s.id: s for s in states}
    for part in batched(list(by_id)):
        ids = list(part)
        for node, kind, a, b, value in conn.execute(_NAMES_XATTRS_OF, {"ids": ids, "xids": ids}):
            if kind == 0:
                by_id[node].names.append((a, b))
            else:
                by_id[node].xattrs[a] = bytes(value)


def _blob(row: Any) -> bytes | None:
    return None if row.blocklist is None else bytes(row.blocklist)


def load_nodes(conn: Connection, ids: Sequence[str]) -> dict[str, NodeState]:
    """The nodes among ``ids`` that exist (any namespace; callers check ``ns``)."""
    found: dict[str, NodeState] = {}
    for part in batched(list(dict.fromkeys(ids))):
        for row in conn.execute(_NODES_BY_ID, {"ids": list(part)}):
            found[row.id] = state_from_row(row, _blob(row))
    attach_names_xattrs(conn, list(found.values()))
    return found


def load_node(conn: Connection, node_id: str, ns: int) -> NodeState | None:
    """The node ``node_id`` if it exists in namespace ``ns``."""
    row = conn.execute(_NODE_IN_NS, {"id": node_id, "ns": ns}).first()
    if row is None:
        return None
    state = state_from_row(row, _blob(row))
    attach_names_xattrs(conn, [state])
    return state


def load_visible_node(conn: Connection, user_id: int, ns: int, node_id: str) -> NodeState | None:
    """Like ``load_node`` but None also when ``user_id`` may not see ``ns``."""
    row = conn.execute(_VISIBLE_NODE, {"id": node_id, "ns": ns, "u": user_id}).first()
    if row is None:
        return None
    state = state_from_row(row, _blob(row))
    attach_names_xattrs(conn, [state])
    return state


def child_id(conn: Connection, ns: int, parent: str, name: str) -> str | None:
    """The node holding ``name`` in directory ``parent``, byte-exact."""
    return conn.execute(_CHILD, {"ns": ns, "parent": parent, "name": name}).scalar()
