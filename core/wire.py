"""Wire models of the commit API (docs/api.md): ops, blocklists and the node object.

Everything here is pure and framework-free so the drive (trio) and the server (asyncio)
share one definition. ``parse_op``/``parse_ops`` take JSON-decoded input (``json.loads``
output) and either return frozen dataclasses whose fields are fully checked, or raise
``InvalidArgument`` / ``InvalidName`` / ``TooLarge`` with a message naming the bad field.
``to_json`` gives back the JSON-ready form, so ``parse_op(op.to_json()) == op``.

In memory a chunk id is 32 raw bytes and an xattr value is bytes; on the wire they are
64 lowercase hex digits and base64 respectively.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import InvalidArgument, TooLarge
from .names import check_name

MAX_OPS = 1000
MAX_OP_ID = 64
MAX_BLOCKLIST = 1 << 20
MAX_CHUNK_LEN = 16 * 1024 * 1024
MAX_HOLE_LEN = (1 << 63) - 1
MAX_FILE_SIZE = (1 << 63) - 1
MAX_MODE = 0o7777
MAX_XATTR_NAME = 255
MAX_XATTR_VALUE = 64 * 1024
MAX_XATTRS = 64
MAX_TARGET = 4096
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

NODE_TYPES = ("file", "dir", "symlink")
_NODE_ID = re.compile(r"[0-9a-f]{32}")
_CHUNK_ID = re.compile(r"[0-9a-f]{64}")


# --- field checks ---------------------------------------------------------------------------


def _int(obj: Any, name: str, lo: int, hi: int) -> int:
    # bool is an int subclass; JSON true must not pass as 1.
    if type(obj) is not int:
        raise InvalidArgument(f"{name} must be an integer")
    if not lo <= obj <= hi:
        raise InvalidArgument(f"{name} must be in {lo}..{hi}")
    return obj


def node_id(obj: Any, name: str = "node") -> str:
    """Check a node id (32 lowercase hex digits) and return it."""
    if not isinstance(obj, str) or not _NODE_ID.fullmatch(obj):
        raise InvalidArgument(f"{name} must be a node id (32 lowercase hex digits)")
    return obj


def chunk_id(obj: Any, name: str = "chunk id") -> bytes:
    """Parse a chunk id (64 lowercase hex digits) into its 32 bytes."""
    if not isinstance(obj, str) or not _CHUNK_ID.fullmatch(obj):
        raise InvalidArgument(f"{name} must be a chunk id (64 lowercase hex digits)")
    return bytes.fromhex(obj)


def _mode(obj: Any, name: str = "mode") -> int:
    return _int(obj, name, 0, MAX_MODE)


def _mtime(obj: Any, name: str = "mtime_ns") -> int:
    return _int(obj, name, INT64_MIN, INT64_MAX)


def _name(obj: Any, field_name: str) -> str:
    if not isinstance(obj, str):
        raise InvalidArgument(f"{field_name} must be a string")
    return check_name(obj)


def _bool(obj: Any, name: str) -> bool:
    if type(obj) is not bool:
        raise InvalidArgument(f"{name} must be true or false")
    return obj


def xattr_name(obj: Any, name: str = "xattr name") -> str:
    if not isinstance(obj, str) or not obj.startswith("user.") or len(obj) == len("user."):
        raise InvalidArgument(f"{name} must be a string starting with 'user.'")
    if len(obj.encode("utf-8", "surrogatepass")) > MAX_XATTR_NAME or "\x00" in obj:
        raise TooLarge(f"{name} is longer than {MAX_XATTR_NAME} bytes or holds NUL")
    return obj


def _b64(obj: Any, name: str) -> bytes:
    if not isinstance(obj, str):
        raise InvalidArgument(f"{name} must be a base64 string")
    if len(obj) > (MAX_XATTR_VALUE + 2) // 3 * 4:
        raise TooLarge(f"{name} is larger than {MAX_XATTR_VALUE} bytes")
    try:
        return base64.b64decode(obj, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(f"{name} is not valid base64") from None


def _xattrs(obj: Any, name: str) -> dict[str, bytes]:
    if not isinstance(obj, dict):
        raise InvalidArgument(f"{name} must be an object of name: base64 value")
    if len(obj) > MAX_XATTRS:
        raise TooLarge(f"{name} holds more than {MAX_XATTRS} entries")
    return {xattr_name(k, f"{name} key"): _b64(v, f"{name}[{k!r}]") for k, v in obj.items()}


def _xattrs_json(xattrs: dict[str, bytes]) -> dict[str, str]:
    return {k: base64.b64encode(v).decode("ascii") for k, v in xattrs.items()}


# --- blocklists -----------------------------------------------------------------------------

Entry = tuple[bytes | None, int]
_RECORD = struct.Struct(">32sQ")
_HOLE_BIT = 1 << 63
_ZERO_ID = bytes(32)
_BLOB_VERSION = b"\x01"


@dataclass(frozen=True, slots=True)
class Blocklist:
    """A file's content: ordered ``(chunk id | None, length)`` entries; ``None`` is a hole."""

    entries: tuple[Entry, ...] = ()

    @property
    def size(self) -> int:
        return sum(length for _, length in self.entries)

    def chunk_ids(self) -> list[bytes]:
        """The distinct chunk ids (holes excluded), in first-use order."""
        return list(dict.fromkeys(cid for cid, _ in self.entries if cid is not None))

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def from_json(cls, obj: Any, name: str = "blocklist") -> Blocklist:
        if not isinstance(obj, list):
            raise InvalidArgument(f"{name} must be a list of [chunk id | null, length]")
        if len(obj) > MAX_BLOCKLIST:
            raise TooLarge(f"{name} has more than {MAX_BLOCKLIST} entries")
        entries: list[Entry] = []
        total = 0
        for i, item in enumerate(obj):
            if not isinstance(item, list) or len(item) != 2:
                raise InvalidArgument(f"{name}[{i}] must be [chunk id | null, length]")
            raw, length = item
            if raw is None:
                entries.append((None, _int(length, f"{name}[{i}] length", 1, MAX_HOLE_LEN)))
            else:
                cid = chunk_id(raw, f"{name}[{i}] chunk id")
                entries.append((cid, _int(length, f"{name}[{i}] length", 1, MAX_CHUNK_LEN)))
            total += length
        if total > MAX_FILE_SIZE:
            raise InvalidArgument(f"{name} describes more than {MAX_FILE_SIZE} bytes")
        return cls(tuple(entries))

    def to_json(self) -> list[list[Any]]:
        return [[None if cid is None else cid.hex(), length] for cid, length in self.entries]

    def encode(self) -> bytes:
        """Compact storage form: a version byte, then 40 bytes per entry (id, length).

        A hole is stored with an all-zero id and the top bit of its length set (chunk
        lengths are ≤ 16 MiB, hole lengths < 2^63, so the bit is free).
        """
        records = [
            _RECORD.pack(_ZERO_ID, length | _HOLE_BIT) if cid is None else _RECORD.pack(cid, length)
            for cid, length in self.entries
        ]
        return _BLOB_VERSION + b"".join(records)

    @classmethod
    def decode(cls, blob: bytes) -> Blocklist:
        """Inverse of :meth:`encode`; raises ``ValueError`` on bytes it did not write."""
        if blob[:1] != _BLOB_VERSION or (len(blob) - 1) % _RECORD.size:
            raise ValueError("not an encoded blocklist")
        return cls(
            tuple(
                (None, length ^ _HOLE_BIT) if length & _HOLE_BIT else (cid, length)
                for cid, length in _RECORD.iter_unpack(memoryview(blob)[1:])
            )
        )


