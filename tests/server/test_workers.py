"""``workers = 2``: two server processes on one port (SO_REUSEPORT). Hints reach the sockets
held by either worker, failed logins count in both, a retried commit applies once, and the
supervisor stops both on SIGTERM.

Which worker serves a connection is the kernel's choice (a hash of the connection's
addresses), so each test spreads its requests over many fresh connections: with two workers
the chance that all of them land on one worker is far below one in a hundred."""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.error
import urllib.request

import httpx
import psutil
import pytest
from aiohttp import ClientSession, TCPConnector, WSMsgType

from tests.server.helpers import login, mkdir

SOCKETS = 10
COMMITS = 4


@pytest.fixture(scope="module")
def srv(module_server_factory):  # type: ignore[no-untyped-def]
    s = module_server_factory(
        "workers", config={"workers": 2, "rate_limits": {"login_failures": 3}}
    )
    s.add_user("alice", "a")
    s.add_user("mallory", "m")
    return s


def test_two_workers_run_under_one_supervisor(srv) -> None:  # type: ignore[no-untyped-def]
    assert srv.proc is not None
    workers = psutil.Process(srv.proc.pid).children()
    assert len(workers) == 2


@pytest.mark.asyncio
async def test_hints_reach_sockets_held_by_every_worker(srv) -> None:  # type: ignore[no-untyped-def]
    a = login(srv, "alice", "a")
    url = srv.url + "/api/v1/hints/ws"
    headers = {"Authorization": f"Bearer {a.token}"}
    sessions = [ClientSession(connector=TCPConnector(force_close=True)) for _ in range(SOCKETS)]
    try:
        sockets = [await s.ws_connect(url, headers=headers) for s in sessions]
        for ws in sockets:  # each first gets the current seq
            assert json.loads((await ws.receive(timeout=10)).data)["ns"] == a.ns

        def commit_on_fresh_connections() -> list[int]:
            seqs = []
            for i in range(COMMITS):
                with httpx.Client(base_url=srv.url, headers=headers) as http:
                    r = http.post(
                        f"/api/v1/ns/{a.ns}/commit", json={"ops": [mkdir(a.root, f"w{i}")]}
                    )
                    assert r.status_code == 200, r.text
                    seqs.append(r.json()["results"][0]["seq"])
            return seqs

        seqs = await asyncio.to_thread(commit_on_fresh_connections)
        for ws in sockets:
            for _ in range(100):  # bounded: hints may coalesce, but the last seq must come
                msg = await ws.receive(timeout=10)
                assert msg.type == WSMsgType.TEXT, msg
                hint = json.loads(msg.data)
                assert hint["ns"] == a.ns
                if hint["seq"] >= seqs[-1]:
                    break
            else:
                raise AssertionError("the last commit was never hinted")
        for ws in sockets:
            await ws.close()
    finally:
        for s in sessions:
            await s.close()


def test_a_retried_commit_applies_once_across_workers(srv) -> None:  # type: ignore[no-untyped-def]
    a = login(srv, "alice", "a", device="retrier")
    op = mkdir(a.root, "once")
    answers = []
    for _ in range(8):
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {a.token}"}) as h:
            r = h.post(f"/api/v1/ns/{a.ns}/commit", json={"ops": [op]})
            assert r.status_code == 200, r.text
            answers.append(r.json()["results"][0])
    assert all(x == answers[0] for x in answers)
    assert answers[0]["status"] == "applied"
    listing = a.http.get(f"/api/v1/ns/{a.ns}/nodes/{a.root}/children").json()
    assert [e["name"] for e in listing["entries"]].count("once") == 1


def test_sigterm_stops_every_worker(module_server_factory) -> None:  # type: ignore[no-untyped-def]
    s = module_server_factory("workers-stop", config={"workers": 2})
    assert s.proc is not None
    workers = psutil.Process(s.proc.pid).children()
    assert len(workers) == 2
    assert s.stop(signal.SIGTERM) == 0
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive
    assert not s.log_errors()


def _login_status(srv, password: str) -> int:  # type: ignore[no-untyped-def]
    """One login on a fresh connection (urllib opens one per request)."""
    req = urllib.request.Request(
        srv.url + "/api/v1/login",
        data=json.dumps({"user": "mallory", "password": password, "device": "d"}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_failed_logins_count_in_every_worker(srv) -> None:  # type: ignore[no-untyped-def]
    # last in this module: the failures also spend the budget of the address all tests share
    assert [_login_status(srv, "wrong") for _ in range(3)] == [401, 401, 401]
    # the budget of 3 is spent for the whole server, whichever worker answers
    assert [_login_status(srv, "m") for _ in range(8)] == [429] * 8
