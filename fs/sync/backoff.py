"""Exponential backoff with full jitter, and the retry loop the sync agent uses for calls
to the server.

Only ``Unavailable`` and ``RateLimited`` are retried (the server may come back); every other
error is a real answer and goes straight to the caller.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from cairn.core.errors import RateLimited, Unavailable

log = logging.getLogger("cairn.fs.sync")
T = TypeVar("T")


class Backoff:
    """Delays ``base * 2**n`` capped at ``cap``, each drawn uniformly from [delay/2, delay]
    so that many devices coming back together do not retry in lockstep."""

    def __init__(self, base: float = 0.25, cap: float = 5.0) -> None:
        self.base, self.cap = base, cap
        self.failures = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * (2 ** min(self.failures, 30)))
        self.failures += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.failures = 0


async def retrying(
    call: Callable[[], Awaitable[T]],
    *,
    attempts: int = 5,
    backoff: Backoff | None = None,
    what: str = "request",
) -> T:
    """Run ``call`` up to ``attempts`` times while it raises a retryable error; the last
    error propagates. Honours ``Retry-After`` of a 429."""
    b = backoff or Backoff()
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except (Unavailable, RateLimited) as e:
            if attempt == attempts:
                raise
            delay = b.next_delay()
            if isinstance(e, RateLimited):
                delay = max(delay, float(getattr(e, "retry_after", 1.0)))
            log.debug("%s failed (%s); retry %d in %.2f s", what, e, attempt, delay)
            await trio.sleep(delay)
    raise AssertionError("unreachable")
