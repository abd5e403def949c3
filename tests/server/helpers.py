"""Shared helpers of the server HTTP tier: logins, node ids, chunk frames, commits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from cairn.core import frame, ids
from tests.support.server import ServerProcess, api_client


@dataclass
class Session:
    """A logged-in device: its token, home namespace and an HTTP client."""

    srv: ServerProcess
    token: str
    ns: int
    root: str
    dedupe_key: bytes
    device_id: int
    http: Any

    def upload(self, data: bytes) -> str:
        cid = ids.chunk_id(self.dedupe_key, data)
        r = self.http.put(f"/api/v1/chunks/{cid.hex()}", content=frame.encode(cid, data))
        assert r.status_code in (200, 201), r.text
        return cid.hex()

    def commit(self, *ops: dict[str, Any], ns: int | None = None) -> list[dict[str, Any]]:
        r = self.http.post(f"/api/v1/ns/{ns or self.ns}/commit", json={"ops": list(ops)})
        assert r.status_code == 200, r.text
        return r.json()["results"]  # type: ignore[no-any-return]


def login(srv: ServerProcess, user: str, password: str, device: str = "dev") -> Session:
    s = srv.login(user, password, device)
    return Session(
        srv,
        s["token"],
        s["home"]["ns"],
        s["home"]["root"],
        bytes.fromhex(s["dedupe_key"]),
        s["device_id"],
        api_client(srv, s["token"]),
    )


def new_id() -> str:
    return uuid.uuid4().hex


_op_counter = iter(range(1, 1 << 62))


def op_id() -> str:
    return f"op-{uuid.uuid4().hex[:8]}-{next(_op_counter)}"


def mkdir(parent: str, name: str, node: str | None = None) -> dict[str, Any]:
    return {"op": "mkdir", "op_id": op_id(), "node": node or new_id(), "parent": parent,
            "name": name, "mode": 0o755, "mtime_ns": 1_763_700_000_000_000_000}  # fmt: skip


def create(parent: str, name: str, blocklist: list[Any], node: str | None = None) -> dict[str, Any]:
    return {"op": "create", "op_id": op_id(), "node": node or new_id(), "parent": parent,
            "name": name, "mode": 0o644, "mtime_ns": 1_763_700_000_000_000_000,
            "blocklist": blocklist}  # fmt: skip


def update(node: str, base_rev: int, blocklist: list[Any]) -> dict[str, Any]:
    return {"op": "update", "op_id": op_id(), "node": node, "base_rev": base_rev,
            "blocklist": blocklist, "mtime_ns": 1_763_700_000_000_000_001}  # fmt: skip
