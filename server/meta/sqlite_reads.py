"""The hot reads of the SQLite backend on plain ``sqlite3``: token lookup, access check, stat,
directory listing, changes feed, journal heads and chunk presence.

Why a second spelling of these queries: under the metadata mix of bench/server_load.py,
SQLAlchemy Core's per-execute work (compiled-cache lookup, parameter processing, expanding
IN lists, Row objects) and the ``NodeState`` round trip took about half of the server's CPU
per request. Here each statement is fixed SQL text, which ``sqlite3`` keeps prepared in its
per-connection statement cache, rows are plain tuples, and the node objects of docs/api.md
are built straight from them.

The SQLAlchemy versions in ``store.py``, ``nodes.py``, ``changes.py`` and ``chunks.py`` stay
the PostgreSQL path and the reference: the same MetaStore suite runs against both databases,
and tests/server/meta/test_sqlite_reads.py checks that both spellings give identical answers
on one SQLite database. The schema (``schema.py``, Alembic) is owned there; the statements
below name its columns.

Every function takes a ``sqlite3.Connection`` inside an open read transaction
(``Database.read_raw``): one WAL snapshot, so e.g. the changes feed reads its heads and its
nodes at the same instant. Each runs a few indexed statements over bounded rows, because it
may run on the event loop thread.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from cairn.core.errors import InvalidArgument, NotADirectory, NotFound
from cairn.core.wire import Blocklist

from .changes import changes_page
from .models import Device

ID_SIZE = 32
# IN lists are padded to a power of two (repeating their first item), so at most a dozen
# distinct statement texts exist per query and all of them stay in the statement cache.
MAX_IN = 512

_NODE_COLS = "n.id, n.ns, n.type, n.mode, n.mtime_ns, n.rev, n.size, n.target, n.deleted, n.seq"
_HEAD_JOIN = "LEFT JOIN revisions r ON r.node = n.id AND r.rev = n.rev"

_BY_TOKEN = (
    "SELECT d.id, d.user_id, u.name, d.name, d.revoked, d.created_ns "
    "FROM devices d JOIN users u ON u.id = d.user_id "
    "WHERE d.token_hash = ? AND d.revoked = 0"
)
_OWNER = "SELECT owner_id FROM namespaces WHERE id = ?"
_HEADS = "SELECT id, seq FROM namespaces WHERE owner_id = ?"
_VISIBLE_NODE = (
    f"SELECT {_NODE_COLS}, r.blocklist FROM nodes n "
    f"JOIN namespaces s ON s.id = n.ns {_HEAD_JOIN} "
    "WHERE n.id = ? AND n.ns = ? AND s.owner_id = ?"
)
_KIND = "SELECT type FROM nodes WHERE id = ? AND ns = ?"
_CHILDREN = (
    f"SELECT m.name, {_NODE_COLS} FROM names m JOIN nodes n ON n.id = m.node "
    "WHERE m.ns = ? AND m.parent = ? ORDER BY m.name LIMIT ?"
)
_CHILDREN_AFTER = (
    f"SELECT m.name, {_NODE_COLS} FROM names m JOIN nodes n ON n.id = m.node "
    "WHERE m.ns = ? AND m.parent = ? AND m.name > ? ORDER BY m.name LIMIT ?"
)
_SINCE = (
    f"SELECT {_NODE_COLS}, r.blocklist FROM nodes n {_HEAD_JOIN} "
    "WHERE n.ns = ? AND n.seq > ? ORDER BY n.seq LIMIT ?"
)
_CHUNK_KNOWN = "SELECT 1 FROM chunks WHERE id = ?"


def in_list(n: int) -> str:
    return ",".join("?" * n)


def padded(items: Sequence[Any]) -> tuple[int, list[Any]]:
    """(padded length, items padded with repeats of the first) for an IN list."""
    size = 1
    while size < len(items):
        size *= 2
    return size, list(items) + [items[0]] * (size - len(items))


def names_xattrs_sql(n: int) -> str:
    return (
        f"SELECT node, 0, parent, name, NULL FROM names WHERE node IN ({in_list(n)}) UNION ALL "
        f"SELECT node, 1, name, NULL, value FROM xattrs WHERE node IN ({in_list(n)})"
    )


def referenced_sql(n: int) -> str:
    return f"SELECT chunk FROM user_chunks WHERE user_id = ? AND chunk IN ({in_list(n)})"


def _names_xattrs(
    conn: sqlite3.Connection, ids: Sequence[str]
) -> tuple[dict[str, list[tuple[str, str]]], dict[str, dict[str, str]]]:
    """Names ``[(parent, name)]`` and base64 xattrs of the nodes ``ids`` (absent: none)."""
    names: dict[str, list[tuple[str, str]]] = {}
    xattrs: dict[str, dict[str, str]] = {}
    for start in range(0, len(ids), MAX_IN):
        size, part = padded(ids[start : start + MAX_IN])
        for node, kind, a, b, value in conn.execute(names_xattrs_sql(size), part + part):
            if kind == 0:
                names.setdefault(node, []).append((a, b))
            else:
                xattrs.setdefault(node, {})[a] = base64.b64encode(value).decode("ascii")
    return names, xattrs


def _node_json(
    r: Sequence[Any],
    names: list[tuple[str, str]] | None,
    xattrs: dict[str, str] | None,
    blocklist: bytes | None,
) -> dict[str, Any]:
    """The node object of docs/api.md from a ``_NODE_COLS`` row (same keys and values as
    ``NodeState.to_json``). ``blocklist``: the head revision's blob, or None to leave it out."""
    return {
        "id": r[0],
        "ns": r[1],
        "type": r[2],
        "mode": r[3],
        "mtime_ns": r[4],
        "rev": r[5],
        "size": r[6],
        "names": [[p, n] for p, n in sorted(names)] if names else [],
        "target": r[7],
        "xattrs": xattrs or {},
        "blocklist": (
            Blocklist.decode(blocklist).to_json()
            if blocklist is not None and r[2] == "file"
            else None
        ),
        "deleted": bool(r[8]),
        "seq": r[9],
    }


