"""Bounds on what a request may carry, and rate limits.

aiohttp's ``client_max_size`` only guards ``request.read()``/``post()``; a handler that reads
``request.content`` must bound it itself, which ``read_body`` does while the body streams
(the declared Content-Length is checked first, so an honest oversized upload is refused
before any byte is read).

The limiters are in-process and approximate; they guard against password guessing and
runaway clients, not against a distributed attack. The worker processes of one server
(``workers = N``) share them through ``peers.Peers`` (``share_with``): each failure, success
and API request counted by one worker is sent to the others, which count it too, so a client
spreading its connections over the workers gets the configured budget, not N times it. The
processes behind one PostgreSQL database (several servers) do not share them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict, deque
from typing import Any

from aiohttp import web

from cairn.core.errors import InvalidArgument, RateLimited, TooLarge

from .peers import Peers

_READ_SIZE = 256 * 1024


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole request body, or ``TooLarge`` as soon as it is known to exceed ``limit``."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise TooLarge(f"request body of {declared} bytes exceeds the limit of {limit}")
    parts: list[bytes] = []
    total = 0
    async for part in request.content.iter_chunked(_READ_SIZE):
        total += len(part)
        if total > limit:
            raise TooLarge(f"request body exceeds the limit of {limit} bytes")
        parts.append(part)
    return b"".join(parts)


async def read_json_object(request: web.Request, limit: int) -> dict[str, Any]:
    """The body parsed as a JSON object; ``InvalidArgument`` for anything else."""
    raw = await read_body(request, limit)
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise InvalidArgument("request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise InvalidArgument("request body must be a JSON object")
    return value


def int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    """An integer query parameter in ``lo..hi``; ``InvalidArgument`` naming it otherwise."""
    raw = request.query.get(name, "")
    if raw == "":
        return default
    if not raw.isdigit() or len(raw) > 12:
        raise InvalidArgument(f"query parameter {name!r} must be an integer")
    value = int(raw)
    if not lo <= value <= hi:
        raise InvalidArgument(f"query parameter {name!r} must be between {lo} and {hi}")
    return value


class _BoundedMap(OrderedDict[str, Any]):
    """An LRU dict that forgets its oldest keys beyond ``max_keys`` (bounded memory)."""

    def __init__(self, max_keys: int) -> None:
        super().__init__()
        self.max_keys = max_keys

    def touch(self, key: str, factory: Any) -> Any:
        value = self.get(key)
        if value is None:
            value = self[key] = factory()
            if len(self) > self.max_keys:
                self.popitem(last=False)
        else:
            self.move_to_end(key)
        return value


class FailureLimiter:
    """At most ``max_failures`` failures per key within a sliding ``window`` (seconds).

    ``check`` raises ``RateLimited`` (with ``retry_after``) while the key is over its budget;
    ``fail`` records a failure; ``clear`` forgets a key (after a success).
    """

    def __init__(self, max_failures: int, window: float, max_keys: int = 100_000) -> None:
        self.max_failures = max_failures
        self.window = window
        self._fails = _BoundedMap(max_keys)
        self._peers: Peers | None = None

    def share_with(self, peers: Peers) -> None:
        """Count the failures and clears of the other workers too, and send them ours."""
        self._peers = peers
        peers.on("login-fail", self._record)
        peers.on("login-clear", self._forget)

    def _recent(self, key: str, now: float) -> deque[float]:
        q: deque[float] = self._fails.touch(key, lambda: deque(maxlen=self.max_failures))
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def check(self, key: str) -> None:
        if self.max_failures <= 0:
            return
        now = time.monotonic()
        q = self._recent(key, now)
        if len(q) >= self.max_failures:
            err = RateLimited("too many failed attempts; try again later")
            err.retry_after = q[0] + self.window - now
            raise err

    def fail(self, key: str) -> None:
        if self.max_failures > 0:
            self._record(key)
            if self._peers is not None:
                self._peers.send("login-fail", key)

    def clear(self, key: str) -> None:
        self._forget(key)
        if self._peers is not None:
            self._peers.send("login-clear", key)

    def _record(self, key: str) -> None:
        self._recent(key, time.monotonic()).append(time.monotonic())

    def _forget(self, key: str) -> None:
        self._fails.pop(key, None)


class TokenBucket:
    """Per-key token buckets: ``rate`` requests per second with bursts up to ``burst``.

    ``rate <= 0`` disables the limit.
    """

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._buckets = _BoundedMap(max_keys)
        self._peers: Peers | None = None

    def share_with(self, peers: Peers) -> None:
        """Charge the requests the other workers let through too, and send them ours."""
        if self.rate > 0:  # unlimited: nothing to share (and no message per request)
            self._peers = peers
            peers.on("api-take", self._charge)

    def _charge(self, key: str) -> None:
        """A request of ``key`` let through by another worker: take its token here as well
        (the balance may go below zero, down to ``-burst``, so bursts spread over the
        workers still add up to the one budget)."""
        now = time.monotonic()
        bucket: list[float] = self._buckets.touch(key, lambda: [self.burst, now])
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[0], bucket[1] = max(-self.burst, tokens - 1.0), now

    def take(self, key: str) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        bucket: list[float] = self._buckets.touch(key, lambda: [self.burst, now])
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            err = RateLimited("too many requests; slow down")
            err.retry_after = (1.0 - tokens) / self.rate
            raise err
        bucket[0] = tokens - 1.0
        if self._peers is not None:
            self._peers.send("api-take", key)


class ByteBudget:
    """At most ``capacity`` bytes held at once by concurrent holders, granted in FIFO order.

    ``acquire(n)`` waits until ``n`` bytes (capped at ``capacity``, so one oversized request
    still runs, alone) are free and returns the amount held, which the caller passes to
    ``release``. Bounding chunk uploads by bytes rather than by a count lets many small
    chunks proceed at once while a few 16 MiB ones still cannot exhaust memory. A waiter
    cancelled after its grant gives the bytes back itself.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.free = capacity
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def acquire(self, n: int) -> int:
        n = max(1, min(n, self.capacity))
        if not self._waiters and self.free >= n:
            self.free -= n
            return n
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, fut)
        self._waiters.append(entry)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(n)  # granted just as we were cancelled
            else:
                self._waiters.remove(entry)
                self._wake()  # we may have been the head blocking smaller requests
            raise
        return n

    def release(self, n: int) -> None:
        self.free += n
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.free >= self._waiters[0][0]:
            n, fut = self._waiters.popleft()
            if fut.done():  # cancelled, not yet removed by its task
                continue
            self.free -= n
            fut.set_result(None)
