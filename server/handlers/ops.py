"""Operations endpoints: health, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio
import json
from functools import cache
from importlib import resources
from typing import Any

from aiohttp import web

from cairn.core.errors import CairnError

from ..appkeys import BLOBS, META
from ..errors import error_response
from ..metrics import metrics_handler

READY_TIMEOUT = 5.0
_PROBE_ID = bytes(32)  # never a real chunk id's blob; any answer proves the store responds


@cache
def openapi_document() -> dict[str, Any]:
    text = resources.files("cairn.server").joinpath("openapi.json").read_text()
    return json.loads(text)  # type: ignore[no-any-return]


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await request.app[META].ping()
            await request.app[BLOBS].has(_PROBE_ID)
    except (CairnError, OSError, TimeoutError) as exc:
        return error_response(503, "unavailable", f"not ready: {type(exc).__name__}: {exc}")
    return web.json_response({"status": "ready"})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


ROUTES = [
    web.get("/healthz", healthz, name="healthz"),
    web.get("/readyz", readyz, name="readyz"),
    web.get("/metrics", metrics_handler, name="metrics"),
    web.get("/api/v1/openapi.json", openapi, name="openapi"),
]
PUBLIC = {"healthz", "readyz", "metrics", "openapi", "login"}
