"""``QuickLock``: a trio lock that does not yield when it is free."""

from __future__ import annotations

import trio


class QuickLock:
    """A FIFO trio lock for ``async with`` that takes a free lock at once. ``trio.Lock``
    passes through the scheduler twice even when the lock is free (cancellation
    checkpoints), and making one costs more than the rest of a small file's staging state
    (``FileContent``). Used where a free lock is the common case and nothing relies on
    those checkpoints: a file's writes and seals. Waiters park in FIFO order (made on the
    first wait); a release hands the lock straight to the first of them, so it stays held
    and nobody can take it in between. (pyfuse3's lock around waiting for the device is
    ``fuse_wait.DeviceLock``, which lets the releasing task take it back instead.)"""

    __slots__ = ("_held", "_lot")

    def __init__(self) -> None:
        self._held = False
        self._lot: trio.lowlevel.ParkingLot | None = None

    def locked(self) -> bool:
        return self._held

    async def __aenter__(self) -> None:
        if not self._held:
            self._held = True
            return
        if self._lot is None:
            self._lot = trio.lowlevel.ParkingLot()
        # cancellable while parked; once unparked this task owns the lock (still held)
        await self._lot.park()

    async def __aexit__(self, *exc: object) -> None:
        if self._lot:  # a waiter: hand the lock over
            self._lot.unpark()
        else:
            self._held = False
