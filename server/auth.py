"""Passwords, device tokens and the authentication middleware.

- Passwords: Argon2id (argon2-cffi's RFC 9106 low-memory profile). Hashing and verifying take
  tens of milliseconds of CPU, so the async callers run them in the CPU pool.
- Device tokens: 32 random bytes, base64url, handed out once at login; the server stores only
  their SHA-256, so a database leak does not leak usable tokens. A token is the device: revoke
  the device and the token stops working on the next request.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from cairn.core.errors import Unauthenticated

_hasher = PasswordHasher()
# Verified against when the user does not exist, so a wrong user name costs as much time as a
# wrong password and timing does not reveal which user names exist.
_DUMMY_HASH = _hasher.hash("cairn: no such user")

TOKEN_BYTES = 32
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> tuple[bool, bool]:
    """(matches, needs_rehash). ``stored=None`` burns the same time and answers False."""
    try:
        _hasher.verify(stored or _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, False
    if stored is None:
        return False, False
    return True, _hasher.check_needs_rehash(stored)


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class Caller:
    """Who is calling: set on ``request[CALLER]`` by the middleware."""

    user_id: int
    device_id: int
    device: Any  # the MetaStore's Device record


CALLER = web.RequestKey("caller", Caller)


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 256:
        raise Unauthenticated("missing or malformed bearer token")
    return token


def caller(request: web.Request) -> Caller:
    return request[CALLER]


def auth_middleware(
    public: set[str],
    lookup: Callable[[bytes], Awaitable[Any]],
    limit: Callable[[int], None] | None = None,
) -> Any:
    """Authenticate every matched route except the names in ``public``.

    ``lookup(token_hash)`` returns the Device (with ``id`` and ``user_id``) or None.
    ``limit(device_id)``, if given, runs next for every authenticated request (the API rate
    limit: it raises ``RateLimited``); one middleware for both saves a layer per request.
    Unmatched paths fall through so the router answers 404/405.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route
        if route.name in public or request.match_info.http_exception is not None:
            return await handler(request)
        device = await lookup(token_hash(bearer_token(request)))
        if device is None:
            raise Unauthenticated("unknown or revoked token")
        request[CALLER] = Caller(device.user_id, device.id, device)
        if limit is not None:
            limit(device.id)
        return await handler(request)

    return middleware
