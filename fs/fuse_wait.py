"""How the mount waits for the next FUSE request: a short busy poll while requests come in
a burst, trio's epoll wait otherwise.

Why: a program that works through files one at a time (create, write, close, stat, the
way ``cp -r``, ``tar x`` and ``git checkout`` do) sends its next request a few
microseconds after it gets our reply. With pyfuse3's loop the mount's thread has already
gone to sleep in ``epoll_wait`` by then, and being put to sleep and woken again costs
more than the request itself: with a do-nothing ``getattr`` handler a pyfuse3 mount on
this machine (a VM; `perf` puts half of the time in the scheduler's switch and wake-up
paths) spends ~40-50 µs of CPU per round trip and manages ~15-20k round trips/s; polling
the device for up to ``SPIN_S`` first halves the CPU per request and more than doubles
the rate (``bench/fuse_loop.py``; on the drive, ``bench/fs.py``: creates and stat).

The rules, so the poll can neither starve the drive's other work nor burn an idle CPU:

- poll only inside a burst: the previous request arrived less than ``BURST_S`` ago;
- poll only when no other trio task is runnable and no worker thread has handed a result
  back (a read waiting on its decoded chunk goes first);
- poll for at most ``SPIN_S``, then wait in epoll as before;
- go through trio's wait (a real checkpoint that lets timers, the sync agent, the control
  socket and finished worker threads run) at least every ``YIELD_S``.

pyfuse3 runs (at least) two worker tasks that take turns: each holds a lock while it waits
for the device, and the other waits for that lock. With a FIFO lock every request hands
the lock over and costs a pass through trio's scheduler even when nothing else is going
on. ``DeviceLock`` lets the task that just answered take the lock straight back when it is
free, so during a burst one task serves request after request; the other task is woken
once and takes over when the first one awaits something (a handler waiting on a worker
thread or the network), so requests are still served concurrently.

pyfuse3 reaches trio only through its module attribute ``pyfuse3.trio`` (the hook its own
asyncio mode uses), and only for a few names. ``install`` puts a namespace there that
forwards every name to trio except ``Lock`` (a new ``DeviceLock``) and
``lowlevel.wait_readable``.
"""

from __future__ import annotations

import os
import select
import time
import types
from collections.abc import Sized
from typing import Any

import trio

from cairn.core.errors import ConfigError

SPIN_S = 100e-6
"""Longest busy poll per wait. A sequential client's turnaround here is 5-30 µs; a longer
gap means the client is doing something else and sleeping costs less than spinning."""

BURST_S = 1e-3
"""Poll only when the previous request came less than this long ago: an idle mount
never spins."""

YIELD_S = 2e-3
"""Longest stretch of requests served without a trio checkpoint."""


class DeviceLock:
    """The lock pyfuse3 holds around waiting for the device (``async with`` only).

    A free lock is taken without a checkpoint, also by a task that has just released it
    while others wait ("barging"); a waiter is woken (at most one at a time) when the lock
    is released and takes it if it is still free when it runs, else waits again. Only
    mutual exclusion is promised, not FIFO order: the waiters are interchangeable idle
    workers. ``woken`` counts waiters woken that have not run yet, so ``BurstWait`` can tell
    them from real work waiting to run."""

    __slots__ = ("_held", "_lot", "woken")

    def __init__(self) -> None:
        self._held = False
        self._lot = trio.lowlevel.ParkingLot()
        self.woken = 0

    def locked(self) -> bool:
        return self._held

    async def __aenter__(self) -> None:
        while self._held:
            await self._lot.park()  # cancellable while parked; not once woken
            self.woken -= 1
        self._held = True

    async def __aexit__(self, *exc: object) -> None:
        self._held = False
        # One woken waiter at a time is enough: it takes the lock if it is still free when
        # it runs, or parks again and the holder's release wakes it.
        if self._lot and not self.woken:
            self._lot.unpark()
            self.woken += 1


