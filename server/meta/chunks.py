"""Chunk rows, per-user chunk references and reference counts.

"Dedupe without a side channel" (DESIGN.md): storage is shared by all users, but a user is
told a chunk is present only when that user already references it (``user_chunks``: it was
uploaded by them or committed in one of their files). ``chunks.refcount`` counts the
revisions whose blocklist names the chunk; commit.py changes it in the commit transaction.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import select

from cairn.core.errors import InvalidArgument

from .db import Database, batched
from .schema import chunks, user_chunks

ID_SIZE = 32


def _check_ids(ids: Sequence[bytes]) -> None:
    for cid in ids:
        if not isinstance(cid, bytes) or len(cid) != ID_SIZE:
            raise InvalidArgument("a chunk id is 32 bytes")


async def referenced_by(conn, user_id: int, ids: Sequence[bytes]) -> set[bytes]:  # type: ignore[no-untyped-def]
    """The subset of ``ids`` the user references (on an open connection)."""
    present: set[bytes] = set()
    for part in batched(list(ids)):
        rows = await conn.execute(
            select(user_chunks.c.chunk).where(
                user_chunks.c.user_id == user_id, user_chunks.c.chunk.in_(part)
            )
        )
        present.update(bytes(r[0]) for r in rows)
    return present


async def missing_chunks(db: Database, user_id: int, ids: list[bytes]) -> list[bytes]:
    """``ids`` (deduplicated, in order) that this user does not reference."""
    _check_ids(ids)
    unique = list(dict.fromkeys(ids))
    async with db.read() as conn:
        present = await referenced_by(conn, user_id, unique)
    return [cid for cid in unique if cid not in present]


async def chunk_known(db: Database, cid: bytes) -> bool:
    _check_ids([cid])
    async with db.read() as conn:
        row = (await conn.execute(select(chunks.c.id).where(chunks.c.id == cid))).first()
    return row is not None


async def user_has_chunk(db: Database, user_id: int, cid: bytes) -> bool:
    _check_ids([cid])
    async with db.read() as conn:
        return bool(await referenced_by(conn, user_id, [cid]))


async def record_upload(
    db: Database, user_id: int, cid: bytes, plain_len: int, stored_len: int
) -> None:
    """Make ``cid`` known (refcount 0 until a commit names it) and referenced by the user.

    Idempotent: a second upload of the same chunk changes nothing. Call it only after the
    chunk is durable in the blob store.
    """
    _check_ids([cid])
    async with db.write() as conn:
        await conn.execute(
            db.insert_ignore(chunks).values(
                id=cid,
                plain_len=plain_len,
                stored_len=stored_len,
                refcount=0,
                created_ns=time.time_ns(),
            )  # fmt: skip
        )
        await conn.execute(db.insert_ignore(user_chunks).values(user_id=user_id, chunk=cid))


async def chunk_refcounts(db: Database, ids: list[bytes]) -> dict[bytes, int]:
    """Refcount of every known chunk among ``ids`` (unknown ids are absent)."""
    _check_ids(ids)
    out: dict[bytes, int] = {}
    async with db.read() as conn:
        for part in batched(list(dict.fromkeys(ids))):
            rows = await conn.execute(
                select(chunks.c.id, chunks.c.refcount).where(chunks.c.id.in_(part))
            )
            out.update((bytes(cid), int(n)) for cid, n in rows)
    return out