def _render(conn: sqlite3.Connection, rows: Sequence[Sequence[Any]], bl_col: int | None) -> list:
    """Node objects of ``rows`` (``_NODE_COLS`` first), in order; a node listed twice (hard
    links) is rendered once and shared."""
    ids = list(dict.fromkeys(r[0] for r in rows))
    if not ids:
        return []
    names, xattrs = _names_xattrs(conn, ids)
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        nid = r[0]
        if nid not in out:
            out[nid] = _node_json(
                r, names.get(nid), xattrs.get(nid), None if bl_col is None else r[bl_col]
            )
    return [out[r[0]] for r in rows]


# --- the reads ------------------------------------------------------------------------------


def device_by_token(conn: sqlite3.Connection, token_hash: bytes) -> Device | None:
    """The live device holding this token hash."""
    r = conn.execute(_BY_TOKEN, (token_hash,)).fetchone()
    return None if r is None else Device(r[0], r[1], r[2], r[3], bool(r[4]), r[5])


def check_access(conn: sqlite3.Connection, user_id: int, ns: Any) -> None:
    """``NotFound`` unless ``user_id`` owns namespace ``ns``."""
    if type(ns) is not int:
        raise NotFound("namespace not found")
    r = conn.execute(_OWNER, (ns,)).fetchone()
    if r is None or r[0] != user_id:
        raise NotFound(f"namespace {ns} not found")


def heads(conn: sqlite3.Connection, user_id: int) -> dict[int, int]:
    return dict(conn.execute(_HEADS, (user_id,)).fetchall())


