"""The compacted changes feed and its cursor.

Every change to a node sets ``nodes.seq`` to the journal seq of that change, so "for each
node only its newest entry after the cursor, in seq order" is exactly the nodes whose
``seq`` is past the cursor, ordered by ``seq`` (index ``ix_nodes_ns_seq``), each rendered as
it is now. Namespaces are served in id order; a page fills from the first namespace with
changes before moving on.

Commits allocate seqs under the namespace row lock and commit in seq order, so once a seq is
visible all smaller seqs of that namespace are too; the cursor never skips a change.

The cursor is base64url (no padding) of compact JSON ``{"ns": seq}``; it is opaque to
clients. An empty cursor means "from the beginning".
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, bindparam

from cairn.core.errors import InvalidArgument

from .nodes import attach_names_xattrs, select_nodes, state_from_row
from .schema import nodes

MAX_CURSOR = 64 * 1024
MAX_LIMIT = 1000

_SINCE = (
    select_nodes(True)
    .where(nodes.c.ns == bindparam("ns"), nodes.c.seq > bindparam("since"))
    .order_by(nodes.c.seq)
    .limit(bindparam("lim"))
)


def encode_cursor(seqs: dict[int, int]) -> str:
    raw = json.dumps({str(k): v for k, v in sorted(seqs.items())}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str | None) -> dict[int, int]:
    """``{ns: seq}`` of a cursor; ``InvalidArgument`` for anything this module did not make."""
    if cursor is None or cursor == "":
        return {}
    if not isinstance(cursor, str) or len(cursor) > MAX_CURSOR:
        raise InvalidArgument("cursor is not valid")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        obj = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidArgument("cursor is not valid") from None
    if not isinstance(obj, dict):
        raise InvalidArgument("cursor is not valid")
    out: dict[int, int] = {}
    for key, value in obj.items():
        if not (isinstance(key, str) and key.isdigit()) or type(value) is not int or value < 0:
            raise InvalidArgument("cursor is not valid")
        out[int(key)] = value
    return out


def check_limit(limit: Any) -> int:
    if type(limit) is not int or not 1 <= limit <= MAX_LIMIT:
        raise InvalidArgument(f"limit must be an integer in 1..{MAX_LIMIT}")
    return limit


def _seq_of_node(node: dict[str, Any]) -> int:
    seq: int = node["seq"]
    return seq


def changes_page(
    heads: dict[int, int],
    cursor: dict[int, int],
    limit: int,
    fetch: Callable[[int, int, int], list[Any]],
    seq_of: Callable[[Any], int] = _seq_of_node,
) -> dict[str, Any]:
    """One page of the feed over the namespaces in ``heads`` (``{ns: current seq}``).

    ``fetch(ns, since, lim)`` returns up to ``lim`` node objects (with blocklist) of ``ns``
    whose seq is past ``since``, in seq order; it must read the same snapshot as ``heads``
    (one read transaction), which was read first. ``seq_of(node)``: its seq (for fetches
    that hand over nodes already encoded).
    """
    entries: list[dict[str, Any]] = []
    new_cursor: dict[int, int] = {}
    has_more = False
    for ns in sorted(heads):
        head = heads[ns]
        since = min(cursor.get(ns, 0), head)
        room = limit - len(entries)
        if since >= head:
            new_cursor[ns] = since
            continue
        if room <= 0:
            new_cursor[ns] = since
            has_more = True
            continue
        found = fetch(ns, since, room + 1)
        more = len(found) > room
        found = found[:room]
        entries.extend({"ns": ns, "seq": seq_of(node), "node": node} for node in found)
        if more:
            has_more = True
            new_cursor[ns] = seq_of(found[-1])
        else:
            # Everything up to the head read before this query is now delivered.
            new_cursor[ns] = max([head] + [seq_of(node) for node in found])
    return {"entries": entries, "cursor": encode_cursor(new_cursor), "has_more": has_more}


def since_fetch(conn: Connection) -> Callable[[int, int, int], list[dict[str, Any]]]:
    """``changes_page``'s ``fetch`` over a SQLAlchemy connection."""

    def fetch(ns: int, since: int, lim: int) -> list[dict[str, Any]]:
        rows = conn.execute(_SINCE, {"ns": ns, "since": since, "lim": lim}).all()
        states = [
            state_from_row(r, None if r.blocklist is None else bytes(r.blocklist)) for r in rows
        ]
        attach_names_xattrs(conn, states)
        return [s.to_json() for s in states]

    return fetch
