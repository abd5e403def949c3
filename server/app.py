"""``create_app(config)``: the aiohttp application of cairn-server.

Middlewares, outermost first: metrics (every answer counted, errors included), errors (the
one translation of exceptions into JSON answers), authentication (bearer token → device,
except for the public routes) with the per-device API rate limit. Resources (thread pool, MetaStore, BlobStore,
notifier) are opened in a ``cleanup_ctx`` at startup and closed at cleanup, after in-flight
requests finished; hint sockets and polls are woken and closed at shutdown.

One of several worker processes (``workers = N``, cli.py) gets its ``peers.Peers`` channel:
the in-process hint fan-out and the rate limiters then share their events with the other
workers (PostgreSQL hints already cross processes through LISTEN/NOTIFY).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from . import keys as server_keys
from .appkeys import (
    API_LIMIT,
    BLOBS,
    CONFIG,
    CPU,
    HINT_SOCKETS,
    KEYS,
    LOGIN_LIMIT,
    META,
    NOTIFIER,
    UPLOADS,
)
from .auth import auth_middleware
from .config import Config
from .errors import error_middleware
from .handlers import chunks, commit, hints, ops, session, tree
from .keys import ServerKeys
from .limits import ByteBudget, FailureLimiter, TokenBucket
from .metrics import metrics_middleware
from .notify import make_notifier
from .peers import Peers

log = logging.getLogger("cairn.server.app")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Chunk bodies held in memory at once by concurrent uploads (limits.ByteBudget).
UPLOAD_BUDGET = 64 * 1024 * 1024


async def open_meta(cfg: Config) -> Any:
    """Open the metadata store, apply migrations and check its durability settings."""
    from .meta import MetaStore

    meta = await MetaStore.open(cfg.database_url)
    try:
        await meta.migrate()
        await meta.check_durability()
    except BaseException:
        await meta.close()
        raise
    return meta


def open_blobs(cfg: Config) -> Any:
    from .blobs import open_blobstore

    return open_blobstore(dict(cfg.blobs))


def _resources(
    meta: Any, blobs: Any, peers: Peers | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        cfg = app[CONFIG]
        app[CPU] = ThreadPoolExecutor(cfg.cpu_threads, thread_name_prefix="cairn-cpu")
        owned_meta = meta is None
        if peers is not None:
            peers.start()
        try:
            app[META] = await open_meta(cfg) if meta is None else meta
            try:
                app[BLOBS] = open_blobs(cfg) if blobs is None else blobs
                try:
                    await app[NOTIFIER].start()
                    yield
                finally:
                    await app[NOTIFIER].close()
                    if blobs is None:
                        await app[BLOBS].close()
            finally:
                if owned_meta:
                    await app[META].close()
        finally:
            if peers is not None:
                peers.close()
            app[CPU].shutdown(wait=True)

    return ctx


def create_app(
    config: Config,
    *,
    keys: ServerKeys | None = None,
    meta: Any = None,
    blobs: Any = None,
    peers: Peers | None = None,
) -> web.Application:
    """The application for ``config``.

    ``keys``/``meta``/``blobs`` default to the ones the config names (opened at startup);
    tests may pass their own, which the app then does not close. ``peers``: this worker's
    channel to the other workers of the server (started and closed with the app).
    """

    async def lookup(token_hash: bytes) -> Any:
        return await app[META].device_by_token(token_hash)

    def api_limit(device_id: int) -> None:
        app[API_LIMIT].take(str(device_id))

    app = web.Application(
        middlewares=[
            metrics_middleware,
            error_middleware,
            auth_middleware(ops.PUBLIC, lookup, api_limit),
        ],
        # Handlers bound their bodies themselves while streaming (limits.read_body); this
        # only guards aiohttp's own request.read()/post(), which no handler uses.
        client_max_size=config.limits.json_body,
    )
    app[CONFIG] = config
    app[KEYS] = keys if keys is not None else server_keys.load(config.data_dir)
    app[NOTIFIER] = make_notifier(config.hints_backend, config.database_url)
    rl = config.rate_limits
    app[LOGIN_LIMIT] = FailureLimiter(rl.login_failures, rl.login_window)
    app[API_LIMIT] = TokenBucket(rl.api_rate, rl.api_burst)
    app[UPLOADS] = ByteBudget(max(UPLOAD_BUDGET, 2 * config.limits.chunk_body))
    app[HINT_SOCKETS] = set()
    if peers is not None:
        if config.hints_backend == "memory":
            app[NOTIFIER].share_with(peers)
        app[LOGIN_LIMIT].share_with(peers)
        app[API_LIMIT].share_with(peers)
    app.cleanup_ctx.append(_resources(meta, blobs, peers))
    app.on_shutdown.append(hints.close_hint_sockets)
    for module in (ops, session, tree, chunks, commit, hints):
        app.router.add_routes(module.ROUTES)
    return app
