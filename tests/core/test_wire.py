"""Wire models (core/wire.py): op parsing, round trips, blocklist encoding, node objects."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cairn.core import wire
from cairn.core.errors import InvalidArgument, InvalidName, TooLarge
from cairn.core.wire import Blocklist, Node, parse_op, parse_ops

N1, N2, N3 = "1" * 32, "2" * 32, "3" * 32
C1, C2 = "a" * 64, "b" * 64


def valid_ops() -> list[dict[str, Any]]:
    return [
        {"op": "mkdir", "op_id": "o1", "node": N1, "parent": N2, "name": "d", "mode": 0o755,
         "mtime_ns": 1, "xattrs": {"user.color": "cmVk"}},
        {"op": "create", "op_id": "o2", "node": N3, "parent": N1, "name": "f.txt", "mode": 0o644,
         "mtime_ns": 2, "blocklist": [[C1, 5], [None, 1 << 40], [C2, 7]]},
        {"op": "symlink", "op_id": "o3", "node": "4" * 32, "parent": N1, "name": "l",
         "target": "../x", "mtime_ns": -5},
        {"op": "update", "op_id": "o4", "node": N3, "base_rev": 1, "blocklist": [],
         "mtime_ns": 3},
        {"op": "setattr", "op_id": "o5", "node": N3, "mode": 0o600, "xattrs_set":
         {"user.a": ""}, "xattrs_remove": ["user.b"]},
        {"op": "setattr", "op_id": "o5b", "node": N3},
        {"op": "rename", "op_id": "o6", "node": N3, "parent": N1, "name": "f.txt",
         "new_parent": N2, "new_name": "F.TXT", "replace": True},
        {"op": "link", "op_id": "o7", "node": N3, "new_parent": N1, "new_name": "hard"},
        {"op": "rename", "op_id": "o6b", "node": N3, "parent": N2, "name": "F.TXT",
         "new_parent": N1, "new_name": "doc", "replace": True, "replaces": N1,
         "replaces_rev": 3},
        {"op": "unlink", "op_id": "o8", "node": N3, "parent": N1, "name": "hard", "base_rev": 2},
        {"op": "unlink", "op_id": "o9", "node": N3, "parent": N2, "name": "F.TXT"},
    ]  # fmt: skip


def test_every_op_round_trips_through_json() -> None:
    ops = parse_ops({"ops": valid_ops()})
    assert [op.kind for op in ops] == [o["op"] for o in valid_ops()]
    for op in ops:
        assert parse_op(op.to_json()) == op
    assert parse_ops(wire.ops_to_json(ops)) == ops


def test_parsed_fields_are_typed() -> None:
    mk, cr = parse_ops({"ops": valid_ops()[:2]})
    assert isinstance(mk, wire.Mkdir) and mk.xattrs == {"user.color": b"red"}
    assert isinstance(cr, wire.Create)
    assert cr.blocklist.entries == ((bytes.fromhex(C1), 5), (None, 1 << 40), (bytes.fromhex(C2), 7))
    assert cr.blocklist.size == 12 + (1 << 40)
    assert cr.blocklist.chunk_ids() == [bytes.fromhex(C1), bytes.fromhex(C2)]


def test_defaults() -> None:
    ren = parse_op({"op": "rename", "op_id": "x", "node": N1, "parent": N2, "name": "a",
                    "new_parent": N2, "new_name": "b"})  # fmt: skip
    assert isinstance(ren, wire.Rename) and ren.replace is False
    assert ren.replaces is None and ren.replaces_rev is None
    un = parse_op({"op": "unlink", "op_id": "x", "node": N1, "parent": N2, "name": "a"})
    assert isinstance(un, wire.Unlink) and un.base_rev is None


def _mutated(index: int, **changes: Any) -> dict[str, Any]:
    op = copy.deepcopy(valid_ops()[index])
    for key, value in changes.items():
        if value is KeyError:
            del op[key]
        else:
            op[key] = value
    return op


@pytest.mark.parametrize(
    "op, exc, field",
    [
        ("not a dict", InvalidArgument, "JSON object"),
        ({"op": "chmod", "op_id": "x"}, InvalidArgument, "op must be one of"),
        (_mutated(0, op_id=""), InvalidArgument, "op_id"),
        (_mutated(0, op_id="x" * 65), InvalidArgument, "op_id"),
        (_mutated(0, op_id=7), InvalidArgument, "op_id"),
        (_mutated(0, node="A" * 32), InvalidArgument, "node"),
        (_mutated(0, node="1" * 31), InvalidArgument, "node"),
        (_mutated(0, parent=None), InvalidArgument, "parent"),
        (_mutated(0, name=KeyError), InvalidArgument, "'name'"),
        (_mutated(0, name="a/b"), InvalidName, "'/'"),
        (_mutated(0, name=".."), InvalidName, "'..'"),
        (_mutated(0, name=3), InvalidArgument, "name"),
        (_mutated(0, mode=0o10000), InvalidArgument, "mode"),
        (_mutated(0, mode=-1), InvalidArgument, "mode"),
        (_mutated(0, mode=True), InvalidArgument, "mode"),
        (_mutated(0, mode=1.5), InvalidArgument, "mode"),
        (_mutated(0, mtime_ns=1 << 63), InvalidArgument, "mtime_ns"),
        (_mutated(0, mtime_ns="1"), InvalidArgument, "mtime_ns"),
        (_mutated(0, xattrs={"trusted.x": ""}), InvalidArgument, "user."),
        (_mutated(0, xattrs={"user.x": "!!"}), InvalidArgument, "base64"),
        (_mutated(0, xattrs={"user.x": "A" * 100_000}), TooLarge, "xattrs"),
        (_mutated(0, xattrs={f"user.{i}": "" for i in range(65)}), TooLarge, "64"),
        (_mutated(0, xattrs={"user." + "x" * 300: ""}), TooLarge, "255"),
        (_mutated(1, blocklist={}), InvalidArgument, "blocklist"),
        (_mutated(1, blocklist=[[C1]]), InvalidArgument, r"blocklist\[0\]"),
        (_mutated(1, blocklist=[[C1.upper(), 5]]), InvalidArgument, "chunk id"),
        (_mutated(1, blocklist=[[C1, 0]]), InvalidArgument, "length"),
        (_mutated(1, blocklist=[[C1, 16 * 1024 * 1024 + 1]]), InvalidArgument, "length"),
        (_mutated(1, blocklist=[[None, 1 << 63]]), InvalidArgument, "length"),
        (_mutated(1, blocklist=[[None, (1 << 63) - 1], [C1, 1]]), InvalidArgument, "more than"),
        (_mutated(2, target=""), InvalidArgument, "target"),
        (_mutated(2, target="a\x00"), InvalidArgument, "NUL"),
        (_mutated(2, target="x" * 4097), TooLarge, "target"),
        (_mutated(3, base_rev=0), InvalidArgument, "base_rev"),
        (_mutated(3, base_rev=KeyError), InvalidArgument, "base_rev"),
        (_mutated(4, xattrs_remove="user.b"), InvalidArgument, "xattrs_remove"),
        (_mutated(4, mode="0644"), InvalidArgument, "mode"),
        (_mutated(6, replace="yes"), InvalidArgument, "replace"),
        (_mutated(6, new_name=""), InvalidName, "valid name"),
        (_mutated(8, replaces="x"), InvalidArgument, "replaces"),
        (_mutated(8, replaces_rev=0), InvalidArgument, "replaces_rev"),
        (_mutated(8, replaces_rev="3"), InvalidArgument, "replaces_rev"),
        (_mutated(9, base_rev=-1), InvalidArgument, "base_rev"),
    ],
)
def test_bad_ops_raise_typed_errors_naming_the_field(op: Any, exc: type, field: str) -> None:
    with pytest.raises(exc, match=field):
        parse_op(op)
    # Inside a batch the message also names the op's position.
    with pytest.raises(exc, match=r"^ops\[1\]: "):
        parse_ops({"ops": [valid_ops()[0], op]})


def test_batch_bounds() -> None:
    for body in [None, [], {"ops": {}}, {"ops": "x"}, {}]:
        with pytest.raises(InvalidArgument, match="ops"):
            parse_ops(body)
    ok = {"op": "setattr", "op_id": "x", "node": N1}
    many = [dict(ok, op_id=str(i)) for i in range(wire.MAX_OPS)]
    assert len(parse_ops({"ops": many})) == wire.MAX_OPS
    with pytest.raises(TooLarge, match="at most 1000"):
        parse_ops({"ops": many + [dict(ok, op_id="last")]})
    with pytest.raises(InvalidArgument, match="unique"):
        parse_ops({"ops": [ok, ok]})


def test_blocklist_too_many_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "MAX_BLOCKLIST", 3)
    with pytest.raises(TooLarge, match="more than 3 entries"):
        Blocklist.from_json([[C1, 1]] * 4)


entries = st.lists(
    st.one_of(
        st.tuples(st.binary(min_size=32, max_size=32), st.integers(1, wire.MAX_CHUNK_LEN)),
        st.tuples(st.none(), st.integers(1, 1 << 50)),
    ),
    max_size=40,
)


@given(entries)
def test_blocklist_encoding_round_trips(items: list[tuple[bytes | None, int]]) -> None:
    bl = Blocklist(tuple(items))
    blob = bl.encode()
    assert len(blob) == 1 + 40 * len(items)
    assert Blocklist.decode(blob) == bl
    assert Blocklist.from_json(bl.to_json()) == bl


def test_blocklist_decode_rejects_foreign_bytes() -> None:
    for blob in [b"", b"\x02", b"\x01" + bytes(39)]:
        with pytest.raises(ValueError):
            Blocklist.decode(blob)


def test_zero_id_chunk_is_not_confused_with_a_hole() -> None:
    bl = Blocklist(((bytes(32), 10), (None, 10)))
    assert Blocklist.decode(bl.encode()) == bl


NODE_JSON = {
    "id": N3, "ns": 1, "type": "file", "mode": 420, "mtime_ns": 1763700000000000000,
    "rev": 3, "size": 5, "names": [[N1, "a.txt"]], "target": None,
    "xattrs": {"user.color": "cmVk"}, "blocklist": [[C1, 5]], "deleted": False, "seq": 17,
}  # fmt: skip


def test_node_round_trips() -> None:
    node = Node.from_json(NODE_JSON)
    assert node.xattrs == {"user.color": b"red"}
    assert node.names == ((N1, "a.txt"),)
    assert node.to_json() == NODE_JSON
    listing = dict(NODE_JSON, blocklist=None, type="dir")
    assert Node.from_json(listing).to_json() == listing


@pytest.mark.parametrize(
    "change",
    [{"type": "fifo"}, {"id": "x"}, {"names": [[N1]]}, {"names": [[N1, "a/b"]]},
     {"target": 5}, {"deleted": "no"}, {"seq": -1}, {"blocklist": "x"}],
)  # fmt: skip
def test_node_from_json_rejects_malformed(change: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        Node.from_json(dict(NODE_JSON, **change))
    with pytest.raises(InvalidArgument):
        Node.from_json([])
