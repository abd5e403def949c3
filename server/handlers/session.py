"""Login, logout and ``me``: turning a password into a device token and back."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from cairn.core.errors import InvalidArgument, Unauthenticated

from .. import auth, metrics
from ..appkeys import KEYS, LOGIN_LIMIT, META, run_cpu
from ..limits import read_json_object

log = logging.getLogger("cairn.server.session")

MAX_FIELD = 1024


def _field(body: dict[str, Any], key: str, max_len: int = 255) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value or len(value) > max_len or "\x00" in value:
        raise InvalidArgument(f"{key!r} must be a non-empty string of at most {max_len} chars")
    return value


async def namespaces_of(meta: Any, user_id: int) -> list[dict[str, Any]]:
    return [{"ns": i.ns, "root": i.root, "name": i.name} for i in await meta.namespaces(user_id)]


def home_of(user: Any) -> dict[str, Any]:
    return {"ns": user.home_ns, "root": user.home_root}


async def login(request: web.Request) -> web.Response:
    body = await read_json_object(request, 64 * 1024)
    user_name = _field(body, "user")
    password = _field(body, "password", MAX_FIELD)
    device_name = _field(body, "device")
    limiter = request.app[LOGIN_LIMIT]
    addr_key, user_key = f"addr:{request.remote}", f"user:{user_name}"
    limiter.check(addr_key)
    limiter.check(user_key)
    meta = request.app[META]
    user = await meta.get_user(user_name)
    stored = user.password_hash if user is not None else None
    ok, rehash = await run_cpu(request, auth.verify_password, stored, password)
    if not ok or user is None:
        limiter.fail(addr_key)
        limiter.fail(user_key)
        metrics.LOGIN_FAILURES.inc()
        raise Unauthenticated("wrong user name or password")
    limiter.clear(user_key)
    if rehash:
        await meta.set_password(user_name, await run_cpu(request, auth.hash_password, password))
    token = auth.new_token()
    device = await meta.add_device(user.id, device_name, auth.token_hash(token))
    log.info("user %s logged in as device %s (%s)", user_name, device.id, device_name)
    return web.json_response(
        {
            "token": token,
            "device_id": device.id,
            "user": user.name,
            "home": home_of(user),
            "dedupe_key": request.app[KEYS].dedupe_key.hex(),
        }
    )


async def logout(request: web.Request) -> web.Response:
    me = auth.caller(request)
    await request.app[META].revoke_device(me.user_id, str(me.device_id))
    return web.json_response({"revoked": True})


async def me(request: web.Request) -> web.Response:
    me = auth.caller(request)
    meta = request.app[META]
    user = await meta.get_user(me.device.user_name)
    if user is None:  # deleted while the request was in flight
        raise Unauthenticated("unknown user")
    return web.json_response(
        {
            "user": user.name,
            "device_id": me.device_id,
            "device": me.device.name,
            "home": home_of(user),
            "quota": user.quota,
            "used": await meta.usage(me.user_id),
            "dedupe_key": request.app[KEYS].dedupe_key.hex(),
            "namespaces": await namespaces_of(meta, me.user_id),
        }
    )


ROUTES = [
    web.post("/api/v1/login", login, name="login"),
    web.post("/api/v1/logout", logout, name="logout"),
    web.get("/api/v1/me", me, name="me"),
]
