"""User B can never read, list, hint, commit into or fetch chunks of A's namespace."""

from __future__ import annotations

import json

import pytest

from tests.server.helpers import create, login, mkdir


@pytest.fixture(scope="module")
def world(module_server_factory):  # type: ignore[no-untyped-def]
    srv = module_server_factory()
    srv.add_user("alice", "a")
    srv.add_user("mallory", "m")
    a, m = login(srv, "alice", "a"), login(srv, "mallory", "m")
    c = a.upload(b"alice's secret")
    d = mkdir(a.root, "private")
    f = create(d["node"], "secret.txt", [[c, 14]])
    assert [r["status"] for r in a.commit(d, f)] == ["applied", "applied"]
    return srv, a, m, d["node"], f["node"], c


def test_reads_of_a_foreign_namespace_are_not_found(world) -> None:  # type: ignore[no-untyped-def]
    _srv, a, m, d, f, _c = world
    ns = a.ns
    assert ns != m.ns
    for path in (
        f"/api/v1/ns/{ns}/nodes/{f}",
        f"/api/v1/ns/{ns}/nodes/{d}/children",
        f"/api/v1/ns/{ns}/nodes/{f}/revisions",
        f"/api/v1/ns/{ns}/resolve?path=/private/secret.txt",
        f"/api/v1/ns/{ns}/trash",
        f"/api/v1/ns/{ns}/nodes/{a.root}",
    ):
        r = m.http.get(path)
        assert r.status_code == 404, path
        assert r.json()["error"] == "not_found"
        assert "secret" not in r.text
    # the same id asked in her own namespace is just as unknown
    assert m.http.get(f"/api/v1/ns/{m.ns}/nodes/{f}").status_code == 404


def test_commit_into_a_foreign_namespace_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    _srv, a, m, d, _f, _c = world
    r = m.http.post(f"/api/v1/ns/{a.ns}/commit", json={"ops": [mkdir(d, "evil")]})
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    # her own namespace, but naming alice's directory as parent
    res = m.commit(mkdir(d, "evil"))[0]
    assert res["status"] == "error" and res["error"] == "not_found"
    kids = a.http.get(f"/api/v1/ns/{a.ns}/nodes/{d}/children").json()["entries"]
    assert [e["name"] for e in kids] == ["secret.txt"]


def test_chunks_and_feed_do_not_leak(world) -> None:  # type: ignore[no-untyped-def]
    _srv, a, m, _d, f, c = world
    assert m.http.get(f"/api/v1/chunks/{c}").status_code == 404
    assert m.http.post("/api/v1/chunks/missing", json={"ids": [c]}).json() == {"missing": [c]}
    # a commit naming alice's chunk without uploading it is told to upload it
    res = m.commit(create(m.root, "stolen", [[c, 14]]))[0]
    assert res["status"] == "missing_chunks" and res["missing"] == [c]
    feed = m.http.get("/api/v1/changes").json()
    assert all(e["ns"] == m.ns for e in feed["entries"])
    assert f not in json.dumps(feed)
    poll = m.http.get("/api/v1/hints/poll", params={"timeout": "0"}).json()
    assert set(poll["ns"]) <= {str(m.ns)}
    me = m.http.get("/api/v1/me").json()
    assert [n["ns"] for n in me["namespaces"]] == [m.ns]
