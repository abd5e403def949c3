"""``limits.ByteBudget``: concurrent chunk uploads are bounded by bytes held, in FIFO order."""

from __future__ import annotations

import asyncio

import pytest

from cairn.server.limits import ByteBudget


async def _settle() -> None:
    for _ in range(5):  # let woken tasks run; bounded
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_small_holders_share_the_budget_and_a_large_one_waits() -> None:
    b = ByteBudget(100)
    held = [await b.acquire(30) for _ in range(3)]  # 90 of 100 at once, no waiting
    assert held == [30, 30, 30] and b.free == 10
    big = asyncio.ensure_future(b.acquire(50))
    small = asyncio.ensure_future(b.acquire(5))  # fits, but FIFO: queued behind the big one
    await _settle()
    assert not big.done() and not small.done()
    b.release(held[0])  # 40 free: still short of the head's 50
    await _settle()
    assert not big.done() and not small.done()
    b.release(held[1])  # 70 free: the big one, then the small one
    await _settle()
    assert big.done() and small.done() and b.free == 70 - 50 - 5
    b.release(await big)
    b.release(await small)
    b.release(held[2])
    assert b.free == 100


@pytest.mark.asyncio
async def test_an_oversized_request_runs_alone_and_cancelled_waiters_give_back() -> None:
    b = ByteBudget(100)
    assert await b.acquire(10_000) == 100  # capped: runs, alone
    waiter = asyncio.ensure_future(b.acquire(10))
    await _settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    b.release(100)
    assert b.free == 100
    assert await b.acquire(60) == 60 and b.free == 40


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ByteBudget(0)
