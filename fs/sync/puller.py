"""The puller: brings the server's changes feed into the local store.

``pull_once`` pages ``GET changes?cursor=`` until ``has_more`` is false. Each page is parsed
completely (``wire.Node.from_json``) before anything is applied, then handed to
``store.apply_remote(nodes, cursor=next)``, which writes the nodes and the new cursor in one
batch, so a kill between pages resumes from the last applied page (applying an entry twice
is harmless: each one replaces what the store knew of its node). After each page the
kernel's caches for what changed are invalidated through ``invalidate(changes)``.

Nodes with unpushed local edits are left alone by the store (local wins until the sync
issue's conflict handling); they are reported in ``Changes.kept_local`` and counted here.

Errors: a client error propagates (the agent backs off); a malformed page raises
``InvalidArgument`` and the cursor does not move past it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from cairn.core import wire
from cairn.core.errors import InvalidArgument

from ..client import Client

log = logging.getLogger("cairn.fs.sync")

PAGE = 500
MAX_PAGES = 100_000  # bound on one pull: 50 million changes


class Puller:
    def __init__(
        self,
        store: Any,
        client: Client,
        invalidate: Callable[[Any], Awaitable[None]] | None = None,
        lock: trio.Lock | None = None,
    ) -> None:
        self._store = store
        self._client = client
        self._invalidate = invalidate
        self._lock = lock or trio.Lock()
        self.applied = 0
        self.kept_local = 0
        self.last_pull: float | None = None

    async def pull_once(self) -> int:
        """Apply everything the server has after our cursor; returns how many entries."""
        total = 0
        async with self._lock:
            total = await self._pull_pages()
        self.applied += total
        self.last_pull = time.time()
        if total:
            log.info("pulled %d changes", total)
        return total

    async def _pull_pages(self) -> int:
        # Under the push/pull lock (see pusher.py): page fetch and apply must not straddle
        # a commit of ours.
        cursor = self._store.cursor()
        total = 0
        for _ in range(MAX_PAGES):
            page = await self._client.changes(cursor, limit=PAGE)
            try:
                nodes = [wire.Node.from_json(e["node"]) for e in page["entries"]]
                nxt = str(page["cursor"])
                more = bool(page["has_more"])
            except (KeyError, TypeError) as e:
                raise InvalidArgument(f"malformed changes page from the server: {e}") from None
            if nodes or nxt != cursor:
                changes = self._store.apply_remote(nodes, cursor=nxt)
                total += len(nodes)
                self.kept_local += len(changes.kept_local)
                if self._invalidate is not None and nodes:
                    await self._invalidate(changes)
            cursor = nxt
            if not more:
                break
        return total
