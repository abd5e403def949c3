"""Grouped durable writes: one fsync serves every caller that arrived while it ran.

``GroupSync(fn)`` wraps a blocking function that makes "everything so far" durable
(fsync of chunk files, a synced RocksDB WAL flush). ``await group.sync()`` returns once a
call of ``fn`` that *started after* this request has finished, so the caller's earlier
writes are covered. While one call runs on a worker thread, new requests queue up and the
next single call serves all of them: a thousand files closed with fsync at once cost a few
syncs, not a thousand.

An exception from ``fn`` is raised to every request it was serving (the next request starts
a fresh attempt). Runs on the trio thread; ``fn`` runs on a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable

import trio


class GroupSync:
    def __init__(self, fn: Callable[[], None]) -> None:
        self._fn = fn
        self._requested = 0  # number of the latest request
        self._done = 0  # every request numbered <= _done is durable
        self._running = False
        self._round = trio.Event()
        self._error: BaseException | None = None
        self._error_upto = 0
        self.calls = 0  # how many times fn ran (tests and metrics)

    async def sync(self) -> None:
        self._requested += 1
        mine = self._requested
        while self._done < mine:
            if self._error is not None and self._error_upto >= mine:
                raise self._error
            if self._running:
                await self._round.wait()
                continue
            self._running = True
            upto = self._requested
            self._error = None
            try:
                self.calls += 1
                await trio.to_thread.run_sync(self._fn)
            except Exception as e:
                self._error, self._error_upto = e, upto
                raise
            else:
                self._done = upto
            finally:
                self._running = False
                self._round.set()
                self._round = trio.Event()
