"""``fs/fuse_wait.py``: the busy poll pyfuse3 waits with, on a real pipe under trio.

What must hold: inside a burst a readable device is answered without a trio checkpoint;
outside a burst, and at least every ``yield_s`` inside one, the wait goes through trio (so
the drive's other tasks run); an unreadable device is polled for at most ``spin_s`` before
trio's wait, which still wakes on the next request."""

from __future__ import annotations

import os
import time

import pytest
import trio
import trio.testing

from cairn.core.errors import ConfigError
from cairn.fs import fuse_wait


@pytest.fixture
def pipe():
    r, w = os.pipe()
    os.set_blocking(r, False)
    try:
        yield r, w
    finally:
        os.close(r)
        os.close(w)


def test_readable_in_a_burst_is_answered_without_a_checkpoint(pipe) -> None:
    r, w = pipe
    os.write(w, b"x")
    wait = fuse_wait.BurstWait(yield_s=60.0)

    async def main() -> None:
        with trio.testing.assert_checkpoints():
            await wait(r)  # the first wait: no burst yet, so through trio
        with trio.testing.assert_no_checkpoints():
            for _ in range(100):
                await wait(r)

    trio.run(main)
    assert (wait.waits, wait.polled) == (101, 100)


def test_runnable_work_goes_first(pipe) -> None:
    """A task waiting to run (e.g. a read whose chunk a worker thread just decoded) is
    served before any spinning: the wait goes through trio."""
    r, w = pipe
    os.write(w, b"x")
    wait = fuse_wait.BurstWait(yield_s=60.0)
    ran = []

    async def note() -> None:
        ran.append(1)

    async def main() -> None:
        await wait(r)  # starts the burst
        async with trio.open_nursery() as nursery:
            nursery.start_soon(note)  # runnable from now on
            with trio.testing.assert_checkpoints():
                await wait(r)

    trio.run(main)
    assert wait.polled == 0
    assert ran == [1]


def test_no_poll_after_the_burst_ends(pipe) -> None:
    r, w = pipe
    os.write(w, b"x")
    wait = fuse_wait.BurstWait(burst_s=0.01, yield_s=60.0)

    async def main() -> None:
        await wait(r)
        await trio.sleep(0.05)  # longer than burst_s: the next wait must not spin
        with trio.testing.assert_checkpoints():
            await wait(r)

    trio.run(main)
    assert wait.polled == 0


def test_other_tasks_run_during_an_endless_burst(pipe) -> None:
    """A device that is always readable (a client that never pauses) must not starve the
    rest of the drive: the wait goes through trio at least every ``yield_s``."""
    r, w = pipe
    os.write(w, b"x")
    wait = fuse_wait.BurstWait(yield_s=0.002)
    ran = 0

    async def other() -> None:
        nonlocal ran
        while True:
            ran += 1
            await trio.lowlevel.checkpoint()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            deadline = time.monotonic() + 10.0
            while ran < 20 and time.monotonic() < deadline:  # bounded in time
                await wait(r)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert ran >= 20, f"the other task ran {ran} times while the device was busy"
    assert wait.polled > 0


