"""Change hints: the WebSocket pushes after a commit, the long-poll wakes, both are scoped."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest
from aiohttp import ClientSession, WSMsgType

from tests.server.helpers import login, mkdir


@pytest.fixture(scope="module")
def srv(module_server_factory):  # type: ignore[no-untyped-def]
    s = module_server_factory()
    s.add_user("alice", "a")
    s.add_user("bob", "b")
    return s


async def _next_hint(ws, deadline: float) -> dict:  # type: ignore[no-untyped-def]
    msg = await ws.receive(timeout=deadline)
    assert msg.type == WSMsgType.TEXT, msg
    return json.loads(msg.data)  # type: ignore[no-any-return]


@pytest.mark.asyncio
async def test_websocket_pushes_current_then_each_commit(srv) -> None:  # type: ignore[no-untyped-def]
    a, b = login(srv, "alice", "a"), login(srv, "bob", "b")
    async with ClientSession() as http:
        url = srv.url + "/api/v1/hints/ws"
        async with http.ws_connect(url, headers={"Authorization": f"Bearer {a.token}"}) as ws:
            first = await _next_hint(ws, 10)
            assert first["ns"] == a.ns
            # a commit by another device of the same user arrives as a hint
            res = await _commit_in_thread(a.http, a.ns, mkdir(a.root, "hinted"))
            while True:
                hint = await _next_hint(ws, 10)
                assert hint["ns"] == a.ns  # never another user's namespace
                if hint["seq"] >= res["seq"]:
                    break
            # bob's commits are not hinted to alice
            await _commit_in_thread(b.http, b.ns, mkdir(b.root, "bobs"))
            res = await _commit_in_thread(a.http, a.ns, mkdir(a.root, "hinted2"))
            hint = await _next_hint(ws, 10)
            assert hint == {"ns": a.ns, "seq": res["seq"]}


async def _commit_in_thread(http: httpx.Client, ns: int, op: dict) -> dict:
    def go() -> dict:
        r = http.post(f"/api/v1/ns/{ns}/commit", json={"ops": [op]})
        assert r.status_code == 200, r.text
        return r.json()["results"][0]  # type: ignore[no-any-return]

    result = await asyncio.to_thread(go)
    assert result["status"] == "applied"
    return result


@pytest.mark.asyncio
async def test_websocket_needs_a_token(srv) -> None:  # type: ignore[no-untyped-def]
    async with ClientSession() as http:
        r = await http.get(srv.url + "/api/v1/hints/ws", headers={"Upgrade": "websocket"})
        assert r.status == 401 and (await r.json())["error"] == "unauthenticated"
    a = login(srv, "alice", "a")
    r = a.http.get("/api/v1/hints/ws")  # token but no upgrade
    assert r.status_code == 400 and r.json()["error"] == "invalid_argument"


def test_long_poll_answers_at_once_when_behind_and_wakes_on_commit(srv) -> None:  # type: ignore[no-untyped-def]
    a = login(srv, "alice", "a")
    r = a.http.get("/api/v1/hints/poll", params={"timeout": "0"})
    assert r.status_code == 200
    body = r.json()
    assert body["changed"] is True and str(a.ns) in body["ns"]  # empty cursor: everything
    cursor = a.http.get("/api/v1/changes", params={"limit": 1000}).json()
    while cursor["has_more"]:
        cursor = a.http.get("/api/v1/changes", params={"cursor": cursor["cursor"]}).json()
    caught_up = cursor["cursor"]
    r = a.http.get("/api/v1/hints/poll", params={"cursor": caught_up, "timeout": "0"})
    assert r.json()["changed"] is False

    answer: dict = {}

    def poll() -> None:
        r = a.http.get("/api/v1/hints/poll", params={"cursor": caught_up, "timeout": "60"})
        answer.update(r.json(), status=r.status_code)

    t = threading.Thread(target=poll)
    t.start()
    # the poll is waiting once the server counts it; commit then, and it must wake
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not _polls_waiting(srv):
        time.sleep(0.02)
    res = a.commit(mkdir(a.root, "wake-up"))[0]
    t.join(30)
    assert not t.is_alive(), "long-poll did not wake on commit"
    assert answer["status"] == 200 and answer["changed"] is True
    assert answer["ns"][str(a.ns)] >= res["seq"]


def _polls_waiting(srv) -> bool:  # type: ignore[no-untyped-def]
    text = httpx.get(srv.url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("cairn_hint_polls "):
            return float(line.split()[1]) >= 1
    return False


@pytest.mark.parametrize("params", [{"timeout": "61"}, {"timeout": "-1"}, {"cursor": "!!"}])
def test_long_poll_rejects_bad_params(srv, params) -> None:  # type: ignore[no-untyped-def]
    a = login(srv, "alice", "a")
    r = a.http.get("/api/v1/hints/poll", params=params)
    assert r.status_code == 400 and r.json()["error"] == "invalid_argument"


def test_hints_cross_processes_through_postgres(server_factory, new_database) -> None:  # type: ignore[no-untyped-def]
    """Two server processes on one PostgreSQL database: a commit on one wakes a poll on the
    other (LISTEN/NOTIFY)."""
    url = new_database()
    if url is None:
        pytest.skip("LISTEN/NOTIFY needs PostgreSQL")
    hints = {"hints": {"backend": "postgres"}}
    one = server_factory(database_url=url, config=hints)
    two = server_factory(database_url=url, config=hints)
    one.add_user("alice", "a")
    a = login(one, "alice", "a")
    feed = a.http.get("/api/v1/changes", params={"limit": 1000}).json()
    assert feed["has_more"] is False
    answer: dict = {}

    def poll() -> None:
        with httpx.Client(base_url=two.url, timeout=60) as http:
            r = http.get(
                "/api/v1/hints/poll",
                params={"cursor": feed["cursor"], "timeout": "30"},
                headers={"Authorization": f"Bearer {a.token}"},
            )
            answer.update(r.json(), status=r.status_code)

    t = threading.Thread(target=poll)
    t.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not _polls_waiting(two):
        time.sleep(0.02)
    res = a.commit(mkdir(a.root, "from-one"))[0]
    t.join(45)
    assert not t.is_alive()
    assert answer["status"] == 200 and answer["changed"] is True
    assert answer["ns"][str(a.ns)] >= res["seq"]


@pytest.mark.asyncio
async def test_shutdown_closes_hint_sockets(server_factory) -> None:  # type: ignore[no-untyped-def]
    srv = server_factory()
    srv.add_user("alice", "a")
    a = login(srv, "alice", "a")
    async with ClientSession() as http:
        url = srv.url + "/api/v1/hints/ws"
        async with http.ws_connect(url, headers={"Authorization": f"Bearer {a.token}"}) as ws:
            await _next_hint(ws, 10)
            status = await asyncio.to_thread(srv.stop)
            msg = await ws.receive(timeout=10)
            # a proper close frame ("going away"), not a dropped connection
            assert msg.type == WSMsgType.CLOSE and msg.data == 1001
    assert status == 0