# --- ops ------------------------------------------------------------------------------------


def _get(obj: dict[str, Any], key: str, op: str) -> Any:
    try:
        return obj[key]
    except KeyError:
        raise InvalidArgument(f"{op}: missing field {key!r}") from None


@dataclass(frozen=True, slots=True)
class Mkdir:
    kind: ClassVar[str] = "mkdir"
    op_id: str
    node: str
    parent: str
    name: str
    mode: int
    mtime_ns: int
    xattrs: dict[str, bytes] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"op": self.kind, "op_id": self.op_id, "node": self.node, "parent": self.parent,
                "name": self.name, "mode": self.mode, "mtime_ns": self.mtime_ns,
                "xattrs": _xattrs_json(self.xattrs)}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Create:
    kind: ClassVar[str] = "create"
    op_id: str
    node: str
    parent: str
    name: str
    mode: int
    mtime_ns: int
    blocklist: Blocklist
    xattrs: dict[str, bytes] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"op": self.kind, "op_id": self.op_id, "node": self.node, "parent": self.parent,
                "name": self.name, "mode": self.mode, "mtime_ns": self.mtime_ns,
                "blocklist": self.blocklist.to_json(), "xattrs": _xattrs_json(self.xattrs)}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Symlink:
    kind: ClassVar[str] = "symlink"
    op_id: str
    node: str
    parent: str
    name: str
    target: str
    mtime_ns: int

    def to_json(self) -> dict[str, Any]:
        return {"op": self.kind, "op_id": self.op_id, "node": self.node, "parent": self.parent,
                "name": self.name, "target": self.target, "mtime_ns": self.mtime_ns}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Update:
    kind: ClassVar[str] = "update"
    op_id: str
    node: str
    base_rev: int
    blocklist: Blocklist
    mtime_ns: int

    def to_json(self) -> dict[str, Any]:
        return {"op": self.kind, "op_id": self.op_id, "node": self.node,
                "base_rev": self.base_rev, "blocklist": self.blocklist.to_json(),
                "mtime_ns": self.mtime_ns}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Setattr:
    kind: ClassVar[str] = "setattr"
    op_id: str
    node: str
    mode: int | None = None
    mtime_ns: int | None = None
    xattrs_set: dict[str, bytes] = field(default_factory=dict)
    xattrs_remove: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.kind, "op_id": self.op_id, "node": self.node}
        if self.mode is not None:
            out["mode"] = self.mode
        if self.mtime_ns is not None:
            out["mtime_ns"] = self.mtime_ns
        if self.xattrs_set:
            out["xattrs_set"] = _xattrs_json(self.xattrs_set)
        if self.xattrs_remove:
            out["xattrs_remove"] = list(self.xattrs_remove)
        return out


