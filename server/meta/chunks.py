"""Chunk rows, per-user chunk references and reference counts.

"Dedupe without a side channel" (DESIGN.md): storage is shared by all users, but a user is
told a chunk is present only when that user already references it (``user_chunks``: it was
uploaded by them or committed in one of their files). ``chunks.refcount`` counts the
revisions whose blocklist names the chunk; commit.py changes it in the commit transaction.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite

from cairn.core.errors import InvalidArgument

from .db import batched
from .schema import chunks, user_chunks

ID_SIZE = 32


def _check_ids(ids: Sequence[bytes]) -> None:
    for cid in ids:
        if not isinstance(cid, bytes) or len(cid) != ID_SIZE:
            raise InvalidArgument("a chunk id is 32 bytes")


_REFERENCED = select(user_chunks.c.chunk).where(
    user_chunks.c.user_id == bindparam("user"),
    user_chunks.c.chunk.in_(bindparam("ids", expanding=True)),
)


def referenced_by(conn: Connection, user_id: int, ids: Sequence[bytes]) -> set[bytes]:
    """The subset of ``ids`` the user references."""
    present: set[bytes] = set()
    for part in batched(list(ids)):
        rows = conn.execute(_REFERENCED, {"user": user_id, "ids": list(part)})
        present.update(bytes(r[0]) for r in rows)
    return present


def missing_chunks(conn: Connection, user_id: int, ids: list[bytes]) -> list[bytes]:
    """``ids`` (deduplicated, in order) that this user does not reference."""
    _check_ids(ids)
    unique = list(dict.fromkeys(ids))
    present = referenced_by(conn, user_id, unique)
    return [cid for cid in unique if cid not in present]


def chunk_known(conn: Connection, cid: bytes) -> bool:
    return bool(known_chunks(conn, [cid]))


def known_chunks(conn: Connection, ids: Sequence[bytes]) -> set[bytes]:
    """The subset of ``ids`` stored for anyone (server-internal: decides which blobs to write;
    never shown to a user, see the module docstring)."""
    _check_ids(ids)
    known: set[bytes] = set()
    for part in batched(list(dict.fromkeys(ids))):
        rows = conn.execute(select(chunks.c.id).where(chunks.c.id.in_(part)))
        known.update(bytes(r[0]) for r in rows)
    return known


def user_has_chunk(conn: Connection, user_id: int, cid: bytes) -> bool:
    _check_ids([cid])
    return bool(referenced_by(conn, user_id, [cid]))


def record_upload(
    conn: Connection, user_id: int, cid: bytes, plain_len: int, stored_len: int
) -> None:
    """``record_uploads`` of one chunk."""
    record_uploads(conn, user_id, [(cid, plain_len, stored_len)])


def record_uploads(
    conn: Connection, user_id: int, uploads: Sequence[tuple[bytes, int, int]]
) -> None:
    """Make each ``(cid, plain_len, stored_len)`` known (refcount 0 until a commit names it)
    and referenced by the user, in the caller's transaction.

    Idempotent: a second upload of the same chunk changes nothing. Call it only after the
    chunks are durable in the blob store.
    """
    if not uploads:
        return
    _check_ids([u[0] for u in uploads])
    mod = sqlite if conn.dialect.name == "sqlite" else postgresql
    now = time.time_ns()
    unique = list({cid: (cid, p, s) for cid, p, s in uploads}.values())
    conn.execute(
        mod.insert(chunks).on_conflict_do_nothing(),
        [
            {"id": cid, "plain_len": p, "stored_len": s, "refcount": 0, "created_ns": now}
            for cid, p, s in unique
        ],
    )
    conn.execute(
        mod.insert(user_chunks).on_conflict_do_nothing(),
        [{"user_id": user_id, "chunk": cid} for cid, _, _ in unique],
    )


def chunk_refcounts(conn: Connection, ids: list[bytes]) -> dict[bytes, int]:
    """Refcount of every known chunk among ``ids`` (unknown ids are absent)."""
    _check_ids(ids)
    out: dict[bytes, int] = {}
    for part in batched(list(dict.fromkeys(ids))):
        rows = conn.execute(select(chunks.c.id, chunks.c.refcount).where(chunks.c.id.in_(part)))
        out.update((bytes(cid), int(n)) for cid, n in rows)
    return out
