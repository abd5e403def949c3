"""``MetaStore``: the metadata service the HTTP layer and the CLI call.

Every method is a coroutine that runs one short transaction (reads: a read transaction
that never waits for writers; writes: see ``db.py``), validates its inputs, returns plain
records or the wire JSON of docs/api.md, and raises only ``cairn.core.errors`` classes:
database failures become ``Unavailable`` (retryable), a namespace the user may not see is
``NotFound`` (no hint that it exists).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any

from sqlalchemy import Connection, bindparam, select

from cairn.core import wire
from cairn.core.errors import ConfigError, InvalidArgument, NotADirectory, NotFound, TooLarge
from cairn.core.names import split_path

from . import auth, chunks, migrate, sqlite_reads
from .changes import MAX_LIMIT, changes_page, check_limit, decode_cursor, since_fetch
from .commit import apply_batch
from .db import Database, translated
from .models import Device, NamespaceInfo, User
from .nodes import (
    NodeState,
    attach_names_xattrs,
    child_id,
    load_node,
    load_visible_node,
    select_nodes,
    state_from_row,
)
from .schema import devices, names, namespaces, nodes, revisions

TOKEN_CACHE_TTL = 1.0
TOKEN_CACHE_SIZE = 10_000


def _listing_cursor(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).rstrip(b"=").decode("ascii")


def _listing_after(cursor: str | None) -> str | None:
    if not cursor:
        return None
    if not isinstance(cursor, str) or len(cursor) > 1024:
        raise InvalidArgument("cursor is not valid")
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8")
    except (binascii.Error, ValueError):
        raise InvalidArgument("cursor is not valid") from None


# --- transaction bodies (sync; run by Database.read/write) -----------------------------------

_OWNER = select(namespaces.c.owner_id).where(namespaces.c.id == bindparam("ns"))
_HEADS = select(namespaces.c.id, namespaces.c.seq).where(namespaces.c.owner_id == bindparam("u"))
_KIND = select(nodes.c.type).where(nodes.c.id == bindparam("id"), nodes.c.ns == bindparam("ns"))
_CHILDREN = (
    select_nodes(False)
    .add_columns(names.c.name.label("entry_name"))
    .select_from(names.join(nodes, nodes.c.id == names.c.node))
    .where(names.c.ns == bindparam("ns"), names.c.parent == bindparam("parent"))
    .order_by(names.c.name)
    .limit(bindparam("lim"))
)
_CHILDREN_AFTER = _CHILDREN.where(names.c.name > bindparam("after"))


def _check_access(conn: Connection, user_id: int, ns: Any) -> None:
    if type(ns) is not int:
        raise NotFound("namespace not found")
    owner = conn.execute(_OWNER, {"ns": ns}).scalar()
    if owner is None or owner != user_id:
        raise NotFound(f"namespace {ns} not found")


def _node(conn: Connection, ns: int, node_id: str) -> NodeState:
    state = load_node(conn, node_id, ns)
    if state is None:
        raise NotFound(f"node {node_id} not found")
    return state


def _get_node(conn: Connection, user_id: int, ns: int, node_id: str) -> dict[str, Any]:
    state = load_visible_node(conn, user_id, ns, node_id) if type(ns) is int else None
    if state is None:
        _check_access(conn, user_id, ns)  # the right message: namespace or node
        raise NotFound(f"node {node_id} not found")
    return state.to_json()


def _list_children(
    conn: Connection, user_id: int, ns: int, node_id: str, after: str | None, limit: int
) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
    _check_access(conn, user_id, ns)
    kind = conn.execute(_KIND, {"id": node_id, "ns": ns}).scalar()
    if kind is None:
        raise NotFound(f"node {node_id} not found")
    if kind != "dir":
        raise NotADirectory(f"node {node_id} is not a directory")
    params: dict[str, Any] = {"ns": ns, "parent": node_id, "lim": limit + 1}
    if after is None:
        rows = conn.execute(_CHILDREN, params).all()
    else:
        rows = conn.execute(_CHILDREN_AFTER, params | {"after": after}).all()
    page = rows[:limit]
    states: dict[str, NodeState] = {}
    for r in page:
        states.setdefault(r.id, state_from_row(r))
    attach_names_xattrs(conn, list(states.values()))
    nodes_json = {node_id: s.to_json(False) for node_id, s in states.items()}
    return [(r.entry_name, nodes_json[r.id]) for r in page], len(rows) > limit


def _resolve(conn: Connection, user_id: int, ns: int, parts: list[str]) -> dict[str, Any]:
    _check_access(conn, user_id, ns)
    current = conn.execute(select(namespaces.c.root).where(namespaces.c.id == ns)).scalar_one()
    for i, part in enumerate(parts):
        found = child_id(conn, ns, current, part)
        if found is None:
            raise NotFound(f"{'/' + '/'.join(parts[: i + 1])} not found")
        current = found
    return _node(conn, ns, current).to_json()


def _revisions(conn: Connection, user_id: int, ns: int, node_id: str) -> dict[str, Any]:
    _check_access(conn, user_id, ns)
    _node(conn, ns, node_id)
    rows = conn.execute(
        select(revisions, devices.c.name.label("device_name"))
        .select_from(revisions.outerjoin(devices, devices.c.id == revisions.c.device_id))
        .where(revisions.c.node == node_id)
        .order_by(revisions.c.rev.desc())
    )
    return {
        "revisions": [
            {
                "rev": r.rev,
                "size": r.size,
                "mtime_ns": r.mtime_ns,
                "mode": r.mode,
                "device": r.device_id,
                "device_name": r.device_name,
                "created_ns": r.created_ns,
                "blocklist": wire.Blocklist.decode(bytes(r.blocklist)).to_json(),
            }
            for r in rows
        ]
    }


def _trash(conn: Connection, user_id: int, ns: int) -> dict[str, Any]:
    _check_access(conn, user_id, ns)
    rows = conn.execute(
        select_nodes(False)
        .where(nodes.c.ns == ns, nodes.c.deleted.is_(True))
        .order_by(nodes.c.deleted_ns.desc(), nodes.c.id)
        .limit(10_000)
    )
    states = [state_from_row(r) for r in rows]
    attach_names_xattrs(conn, states)
    return {"entries": [s.trash_json() for s in states]}


def _heads(conn: Connection, user_id: int) -> dict[int, int]:
    return {r.id: r.seq for r in conn.execute(_HEADS, {"u": user_id})}


def _changes(conn: Connection, user_id: int, since: dict[int, int], limit: int) -> dict[str, Any]:
    return changes_page(_heads(conn, user_id), since, limit, since_fetch(conn))


def _namespaces(conn: Connection, user_id: int) -> list[NamespaceInfo]:
    rows = conn.execute(
        select(namespaces.c.id, namespaces.c.root, namespaces.c.name)
        .where(namespaces.c.owner_id == user_id)
        .order_by(namespaces.c.id)
    )
    return [NamespaceInfo(r.id, r.root, r.name) for r in rows]


def _commit(
    conn: Connection, user_id: int, device_id: int, ns: int, ops: list[wire.Op]
) -> list[dict[str, Any]]:
    if not ops:
        _check_access(conn, user_id, ns)
        return []
    return apply_batch(conn, user_id, device_id, ns, ops)  # checks access itself


class MetaStore:
    """Users, devices, namespaces, nodes, revisions, journal and chunk references.

    The hot reads (token, access, node, children, changes, heads, chunk presence) go to
    ``sqlite_reads`` through ``Database.read_raw`` on SQLite, to the SQLAlchemy functions of
    this package on PostgreSQL.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._sqlite = db.is_sqlite
        self._encoded = sqlite_reads.EncodedNodes()
        # token hash -> (expiry on the monotonic clock, device or None)
        self._tokens: dict[bytes, tuple[float, Device | None]] = {}

    # --- lifecycle -----------------------------------------------------------------------

    @classmethod
    async def open(cls, url: str) -> MetaStore:
        """Open (not migrate) the database at ``url``; ``ConfigError`` for a bad URL."""
        return cls(Database(url))

    @translated
    async def migrate(self) -> None:
        """Bring the schema to the newest revision; idempotent."""
        await migrate.upgrade(self.db)

    @translated
    async def check_durability(self) -> None:
        """Raise ``ConfigError`` unless acknowledged commits survive a power cut."""
        problems = await self.db.durability_problems()
        if problems:
            raise ConfigError("database durability: " + "; ".join(problems))

    @translated
    async def ping(self) -> None:
        """Raise ``Unavailable`` unless the database answers."""
        await self.db.ping()

    async def close(self) -> None:
        await self.db.close()

    # --- users and devices ---------------------------------------------------------------

    @translated
    async def add_user(self, name: str, password_hash: str, quota: int | None) -> User:
        """New user with a home namespace and its root; ``AlreadyExists`` if taken."""
        return await self.db.write(auth.add_user, name, password_hash, quota)

    @translated
    async def get_user(self, name: str) -> User | None:
        return await self.db.read_inline(auth.get_user, name)

    @translated
    async def get_user_by_id(self, user_id: int) -> User | None:
        return await self.db.read_inline(auth.get_user_by_id, user_id)

    @translated
    async def list_users(self) -> list[User]:
        return await self.db.read(auth.list_users)

    @translated
    async def set_password(self, name: str, password_hash: str) -> None:
        await self.db.write(auth.set_password, name, password_hash)

    @translated
    async def set_quota(self, name: str, quota: int | None) -> None:
        await self.db.write(auth.set_quota, name, quota)

    @translated
    async def add_device(self, user_id: int, name: str, token_hash: bytes) -> Device:
        return await self.db.write(auth.add_device, user_id, name, token_hash)

    @translated
    async def device_by_token(self, token_hash: bytes) -> Device | None:
        """The live device holding this token hash; None if unknown or revoked.

        Answers are cached for ``TOKEN_CACHE_TTL`` seconds (every API request asks). A
        revocation through this MetaStore clears the cache at once; one made by another
        server process takes effect here within the TTL.
        """
        now = time.monotonic()
        hit = self._tokens.get(token_hash)
        if hit is not None and hit[0] > now:
            return hit[1]
        if self._sqlite:
            device = await self.db.read_raw(sqlite_reads.device_by_token, token_hash)
        else:
            device = await self.db.read(auth.device_by_token, token_hash)
        if len(self._tokens) >= TOKEN_CACHE_SIZE:
            self._tokens.clear()
        self._tokens[token_hash] = (now + TOKEN_CACHE_TTL, device)
        return device

    @translated
    async def list_devices(self, user_id: int) -> list[Device]:
        return await self.db.read(auth.list_devices, user_id)

    @translated
    async def revoke_device(self, user_id: int, device: str) -> int:
        """Revoke by device name (all live devices of that name) or, if no device has that
        name, by numeric id; returns how many live devices were revoked."""
        try:
            return await self.db.write(auth.revoke_device, user_id, device)
        finally:
            self._tokens.clear()

    @translated
    async def revoke_device_id(self, user_id: int, device_id: int) -> int:
        """Revoke exactly this device of the user (logout); returns 0 or 1."""
        try:
            return await self.db.write(auth.revoke_device_id, user_id, device_id)
        finally:
            self._tokens.clear()

    @translated
    async def usage(self, user_id: int) -> int:
        """Bytes of data (holes excluded) in the head revisions of the user's live files."""
        return await self.db.read_one(auth.usage, user_id)

    # --- namespaces ----------------------------------------------------------------------

    @translated
    async def namespaces(self, user_id: int) -> list[NamespaceInfo]:
        return await self.db.read_inline(_namespaces, user_id)

    @translated
    async def check_access(self, user_id: int, ns: int) -> None:
        """``NotFound`` unless ``user_id`` may see namespace ``ns``."""
        if self._sqlite:
            await self.db.read_raw(sqlite_reads.check_access, user_id, ns)
        else:
            await self.db.read(_check_access, user_id, ns)

    # --- reads ---------------------------------------------------------------------------

    @translated
    async def get_node(self, user_id: int, ns: int, node_id: str) -> dict[str, Any]:
        """The node object with its blocklist (deleted nodes too, ``deleted: true``)."""
        wire.node_id(node_id, "node id")
        if self._sqlite:
            return await self.db.read_raw(sqlite_reads.get_node, user_id, ns, node_id)
        return await self.db.read(_get_node, user_id, ns, node_id)

    @translated
    async def get_node_json(self, user_id: int, ns: int, node_id: str) -> bytes:
        """``get_node`` as the UTF-8 JSON body the API sends (see ``list_children_json``)."""
        wire.node_id(node_id, "node id")
        if not self._sqlite:
            return json.dumps(await self.db.read(_get_node, user_id, ns, node_id)).encode()
        text = await self.db.read_raw(
            sqlite_reads.get_node_encoded, self._encoded, user_id, ns, node_id
        )
        return text.encode()

    @translated
    async def list_children(
        self, user_id: int, ns: int, node_id: str, cursor: str | None, limit: int
    ) -> dict[str, Any]:
        """One page of a directory in byte order of names: ``{"entries": [{"name",
        "node"}], "cursor", "has_more"}``; node objects without blocklist."""
        check_limit(limit)
        after = _listing_after(cursor)
        wire.node_id(node_id, "node id")
        fn = sqlite_reads.list_children if self._sqlite else _list_children
        run = self.db.read_raw if self._sqlite else self.db.read
        page, more = await run(fn, user_id, ns, node_id, after, limit)  # type: ignore[operator]
        return {
            "entries": [{"name": name, "node": node} for name, node in page],
            "cursor": _listing_cursor(page[-1][0]) if page else (cursor or ""),
            "has_more": more,
        }

    @translated
    async def list_children_json(
        self, user_id: int, ns: int, node_id: str, cursor: str | None, limit: int
    ) -> bytes:
        """``list_children`` as the UTF-8 JSON body the API sends (what ``json.dumps`` of
        its answer gives). On SQLite the node objects come from a cache of encoded nodes
        (``sqlite_reads.EncodedNodes``): JSON encoding was the largest single item of a
        listing's CPU."""
        if not self._sqlite:
            page = await self.list_children(user_id, ns, node_id, cursor, limit)
            return json.dumps(page).encode()
        check_limit(limit)
        after = _listing_after(cursor)
        wire.node_id(node_id, "node id")
        encoded, more = await self.db.read_raw(
            sqlite_reads.list_children_encoded, self._encoded, user_id, ns, node_id, after, limit
        )
        dumps = json.dumps
        entries = ", ".join(f'{{"name": {dumps(name)}, "node": {node}}}' for name, node in encoded)
        next_cursor = _listing_cursor(encoded[-1][0]) if encoded else (cursor or "")
        return (
            f'{{"entries": [{entries}], "cursor": {dumps(next_cursor)}, "has_more": {dumps(more)}}}'
        ).encode()

    @translated
    async def resolve(self, user_id: int, ns: int, path: str) -> dict[str, Any]:
        """The node at ``path`` (``/a/b``; symlinks are not followed)."""
        return await self.db.read(_resolve, user_id, ns, split_path(path))

    @translated
    async def revisions(self, user_id: int, ns: int, node_id: str) -> dict[str, Any]:
        """``{"revisions": [...]}`` newest first; empty for directories and symlinks."""
        wire.node_id(node_id, "node id")
        return await self.db.read(_revisions, user_id, ns, node_id)

    @translated
    async def trash(self, user_id: int, ns: int) -> dict[str, Any]:
        """``{"entries": [node...]}`` of deleted nodes, most recently deleted first (at most
        10,000); each also carries ``former`` ([parent, name] it was last linked under) and
        ``deleted_ns``."""
        return await self.db.read(_trash, user_id, ns)

    # --- changes -------------------------------------------------------------------------

    @translated
    async def changes(self, user_id: int, cursor: str | None, limit: int) -> dict[str, Any]:
        """A page of the compacted feed: ``{"entries", "cursor", "has_more"}``."""
        check_limit(limit)
        since = decode_cursor(cursor)
        if self._sqlite:
            return await self.db.read_raw(sqlite_reads.changes, user_id, since, limit)
        return await self.db.read(_changes, user_id, since, limit)

    @translated
    async def changes_json(self, user_id: int, cursor: str | None, limit: int) -> bytes:
        """``changes`` as the UTF-8 JSON body the API sends (see ``list_children_json``)."""
        check_limit(limit)
        since = decode_cursor(cursor)
        if not self._sqlite:
            return json.dumps(await self.db.read(_changes, user_id, since, limit)).encode()
        page = await self.db.read_raw(
            sqlite_reads.changes_encoded, self._encoded, user_id, since, limit
        )
        entries = ", ".join(
            f'{{"ns": {e["ns"]}, "seq": {e["seq"]}, "node": {e["node"][1]}}}'
            for e in page["entries"]
        )
        return (
            f'{{"entries": [{entries}], "cursor": {json.dumps(page["cursor"])}, '
            f'"has_more": {json.dumps(page["has_more"])}}}'
        ).encode()

    @translated
    async def seqs(self, user_id: int) -> dict[int, int]:
        """Current seq of every namespace the user sees (for hints and long-poll)."""
        if self._sqlite:
            return await self.db.read_raw(sqlite_reads.heads, user_id)
        return await self.db.read(_heads, user_id)

    def cursor_seqs(self, cursor: str) -> dict[int, int]:
        """``{ns: seq}`` of a changes cursor; ``InvalidArgument`` if malformed."""
        return decode_cursor(cursor)

    # --- chunks --------------------------------------------------------------------------

    @translated
    async def missing_chunks(self, user_id: int, ids: list[bytes]) -> list[bytes]:
        """The ids this user does not reference (deduplicated, in request order)."""
        if len(ids) > MAX_LIMIT:
            raise TooLarge(f"at most {MAX_LIMIT} ids per query")
        if self._sqlite:
            return await self.db.read_raw(sqlite_reads.missing_chunks, user_id, ids)
        return await self.db.read(chunks.missing_chunks, user_id, ids)

    @translated
    async def chunk_known(self, cid: bytes) -> bool:
        """Stored for anyone (server-internal: decides whether to write the blob)."""
        if self._sqlite:
            return await self.db.read_raw(sqlite_reads.chunk_known, cid)
        return await self.db.read(chunks.chunk_known, cid)

    @translated
    async def record_upload(
        self, user_id: int, cid: bytes, plain_len: int, stored_len: int
    ) -> None:
        """Make the chunk known and referenced by the user; idempotent."""
        await self.db.write(chunks.record_upload, user_id, cid, plain_len, stored_len)

    @translated
    async def known_chunks(self, ids: list[bytes]) -> set[bytes]:
        """The subset of ``ids`` stored for anyone (server-internal, like ``chunk_known``)."""
        return await self.db.read_inline(chunks.known_chunks, ids)

    @translated
    async def record_uploads(self, user_id: int, uploads: list[tuple[bytes, int, int]]) -> None:
        """``record_upload`` of many ``(cid, plain_len, stored_len)`` in one transaction."""
        await self.db.write(chunks.record_uploads, user_id, uploads)

    @translated
    async def user_has_chunk(self, user_id: int, cid: bytes) -> bool:
        if self._sqlite:
            return await self.db.read_raw(sqlite_reads.user_has_chunk, user_id, cid)
        return await self.db.read(chunks.user_has_chunk, user_id, cid)

    @translated
    async def chunk_refcounts(self, ids: list[bytes]) -> dict[bytes, int]:
        return await self.db.read(chunks.chunk_refcounts, ids)

    # --- commit --------------------------------------------------------------------------

    @translated
    async def commit(
        self, user_id: int, device_id: int, ns: int, ops: list[wire.Op]
    ) -> list[dict[str, Any]]:
        """Apply a batch in one transaction; one RESULT per op (docs/api.md, "Commit").

        Idempotent per ``(device_id, op_id)``: an op id already applied returns its stored
        result and changes nothing. ``NotFound`` if the user may not see ``ns``.
        """
        if len(ops) > wire.MAX_OPS:
            raise TooLarge(f"a commit holds at most {wire.MAX_OPS} ops")
        return await self.db.write(_commit, user_id, device_id, ns, ops)