@dataclass(frozen=True, slots=True)
class Rename:
    kind: ClassVar[str] = "rename"
    op_id: str
    node: str
    parent: str
    name: str
    new_parent: str
    new_name: str
    replace: bool = False
    #: With ``replace``: the node the device saw at the new name and its content revision
    #: (None: not pushed yet, identity only). The server refuses the rename
    #: (``replaced_changed``) when the name now holds another node or newer content, so
    #: a save-by-rename on one device never deletes another device's edit unseen.
    replaces: str | None = None
    replaces_rev: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "op": self.kind, "op_id": self.op_id, "node": self.node, "parent": self.parent,
            "name": self.name, "new_parent": self.new_parent, "new_name": self.new_name,
            "replace": self.replace,
        }  # fmt: skip
        if self.replaces is not None:
            out["replaces"] = self.replaces
            if self.replaces_rev is not None:
                out["replaces_rev"] = self.replaces_rev
        return out


@dataclass(frozen=True, slots=True)
class Link:
    kind: ClassVar[str] = "link"
    op_id: str
    node: str
    new_parent: str
    new_name: str

    def to_json(self) -> dict[str, Any]:
        return {"op": self.kind, "op_id": self.op_id, "node": self.node,
                "new_parent": self.new_parent, "new_name": self.new_name}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Unlink:
    kind: ClassVar[str] = "unlink"
    op_id: str
    node: str
    parent: str
    name: str
    base_rev: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.kind, "op_id": self.op_id, "node": self.node,
                               "parent": self.parent, "name": self.name}  # fmt: skip
        if self.base_rev is not None:
            out["base_rev"] = self.base_rev
        return out


Op = Mkdir | Create | Symlink | Update | Setattr | Rename | Link | Unlink


