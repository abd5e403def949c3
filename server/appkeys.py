"""The typed keys of the application's shared state, and small helpers every handler uses.

Kept apart from ``app.py`` so handler modules can import the keys without importing the
factory that imports them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aiohttp import web

from cairn.core.errors import InvalidArgument, NotFound

from .blobs import BlobStore
from .config import Config
from .keys import ServerKeys
from .limits import ByteBudget, FailureLimiter, TokenBucket
from .meta import MetaStore
from .notify import LocalNotifier

T = TypeVar("T")

CONFIG = web.AppKey("config", Config)
KEYS = web.AppKey("keys", ServerKeys)
META = web.AppKey("meta", MetaStore)
BLOBS = web.AppKey("blobs", BlobStore)
NOTIFIER = web.AppKey("notifier", LocalNotifier)
CPU = web.AppKey("cpu", ThreadPoolExecutor)
LOGIN_LIMIT = web.AppKey("login_limit", FailureLimiter)
API_LIMIT = web.AppKey("api_limit", TokenBucket)
UPLOADS = web.AppKey("uploads", ByteBudget)
HINT_SOCKETS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("hint_sockets")

_MAX_NS = (1 << 63) - 1


async def run_cpu(request: web.Request, fn: Callable[..., T], *args: Any) -> T:
    """Run CPU-bound ``fn(*args)`` in the app's bounded thread pool, off the event loop."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(request.app[CPU], fn, *args)


def ns_param(request: web.Request) -> int:
    """The ``{ns}`` path parameter. Anything but a namespace id is simply not found."""
    raw = request.match_info["ns"]
    if not raw.isdigit() or len(raw) > 19 or int(raw) > _MAX_NS:
        raise NotFound("no such namespace")
    return int(raw)


def node_param(request: web.Request) -> str:
    raw = request.match_info["node"]
    if len(raw) != 32 or not all(c in "0123456789abcdef" for c in raw):
        raise InvalidArgument("a node id is 32 lowercase hex digits")
    return raw