def get_node(conn: sqlite3.Connection, user_id: int, ns: int, node_id: str) -> dict[str, Any]:
    """The node object with its blocklist; ``NotFound`` for the namespace or the node."""
    r = conn.execute(_VISIBLE_NODE, (node_id, ns, user_id)).fetchone() if type(ns) is int else None
    if r is None:
        check_access(conn, user_id, ns)  # the right message: namespace or node
        raise NotFound(f"node {node_id} not found")
    return _render(conn, [r], 10)[0]


def _children_rows(
    conn: sqlite3.Connection, user_id: int, ns: int, node_id: str, after: str | None, limit: int
) -> tuple[list[Any], bool]:
    """Up to ``limit`` rows ``(name, *_NODE_COLS)`` of the directory after ``after`` in byte
    order, and whether more follow; ``NotFound`` / ``NotADirectory`` first."""
    check_access(conn, user_id, ns)
    kind = conn.execute(_KIND, (node_id, ns)).fetchone()
    if kind is None:
        raise NotFound(f"node {node_id} not found")
    if kind[0] != "dir":
        raise NotADirectory(f"node {node_id} is not a directory")
    if after is None:
        rows = conn.execute(_CHILDREN, (ns, node_id, limit + 1)).fetchall()
    else:
        rows = conn.execute(_CHILDREN_AFTER, (ns, node_id, after, limit + 1)).fetchall()
    return rows[:limit], len(rows) > limit


def list_children(
    conn: sqlite3.Connection, user_id: int, ns: int, node_id: str, after: str | None, limit: int
) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
    """Up to ``limit`` ``(name, node object without blocklist)`` after ``after`` in byte
    order, and whether more follow."""
    page, more = _children_rows(conn, user_id, ns, node_id, after, limit)
    nodes = _render(conn, [r[1:] for r in page], None)
    return [(r[0], node) for r, node in zip(page, nodes, strict=True)], more


class EncodedNodes:
    """Node objects, already JSON-encoded, keyed by ``(node id, seq, with blocklist)``.

    A listing of 100 nodes cost ~0.8 ms of ``json.dumps`` plus the names/xattrs query; most
    listings show the same nodes again. The key is safe across transactions and server
    processes because every change to what a node object shows (its row, names, xattrs)
    gives the node a new seq in the same transaction (commit.py, ``Batch.save``), and the
    seq is read in the listing's own snapshot: an entry can only be outdated, never wrong,
    and an outdated one is never asked for again. Bounded by entries and by characters (a
    blocklist of a big file is long): emptied when either bound would be passed.
    """

    def __init__(self, size: int = 20_000, chars: int = 32 << 20) -> None:
        self.size = size
        self.chars = chars
        self._used = 0
        self._items: dict[tuple[str, int, bool], str] = {}

    def get(self, key: tuple[str, int, bool]) -> str | None:
        return self._items.get(key)

    def put(self, key: tuple[str, int, bool], encoded: str) -> None:
        if len(encoded) > self.chars // 4:
            return  # one huge node would evict everything else
        if len(self._items) >= self.size or self._used + len(encoded) > self.chars:
            self._items.clear()
            self._used = 0
        self._items[key] = encoded
        self._used += len(encoded)


def _encoded(
    conn: sqlite3.Connection, cache: EncodedNodes, rows: Sequence[Sequence[Any]], bl_col: int | None
) -> list[str]:
    """``_render`` of ``rows`` as ``json.dumps`` texts, taken from ``cache`` for every node
    whose seq is unchanged (only the others are rendered)."""
    with_bl = bl_col is not None
    texts: dict[str, str] = {}
    misses: dict[str, Sequence[Any]] = {}
    for r in rows:
        nid = r[0]
        if nid in texts or nid in misses:
            continue
        hit = cache.get((nid, r[9], with_bl))
        if hit is None:
            misses[nid] = r
        else:
            texts[nid] = hit
    if misses:
        todo = list(misses.values())
        for r, node in zip(todo, _render(conn, todo, bl_col), strict=True):
            text = json.dumps(node)
            cache.put((r[0], r[9], with_bl), text)
            texts[r[0]] = text
    return [texts[r[0]] for r in rows]


