"""The OpenAPI document and the router stay in step: no undocumented route, no dead path."""

from __future__ import annotations

import re
from pathlib import Path

from cairn.core.keys import DataKey
from cairn.server.app import create_app
from cairn.server.config import build
from cairn.server.handlers.ops import openapi_document
from cairn.server.keys import ServerKeys


def _routes() -> set[tuple[str, str]]:
    cfg = build(Path("/nonexistent"), {})
    app = create_app(cfg, keys=ServerKeys(DataKey.generate(), bytes(32)))
    out = set()
    for route in app.router.routes():
        if route.method == "HEAD":  # added by aiohttp beside every GET
            continue
        out.add((route.method.lower(), route.resource.canonical))
    return out


def _documented() -> set[tuple[str, str]]:
    doc = openapi_document()
    assert doc["openapi"].startswith("3.")
    return {(m, p) for p, ops in doc["paths"].items() for m in ops}


def test_every_route_is_documented_and_every_path_served() -> None:
    routes, documented = _routes(), _documented()
    assert routes - documented == set(), "routes missing from server/openapi.json"
    assert documented - routes == set(), "documented paths the server does not serve"


def test_every_operation_documents_responses_and_refs_resolve() -> None:
    doc = openapi_document()
    schemas = doc["components"]["schemas"]
    responses = doc["components"]["responses"]
    text = str(doc)
    for ref in set(re.findall(r"#/components/(\w+)/(\w+)", text)):
        assert ref[1] in {"schemas": schemas, "responses": responses}[ref[0]], ref
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op.get("responses"), f"{method} {path} documents no responses"
            assert op.get("operationId"), f"{method} {path} has no operationId"
