"""Records of the drive's local state: the node record and its encoding, outbox entries,
the change report of ``apply_remote``, and the id and cookie helpers.

Node record (RocksDB value of ``n ino``, see ``fs/store.py``): a fixed big-endian header —
version, type, node id (16 bytes), mode, uid, gid, mtime, ctime, size, base_rev, alloc,
link count — then JSON of the variable part (names, xattrs, target). ``stat`` and
``readdir`` decode only the header (``NodeAttrs``), which keeps them cheap.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import threading
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cairn.core import wire


def name_cookie(name: str) -> int:
    """The readdir offset of the entry *after* ``name``: 63 bits of a hash, never 0.

    Dirents are ordered by cookie, so ``readdir(start=cookie)`` resumes exactly after that
    name even when entries were added or removed meanwhile. A collision (2^-63) could make
    readdir skip one entry; it can never loop.
    """
    h = int.from_bytes(
        hashlib.blake2b(name.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    )
    return (h >> 1) or 1


class _RandomPool:
    """16-byte random ids cut from one ``os.urandom`` draw of ``SIZE`` bytes: a create draws
    two ids, and in the mount each ``getrandom`` system call costs several microseconds
    of the request thread. Thread-safe; a forked child starts a pool of its own (else
    parent and child would hand out the same ids)."""

    SIZE = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buf = b""
        self._pos = 0
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._buf, self._pos = b"", 0

    def hex16(self) -> str:
        with self._lock:
            if self._pos + 16 > len(self._buf):
                self._buf, self._pos = os.urandom(self.SIZE), 0
            pos = self._pos
            self._pos = pos + 16
            return self._buf[pos : pos + 16].hex()


_POOL = _RandomPool()


def new_node_id() -> str:
    """32 random hex digits (the wire's node id form)."""
    return _POOL.hex16()


def new_op_id() -> str:
    return _POOL.hex16()


# One compact encoder for every record and outbox entry: ``json.dumps`` with
# ``separators=`` builds a new encoder per call (~4 us of a small record's ~6 us).
_JSON = json.JSONEncoder(separators=(",", ":"))
_json_str = json.encoder.encode_basestring_ascii  # what _JSON does to a str, as a function


def dump_json(obj: object) -> bytes:
    """Compact ASCII JSON of ``obj`` (the form of node record tails and outbox entries)."""
    return _JSON.encode(obj).encode()


def load_json(raw: bytes) -> Any:
    """Inverse of ``dump_json`` (ASCII, so no encoding sniffing as ``json.loads(bytes)``)."""
    return json.loads(raw.decode())


_TYPES = ("file", "dir", "symlink")
_TYPE_CODE = {t: i for i, t in enumerate(_TYPES)}
_NODE_HDR = struct.Struct(">BB16sIIIqqQQQI")
# For hot paths that read the header themselves (readdir): the struct and the type names by
# code. Fields: version, type code, node id, mode, uid, gid, mtime, ctime, size, base_rev,
# alloc, link count.
NODE_HEADER = _NODE_HDR
TYPE_NAMES = _TYPES
_NODE_V1 = 1
BASE_REV_OFFSET = 54  # of the base_rev field in the header (see Txn.set_base_rev_raw)
assert _NODE_HDR.unpack_from(bytes(BASE_REV_OFFSET) + (7).to_bytes(8) + bytes(16))[9] == 7


class NodeAttrs(NamedTuple):
    """What ``stat`` needs of a node; decoded from the record's fixed header only."""

    ino: int
    type: str
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    ctime_ns: int
    size: int
    alloc: int
    nlink: int

    @classmethod
    def decode(cls, ino: int, raw: bytes) -> NodeAttrs:
        _, t, _, mode, uid, gid, mtime, ctime, size, _, alloc, links = _NODE_HDR.unpack_from(raw)
        kind = _TYPES[t]
        return cls(ino, kind, mode, uid, gid, mtime, ctime, size, alloc,
                   2 if kind == "dir" else links)  # fmt: skip


@dataclass
class Node:
    """One node as the drive knows it. ``names`` are ``(parent ino, name)`` pairs."""

    ino: int
    id: str
    type: str  # "file" | "dir" | "symlink"
    mode: int  # permission bits only
    uid: int
    gid: int
    mtime_ns: int
    ctime_ns: int
    size: int = 0
    target: str | None = None
    xattrs: dict[str, bytes] = field(default_factory=dict)
    base_rev: int = 0
    names: list[tuple[int, str]] = field(default_factory=list)
    alloc: int = 0  # bytes in chunks (not holes): st_blocks

    @property
    def nlink(self) -> int:
        return 2 if self.type == "dir" else len(self.names)

    def copy(self) -> Node:
        """An independent copy (the containers are copied; their items are immutable).
        About a seventh of what ``decode`` costs."""
        return Node(self.ino, self.id, self.type, self.mode, self.uid, self.gid, self.mtime_ns,
                    self.ctime_ns, self.size, self.target, dict(self.xattrs), self.base_rev,
                    list(self.names), self.alloc)  # fmt: skip

    def encode(self) -> bytes:
        size = len(self.target.encode()) if self.type == "symlink" and self.target else self.size
        head = _NODE_HDR.pack(_NODE_V1, _TYPE_CODE[self.type], bytes.fromhex(self.id), self.mode,
                              self.uid, self.gid, self.mtime_ns, self.ctime_ns, size,
                              self.base_rev, self.alloc, len(self.names))  # fmt: skip
        if not self.xattrs and self.target is None:  # most nodes: what dump_json would give
            names = ",".join([f"[{int(p)},{_json_str(n)}]" for p, n in self.names])
            return head + b'{"names":[' + names.encode() + b"]}"
        rest: dict[str, Any] = {"names": self.names}
        if self.xattrs:
            rest["xattrs"] = {k: base64.b64encode(v).decode() for k, v in self.xattrs.items()}
        if self.target is not None:
            rest["target"] = self.target
        return head + dump_json(rest)

    @classmethod
    def decode(cls, ino: int, raw: bytes) -> Node:
        v, t, nid, mode, uid, gid, mtime, ctime, size, rev, alloc, _ = _NODE_HDR.unpack_from(raw)
        if v != _NODE_V1:
            raise ValueError(f"node record version {v} is not supported")
        rest = load_json(raw[_NODE_HDR.size :])
        xattrs = {k: base64.b64decode(x) for k, x in rest.get("xattrs", {}).items()}
        return cls(ino, nid.hex(), _TYPES[t], mode, uid, gid, mtime, ctime, size,
                   rest.get("target"), xattrs, rev, [(p, n) for p, n in rest["names"]], alloc)  # fmt: skip


@dataclass(frozen=True)
class OutboxEntry:
    seq: int
    op: wire.Op


@dataclass
class Changes:
    """What :meth:`Store.apply_remote` changed, for kernel cache invalidation."""

    inodes: set[int] = field(default_factory=set)  # attrs or content changed
    content: set[int] = field(default_factory=set)  # content changed (drop page cache)
    entries: set[tuple[int, str]] = field(default_factory=set)  # (parent ino, name)
    kept_local: list[str] = field(default_factory=list)  # node ids with unpushed local edits