def list_children_encoded(
    conn: sqlite3.Connection,
    cache: EncodedNodes,
    user_id: int,
    ns: int,
    node_id: str,
    after: str | None,
    limit: int,
) -> tuple[list[tuple[str, str]], bool]:
    """Like ``list_children`` with each node object as its ``json.dumps`` text."""
    page, more = _children_rows(conn, user_id, ns, node_id, after, limit)
    texts = _encoded(conn, cache, [r[1:] for r in page], None)
    return [(r[0], text) for r, text in zip(page, texts, strict=True)], more


def get_node_encoded(
    conn: sqlite3.Connection, cache: EncodedNodes, user_id: int, ns: int, node_id: str
) -> str:
    """Like ``get_node``, as the ``json.dumps`` text of the node object."""
    r = conn.execute(_VISIBLE_NODE, (node_id, ns, user_id)).fetchone() if type(ns) is int else None
    if r is None:
        check_access(conn, user_id, ns)  # the right message: namespace or node
        raise NotFound(f"node {node_id} not found")
    return _encoded(conn, cache, [r], 10)[0]


def _since_fetch(conn: sqlite3.Connection) -> Callable[[int, int, int], list[dict[str, Any]]]:
    def fetch(ns: int, since: int, lim: int) -> list[dict[str, Any]]:
        return _render(conn, conn.execute(_SINCE, (ns, since, lim)).fetchall(), 10)

    return fetch


def changes(
    conn: sqlite3.Connection, user_id: int, since: dict[int, int], limit: int
) -> dict[str, Any]:
    """A page of the compacted feed (``changes.changes_page``)."""
    return changes_page(heads(conn, user_id), since, limit, _since_fetch(conn))


def changes_encoded(
    conn: sqlite3.Connection, cache: EncodedNodes, user_id: int, since: dict[int, int], limit: int
) -> dict[str, Any]:
    """Like ``changes`` with each entry's ``node`` as ``(seq, json.dumps text)``."""

    def fetch(ns: int, since: int, lim: int) -> list[tuple[int, str]]:
        rows = conn.execute(_SINCE, (ns, since, lim)).fetchall()
        return [(r[9], text) for r, text in zip(rows, _encoded(conn, cache, rows, 10), strict=True)]

    return changes_page(heads(conn, user_id), since, limit, fetch, seq_of=_first)


def _first(item: tuple[int, str]) -> int:
    return item[0]


def _check_ids(ids: Sequence[bytes]) -> None:
    for cid in ids:
        if not isinstance(cid, bytes) or len(cid) != ID_SIZE:
            raise InvalidArgument("a chunk id is 32 bytes")


def referenced(conn: sqlite3.Connection, user_id: int, ids: Sequence[bytes]) -> set[bytes]:
    present: set[bytes] = set()
    for start in range(0, len(ids), MAX_IN):
        size, part = padded(ids[start : start + MAX_IN])
        present.update(r[0] for r in conn.execute(referenced_sql(size), [user_id, *part]))
    return present


def missing_chunks(conn: sqlite3.Connection, user_id: int, ids: list[bytes]) -> list[bytes]:
    """``ids`` (deduplicated, in order) that this user does not reference."""
    _check_ids(ids)
    unique = list(dict.fromkeys(ids))
    if not unique:
        return []
    present = referenced(conn, user_id, unique)
    return [cid for cid in unique if cid not in present]


def user_has_chunk(conn: sqlite3.Connection, user_id: int, cid: bytes) -> bool:
    _check_ids([cid])
    return bool(referenced(conn, user_id, [cid]))


def chunk_known(conn: sqlite3.Connection, cid: bytes) -> bool:
    _check_ids([cid])
    return conn.execute(_CHUNK_KNOWN, (cid,)).fetchone() is not None
