"""Change hints: "namespace N is at seq S", fanned out to waiting hint sockets and polls.

``Notifier`` is the seam: ``publish(ns, seq)`` after a commit, ``subscribe(namespaces)`` for
a listener. ``LocalNotifier`` fans out inside this process. ``PostgresNotifier`` adds
PostgreSQL LISTEN/NOTIFY so several server processes on one database hint each other: it
publishes with ``pg_notify`` and feeds what it hears into the local fan-out.

With several worker processes on SQLite (``workers = N``), ``share_with`` makes the local
fan-out also send every published hint to the other workers over ``peers.Peers`` and deliver
theirs here.

Subscriptions coalesce: a slow listener holds at most one pending seq per namespace (the
newest), so memory stays bounded however many commits arrive. Hints are advisory; a lost
one costs a client one slow-poll interval, never data.

Concurrency: everything runs on the event loop thread; ``publish`` does not await, so the
subscriber index is never seen half-updated.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from .peers import Peers

log = logging.getLogger("cairn.server.notify")

CHANNEL = "cairn_hints"


class Subscription:
    """One listener's view: pending ``{ns: seq}`` hints for the namespaces it watches."""

    def __init__(self, notifier: LocalNotifier, namespaces: Iterable[int]) -> None:
        self._notifier = notifier
        self.namespaces = frozenset(namespaces)
        self._pending: dict[int, int] = {}
        self._high: dict[int, int] = {}
        self._event = asyncio.Event()
        self.closed = False

    def _offer(self, ns: int, seq: int) -> None:
        # _high drops repeats and stale hints (a NOTIFY echo, out-of-order delivery).
        if seq > self._high.get(ns, -1):
            self._high[ns] = self._pending[ns] = seq
            self._event.set()

    def _close(self) -> None:
        self.closed = True
        self._event.set()

    async def wait(self, seconds: float | None) -> dict[int, int]:
        """Pending hints, waiting up to ``seconds`` for one; ``{}`` on timeout or close."""
        if not self._pending and not self.closed:
            try:
                async with asyncio.timeout(seconds):
                    await self._event.wait()
            except TimeoutError:
                return {}
        out, self._pending = self._pending, {}
        self._event.clear()
        return out

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self._notifier._unsubscribe(self)


class LocalNotifier:
    """In-process fan-out of hints."""

    def __init__(self) -> None:
        self._by_ns: dict[int, set[Subscription]] = {}
        self._closed = False
        self._peers: Peers | None = None

    def share_with(self, peers: Peers) -> None:
        """Also send published hints to the other workers, and deliver the ones they send."""
        self._peers = peers
        peers.on("hint", self._heard_peer)

    def _heard_peer(self, payload: str) -> None:
        ns_text, _, seq_text = payload.partition(":")
        if ns_text.isdigit() and seq_text.isdigit():
            self.deliver(int(ns_text), int(seq_text))
        else:
            log.warning("ignoring malformed hint payload %r", payload[:80])

    async def start(self) -> None:
        """Nothing to connect to in-process."""

    def subscribe(self, namespaces: Iterable[int]) -> Subscription:
        sub = Subscription(self, namespaces)
        if self._closed:
            sub._close()
        for ns in sub.namespaces:
            self._by_ns.setdefault(ns, set()).add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        for ns in sub.namespaces:
            subs = self._by_ns.get(ns)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_ns[ns]

    def deliver(self, ns: int, seq: int) -> None:
        """Hand a hint to this process's subscribers of ``ns``."""
        for sub in self._by_ns.get(ns, ()):
            sub._offer(ns, seq)

    async def publish(self, ns: int, seq: int) -> None:
        """Announce that ``ns`` reached ``seq`` (call after the commit is durable)."""
        self.deliver(ns, seq)
        if self._peers is not None:
            self._peers.send("hint", f"{ns}:{seq}")

    async def close(self) -> None:
        """Wake every waiter with an empty answer; later subscriptions start closed."""
        self._closed = True
        for subs in list(self._by_ns.values()):
            for sub in list(subs):
                sub._close()


class PostgresNotifier(LocalNotifier):
    """LISTEN/NOTIFY across server processes sharing one PostgreSQL database.

    One dedicated asyncpg connection both listens and notifies; a lock serializes the
    NOTIFYs (an asyncpg connection runs one query at a time). A broken connection never
    fails the commit that is publishing: the hint is dropped with a warning (clients still
    poll slowly) and the next publish reconnects.
    """

    def __init__(self, database_url: str) -> None:
        super().__init__()
        # asyncpg wants a plain postgresql:// DSN, not SQLAlchemy's dialect-qualified URL.
        self._dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self._conn: Any = None
        self._lock = asyncio.Lock()

    async def _connect(self) -> None:
        import asyncpg  # only needed on this path

        conn = await asyncpg.connect(self._dsn, timeout=10)
        await conn.add_listener(CHANNEL, self._heard)
        self._conn = conn

    async def start(self) -> None:
        await self._connect()

    def _heard(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        ns_text, _, seq_text = payload.partition(":")
        if ns_text.isdigit() and seq_text.isdigit():
            self.deliver(int(ns_text), int(seq_text))
        else:
            log.warning("ignoring malformed hint payload %r", payload[:80])

    async def publish(self, ns: int, seq: int) -> None:
        # Our own NOTIFY comes back through _heard as well; delivering locally first keeps
        # this process's listeners fast, and subscriptions drop the duplicate (same seq).
        self.deliver(ns, seq)
        if self._closed:
            return
        async with self._lock:
            try:
                if self._conn is None or self._conn.is_closed():
                    await self._connect()
                await self._conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"{ns}:{seq}")
            except Exception as exc:  # asyncpg raises many unrelated types; hints are advisory
                log.warning("hint for ns %s not sent to other processes: %s", ns, exc)
                await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def close(self) -> None:
        await super().close()
        async with self._lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await conn.close(timeout=5)


def make_notifier(backend: str, database_url: str) -> LocalNotifier:
    if backend == "postgres":
        return PostgresNotifier(database_url)
    return LocalNotifier()
