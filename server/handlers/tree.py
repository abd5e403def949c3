"""Reading the tree and the changes feed: thin wrappers over the MetaStore's queries.

The MetaStore authorizes every call against the namespace (a namespace the caller may not
see is ``NotFound``) and returns JSON-ready dicts in the shapes of docs/api.md.
"""

from __future__ import annotations

from aiohttp import web

from cairn.core.errors import InvalidArgument

from ..appkeys import CONFIG, META, node_param, ns_param
from ..auth import caller
from ..limits import int_param

DEFAULT_PAGE = 500
MAX_CURSOR = 64 * 1024


def _cursor(request: web.Request) -> str:
    cursor = request.query.get("cursor", "")
    if len(cursor) > MAX_CURSOR:
        raise InvalidArgument("cursor is too long")
    return cursor


def _limit(request: web.Request) -> int:
    hi = request.app[CONFIG].limits.page_limit
    return int_param(request, "limit", min(DEFAULT_PAGE, hi), 1, hi)


async def get_node(request: web.Request) -> web.Response:
    meta = request.app[META]
    body = await meta.get_node_json(caller(request).user_id, ns_param(request), node_param(request))
    return web.Response(body=body, content_type="application/json", charset="utf-8")


async def children(request: web.Request) -> web.Response:
    meta = request.app[META]
    body = await meta.list_children_json(
        caller(request).user_id,
        ns_param(request),
        node_param(request),
        _cursor(request),
        _limit(request),
    )
    return web.Response(body=body, content_type="application/json", charset="utf-8")


async def resolve(request: web.Request) -> web.Response:
    path = request.query.get("path")
    if path is None or not path.startswith("/") or len(path) > 64 * 1024:
        raise InvalidArgument("path must be an absolute path starting with '/'")
    meta = request.app[META]
    return web.json_response(await meta.resolve(caller(request).user_id, ns_param(request), path))


async def revisions(request: web.Request) -> web.Response:
    meta = request.app[META]
    result = await meta.revisions(caller(request).user_id, ns_param(request), node_param(request))
    return web.json_response(result)


async def trash(request: web.Request) -> web.Response:
    meta = request.app[META]
    return web.json_response(await meta.trash(caller(request).user_id, ns_param(request)))


async def changes(request: web.Request) -> web.Response:
    meta = request.app[META]
    body = await meta.changes_json(caller(request).user_id, _cursor(request), _limit(request))
    return web.Response(body=body, content_type="application/json", charset="utf-8")


ROUTES = [
    web.get("/api/v1/ns/{ns}/nodes/{node}", get_node, name="node"),
    web.get("/api/v1/ns/{ns}/nodes/{node}/children", children, name="children"),
    web.get("/api/v1/ns/{ns}/resolve", resolve, name="resolve"),
    web.get("/api/v1/ns/{ns}/nodes/{node}/revisions", revisions, name="revisions"),
    web.get("/api/v1/ns/{ns}/trash", trash, name="trash"),
    web.get("/api/v1/changes", changes, name="changes"),
]
