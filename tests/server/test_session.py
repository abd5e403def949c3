"""Login, tokens, logout, device revocation and the user/device CLI, through HTTP."""

from __future__ import annotations

import time

import pytest

from tests.server.helpers import login
from tests.support.server import api_client


@pytest.fixture(scope="module")
def srv(module_server_factory):  # type: ignore[no-untyped-def]
    s = module_server_factory(config={"rate_limits": {"login_failures": 3}})
    s.add_user("alice", "alice pw", quota="10G")
    s.add_user("bob", "bob pw")
    return s


def test_login_me_and_logout(srv) -> None:  # type: ignore[no-untyped-def]
    a = login(srv, "alice", "alice pw", "laptop")
    assert len(a.token) >= 40 and len(a.dedupe_key) == 32
    me = a.http.get("/api/v1/me").json()
    assert me["user"] == "alice" and me["device"] == "laptop"
    assert me["device_id"] == a.device_id
    assert me["quota"] == 10 * 2**30 and me["used"] == 0
    assert me["home"] == {"ns": a.ns, "root": a.root}
    assert {"ns": a.ns, "root": a.root} in [
        {"ns": n["ns"], "root": n["root"]} for n in me["namespaces"]
    ]
    other = login(srv, "alice", "alice pw", "laptop")  # same name: a second, independent token
    assert other.token != a.token
    assert a.http.post("/api/v1/logout").status_code == 200
    r = a.http.get("/api/v1/me")
    assert r.status_code == 401 and r.json()["error"] == "unauthenticated"
    assert other.http.get("/api/v1/me").status_code == 200


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer nope", "Basic YWxpY2U6cHc=", "Bearer " + "x" * 5000, "bearer x y"],
)
def test_bad_tokens_are_401_json(srv, header) -> None:  # type: ignore[no-untyped-def]
    with api_client(srv) as http:
        headers = {"Authorization": header} if header else {}
        r = http.get("/api/v1/me", headers=headers)
    assert r.status_code == 401
    assert r.json()["error"] == "unauthenticated"


@pytest.mark.parametrize(
    "body",
    [
        {"user": "alice", "password": "alice pw"},
        {"user": 1, "password": "alice pw", "device": "d"},
        {"user": "alice", "password": ["x"], "device": "d"},
        {"user": "", "password": "x", "device": "d"},
        {"user": "alice", "password": "alice pw", "device": "d" * 300},
    ],
)
def test_login_rejects_malformed_bodies(srv, body) -> None:  # type: ignore[no-untyped-def]
    with api_client(srv) as http:
        r = http.post("/api/v1/login", json=body)
    assert r.status_code == 400 and r.json()["error"] == "invalid_argument"


def test_wrong_password_then_rate_limited(server_factory) -> None:  # type: ignore[no-untyped-def]
    srv = server_factory(config={"rate_limits": {"login_failures": 3, "login_window": 600}})
    srv.add_user("carol", "right")
    with api_client(srv) as http:
        body = {"user": "carol", "password": "wrong", "device": "d"}
        for _ in range(3):
            r = http.post("/api/v1/login", json=body)
            assert r.status_code == 401 and r.json()["error"] == "unauthenticated"
        r = http.post("/api/v1/login", json=body)
        assert r.status_code == 429 and r.json()["error"] == "rate_limited"
        assert int(r.headers["Retry-After"]) >= 1
        # the right password does not get through while the user is locked out either
        r = http.post("/api/v1/login", json={**body, "password": "right"})
        assert r.status_code == 429
        # unknown users count against the address too: it is locked out now
        r = http.post("/api/v1/login", json={"user": "nobody", "password": "x", "device": "d"})
        assert r.status_code == 429


def test_cli_device_list_and_revoke(srv) -> None:  # type: ignore[no-untyped-def]
    b = login(srv, "bob", "bob pw", "phone")
    listing = srv.cli("device", "list", "bob").stdout
    assert "phone" in listing and str(b.device_id) in listing
    res = srv.cli("device", "revoke", "bob", str(b.device_id))
    assert res.returncode == 0
    # the server caches token lookups for about a second; revocation from another process
    # takes effect once that entry expires
    deadline = time.monotonic() + 10
    while b.http.get("/api/v1/me").status_code != 401:
        assert time.monotonic() < deadline, "revoked token still accepted"
        time.sleep(0.1)
    res = srv.cli("device", "revoke", "bob", "no-such-device", check=False)
    assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1
    res = srv.cli("device", "list", "nobody", check=False)
    assert res.returncode == 1 and "nobody" in res.stderr


def test_cli_user_list_passwd_and_duplicates(srv) -> None:  # type: ignore[no-untyped-def]
    srv.add_user("dave", "old")
    names = [line.split("\t")[0] for line in srv.cli("user", "list").stdout.splitlines()]
    assert {"alice", "bob", "dave"} <= set(names)
    srv.cli("user", "passwd", "dave", "--password-stdin", input="new\n")
    login(srv, "dave", "new")
    with api_client(srv) as http:
        r = http.post("/api/v1/login", json={"user": "dave", "password": "old", "device": "d"})
        assert r.status_code == 401
    res = srv.cli("user", "add", "dave", "--password-stdin", input="x\n", check=False)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    res = srv.cli(
        "user", "add", "erin", "--password-stdin", "--quota", "lots", input="x\n", check=False
    )
    assert res.returncode == 1 and "--quota" in res.stderr
    res = srv.cli("user", "add", "erin", "--password-stdin", input="", check=False)
    assert res.returncode == 1 and "empty" in res.stderr
