"""``fs/quicklock.py``: a free lock is taken without a checkpoint; waiters get it in FIFO
order, handed over by the release (nobody takes it in between); a waiter cancelled while
parked leaves the queue without the lock."""

from __future__ import annotations

import trio
import trio.testing

from cairn.fs.quicklock import QuickLock


def test_a_free_lock_is_taken_without_a_checkpoint() -> None:
    async def main() -> None:
        lock = QuickLock()
        with trio.testing.assert_no_checkpoints():
            async with lock:
                assert lock.locked()
        assert not lock.locked()
        with trio.testing.assert_no_checkpoints():
            async with lock:
                pass

    trio.run(main)


def test_waiters_get_the_lock_in_order_and_one_at_a_time() -> None:
    order: list[int] = []
    inside = 0

    async def main() -> None:
        lock = QuickLock()

        async def worker(i: int) -> None:
            nonlocal inside
            async with lock:
                inside += 1
                assert inside == 1
                order.append(i)
                await trio.lowlevel.checkpoint()  # others run meanwhile and must wait
                inside -= 1

        async with trio.open_nursery() as nursery:
            async with lock:  # hold it while the workers queue up, in start order
                for i in range(5):
                    nursery.start_soon(worker, i)
                    await trio.testing.wait_all_tasks_blocked()
        assert not lock.locked()

    trio.run(main)
    assert order == [0, 1, 2, 3, 4]


def test_a_release_hands_over_so_nobody_barges_in() -> None:
    got: list[str] = []

    async def main() -> None:
        lock = QuickLock()

        async def waiter() -> None:
            async with lock:
                got.append("waiter")

        async with trio.open_nursery() as nursery:
            await lock.__aenter__()
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            await lock.__aexit__(None, None, None)  # the waiter owns it now, not yet run
            assert lock.locked()
            async with lock:  # parks behind the waiter instead of taking it
                got.append("late")

    trio.run(main)
    assert got == ["waiter", "late"]


def test_a_cancelled_waiter_leaves_without_the_lock() -> None:
    async def main() -> None:
        lock = QuickLock()
        cancelled = False

        async def waiter(scope_box: list[trio.CancelScope]) -> None:
            nonlocal cancelled
            with trio.CancelScope() as scope:
                scope_box.append(scope)
                async with lock:
                    raise AssertionError("a cancelled waiter must not get the lock")
            cancelled = scope.cancelled_caught

        box: list[trio.CancelScope] = []
        async with trio.open_nursery() as nursery:
            async with lock:
                nursery.start_soon(waiter, box)
                await trio.testing.wait_all_tasks_blocked()
                box[0].cancel()
                await trio.testing.wait_all_tasks_blocked()
        assert cancelled
        assert not lock.locked()  # nobody left to hand it to: free again
        async with lock:
            pass

    trio.run(main)
