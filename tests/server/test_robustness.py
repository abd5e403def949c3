"""Every route answers garbage and missing tokens with a 4xx JSON error; health, metrics and
graceful shutdown of the real process."""

from __future__ import annotations

import json
import re
import signal
import threading
import time

import httpx
import pytest

from cairn.server.handlers.ops import openapi_document
from tests.server.helpers import login

PUBLIC = re.compile(r"^/(healthz|readyz|metrics|api/v1/openapi\.json|api/v1/login)$")
GARBAGE_BODIES = [b"", b"{", b"[]", b'{"a":1}', b"\x00\xff" * 50, b'{"ops": [null]}', b"9" * 400]
GARBAGE_IDS = ["zz%2F..%2Fzz", "-1", "9" * 40, "%00", "abc"]


def _operations() -> list[tuple[str, str]]:
    return [(m.upper(), p) for p, ops in openapi_document()["paths"].items() for m in ops]


@pytest.fixture(scope="module")
def srv(module_server_factory):  # type: ignore[no-untyped-def]
    s = module_server_factory()
    s.add_user("alice", "a")
    return s


def _check(r: httpx.Response, what: str) -> None:
    assert 400 <= r.status_code < 500, f"{what} -> {r.status_code} {r.text[:200]}"
    body = r.json()
    assert set(body) == {"error", "message"}, what
    assert isinstance(body["error"], str) and isinstance(body["message"], str)


@pytest.mark.parametrize(("method", "path"), _operations())
def test_no_token_is_401_and_garbage_is_4xx(srv, method: str, path: str) -> None:  # type: ignore[no-untyped-def]
    a = login(srv, "alice", "a")
    bodies = GARBAGE_BODIES if method in ("POST", "PUT") else [None]
    for raw_id in GARBAGE_IDS:
        url = srv.url + re.sub(r"\{[^}]+\}", raw_id, path)
        for body in bodies:
            what = f"{method} {url} {body!r:.20}"
            if not PUBLIC.match(path):
                r = httpx.request(method, url, content=body, timeout=30)
                assert r.status_code in (401, 404), what  # never served without a token
                _check(r, what)
            if path.endswith("/login"):
                continue  # covered in test_session; garbage logins count as failures
            if "{" not in path and raw_id != GARBAGE_IDS[0]:
                continue
            r = a.http.request(method, url, content=body)
            garbage_in = "{" in path or body is not None
            if PUBLIC.match(path) or path.endswith("/logout") or not garbage_in:
                assert r.status_code < 500, what  # nothing wrong with this request
                continue
            _check(r, what)


def test_unknown_routes_and_methods_are_json(srv) -> None:  # type: ignore[no-untyped-def]
    r = httpx.get(srv.url + "/api/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = httpx.delete(srv.url + "/api/v1/changes")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


def test_big_json_body_is_413(server_factory) -> None:  # type: ignore[no-untyped-def]
    srv = server_factory(config={"limits": {"json_body": 4096}})
    srv.add_user("alice", "a")
    a = login(srv, "alice", "a")
    r = a.http.post(f"/api/v1/ns/{a.ns}/commit", content=json.dumps({"ops": ["x" * 5000]}))
    assert r.status_code == 413 and r.json()["error"] == "too_large"


def test_health_ready_and_metrics(srv) -> None:  # type: ignore[no-untyped-def]
    assert httpx.get(srv.url + "/healthz").json() == {"status": "ok"}
    r = httpx.get(srv.url + "/readyz")
    assert r.status_code == 200
    a = login(srv, "alice", "a")
    a.upload(b"metered bytes")
    a.http.get("/api/v1/changes")
    text = httpx.get(srv.url + "/metrics").text
    assert "# TYPE cairn_http_requests_total counter" in text
    assert re.search(
        r'cairn_http_requests_total\{method="GET",route="/api/v1/changes",status="200"\} [1-9]',
        text,
    )
    assert "cairn_http_request_duration_seconds_bucket" in text
    assert re.search(r"^cairn_chunk_bytes_in_total [1-9]", text, re.M)
    for name in ("cairn_commits_total", "cairn_dedupe_hits_total", "cairn_hint_sockets"):
        assert name in text
    # raw paths never become labels: a flood of unknown URLs stays one series
    for i in range(5):
        httpx.get(srv.url + f"/nope/{i}")
    text = httpx.get(srv.url + "/metrics").text
    assert "/nope/" not in text and 'route="unmatched"' in text


def test_sigterm_finishes_in_flight_requests_then_exits(server_factory) -> None:  # type: ignore[no-untyped-def]
    srv = server_factory()
    srv.add_user("alice", "a")
    a = login(srv, "alice", "a")
    feed = a.http.get("/api/v1/changes").json()
    answer: dict = {}

    def poll() -> None:
        with httpx.Client(timeout=90) as http:
            r = http.get(
                srv.url + "/api/v1/hints/poll",
                params={"cursor": feed["cursor"], "timeout": "60"},
                headers={"Authorization": f"Bearer {a.token}"},
            )
            answer.update(status=r.status_code, body=r.json())

    t = threading.Thread(target=poll)
    t.start()
    deadline = time.monotonic() + 20
    while (
        time.monotonic() < deadline
        and "cairn_hint_polls 1.0" not in httpx.get(srv.url + "/metrics").text
    ):
        time.sleep(0.02)
    assert srv.stop(signal.SIGTERM) == 0
    t.join(30)
    assert not t.is_alive()
    # the waiting poll got a proper answer instead of a reset connection
    assert answer["status"] == 200 and answer["body"]["changed"] is False
    assert "shutting down" in srv.log_tail() and "Traceback" not in srv.log_tail(200)


def test_readyz_is_503_when_the_blob_store_is_unreachable(server_factory) -> None:  # type: ignore[no-untyped-def]
    from tests.support.server import free_port

    dead = {"kind": "s3", "bucket": "b", "region": "us-east-1", "access_key": "k",
            "secret_key": "s", "endpoint_url": f"http://127.0.0.1:{free_port()}",
            "retries": 1}  # fmt: skip
    srv = server_factory(config={"blobs": dead})
    assert httpx.get(srv.url + "/healthz").status_code == 200
    r = httpx.get(srv.url + "/readyz", timeout=30)
    assert r.status_code == 503 and r.json()["error"] == "unavailable"


def test_api_rate_limit_per_device(server_factory) -> None:  # type: ignore[no-untyped-def]
    srv = server_factory(config={"rate_limits": {"api_rate": 0.01, "api_burst": 3}})
    srv.add_user("alice", "a")
    a, b = login(srv, "alice", "a", "one"), login(srv, "alice", "a", "two")
    codes = [a.http.get("/api/v1/me").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = a.http.get("/api/v1/me")
    assert r.json()["error"] == "rate_limited" and int(r.headers["Retry-After"]) >= 1
    assert b.http.get("/api/v1/me").status_code == 200  # another device has its own budget
