"""Prometheus metrics of the server (default registry, exposed at ``/metrics``).

Defined once at import: the default registry refuses a second registration of a name, and
several apps in one process (in-process tests) share these collectors.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

REQUESTS = Counter(
    "cairn_http_requests_total", "HTTP requests by route and status", ["method", "route", "status"]
)
LATENCY = Histogram(
    "cairn_http_request_duration_seconds",
    "HTTP request latency by route",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
COMMITS = Counter("cairn_commits_total", "Commit batches accepted")
COMMIT_OPS = Counter("cairn_commit_ops_total", "Committed operations by result", ["status"])
CONFLICTS = Counter("cairn_conflicts_total", "Operations refused as conflicts", ["reason"])
CHUNK_BYTES_IN = Counter("cairn_chunk_bytes_in_total", "Frame bytes received in chunk uploads")
CHUNK_BYTES_OUT = Counter("cairn_chunk_bytes_out_total", "Frame bytes served by chunk downloads")
CHUNKS_STORED = Counter("cairn_chunks_stored_total", "Chunks written to the blob store")
DEDUPE_HITS = Counter("cairn_dedupe_hits_total", "Uploaded chunks already stored (not rewritten)")
HINT_SOCKETS = Gauge("cairn_hint_sockets", "Connected hint WebSockets")
HINT_POLLS = Gauge("cairn_hint_polls", "Hint long-polls waiting")
LOGIN_FAILURES = Counter("cairn_login_failures_total", "Failed login attempts")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def route_label(request: web.Request) -> str:
    """The route template (``/api/v1/ns/{ns}/nodes/{node}``), never the raw path, so the
    label set stays bounded whatever clients send."""
    info = request.match_info
    if info.http_exception is not None:
        return "unmatched"
    return info.route.resource.canonical if info.route.resource is not None else "unmatched"


# The labelled children by (method, route, status) and by route: ``labels()`` takes a lock
# and builds its key on every call, a measurable share of a small request's CPU. A client
# can invent methods, so the map stops growing at ``_MAX_CACHED`` (beyond: plain labels()).
_MAX_CACHED = 1000
_REQUEST_CHILDREN: dict[tuple[str, str, int], Any] = {}
_LATENCY_CHILDREN: dict[str, Any] = {}


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = time.perf_counter()
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        route = route_label(request)
        key = (request.method, route, status)
        counter = _REQUEST_CHILDREN.get(key)
        if counter is None:
            counter = REQUESTS.labels(request.method, route, str(status))
            if len(_REQUEST_CHILDREN) < _MAX_CACHED:
                _REQUEST_CHILDREN[key] = counter
        counter.inc()
        latency = _LATENCY_CHILDREN.get(route)
        if latency is None:
            latency = _LATENCY_CHILDREN[route] = LATENCY.labels(route)
        latency.observe(time.perf_counter() - start)


async def metrics_handler(request: web.Request) -> web.Response:
    resp = web.Response(body=generate_latest())
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    resp.charset = "utf-8"
    return resp
