"""``QuickLock``: a trio lock that does not yield when it is free."""

from __future__ import annotations

import trio


class QuickLock:
    """A trio lock for ``async with`` that takes a free lock at once. ``trio.Lock.acquire``
    passes through the scheduler twice even when the lock is free (cancellation
    checkpoints). Used where a free lock is the common case and nothing relies on those
    checkpoints: a small file's write and seal (``FileContent.lock``). Waiting (FIFO) and
    release are ``trio.Lock``'s. (pyfuse3's lock around waiting for the device is
    ``fuse_wait.DeviceLock``, which also lets the releasing task take it back.)"""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = trio.Lock()

    async def __aenter__(self) -> None:
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()