class BurstWait:
    """``wait_readable(fd)`` with the busy poll described in the module docstring.

    One instance serves one device fd at a time (pyfuse3 holds its lock around the wait);
    the poll object is made for the first fd seen and remade if the fd changes (a
    remount in the same process)."""

    def __init__(self, *, spin_s: float = SPIN_S, burst_s: float = BURST_S,
                 yield_s: float = YIELD_S) -> None:  # fmt: skip
        self.spin_s, self.burst_s, self.yield_s = spin_s, burst_s, yield_s
        self._fd = -1
        self._poll: Any = None
        self._last_request = float("-inf")
        self._last_yield = float("-inf")
        self.waits = 0
        self.polled = 0  # of which answered by the busy poll
        self.lock: DeviceLock | None = None  # the newest made by new_lock (pyfuse3's)
        self._runner: object = None
        self._queues: tuple[Sized, Sized, Sized] | None = None

    def new_lock(self) -> DeviceLock:
        """Make the lock pyfuse3 waits for the device under (``trio.Lock`` to pyfuse3; it
        makes one per mount)."""
        self.lock = DeviceLock()
        return self.lock

    def _work_waiting(self) -> bool:
        """Other trio tasks are runnable, or worker threads have handed results back: serve
        them first rather than spin (a read waiting on its decoded chunk, a release on its
        RocksDB write). An idle pyfuse3 worker woken by ``DeviceLock`` does not count: it
        would only find the lock taken and wait again.

        Reads trio's run queue and run_sync_soon queues directly: ``current_statistics()``
        costs several µs a call (it builds three objects and asks epoll for its counts),
        and this runs before every request in a burst. Falls back to it if trio's
        internals change (``tests/fs/unit/test_fuse_wait.py`` notices)."""
        woken = self.lock.woken if self.lock is not None else 0
        try:
            runner = trio._core._run.GLOBAL_RUN_CONTEXT.runner
            if runner is not self._runner:
                entry = runner.entry_queue
                self._queues = (runner.runq, entry.queue, entry.idempotent_queue)
                self._runner = runner
        except AttributeError:
            self._queues = None
        if self._queues is None:
            stats = trio.lowlevel.current_statistics()
            return stats.tasks_runnable > woken or stats.run_sync_soon_queue_size > 0
        runq, soon, soon_once = self._queues
        return len(runq) > woken or len(soon) > 0 or len(soon_once) > 0

    async def __call__(self, fd: int) -> None:
        self.waits += 1
        now = time.perf_counter()
        if (
            now - self._last_request < self.burst_s
            and now - self._last_yield < self.yield_s
            and not self._work_waiting()
        ):
            if fd != self._fd:
                self._poll = select.poll()
                self._poll.register(fd, select.POLLIN)
                self._fd = fd
            poll, end = self._poll.poll, now + self.spin_s
            while True:
                # any event counts: POLLERR/POLLHUP (unmounted) is for the reader to see
                if poll(0):
                    self._last_request = time.perf_counter()
                    self.polled += 1
                    return
                if time.perf_counter() > end:
                    break
        self._last_yield = time.perf_counter()
        await trio.lowlevel.wait_readable(fd)
        self._last_request = time.perf_counter()


def namespace(wait: BurstWait) -> types.SimpleNamespace:
    """A stand-in for the ``trio`` module as pyfuse3 uses it."""
    low = types.SimpleNamespace(**{k: getattr(trio.lowlevel, k) for k in dir(trio.lowlevel)
                                   if not k.startswith("__")})  # fmt: skip
    low.wait_readable = wait
    ns = types.SimpleNamespace(**{k: getattr(trio, k) for k in dir(trio) if not k.startswith("__")})
    ns.lowlevel = low
    ns.Lock = wait.new_lock
    return ns


def spin_from_env() -> float:
    """``SPIN_S``, or ``CAIRN_FUSE_SPIN_US`` from the environment in microseconds (at most
    10,000); 0 leaves pyfuse3 on plain trio, for comparisons and as a way out. Raises
    ``ConfigError`` on a value that is not a number."""
    raw = os.environ.get("CAIRN_FUSE_SPIN_US", "").strip()
    if not raw:
        return SPIN_S
    try:
        us = float(raw)
    except ValueError:
        raise ConfigError(f"CAIRN_FUSE_SPIN_US must be microseconds, not {raw!r}") from None
    if not 0 <= us <= 10_000:
        raise ConfigError(f"CAIRN_FUSE_SPIN_US must be between 0 and 10000, not {raw}")
    return us / 1e6


def install(pyfuse3: Any, spin_s: float = SPIN_S) -> BurstWait | None:
    """Make ``pyfuse3.main()`` wait with a ``BurstWait`` polling up to ``spin_s``; call
    before ``pyfuse3.main()``. With ``spin_s`` 0 nothing changes and None is returned."""
    if spin_s <= 0:
        return None
    wait = BurstWait(spin_s=spin_s)
    pyfuse3.trio = namespace(wait)
    return wait
