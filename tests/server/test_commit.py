"""Commits through HTTP: results, conflicts, missing chunks, idempotent retries, changes feed."""

from __future__ import annotations

import pytest

from tests.server.helpers import create, login, mkdir, new_id, op_id, update


@pytest.fixture(scope="module")
def srv(module_server_factory):  # type: ignore[no-untyped-def]
    s = module_server_factory()
    s.add_user("alice", "a")
    return s


def test_create_update_conflict_and_read_back(srv) -> None:  # type: ignore[no-untyped-def]
    a = login(srv, "alice", "a", "one")
    a2 = login(srv, "alice", "a", "two")
    c1, c2 = a.upload(b"version one"), a.upload(b"version two")
    d = mkdir(a.root, "docs-crud")
    f = create(d["node"], "a.txt", [[c1, 11]])
    res = a.commit(d, f)
    assert [r["status"] for r in res] == ["applied", "applied"]
    assert res[1]["node"]["rev"] == 1 and res[1]["node"]["size"] == 11
    assert res[1]["seq"] > res[0]["seq"]
    # two devices update from the same base: exactly one wins
    c3 = a2.upload(b"version three")
    win = a.commit(update(f["node"], 1, [[c2, 11]]))[0]
    lose = a2.commit(update(f["node"], 1, [[c3, 13]]))[0]
    assert win["status"] == "applied" and win["node"]["rev"] == 2
    assert lose["status"] == "conflict" and lose["reason"] == "stale_base"
    assert lose["current"]["rev"] == 2
    node = a.http.get(f"/api/v1/ns/{a.ns}/nodes/{f['node']}").json()
    assert node["blocklist"] == [[c2, 11]] and node["names"] == [[d["node"], "a.txt"]]
    r = a.http.get(f"/api/v1/ns/{a.ns}/resolve", params={"path": "/docs-crud/a.txt"})
    assert r.status_code == 200 and r.json()["id"] == f["node"]
    revs = a.http.get(f"/api/v1/ns/{a.ns}/nodes/{f['node']}/revisions").json()["revisions"]
    assert [v["rev"] for v in revs] == [2, 1]
    kids = a.http.get(f"/api/v1/ns/{a.ns}/nodes/{d['node']}/children").json()
    assert [e["name"] for e in kids["entries"]] == ["a.txt"] and kids["has_more"] is False


def test_name_taken_missing_chunks_and_errors(srv) -> None:  # type: ignore[no-untyped-def]
    a = login(srv, "alice", "a")
    c = a.upload(b"x")
    d = mkdir(a.root, "docs-errs")
    assert a.commit(d)[0]["status"] == "applied"
    again = a.commit(mkdir(a.root, "docs-errs"))[0]
    assert again["status"] == "conflict" and again["reason"] == "name_taken"
    ghost = "ab" * 32
    r = a.commit(create(d["node"], "g", [[ghost, 5]]))[0]
    assert r["status"] == "missing_chunks" and r["missing"] == [ghost]
    r = a.commit(create(new_id(), "orphan", [[c, 1]]))[0]
    assert r["status"] == "error" and r["error"] == "not_found"


def test_retried_batch_applies_once(srv) -> None:  # type: ignore[no-untyped-def]
    a = login(srv, "alice", "a")
    d = mkdir(a.root, "retry-dir")
    first = a.commit(d)
    second = a.commit(d)  # same op_id: the stored result, nothing applied twice
    assert second == first
    kids = a.http.get(f"/api/v1/ns/{a.ns}/nodes/{a.root}/children").json()["entries"]
    assert [e["name"] for e in kids].count("retry-dir") == 1


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"ops": "x"},
        {"ops": [{"op": "explode", "op_id": "1"}]},
        {
            "ops": [
                {
                    "op": "mkdir",
                    "op_id": "1",
                    "node": "zz",
                    "parent": "0" * 32,
                    "name": "a",
                    "mode": 1,
                    "mtime_ns": 1,
                }
            ]
        },  # fmt: skip
        {
            "ops": [
                {
                    "op": "mkdir",
                    "op_id": "1",
                    "node": "a" * 32,
                    "parent": "b" * 32,
                    "name": "a/b",
                    "mode": 1,
                    "mtime_ns": 1,
                }
            ]
        },  # fmt: skip
        {"ops": [{"op": "mkdir", "op_id": "x" * 65}]},
    ],
)
def test_garbage_commits_are_400(srv, body) -> None:  # type: ignore[no-untyped-def]
    a = login(srv, "alice", "a")
    r = a.http.post(f"/api/v1/ns/{a.ns}/commit", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"] in ("invalid_argument", "invalid_name")


def test_batch_bound_is_413(srv) -> None:  # type: ignore[no-untyped-def]
    a = login(srv, "alice", "a")
    ops = [mkdir(a.root, f"n{i}") for i in range(1001)]
    r = a.http.post(f"/api/v1/ns/{a.ns}/commit", json={"ops": ops})
    assert r.status_code == 413 and r.json()["error"] == "too_large"


def test_changes_feed_pages_to_the_end(srv) -> None:  # type: ignore[no-untyped-def]
    a = login(srv, "alice", "a")
    d = mkdir(a.root, "paged")
    a.commit(d, *[mkdir(d["node"], f"sub{i:02}") for i in range(25)])
    seen: dict[str, dict] = {}
    cursor, pages = "", 0
    while True:
        r = a.http.get("/api/v1/changes", params={"cursor": cursor, "limit": 7})
        assert r.status_code == 200
        page = r.json()
        assert len(page["entries"]) <= 7
        seqs = [e["seq"] for e in page["entries"]]
        assert seqs == sorted(seqs)
        for e in page["entries"]:
            seen[e["node"]["id"]] = e["node"]
        cursor, pages = page["cursor"], pages + 1
        if not page["has_more"]:
            break
        assert pages < 100
    assert pages >= 4
    names = {n["names"][0][1] for n in seen.values() if n["names"]}
    assert {f"sub{i:02}" for i in range(25)} | {"paged"} <= names
    # caught up: nothing new, same cursor works again
    page = a.http.get("/api/v1/changes", params={"cursor": cursor}).json()
    assert page["entries"] == [] and page["has_more"] is False
    a.commit({**mkdir(d["node"], "late"), "op_id": op_id()})
    page = a.http.get("/api/v1/changes", params={"cursor": cursor}).json()
    assert [e["node"]["names"][0][1] for e in page["entries"]] == ["late"]


@pytest.mark.parametrize(
    "params", [{"limit": "0"}, {"limit": "1001"}, {"limit": "x"}, {"cursor": "!!notacursor"}]
)
def test_changes_rejects_bad_params(srv, params) -> None:  # type: ignore[no-untyped-def]
    a = login(srv, "alice", "a")
    r = a.http.get("/api/v1/changes", params=params)
    assert r.status_code == 400 and r.json()["error"] == "invalid_argument"
