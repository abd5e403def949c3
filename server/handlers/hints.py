"""Change hints: a WebSocket that pushes ``{"ns", "seq"}``, and a long-poll fallback.

Both subscribe to the notifier *before* reading the current seqs, so a commit landing in
between is seen either in the read or as a hint, never lost. Waits are bounded (the poll by
its ``timeout``, the socket by the server's heartbeat) and end at shutdown, when the notifier
closes every subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from aiohttp import WSCloseCode, web

from cairn.core.errors import InvalidArgument

from .. import metrics
from ..appkeys import CONFIG, HINT_SOCKETS, META, NOTIFIER
from ..auth import caller
from ..limits import int_param

log = logging.getLogger("cairn.server.hints")

DEFAULT_POLL = 30


async def _pump(ws: web.WebSocketResponse, sub: object, initial: dict[int, int]) -> None:
    """Send hints until the subscription closes or the socket breaks."""
    hints = initial
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        while True:
            for ns, seq in sorted(hints.items()):
                await ws.send_str(json.dumps({"ns": ns, "seq": seq}))
            hints = await sub.wait(None)  # type: ignore[attr-defined]
            if not hints and sub.closed:  # type: ignore[attr-defined]
                break
    await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")


async def hints_ws(request: web.Request) -> web.WebSocketResponse:
    app = request.app
    me = caller(request)
    ws = web.WebSocketResponse(heartbeat=app[CONFIG].hint_ping, max_msg_size=4096)
    if not ws.can_prepare(request).ok:
        raise InvalidArgument("this endpoint needs a WebSocket upgrade")
    meta = app[META]
    namespaces = [i.ns for i in await meta.namespaces(me.user_id)]
    await ws.prepare(request)
    sockets = app[HINT_SOCKETS]
    sockets.add(ws)
    metrics.HINT_SOCKETS.inc()
    try:
        with app[NOTIFIER].subscribe(namespaces) as sub:
            current = await meta.seqs(me.user_id)
            pump = asyncio.create_task(_pump(ws, sub, dict(current)))
            try:
                async for _msg in ws:  # clients send nothing useful; this drains control frames
                    pass
            finally:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
    finally:
        sockets.discard(ws)
        metrics.HINT_SOCKETS.dec()
    return ws


async def hints_poll(request: web.Request) -> web.Response:
    app = request.app
    me = caller(request)
    cfg = app[CONFIG]
    timeout = int_param(
        request,
        "timeout",
        min(DEFAULT_POLL, cfg.limits.poll_timeout),
        0,
        cfg.limits.poll_timeout,
    )
    cursor = request.query.get("cursor", "")
    meta = app[META]
    base = meta.cursor_seqs(cursor) if cursor else {}
    namespaces = [i.ns for i in await meta.namespaces(me.user_id)]
    with app[NOTIFIER].subscribe(namespaces) as sub:
        current = dict(await meta.seqs(me.user_id))
        changed = any(seq > base.get(ns, 0) for ns, seq in current.items())
        if not changed and timeout > 0:
            metrics.HINT_POLLS.inc()
            try:
                hinted = await sub.wait(timeout)
            finally:
                metrics.HINT_POLLS.dec()
            for ns, seq in hinted.items():
                current[ns] = max(seq, current.get(ns, 0))
            changed = any(seq > base.get(ns, 0) for ns, seq in current.items())
    return web.json_response({"changed": changed, "ns": {str(k): v for k, v in current.items()}})


async def close_hint_sockets(app: web.Application) -> None:
    """on_shutdown: wake every poll and close every hint socket."""
    await app[NOTIFIER].close()
    sockets = app[HINT_SOCKETS]
    for ws in list(sockets):
        with contextlib.suppress(Exception):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")


ROUTES = [
    web.get("/api/v1/hints/ws", hints_ws, name="hints_ws"),
    web.get("/api/v1/hints/poll", hints_poll, name="hints_poll"),
]
