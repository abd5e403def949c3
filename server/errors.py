"""The one mapping from Cairn errors to HTTP: status codes, JSON bodies and the middleware.

Every non-2xx answer of the server is ``{"error": CODE, "message": TEXT}`` (docs/api.md).
Handlers raise ``cairn.core.errors`` classes; aiohttp's own ``HTTPException``s (unknown
route, wrong method) are rewritten into the same shape here, so no other module builds an
error response. Anything else is a bug: it is logged with its traceback and answered 500
without details.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from cairn.core import errors as E

log = logging.getLogger("cairn.server.errors")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Looked up along the exception's MRO, so a subclass inherits its parent's status unless it
# has its own line.
STATUS: dict[type[E.CairnError], int] = {
    E.InvalidArgument: 400,
    E.FormatError: 400,
    E.FrameError: 422,
    E.Unauthenticated: 401,
    E.PermissionDenied: 403,
    E.QuotaExceeded: 403,
    E.NotFound: 404,
    E.AlreadyExists: 409,
    E.NotADirectory: 409,
    E.IsADirectory: 409,
    E.DirectoryNotEmpty: 409,
    E.Conflict: 409,
    E.TooLarge: 413,
    E.RateLimited: 429,
    E.Unavailable: 503,
}

# aiohttp's own errors (router, body size, websocket handshake) → our codes.
_HTTP_CODES = {
    400: "invalid_argument",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "invalid_argument",
    429: "rate_limited",
}


def status_of(exc: E.CairnError) -> int:
    for cls in type(exc).__mro__:
        status = STATUS.get(cls)
        if status is not None:
            return status
    return 500


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def cairn_error_response(exc: E.CairnError) -> web.Response:
    status = status_of(exc)
    if status == 500:
        log.error("unmapped error %s: %s", type(exc).__name__, exc)
    resp = error_response(status, exc.code, str(exc) or exc.code)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        resp.headers["Retry-After"] = str(max(1, int(retry_after + 0.999)))
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="cairn"'
    return resp


def _http_exception_response(exc: web.HTTPException) -> web.StreamResponse:
    if exc.status < 400:
        raise exc  # redirects and the like pass through untouched
    code = _HTTP_CODES.get(exc.status, "error" if exc.status >= 500 else "invalid_argument")
    message = exc.reason or code
    if exc.status == 404:
        message = "no such resource"
    resp = error_response(exc.status, code, message)
    for name in ("Allow", "Retry-After"):
        if name in exc.headers:
            resp.headers[name] = exc.headers[name]
    return resp


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except E.CairnError as exc:
        return cairn_error_response(exc)
    except web.HTTPException as exc:
        return _http_exception_response(exc)
    except (ConnectionResetError, TimeoutError):
        raise  # the client went away; nothing to answer
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        return error_response(500, "internal", "internal server error")
