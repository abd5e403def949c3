"""GroupSync: one sync serves every request that arrived while another ran; errors reach
exactly the requests of the failed round."""

from __future__ import annotations

import threading

import pytest
import trio
import trio.testing

from cairn.fs.durable import GroupSync

pytestmark = pytest.mark.anyio


async def test_requests_arriving_during_a_sync_share_the_next_one() -> None:
    gate = threading.Event()
    calls: list[int] = []

    def fn() -> None:
        calls.append(1)
        assert gate.wait(30), "test gate never opened"

    group = GroupSync(fn)
    done: list[int] = []

    async def request(i: int) -> None:
        await group.sync()
        done.append(i)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(request, 0)
        await trio.testing.wait_all_tasks_blocked()  # request 0's sync is running
        for i in range(1, 20):
            nursery.start_soon(request, i)
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
    assert sorted(done) == list(range(20))
    assert len(calls) == 2  # one for request 0, one for the 19 that queued behind it


async def test_a_failed_sync_fails_its_requests_and_the_next_round_retries() -> None:
    outcomes = [OSError(5, "disk says no"), None]

    def fn() -> None:
        err = outcomes.pop(0)
        if err is not None:
            raise err

    group = GroupSync(fn)
    with pytest.raises(OSError):
        await group.sync()
    await group.sync()  # a fresh attempt succeeds
    assert group.calls == 2
