"""Unit tests of the rate limiters, body bounds and the hint fan-out (no server process)."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from cairn.core import errors as E
from cairn.server.errors import error_middleware, status_of
from cairn.server.limits import FailureLimiter, TokenBucket, read_body, read_json_object
from cairn.server.notify import LocalNotifier


def test_failure_limiter_blocks_after_budget_and_clears() -> None:
    lim = FailureLimiter(max_failures=3, window=60)
    for _ in range(3):
        lim.check("user:a")
        lim.fail("user:a")
    with pytest.raises(E.RateLimited) as info:
        lim.check("user:a")
    assert 0 < info.value.retry_after <= 60  # type: ignore[attr-defined]
    lim.check("user:b")  # other keys unaffected
    lim.clear("user:a")
    lim.check("user:a")


def test_failure_limiter_memory_is_bounded() -> None:
    lim = FailureLimiter(max_failures=2, window=60, max_keys=100)
    for i in range(1000):
        lim.fail(f"addr:{i}")
    assert len(lim._fails) == 100


def test_token_bucket_allows_burst_then_limits() -> None:
    bucket = TokenBucket(rate=1, burst=5)
    for _ in range(5):
        bucket.take("d1")
    with pytest.raises(E.RateLimited):
        bucket.take("d1")
    TokenBucket(rate=0, burst=1).take("x")  # disabled never raises


def test_status_mapping_follows_the_class_tree() -> None:
    assert status_of(E.InvalidName("x")) == 400
    assert status_of(E.IdMismatch("x")) == 422
    assert status_of(E.FrameCorrupt("x")) == 422
    assert status_of(E.NotFound("x")) == 404
    assert status_of(E.TooLarge("x")) == 413
    assert status_of(E.RateLimited("x")) == 429
    assert status_of(E.DirectoryNotEmpty("x")) == 409
    assert status_of(E.Unavailable("x")) == 503


async def _body_app() -> web.Application:
    async def echo_len(request: web.Request) -> web.Response:
        return web.json_response({"len": len(await read_body(request, 1000))})

    async def echo_json(request: web.Request) -> web.Response:
        return web.json_response(await read_json_object(request, 1000))

    app = web.Application(middlewares=[error_middleware])
    app.router.add_post("/raw", echo_len)
    app.router.add_post("/json", echo_json)
    return app


@pytest.mark.asyncio
async def test_body_bounds_while_streaming(aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(await _body_app())
    r = await client.post("/raw", data=b"x" * 1000)
    assert (r.status, await r.json()) == (200, {"len": 1000})
    r = await client.post("/raw", data=b"x" * 1001)
    assert r.status == 413 and (await r.json())["error"] == "too_large"

    async def stream():  # no Content-Length: chunked transfer, bound hit mid-stream
        for _ in range(10):
            yield b"y" * 300

    r = await client.post("/raw", data=stream())
    assert r.status == 413 and (await r.json())["error"] == "too_large"


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b"\xff\xfe", b"1", b'"s"'])
@pytest.mark.asyncio
async def test_json_garbage_is_400(aiohttp_client, body: bytes) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(await _body_app())
    r = await client.post("/json", data=body)
    assert r.status == 400
    assert (await r.json())["error"] == "invalid_argument"


@pytest.mark.asyncio
async def test_unknown_route_and_method_are_json(aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(await _body_app())
    r = await client.get("/nope")
    assert r.status == 404 and (await r.json())["error"] == "not_found"
    r = await client.get("/raw")
    assert r.status == 405 and (await r.json())["error"] == "method_not_allowed"
    assert "POST" in r.headers["Allow"]


@pytest.mark.asyncio
async def test_notifier_fans_out_coalesced_hints_per_namespace() -> None:
    n = LocalNotifier()
    with n.subscribe([1, 2]) as a, n.subscribe([2]) as b:
        await n.publish(1, 5)
        await n.publish(1, 7)
        await n.publish(2, 3)
        await n.publish(9, 1)  # nobody watches ns 9
        assert await a.wait(1) == {1: 7, 2: 3}
        assert await b.wait(1) == {2: 3}
        assert await b.wait(0.01) == {}  # nothing new: times out empty


@pytest.mark.asyncio
async def test_notifier_wakes_a_waiter_and_close_ends_waits() -> None:
    n = LocalNotifier()
    with n.subscribe([1]) as sub:
        waiter = asyncio.create_task(sub.wait(30))
        await asyncio.sleep(0)  # let the waiter block before publishing
        await n.publish(1, 2)
        assert await asyncio.wait_for(waiter, 5) == {1: 2}
        waiter = asyncio.create_task(sub.wait(30))
        await n.close()
        assert await asyncio.wait_for(waiter, 5) == {}
        assert sub.closed
    assert n._by_ns == {}


@pytest.mark.asyncio
async def test_peers_share_hints_and_limiter_events_between_workers() -> None:
    from cairn.server import peers

    mesh = peers.mesh(2)
    # for_worker closes the ends a worker does not use; in one process, give each its own
    # duplicates so both "workers" can live side by side.
    dup = [(rx.dup(), tx.dup()) for rx, tx in mesh]
    a, b = peers.for_worker(mesh, 0), peers.for_worker(dup, 1)
    a.start()
    b.start()
    try:
        note_a, note_b = LocalNotifier(), LocalNotifier()
        note_a.share_with(a)
        note_b.share_with(b)
        lim_a, lim_b = FailureLimiter(2, 60), FailureLimiter(2, 60)
        lim_a.share_with(a)
        lim_b.share_with(b)
        with note_b.subscribe([7]) as sub:
            await note_a.publish(7, 42)  # published in worker a ...
            assert await sub.wait(5) == {7: 42}  # ... wakes a listener of worker b
        long_key = "user:" + "\U0001f600" * 255  # the longest user name, 4 bytes a char
        lim_a.fail(long_key)
        lim_a.fail("user:m")
        lim_a.fail("user:m")
        with note_b.subscribe([1]) as sub:  # the mesh keeps order: once this hint is in,
            await note_a.publish(1, 1)  # the limiter events sent before it are too
            assert await sub.wait(5) == {1: 1}
        with pytest.raises(E.RateLimited):
            lim_b.check("user:m")
        lim_b.check(long_key)  # one failure of two: still allowed
        assert a.dropped == 0
    finally:
        a.close()
        b.close()
