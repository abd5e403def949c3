"""Plain records the MetaStore hands to its callers (the HTTP layer and the CLI)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    password_hash: str
    quota: int | None
    home_ns: int
    home_root: str
    created_ns: int


@dataclass(frozen=True, slots=True)
class Device:
    id: int
    user_id: int
    user_name: str
    name: str
    revoked: bool
    created_ns: int


@dataclass(frozen=True, slots=True)
class NamespaceInfo:
    ns: int
    root: str
    name: str

    def to_json(self) -> dict[str, object]:
        return {"ns": self.ns, "root": self.root, "name": self.name}
