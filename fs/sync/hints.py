"""Change hints: what wakes the puller as soon as the server's feed moves.

``HintListener.run`` (a task of the sync agent) keeps, until cancelled:

- a WebSocket ``GET /api/v1/hints/ws`` (bearer token in ``Authorization``); every message
  ``{"ns", "seq"}`` whose seq is newer than the last one seen for that namespace calls
  ``wake()`` (the agent's ``wake_pull``). The first message after each (re)connect always
  wakes: changes made while the socket was down are caught up at once;
- when the socket cannot be opened or drops, ONE long-poll ``GET /api/v1/hints/poll`` with
  the store's cursor (it answers as soon as the feed is past it) before the next WebSocket
  attempt, with exponential backoff and jitter between failed attempts
  (``Backoff(BASE, CAP)``), so a dead server is not hammered and a live one is used at once.

``kick()`` (the agent calls it when a pull or push reaches the server after a failure) ends
the current wait at once and resets the backoff: the server is back, so the socket is
reopened now rather than after up to ``CAP`` seconds, and changes other devices commit right
after the reconnect are not left to the safety pull.

``on_online()`` is called when the socket opens and ``on_offline(err)`` when the fallback
poll cannot reach the server: the agent's online flag follows the socket, so a cut is seen
at once even with no pull or push due. ``connected`` is True while the socket is open (``cairn status``). Hints are advisory: the
agent still pulls after its own pushes and on a slow safety timer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import trio
import trio_websocket

from cairn.core.errors import CairnError, Unavailable

from ..client import Client
from .backoff import Backoff

log = logging.getLogger("cairn.fs.sync")

BASE, CAP = 0.25, 10.0  # reconnect backoff (seconds)
POLL_S = 25  # long-poll window while the socket is down
CONNECT_TIMEOUT = 10.0
MAX_MESSAGE = 64 * 1024


def ws_url(base_url: str) -> str:
    if base_url.startswith("https://"):
        return "wss://" + base_url[len("https://") :] + "/api/v1/hints/ws"
    if base_url.startswith("http://"):
        return "ws://" + base_url[len("http://") :] + "/api/v1/hints/ws"
    raise ValueError(f"server URL {base_url!r} is not http(s)")


class HintListener:
    def __init__(
        self,
        client: Client,
        cursor: Callable[[], str | None],
        wake: Callable[[], None],
        *,
        on_online: Callable[[], None] | None = None,
        on_offline: Callable[[Exception], None] | None = None,
    ) -> None:
        self._client = client
        self._cursor = cursor
        self._wake = wake
        self._on_online = on_online or (lambda: None)
        self._on_offline = on_offline or (lambda e: None)
        self.connected = False
        self.hints = 0
        self.mode = "starting"  # "websocket" | "long-poll" | "starting"
        self._seen: dict[int, int] = {}
        self._waiting: trio.CancelScope | None = None  # the fallback wait kick() ends
        self._kicked = False

    def newest(self) -> dict[int, int]:
        """The newest seq hinted per namespace so far (a copy)."""
        return dict(self._seen)

    def kick(self) -> None:
        """The server answered someone else: stop waiting and reconnect now."""
        self._kicked = True
        if self._waiting is not None:
            self._waiting.cancel()

    def _on_message(self, text: str | bytes, first: bool) -> None:
        try:
            msg = json.loads(text)
            ns, seq = int(msg["ns"]), int(msg["seq"])
        except (ValueError, KeyError, TypeError):
            log.error("ignoring a malformed hint from the server: %.80r", text)
            return
        self.hints += 1
        if first or seq > self._seen.get(ns, -1):
            self._seen[ns] = max(seq, self._seen.get(ns, -1))
            self._wake()

    async def _websocket(self) -> None:
        """Listen until the socket closes. Raises on failure to connect."""
        headers = []
        if self._client.token:
            headers.append((b"Authorization", f"Bearer {self._client.token}".encode()))
        async with trio_websocket.open_websocket_url(
            ws_url(self._client.base_url),
            extra_headers=headers,
            connect_timeout=CONNECT_TIMEOUT,
            disconnect_timeout=2,
            max_message_size=MAX_MESSAGE,
        ) as ws:
            self.connected, self.mode = True, "websocket"
            self._waiting = None  # open: a kick() has nothing to cut short any more
            log.info("listening for change hints")
            self._on_online()
            first = True
            try:
                while True:
                    self._on_message(await ws.get_message(), first)
                    first = False
            finally:
                self.connected = False

    async def _long_poll(self) -> None:
        self.mode = "long-poll"
        answer = await self._client.hints_poll(self._cursor(), POLL_S)
        if answer.get("changed"):
            self._wake()

    async def run(self) -> None:
        backoff = Backoff(BASE, CAP)
        for _ in range(10**9):  # bounded only by cancellation, in practice
            self._kicked = False
            try:
                # kick() also ends a connect attempt still in progress: one started while
                # the network was cut can hang until CONNECT_TIMEOUT.
                with trio.CancelScope() as self._waiting:
                    await self._websocket()
                    backoff.reset()
                    continue  # the server closed it (a restart): reconnect at once
            except (trio_websocket.HandshakeError, trio_websocket.ConnectionClosed,
                    OSError, trio.TooSlowError, ValueError) as e:  # fmt: skip
                if self.mode != "long-poll":
                    log.info("change hints socket unavailable (%s); falling back to long-poll", e)
            finally:
                self._waiting = None
            if self._kicked:
                backoff.reset()
                continue
            # Until the next WebSocket attempt, long-poll (a live server answers at once
            # when the feed moves; a dead one fails fast and we just wait).
            with trio.move_on_after(backoff.next_delay()) as self._waiting:
                for _ in range(10**6):
                    try:
                        await self._long_poll()
                    except Unavailable as e:
                        self._on_offline(e)  # the agent's view: the server is unreachable
                        await trio.sleep(CAP)
                    except (CairnError, OSError):
                        await trio.sleep(CAP)  # cancelled by the move_on_after above
                    await trio.sleep(0.1)  # a cursor the puller has not caught up yet
            self._waiting = None
            if self._kicked:
                backoff.reset()

    def status(self) -> dict[str, Any]:
        return {"connected": self.connected, "mode": self.mode, "hints": self.hints}
