"""Chunk references: dedupe without a side channel."""

from __future__ import annotations

import os

import pytest

from cairn.core.errors import InvalidArgument, TooLarge
from cairn.server.meta import MetaStore

from .helpers import World

pytestmark = pytest.mark.anyio


async def test_missing_answers_only_for_the_callers_references(store: MetaStore) -> None:
    alice = await World.new(store, "alice")
    bob = await World.new(store, "bob")
    a, b, c = os.urandom(32), os.urandom(32), os.urandom(32)
    assert await store.missing_chunks(alice.user.id, [a, b, a]) == [a, b]
    await store.record_upload(alice.user.id, a, 100, 80)
    await store.record_upload(alice.user.id, a, 100, 80)  # idempotent
    await store.record_upload(bob.user.id, b, 100, 80)
    assert await store.missing_chunks(alice.user.id, [a, b, c]) == [b, c]
    assert await store.missing_chunks(bob.user.id, [a, b, c]) == [a, c]
    assert await store.chunk_known(a) and await store.chunk_known(b)
    assert not await store.chunk_known(c)
    assert await store.user_has_chunk(alice.user.id, a)
    assert not await store.user_has_chunk(alice.user.id, b)
    # Bob uploading a chunk that exists makes him reference it, without a second row.
    await store.record_upload(bob.user.id, a, 100, 80)
    assert await store.missing_chunks(bob.user.id, [a]) == []
    assert await store.chunk_refcounts([a, b, c]) == {a: 0, b: 0}


async def test_chunk_id_and_batch_bounds(store: MetaStore) -> None:
    w = await World.new(store, "alice")
    with pytest.raises(InvalidArgument):
        await store.missing_chunks(w.user.id, [b"short"])
    with pytest.raises(InvalidArgument):
        await store.chunk_known("ab" * 32)  # type: ignore[arg-type]
    with pytest.raises(TooLarge):
        await store.missing_chunks(w.user.id, [os.urandom(32) for _ in range(1001)])
    many = [os.urandom(32) for _ in range(1000)]
    for cid in many[:600]:
        await store.record_upload(w.user.id, cid, 1, 1)
    assert await store.missing_chunks(w.user.id, many) == many[600:]
