"""Datagrams between the worker processes of one ``cairn-server run`` (``workers = N``).

With several workers on one port (SO_REUSEPORT), state that lives in a process must still act
for the whole server: a commit in one worker must wake the hint sockets and polls held by the
others, and a failed login or an API request counted by one worker must count in the limits
of all. The supervisor creates one unix datagram socket pair per worker before it forks
(``mesh``): worker i reads from its pair's receiving end, and every other worker sends to it
through the sending end. Nothing has a name, so no other process can send into the mesh.

A message is ``KIND SPACE PAYLOAD`` in UTF-8, at most ``MAX_MESSAGE`` bytes. Sending never
blocks or fails the caller: a peer whose queue is full or that is gone misses the message
(hints are advisory, limits approximate; both are documented so). Everything runs on the
event loop thread: ``send`` does not await, handlers run from the loop's reader callback.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

log = logging.getLogger("cairn.server.peers")

# Far above any message the server sends (a hint, a limiter key holding a user name of at
# most 255 characters); a longer one is dropped and counted, never raised to the caller.
MAX_MESSAGE = 16 * 1024
_BATCH = 256  # datagrams read per wake-up before yielding to the loop


def mesh(count: int) -> list[tuple[socket.socket, socket.socket]]:
    """``(receiving end, sending end)`` for each of ``count`` workers (made before forking)."""
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(count)]
    for rx, tx in pairs:
        rx.setblocking(False)
        tx.setblocking(False)
    return pairs


def for_worker(pairs: list[tuple[socket.socket, socket.socket]], index: int) -> Peers:
    """Worker ``index``'s channel; closes the ends of ``pairs`` this worker does not use."""
    rx = pairs[index][0]
    tx = [pair[1] for i, pair in enumerate(pairs) if i != index]
    for i, (r, t) in enumerate(pairs):
        if i != index:
            r.close()
        else:
            t.close()
    return Peers(rx, tx)


class Peers:
    """The datagram channel of one worker to the others (see the module docstring)."""

    def __init__(self, rx: socket.socket, tx: list[socket.socket]) -> None:
        self._rx: socket.socket | None = rx
        self._tx = tx
        self._handlers: dict[str, Callable[[str], None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.dropped = 0  # messages a peer could not take (full queue, not running)

    def on(self, kind: str, handler: Callable[[str], None]) -> None:
        """Call ``handler(payload)`` for every message of ``kind`` from a peer."""
        self._handlers[kind] = handler

    def start(self) -> None:
        """Start reading peers' messages on the running loop."""
        assert self._rx is not None, "closed"
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._rx.fileno(), self._readable)

    def send(self, kind: str, payload: str) -> None:
        """Hand ``KIND PAYLOAD`` to every peer, without waiting; undeliverable copies are
        counted in ``dropped``."""
        data = f"{kind} {payload}".encode()
        if len(data) > MAX_MESSAGE:
            log.warning("peer message of %d bytes not sent (kind %s)", len(data), kind)
            self.dropped += len(self._tx)
            return
        for tx in self._tx:
            try:
                tx.send(data)
            except OSError:  # EAGAIN: the peer's queue is full; ECONNREFUSED: it is gone
                self.dropped += 1

    def _readable(self) -> None:
        assert self._rx is not None
        for _ in range(_BATCH):
            try:
                data = self._rx.recv(MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return
            kind, _, payload = data.decode("utf-8", "replace").partition(" ")
            handler = self._handlers.get(kind)
            if handler is None:
                log.warning("ignoring peer message of unknown kind %r", kind[:20])
                continue
            handler(payload)

    def close(self) -> None:
        if self._rx is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._rx.fileno())
            self._rx.close()
            self._rx = None
        for tx in self._tx:
            tx.close()
        self._tx = []
