"""The SQLite commit statements on plain ``sqlite3`` (``sqlite_writes.SqliteSql``, what the
server runs) and their SQLAlchemy spelling (``commit_sql.AlchemySql``, the PostgreSQL path)
give the same answers AND leave the same rows, for one script of commits that goes through
every op, every refusal and the idempotent retry.

The same script runs on two fresh SQLite databases, once with each spelling, with the
clock made deterministic; every table (ids of the random root directories replaced by a
placeholder) and every answer must be equal.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from cairn.core.errors import NotFound
from cairn.core.wire import parse_ops
from cairn.server.meta import MetaStore
from cairn.server.meta import chunks as chunks_mod
from cairn.server.meta import commit as commit_mod
from cairn.server.meta.commit_sql import AlchemySql
from cairn.server.meta.sqlite_writes import SqliteSql

from .helpers import create, link, mkdir, rename, unlink, update

pytestmark = pytest.mark.anyio

TABLES = ("namespaces", "nodes", "names", "xattrs", "revisions", "chunks", "user_chunks",
          "journal", "op_results")  # fmt: skip


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _node(i: int) -> str:
    return f"{i:032x}"


def _chunk(i: int) -> bytes:
    return bytes([i]) * 32


class _Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000_000_000

    def __call__(self) -> int:
        self.now += 1_000
        return self.now


async def _script(store: MetaStore) -> list[Any]:
    """Commits covering every op kind and refusal; returns every answer."""
    out: list[Any] = []
    alice = await store.add_user("alice", "h", None)
    carol = await store.add_user("carol", "h", 250)  # a quota to exceed
    dev = (await store.add_device(alice.id, "laptop", b"a" * 32)).id
    cdev = (await store.add_device(carol.id, "phone", b"c" * 32)).id
    root, ns = alice.home_root, alice.home_ns
    for i in range(1, 6):
        await store.record_upload(alice.id, _chunk(i), 100, 130)
    await store.record_upload(carol.id, _chunk(1), 100, 130)
    ops_n = iter(range(1, 10_000))

    async def commit(*ops: dict[str, Any], user: Any = alice, device: int = dev) -> None:
        for op in ops:
            op.setdefault("op_id", f"op-{next(ops_n)}")
        parsed = parse_ops({"ops": list(ops)})
        try:
            out.append(await store.commit(user.id, device, user.home_ns, parsed))
        except NotFound as exc:
            out.append(["NotFound", str(exc)])

    d, sub, f, g, s, h = (_node(i) for i in range(1, 7))
    await commit(
        mkdir(root, "docs", node=d, xattrs={"user.color": "cmVk"}),
        mkdir(d, "sub", node=sub),
        create(d, "a.txt", [(_chunk(1), 100), (None, 1 << 20), (_chunk(2), 100)], node=f),
        create(root, "b", [(_chunk(3), 100)], node=g, xattrs={"user.x": "", "user.y": "eQ=="}),
        {"op": "symlink", "node": s, "parent": root, "name": "ln", "target": "docs/a.txt",
         "mtime_ns": 5},
    )  # fmt: skip
    # retried op id (stored answer), stale base, update, missing chunk, name taken,
    # existing node id, parent not a directory
    await commit(
        {**update(f, 1, [(_chunk(4), 100)]), "op_id": "op-u1"},
        update(f, 1, [(_chunk(5), 100)]),
        update(g, 1, [(_chunk(9), 100)]),
        create(root, "b", [(_chunk(1), 100)], node=h),
        create(root, "new", [(_chunk(1), 100)], node=f),
        create(f, "x", [(_chunk(1), 100)], node=_node(40)),
    )
    await commit({**update(f, 1, [(_chunk(4), 100)]), "op_id": "op-u1"})
    # hard links, setattr, renames with and without replace, into its own subtree
    await commit(
        link(f, root, "hard"),
        link(f, sub, "hard2"),
        {"op": "setattr", "node": g, "mode": 0o600, "mtime_ns": 77,
         "xattrs_set": {"user.x": "eHg=", "user.z": "eg=="}, "xattrs_remove": ["user.y"]},
        rename(f, d, "a.txt", root, "moved"),
        rename(d, root, "docs", sub, "loop"),
        rename(g, root, "b", root, "hard"),
        rename(g, root, "b", root, "hard", replace=True),
        {**rename(s, root, "ln", root, "moved", replace=True), "replaces": g},
    )  # fmt: skip
    # unlink a name, then the last ones (trash, refcounts stay), a non-empty directory
    await commit(
        unlink(f, root, "moved"),
        unlink(d, root, "docs"),
        unlink(f, sub, "hard2", base_rev=1),
        unlink(g, root, "hard"),
        unlink(f, sub, "hard2"),
        unlink(f, root, "hard"),
        update(f, 2, [(_chunk(1), 100)]),
    )
    # quota, namespace of someone else, an empty batch, many nodes in one batch (IN lists
    # longer than one statement's)
    await commit(create(carol.home_root, "big", [(_chunk(1), 300)], node=_node(50)),
                 user=carol, device=cdev)  # fmt: skip
    await commit(mkdir(root, "bulk", node=_node(60)))
    many = [create(_node(60), f"f{i}", [(_chunk(i % 5 + 1), 100)], node=_node(1000 + i))
            for i in range(600)]  # fmt: skip
    await commit(*many)
    await commit(*[update(_node(1000 + i), 1, [(_chunk(2), 10)]) for i in range(600)])
    await commit(*[{**op, "op_id": op["op_id"]} for op in many[:5]])  # retried: stored
    try:
        await store.commit(alice.id, dev, carol.home_ns, parse_ops({"ops": [
            mkdir(carol.home_root, "intrude", node=_node(70)) | {"op_id": "x1"}]}))  # fmt: skip
    except NotFound as exc:
        out.append(["NotFound", str(exc)])
    out.append([root, ns, carol.home_root])
    return out


def _normal(text: str, roots: list[str]) -> str:
    for i, root in enumerate(roots):
        text = text.replace(root, f"<root{i}>")
    return text


def _dump(path: Path, roots: list[str]) -> dict[str, list[str]]:
    """Every row of ``TABLES`` as text, random root ids replaced, sorted."""
    conn = sqlite3.connect(path)
    try:
        return {
            t: sorted(_normal(repr(r), roots) for r in conn.execute(f"SELECT * FROM {t}"))
            for t in TABLES
        }
    finally:
        conn.close()


async def _run(
    path: Path, sql: Any, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, dict[str, list[str]]]:
    clock = _Clock()
    monkeypatch.setattr(commit_mod.time, "time_ns", clock)
    monkeypatch.setattr(chunks_mod.time, "time_ns", clock)
    if sql is not None:
        monkeypatch.setattr(commit_mod, "sql_for", sql)
    store = await MetaStore.open(f"sqlite+aiosqlite:///{path}")
    try:
        await store.migrate()
        answers = await _script(store)
    finally:
        await store.close()
        monkeypatch.undo()
    roots = [answers[-1][0], answers[-1][2]]
    return _normal(json.dumps(answers, sort_keys=True), roots), _dump(path, roots)


async def test_both_spellings_leave_the_same_rows_and_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw_answers, raw_rows = await _run(tmp_path / "raw.db", None, monkeypatch)
    alc_answers, alc_rows = await _run(tmp_path / "alc.db", AlchemySql, monkeypatch)
    assert raw_answers == alc_answers
    assert raw_rows == alc_rows
    # the script did reach every kind of answer (so the comparison compares something)
    for needle in (
        '"stale_base"',
        '"missing_chunks"',
        '"name_taken"',
        '"already_exists"',
        '"replaced_changed"',
        '"directory_not_empty"',
        '"quota_exceeded"',
        '"invalid_argument"',
        '"not_a_directory"',
        '"deleted": true',
        "NotFound",
    ):
        assert needle in raw_answers, needle  # fmt: skip
    assert sum(r.count("<root0>") for rows in raw_rows.values() for r in rows) > 10


async def test_the_sqlite_backend_commits_through_sqlite3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    original = commit_mod.sql_for

    def spy(conn: Any) -> Any:
        sql = original(conn)
        seen.append(type(sql).__name__)
        return sql

    monkeypatch.setattr(commit_mod, "sql_for", spy)
    store = await MetaStore.open(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    try:
        await store.migrate()
        user = await store.add_user("alice", "h", None)
        dev = await store.add_device(user.id, "laptop", b"a" * 32)
        ops = parse_ops({"ops": [mkdir(user.home_root, "d") | {"op_id": "o1"}]})
        (result,) = await store.commit(user.id, dev.id, user.home_ns, ops)
    finally:
        await store.close()
    assert result["status"] == "applied"
    assert seen == [SqliteSql.__name__]
