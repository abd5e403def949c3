"""The commit endpoint: validate a batch, apply it in one transaction, hint listeners."""

from __future__ import annotations

from aiohttp import web

from cairn.core.errors import TooLarge
from cairn.core.wire import parse_ops

from .. import metrics
from ..appkeys import CONFIG, META, NOTIFIER, ns_param
from ..auth import caller
from ..limits import read_json_object


async def commit(request: web.Request) -> web.Response:
    app = request.app
    cfg = app[CONFIG]
    ns = ns_param(request)
    me = caller(request)
    body = await read_json_object(request, cfg.limits.json_body)
    raw_ops = body.get("ops")
    if isinstance(raw_ops, list) and len(raw_ops) > cfg.limits.commit_ops:
        raise TooLarge(f"a commit holds at most {cfg.limits.commit_ops} ops")
    ops = parse_ops(body)
    results = await app[META].commit(me.user_id, me.device_id, ns, ops)
    metrics.COMMITS.inc()
    top = 0
    for r in results:
        status = r.get("status", "error")
        metrics.COMMIT_OPS.labels(status).inc()
        if status == "conflict":
            metrics.CONFLICTS.labels(r.get("reason", "unknown")).inc()
        elif status == "applied":
            top = max(top, int(r.get("seq", 0)))
    if top:
        await app[NOTIFIER].publish(ns, top)
    return web.json_response({"results": results})


ROUTES = [web.post("/api/v1/ns/{ns}/commit", commit, name="commit")]
