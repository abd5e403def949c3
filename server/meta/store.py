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
from typing import Any

from sqlalchemy import select

from cairn.core import wire
from cairn.core.errors import ConfigError, InvalidArgument, NotADirectory, NotFound, TooLarge
from cairn.core.names import split_path

from . import auth, chunks, migrate
from .changes import MAX_LIMIT, changes_page, check_limit, decode_cursor
from .commit import apply_batch
from .db import Database, translated
from .models import Device, NamespaceInfo, User
from .nodes import NodeState, attach_names_xattrs, child_id, load_node, select_nodes, state_from_row
from .schema import devices, names, namespaces, nodes, revisions


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


class MetaStore:
    """Users, devices, namespaces, nodes, revisions, journal and chunk references."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # --- lifecycle -----------------------------------------------------------------------

    @classmethod
    async def open(cls, url: str) -> MetaStore:
        """Open (not migrate) the database at ``url``; ``ConfigError`` for a bad URL."""
        return cls(Database.open(url))

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
        await self.db.ping()

    async def close(self) -> None:
        await self.db.close()

    # --- users and devices ---------------------------------------------------------------

    @translated
    async def add_user(self, name: str, password_hash: str, quota: int | None) -> User:
        """New user with a home namespace and its root; ``AlreadyExists`` if taken."""
        return await auth.add_user(self.db, name, password_hash, quota)

    @translated
    async def get_user(self, name: str) -> User | None:
        return await auth.get_user(self.db, name)

    @translated
    async def get_user_by_id(self, user_id: int) -> User | None:
        return await auth.get_user_by_id(self.db, user_id)

    @translated
    async def list_users(self) -> list[User]:
        return await auth.list_users(self.db)

    @translated
    async def set_password(self, name: str, password_hash: str) -> None:
        await auth.set_password(self.db, name, password_hash)

    @translated
    async def set_quota(self, name: str, quota: int | None) -> None:
        await auth.set_quota(self.db, name, quota)

    @translated
    async def add_device(self, user_id: int, name: str, token_hash: bytes) -> Device:
        return await auth.add_device(self.db, user_id, name, token_hash)

    @translated
    async def device_by_token(self, token_hash: bytes) -> Device | None:
        """The live device holding this token hash; None if unknown or revoked."""
        return await auth.device_by_token(self.db, token_hash)

    @translated
    async def list_devices(self, user_id: int) -> list[Device]:
        return await auth.list_devices(self.db, user_id)

    @translated
    async def revoke_device(self, user_id: int, device: str) -> int:
        """Revoke by device name or id; returns how many live devices were revoked."""
        return await auth.revoke_device(self.db, user_id, device)

    @translated
    async def usage(self, user_id: int) -> int:
        """Bytes of data (holes excluded) in the head revisions of the user's live files."""
        return await auth.usage(self.db, user_id)

    # --- namespaces ----------------------------------------------------------------------

    @translated
    async def namespaces(self, user_id: int) -> list[NamespaceInfo]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(namespaces.c.id, namespaces.c.root, namespaces.c.name)
                .where(namespaces.c.owner_id == user_id)
                .order_by(namespaces.c.id)
            )
            return [NamespaceInfo(r.id, r.root, r.name) for r in rows]

    async def _check_access(self, conn: Any, user_id: int, ns: Any) -> None:
        if type(ns) is not int:
            raise NotFound("namespace not found")
        row = await conn.execute(select(namespaces.c.owner_id).where(namespaces.c.id == ns))
        owner = row.scalar()
        if owner is None or owner != user_id:
            raise NotFound(f"namespace {ns} not found")

    @translated
    async def check_access(self, user_id: int, ns: int) -> None:
        """``NotFound`` unless ``user_id`` may see namespace ``ns``."""
        async with self.db.read() as conn:
            await self._check_access(conn, user_id, ns)

    # --- reads ---------------------------------------------------------------------------

    async def _node(self, conn: Any, ns: int, node_id: str) -> NodeState:
        wire.node_id(node_id, "node id")
        state = await load_node(conn, node_id, ns)
        if state is None:
            raise NotFound(f"node {node_id} not found")
        return state

    @translated
    async def get_node(self, user_id: int, ns: int, node_id: str) -> dict[str, Any]:
        """The node object with its blocklist (deleted nodes too, ``deleted: true``)."""
        async with self.db.read() as conn:
            await self._check_access(conn, user_id, ns)
            return (await self._node(conn, ns, node_id)).to_json()

    @translated
    async def list_children(
        self, user_id: int, ns: int, node_id: str, cursor: str | None, limit: int
    ) -> dict[str, Any]:
        """One page of a directory in byte order of names: ``{"entries": [{"name",
        "node"}], "cursor", "has_more"}``; node objects without blocklist."""
        check_limit(limit)
        after = _listing_after(cursor)
        wire.node_id(node_id, "node id")
        async with self.db.read() as conn:
            await self._check_access(conn, user_id, ns)
            kind = (
                await conn.execute(
                    select(nodes.c.type).where(nodes.c.id == node_id, nodes.c.ns == ns)
                )
            ).scalar()
            if kind is None:
                raise NotFound(f"node {node_id} not found")
            if kind != "dir":
                raise NotADirectory(f"node {node_id} is not a directory")
            query = (
                select_nodes(False)
                .add_columns(names.c.name.label("entry_name"))
                .select_from(names.join(nodes, nodes.c.id == names.c.node))
                .where(names.c.ns == ns, names.c.parent == node_id)
                .order_by(names.c.name)
                .limit(limit + 1)
            )
            if after is not None:
                query = query.where(names.c.name > after)
            rows = (await conn.execute(query)).all()
            page = rows[:limit]
            states = {}
            for r in page:
                states.setdefault(r.id, state_from_row(r))
            await attach_names_xattrs(conn, list(states.values()))
        entries = [{"name": r.entry_name, "node": states[r.id].to_json(False)} for r in page]
        return {
            "entries": entries,
            "cursor": _listing_cursor(page[-1].entry_name) if page else (cursor or ""),
            "has_more": len(rows) > limit,
        }

    @translated
    async def resolve(self, user_id: int, ns: int, path: str) -> dict[str, Any]:
        """The node at ``path`` (``/a/b``; symlinks are not followed)."""
        parts = split_path(path)
        async with self.db.read() as conn:
            await self._check_access(conn, user_id, ns)
            current = (
                await conn.execute(select(namespaces.c.root).where(namespaces.c.id == ns))
            ).scalar_one()
            for i, part in enumerate(parts):
                found = await child_id(conn, ns, current, part)
                if found is None:
                    raise NotFound(f"{'/' + '/'.join(parts[: i + 1])} not found")
                current = found
            return (await self._node(conn, ns, current)).to_json()

    @translated
    async def revisions(self, user_id: int, ns: int, node_id: str) -> dict[str, Any]:
        """``{"revisions": [...]}`` newest first; empty for directories and symlinks."""
        async with self.db.read() as conn:
            await self._check_access(conn, user_id, ns)
            await self._node(conn, ns, node_id)
            rows = await conn.execute(
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

    @translated
    async def trash(self, user_id: int, ns: int) -> dict[str, Any]:
        """``{"entries": [node...]}`` of deleted nodes, most recently deleted first; each
        also carries ``former`` ([parent, name] it was last linked under) and
        ``deleted_ns``."""
        async with self.db.read() as conn:
            await self._check_access(conn, user_id, ns)
            rows = await conn.execute(
                select_nodes(False)
                .where(nodes.c.ns == ns, nodes.c.deleted.is_(True))
                .order_by(nodes.c.deleted_ns.desc(), nodes.c.id)
                .limit(10_000)
            )
            states = [state_from_row(r) for r in rows]
            await attach_names_xattrs(conn, states)
        return {"entries": [s.trash_json() for s in states]}

    # --- changes -------------------------------------------------------------------------

    async def _heads(self, conn: Any, user_id: int) -> dict[int, int]:
        rows = await conn.execute(
            select(namespaces.c.id, namespaces.c.seq).where(namespaces.c.owner_id == user_id)
        )
        return {r.id: r.seq for r in rows}

    @translated
    async def changes(self, user_id: int, cursor: str | None, limit: int) -> dict[str, Any]:
        """A page of the compacted feed: ``{"entries", "cursor", "has_more"}``."""
        check_limit(limit)
        since = decode_cursor(cursor)
        async with self.db.read() as conn:
            heads = await self._heads(conn, user_id)
            return await changes_page(conn, heads, since, limit)

    @translated
    async def seqs(self, user_id: int) -> dict[int, int]:
        """Current seq of every namespace the user sees (for hints and long-poll)."""
        async with self.db.read() as conn:
            return await self._heads(conn, user_id)

    def cursor_seqs(self, cursor: str) -> dict[int, int]:
        """``{ns: seq}`` of a changes cursor; ``InvalidArgument`` if malformed."""
        return decode_cursor(cursor)

    # --- chunks --------------------------------------------------------------------------

    @translated
    async def missing_chunks(self, user_id: int, ids: list[bytes]) -> list[bytes]:
        """The ids this user does not reference (deduplicated, in request order)."""
        if len(ids) > MAX_LIMIT:
            raise TooLarge(f"at most {MAX_LIMIT} ids per query")
        return await chunks.missing_chunks(self.db, user_id, ids)

    @translated
    async def chunk_known(self, cid: bytes) -> bool:
        """Stored for anyone (server-internal: decides whether to write the blob)."""
        return await chunks.chunk_known(self.db, cid)

    @translated
    async def record_upload(
        self, user_id: int, cid: bytes, plain_len: int, stored_len: int
    ) -> None:
        """Make the chunk known and referenced by the user; idempotent."""
        await chunks.record_upload(self.db, user_id, cid, plain_len, stored_len)

    @translated
    async def user_has_chunk(self, user_id: int, cid: bytes) -> bool:
        return await chunks.user_has_chunk(self.db, user_id, cid)

    @translated
    async def chunk_refcounts(self, ids: list[bytes]) -> dict[bytes, int]:
        return await chunks.chunk_refcounts(self.db, ids)

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
        async with self.db.write() as conn:
            await self._check_access(conn, user_id, ns)
            if not ops:
                return []
            return await apply_batch(conn, user_id, device_id, ns, ops)