def test_an_idle_device_is_polled_briefly_then_waited_for(pipe) -> None:
    r, w = pipe
    wait = fuse_wait.BurstWait(spin_s=0.001, yield_s=60.0)
    got = []

    async def request_later() -> None:
        await trio.sleep(0.05)
        os.write(w, b"y")

    async def main() -> None:
        os.write(w, b"x")
        await wait(r)  # starts a burst
        os.read(r, 1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(request_later)
            t0 = time.perf_counter()
            with trio.testing.assert_checkpoints():
                await wait(r)  # spins ~1 ms, then sleeps in epoll until the write
            got.append(time.perf_counter() - t0)

    trio.run(main)
    assert os.read(r, 1) == b"y"
    assert wait.polled == 0  # the request came long after the spin had given up
    assert got[0] >= 0.04  # it did wait for the request, through trio


def test_namespace_forwards_everything_but_the_lock_and_the_wait() -> None:
    wait = fuse_wait.BurstWait()
    ns = fuse_wait.namespace(wait)
    assert ns.open_nursery is trio.open_nursery
    assert ns.ClosedResourceError is trio.ClosedResourceError
    assert ns.lowlevel.current_task is trio.lowlevel.current_task
    assert ns.lowlevel.notify_closing is trio.lowlevel.notify_closing
    assert ns.lowlevel.wait_readable is wait
    lock = ns.Lock()  # pyfuse3 makes one per mount
    assert isinstance(lock, fuse_wait.DeviceLock) and wait.lock is lock


def test_device_lock_excludes_and_only_yields_when_held() -> None:
    lock = fuse_wait.DeviceLock()
    inside = 0
    most = 0

    async def user() -> None:
        nonlocal inside, most
        async with lock:
            inside += 1
            most = max(most, inside)
            await trio.sleep(0.001)
            inside -= 1

    async def main() -> None:
        with trio.testing.assert_no_checkpoints():
            async with lock:
                pass
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(user)

    trio.run(main)
    assert most == 1


def test_install_with_zero_leaves_pyfuse3_alone() -> None:
    class FakePyfuse3:
        trio = trio

    fake = FakePyfuse3()
    assert fuse_wait.install(fake, 0) is None
    assert fake.trio is trio
    waiter = fuse_wait.install(fake, 50e-6)
    assert isinstance(waiter, fuse_wait.BurstWait) and waiter.spin_s == 50e-6
    assert fake.trio.lowlevel.wait_readable is waiter


@pytest.mark.parametrize(
    ("value", "expected"), [("", fuse_wait.SPIN_S), ("0", 0.0), ("250", 250e-6), (" 40 ", 40e-6)]
)
def test_spin_from_env(monkeypatch, value: str, expected: float) -> None:
    monkeypatch.setenv("CAIRN_FUSE_SPIN_US", value)
    assert fuse_wait.spin_from_env() == pytest.approx(expected)


@pytest.mark.parametrize("value", ["fast", "-1", "20000", "nan"])
def test_spin_from_env_refuses_nonsense(monkeypatch, value: str) -> None:
    monkeypatch.setenv("CAIRN_FUSE_SPIN_US", value)
    with pytest.raises(ConfigError, match="CAIRN_FUSE_SPIN_US"):
        fuse_wait.spin_from_env()


def test_device_lock_is_taken_back_by_the_running_task() -> None:
    """Two pyfuse3 workers: the one that just answered takes the free lock straight back
    (no checkpoint), and the idle one is woken once, not once per release."""
    lock = fuse_wait.DeviceLock()
    got = []

    async def idle_worker() -> None:
        async with lock:
            got.append("idle")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            async with lock:
                nursery.start_soon(idle_worker)
                await trio.testing.wait_all_tasks_blocked()  # parked on the lock
            assert lock.woken == 1
            with trio.testing.assert_no_checkpoints():
                for _ in range(100):
                    async with lock:
                        pass
            assert lock.woken == 1  # still the one wake-up
            async with lock:
                await trio.sleep(0.01)  # the idle worker runs, finds it held, parks again
                assert lock.woken == 0 and got == []
            # released while nobody holds it: the idle worker gets it at the next turn
        assert got == ["idle"] and lock.woken == 0 and not lock.locked()

    trio.run(main)


def test_device_lock_passes_to_a_waiter_when_the_holder_blocks() -> None:
    """While the worker that last waited for the device is busy in a handler (awaiting a
    thread, the network), another worker must get the lock and serve the device."""
    lock = fuse_wait.DeviceLock()
    order = []

    async def worker(name: str, handler_s: float) -> None:
        async with lock:
            order.append(f"{name} waits")
        await trio.sleep(handler_s)  # the request it read takes a while
        order.append(f"{name} done")

    async def main() -> None:
        with trio.fail_after(10):  # a lost wake-up would leave b parked for good
            async with trio.open_nursery() as nursery:
                nursery.start_soon(worker, "a", 0.05)
                nursery.start_soon(worker, "b", 0.0)

    trio.run(main)
    assert order.index("b waits") < order.index("a done")


def test_device_lock_waiter_cancelled_while_parked() -> None:
    lock = fuse_wait.DeviceLock()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            async with lock:
                cancel_scope = trio.CancelScope()

                async def waiter() -> None:
                    with cancel_scope:
                        async with lock:
                            raise AssertionError("got a held lock")

                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                cancel_scope.cancel()
                await trio.testing.wait_all_tasks_blocked()
        assert lock.woken == 0 and not lock.locked()
        with trio.testing.assert_no_checkpoints():
            async with lock:
                pass

    trio.run(main)


def test_a_woken_idle_worker_does_not_stop_the_poll(pipe) -> None:
    """The idle pyfuse3 worker woken by a release is runnable, but it is not work: the
    wait still polls instead of going through trio."""
    r, w = pipe
    os.write(w, b"x")
    wait = fuse_wait.BurstWait(yield_s=60.0)
    lock = wait.new_lock()

    async def idle_worker() -> None:
        async with lock:
            pass

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            async with lock:
                await wait(r)  # starts the burst
                nursery.start_soon(idle_worker)
                await trio.testing.wait_all_tasks_blocked()
            assert lock.woken == 1
            with trio.testing.assert_no_checkpoints():
                async with lock:
                    await wait(r)
            assert wait.polled == 1

    trio.run(main)


def test_work_waiting_reads_trios_queues_directly() -> None:
    """The quick read of trio's run queues agrees with ``current_statistics()``; if a trio
    release moves those internals this fails (the code falls back to the slow call)."""
    wait = fuse_wait.BurstWait()

    async def main() -> None:
        assert not wait._work_waiting()
        assert wait._queues is not None, "trio's internals moved: the fast path is off"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep, 0)
            assert trio.lowlevel.current_statistics().tasks_runnable == 1
            assert wait._work_waiting()
        ran = []
        trio.lowlevel.current_trio_token().run_sync_soon(ran.append, 1)
        assert trio.lowlevel.current_statistics().run_sync_soon_queue_size == 1
        assert wait._work_waiting()
        for _ in range(100):  # bounded: trio runs the callback within a few passes
            if ran:
                break
            await trio.lowlevel.checkpoint()
        assert ran and not wait._work_waiting()

    trio.run(main)