def _target(obj: Any) -> str:
    if not isinstance(obj, str) or not obj:
        raise InvalidArgument("symlink: target must be a non-empty string")
    if "\x00" in obj:
        raise InvalidArgument("symlink: target contains NUL")
    try:
        size = len(obj.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgument("symlink: target is not valid UTF-8") from None
    if size > MAX_TARGET:
        raise TooLarge(f"symlink: target is longer than {MAX_TARGET} bytes")
    return obj


def _parse_mkdir(o: dict[str, Any], op_id: str) -> Op:
    g = _get
    return Mkdir(op_id, node_id(g(o, "node", "mkdir")), node_id(g(o, "parent", "mkdir"), "parent"),
                 _name(g(o, "name", "mkdir"), "name"), _mode(g(o, "mode", "mkdir")),
                 _mtime(g(o, "mtime_ns", "mkdir")), _xattrs(o.get("xattrs", {}), "xattrs"))  # fmt: skip


def _parse_create(o: dict[str, Any], op_id: str) -> Op:
    g = _get
    return Create(op_id, node_id(g(o, "node", "create")),
                  node_id(g(o, "parent", "create"), "parent"), _name(g(o, "name", "create"), "name"),
                  _mode(g(o, "mode", "create")), _mtime(g(o, "mtime_ns", "create")),
                  Blocklist.from_json(g(o, "blocklist", "create")),
                  _xattrs(o.get("xattrs", {}), "xattrs"))  # fmt: skip


def _parse_symlink(o: dict[str, Any], op_id: str) -> Op:
    g = _get
    return Symlink(op_id, node_id(g(o, "node", "symlink")),
                   node_id(g(o, "parent", "symlink"), "parent"),
                   _name(g(o, "name", "symlink"), "name"), _target(g(o, "target", "symlink")),
                   _mtime(g(o, "mtime_ns", "symlink")))  # fmt: skip


def _parse_update(o: dict[str, Any], op_id: str) -> Op:
    g = _get
    return Update(op_id, node_id(g(o, "node", "update")),
                  _int(g(o, "base_rev", "update"), "base_rev", 1, INT64_MAX),
                  Blocklist.from_json(g(o, "blocklist", "update")),
                  _mtime(g(o, "mtime_ns", "update")))  # fmt: skip


def _parse_setattr(o: dict[str, Any], op_id: str) -> Op:
    mode = o.get("mode")
    mtime = o.get("mtime_ns")
    remove = o.get("xattrs_remove", [])
    if not isinstance(remove, list):
        raise InvalidArgument("xattrs_remove must be a list of names")
    if len(remove) > MAX_XATTRS:
        raise TooLarge(f"xattrs_remove holds more than {MAX_XATTRS} names")
    return Setattr(
        op_id,
        node_id(_get(o, "node", "setattr")),
        None if mode is None else _mode(mode),
        None if mtime is None else _mtime(mtime),
        _xattrs(o.get("xattrs_set", {}), "xattrs_set"),
        tuple(xattr_name(n, "xattrs_remove entry") for n in remove),
    )


def _parse_rename(o: dict[str, Any], op_id: str) -> Op:
    g = _get
    return Rename(op_id, node_id(g(o, "node", "rename")),
                  node_id(g(o, "parent", "rename"), "parent"), _name(g(o, "name", "rename"), "name"),
                  node_id(g(o, "new_parent", "rename"), "new_parent"),
                  _name(g(o, "new_name", "rename"), "new_name"),
                  _bool(o.get("replace", False), "replace"),
                  None if o.get("replaces") is None else node_id(o["replaces"], "replaces"),
                  None if o.get("replaces_rev") is None
                  else _int(o["replaces_rev"], "replaces_rev", 1, INT64_MAX))  # fmt: skip


def _parse_link(o: dict[str, Any], op_id: str) -> Op:
    g = _get
    return Link(op_id, node_id(g(o, "node", "link")),
                node_id(g(o, "new_parent", "link"), "new_parent"),
                _name(g(o, "new_name", "link"), "new_name"))  # fmt: skip


def _parse_unlink(o: dict[str, Any], op_id: str) -> Op:
    g = _get
    base = o.get("base_rev")
    return Unlink(op_id, node_id(g(o, "node", "unlink")),
                  node_id(g(o, "parent", "unlink"), "parent"), _name(g(o, "name", "unlink"), "name"),
                  None if base is None else _int(base, "base_rev", 1, INT64_MAX))  # fmt: skip


_PARSERS = {
    "mkdir": _parse_mkdir,
    "create": _parse_create,
    "symlink": _parse_symlink,
    "update": _parse_update,
    "setattr": _parse_setattr,
    "rename": _parse_rename,
    "link": _parse_link,
    "unlink": _parse_unlink,
}


def parse_op_id(obj: Any) -> str:
    if not isinstance(obj, str) or not 1 <= len(obj) <= MAX_OP_ID:
        raise InvalidArgument(f"op_id must be a string of 1..{MAX_OP_ID} characters")
    return obj


def parse_op(obj: Any) -> Op:
    """Validate one JSON-decoded op object and return its dataclass."""
    if not isinstance(obj, dict):
        raise InvalidArgument("an op must be a JSON object")
    kind = obj.get("op")
    parser = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        raise InvalidArgument(f"op must be one of {', '.join(_PARSERS)}")
    return parser(obj, parse_op_id(obj.get("op_id")))


def parse_ops(body: Any) -> list[Op]:
    """Validate a commit body ``{"ops": [...]}``: at most ``MAX_OPS`` ops, unique op ids.

    The message of an error inside an op starts with ``ops[i]`` so a client finds it.
    """
    if not isinstance(body, dict) or not isinstance(body.get("ops"), list):
        raise InvalidArgument('the body must be {"ops": [...]}')
    raw = body["ops"]
    if len(raw) > MAX_OPS:
        raise TooLarge(f"a commit holds at most {MAX_OPS} ops, got {len(raw)}")
    ops: list[Op] = []
    for i, item in enumerate(raw):
        try:
            ops.append(parse_op(item))
        except (InvalidArgument, TooLarge) as exc:
            raise type(exc)(f"ops[{i}]: {exc}") from None
    if len({op.op_id for op in ops}) != len(ops):
        raise InvalidArgument("op_id values must be unique within a commit")
    return ops


def ops_to_json(ops: list[Op]) -> dict[str, Any]:
    """The commit body for ``ops`` (drive side)."""
    return {"ops": [op.to_json() for op in ops]}


# --- node object ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Node:
    """The node object of docs/api.md. ``blocklist`` is None for non-files and in listings."""

    id: str
    ns: int
    type: str
    mode: int
    mtime_ns: int
    rev: int
    size: int
    names: tuple[tuple[str, str], ...]
    target: str | None
    xattrs: dict[str, bytes]
    blocklist: Blocklist | None
    deleted: bool
    seq: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ns": self.ns,
            "type": self.type,
            "mode": self.mode,
            "mtime_ns": self.mtime_ns,
            "rev": self.rev,
            "size": self.size,
            "names": [[p, n] for p, n in self.names],
            "target": self.target,
            "xattrs": _xattrs_json(self.xattrs),
            "blocklist": None if self.blocklist is None else self.blocklist.to_json(),
            "deleted": self.deleted,
            "seq": self.seq,
        }

    @classmethod
    def from_json(cls, obj: Any) -> Node:
        """Parse a node object from the server; raises ``InvalidArgument`` if malformed."""
        if not isinstance(obj, dict):
            raise InvalidArgument("a node must be a JSON object")
        g = obj.get
        kind = g("type")
        if kind not in NODE_TYPES:
            raise InvalidArgument("node type must be file, dir or symlink")
        names = g("names")
        if not isinstance(names, list):
            raise InvalidArgument("node names must be a list of [parent, name]")
        pairs: list[tuple[str, str]] = []
        for i, pair in enumerate(names):
            if not isinstance(pair, list) or len(pair) != 2:
                raise InvalidArgument(f"node names[{i}] must be [parent, name]")
            pairs.append((node_id(pair[0], f"names[{i}] parent"), _name(pair[1], f"names[{i}]")))
        target = g("target")
        if target is not None and not isinstance(target, str):
            raise InvalidArgument("node target must be a string or null")
        raw_bl = g("blocklist")
        deleted = g("deleted", False)
        return cls(
            id=node_id(g("id"), "id"),
            ns=_int(g("ns"), "ns", 0, INT64_MAX),
            type=kind,
            mode=_mode(g("mode")),
            mtime_ns=_mtime(g("mtime_ns")),
            rev=_int(g("rev"), "rev", 0, INT64_MAX),
            size=_int(g("size"), "size", 0, MAX_FILE_SIZE),
            names=tuple(pairs),
            target=target,
            xattrs=_xattrs(g("xattrs") or {}, "xattrs"),
            blocklist=None if raw_bl is None else Blocklist.from_json(raw_bl),
            deleted=_bool(deleted, "deleted"),
            seq=_int(g("seq"), "seq", 0, INT64_MAX),
        )
