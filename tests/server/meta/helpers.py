"""Test helpers: a user with a device, op builders, and chunk uploads."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import Any

from cairn.core.wire import parse_ops
from cairn.server.meta import Device, MetaStore, User

_ids = itertools.count(1)


def nid() -> str:
    """A fresh node id (as a device would pick: 128 random bits)."""
    return os.urandom(16).hex()


def cid() -> bytes:
    return os.urandom(32)


@dataclass
class World:
    store: MetaStore
    user: User
    device: Device

    @classmethod
    async def new(cls, store: MetaStore, name: str, quota: int | None = None) -> World:
        user = await store.add_user(name, "argon2-hash-of-" + name, quota)
        device = await store.add_device(user.id, f"{name}-laptop", os.urandom(32))
        return cls(store, user, device)

    @property
    def ns(self) -> int:
        return self.user.home_ns

    @property
    def root(self) -> str:
        return self.user.home_root

    async def commit(
        self, *ops: dict[str, Any], device: Device | None = None
    ) -> list[dict[str, Any]]:
        for op in ops:
            op.setdefault("op_id", f"op-{next(_ids)}")
        dev = device or self.device
        return await self.store.commit(self.user.id, dev.id, self.ns, parse_ops({"ops": list(ops)}))

    async def commit1(self, op: dict[str, Any], **kw: Any) -> dict[str, Any]:
        (result,) = await self.commit(op, **kw)
        return result

    async def applied(self, op: dict[str, Any]) -> dict[str, Any]:
        result = await self.commit1(op)
        assert result["status"] == "applied", result
        return result["node"]

    async def upload(self, size: int = 100) -> bytes:
        c = cid()
        await self.store.record_upload(self.user.id, c, size, size + 30)
        return c

    async def node(self, node_id: str) -> dict[str, Any]:
        return await self.store.get_node(self.user.id, self.ns, node_id)

    async def mkdir(self, parent: str | None = None, name: str = "d", **kw: Any) -> dict[str, Any]:
        return await self.applied(mkdir(parent or self.root, name, **kw))

    async def mkfile(
        self,
        parent: str | None = None,
        name: str = "f",
        chunks: list[tuple[bytes | None, int]] | None = None,
    ) -> dict[str, Any]:
        if chunks is None:
            chunks = [(await self.upload(), 100)]
        return await self.applied(create(parent or self.root, name, chunks))


def bl(chunks: list[tuple[bytes | None, int]]) -> list[list[Any]]:
    return [[None if c is None else c.hex(), n] for c, n in chunks]


def mkdir(
    parent: str, name: str, node: str | None = None, mode: int = 0o755, **kw: Any
) -> dict[str, Any]:
    return {"op": "mkdir", "node": node or nid(), "parent": parent, "name": name, "mode": mode,
            "mtime_ns": 1_000, **kw}  # fmt: skip


def create(
    parent: str,
    name: str,
    chunks: list[tuple[bytes | None, int]],
    node: str | None = None,
    **kw: Any,
) -> dict[str, Any]:
    return {"op": "create", "node": node or nid(), "parent": parent, "name": name, "mode": 0o644,
            "mtime_ns": 2_000, "blocklist": bl(chunks), **kw}  # fmt: skip


def update(node: str, base_rev: int, chunks: list[tuple[bytes | None, int]]) -> dict[str, Any]:
    return {"op": "update", "node": node, "base_rev": base_rev, "blocklist": bl(chunks),
            "mtime_ns": 3_000}  # fmt: skip


def rename(
    node: str, parent: str, name: str, new_parent: str, new_name: str, replace: bool = False
) -> dict[str, Any]:
    return {"op": "rename", "node": node, "parent": parent, "name": name,
            "new_parent": new_parent, "new_name": new_name, "replace": replace}  # fmt: skip


def unlink(node: str, parent: str, name: str, **kw: Any) -> dict[str, Any]:
    return {"op": "unlink", "node": node, "parent": parent, "name": name, **kw}


def link(node: str, new_parent: str, new_name: str) -> dict[str, Any]:
    return {"op": "link", "node": node, "new_parent": new_parent, "new_name": new_name}
