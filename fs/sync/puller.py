"""The puller: brings the server's changes feed into the local store.

``pull_once`` pages ``GET changes?cursor=`` until ``has_more`` is false. Each page is parsed
completely (``wire.Node.from_json``) before anything is applied, then handed to
``store.apply_remote(nodes, cursor=next)``, which writes the nodes and the new cursor in one
batch, so a kill between pages resumes from the last applied page (applying an entry twice
is harmless: each one replaces what the store knew of its node). After each page the
kernel's caches for what changed are invalidated through ``invalidate(changes)``.

Nodes with unpushed local edits are left alone by the store (local wins until the sync
issue's conflict handling); they are reported in ``Changes.kept_local`` and counted here.

Mass-delete guard: the pages of one pull are fetched first (up to ``LOOKAHEAD`` entries) and
the deletions of files this device knows, net of the new files the pull brings, are
counted. A mass deletion on another device
reaches the feed over seconds (its pushes follow its unlinks), so once a pull holds
``MIN_HALF`` deletions the puller keeps reading the feed until it has been quiet for
``SETTLE`` s (at most ``SETTLE_MAX``) before deciding. More than ``MAX_DELETES`` of them, or
more than half of the device's files (with at least ``MIN_HALF`` deletions), and nothing of
the pull is applied: ``held`` says so (``cairn status``) and later pulls stay held until
``confirm_deletes()`` (``cairn sync --confirm-deletes``) lets the next pull through.

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

PAGE = 1000  # the server's bound
MAX_PAGES = 100_000  # bound on one pull: 100 million changes
LOOKAHEAD = 20_000  # entries fetched before applying (one batch, one guard decision)
MAX_DELETES = 1000  # a pull deleting more files than this is held
MIN_HALF = 5  # "more than half of the tree" counts only from this many deletions
SETTLE = 1.5  # a burst of deletions is collected until the feed is this quiet (seconds)
SETTLE_MAX = 30.0  # ... or for at most this long


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
        # Nodes whose remote change was skipped (local edits queued): the pusher applies
        # the server's node from its commit result for these (see pusher.py).
        self.skipped: set[str] = set()
        self.last_pull: float | None = None
        self.held: dict[str, Any] | None = None  # {"deletes", "files", "since"} while held
        self._confirmed = False

    def confirm_deletes(self) -> bool:
        """Let the next pull apply its deletions whatever their number. Returns whether
        deletions were held."""
        was = self.held is not None
        self._confirmed = True
        return was

    def _deletes(self, nodes: list[wire.Node]) -> int:
        """Files this device knows that the pull removes, net of new files it brings:
        a file replaced by a new one (unlink + create, or a save through a new node) does
        not shrink the tree, and holding those would stop ordinary editing of a small
        tree. A rename over a file, or a plain delete, counts."""
        store = self._store
        latest = {rn.id: rn for rn in nodes}  # a node repeated by _settle: its last state
        deletes = arrivals = 0
        for rn in latest.values():
            if rn.type != "file":
                continue
            known = store.ino_of(rn.id) is not None
            if rn.deleted and known:
                deletes += 1
            elif not rn.deleted and not known:
                arrivals += 1
        return max(0, deletes - arrivals)

    async def _settle(self, nodes: list[wire.Node], cursor: str | None) -> str | None:
        """Extend ``nodes`` with what the feed adds until it is quiet; returns the cursor."""
        start = time.monotonic()
        quiet_since = start
        while time.monotonic() - start < SETTLE_MAX and len(nodes) < LOOKAHEAD:
            await trio.sleep(0.25)
            page = await self._client.changes(cursor, limit=PAGE)
            entries = page.get("entries") or []
            if entries:
                nodes.extend(wire.Node.from_json(e["node"]) for e in entries)
                cursor = str(page["cursor"])
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= SETTLE:
                break
        return cursor

    def _guard(self, nodes: list[wire.Node]) -> bool:
        """True if applying ``nodes`` must be held (see the module docstring)."""
        store = self._store
        deletes = self._deletes(nodes)
        if deletes < MIN_HALF or self._confirmed:
            return False
        files = (
            deletes if deletes > MAX_DELETES else sum(1 for n in store.nodes() if n.type == "file")
        )
        if deletes <= MAX_DELETES and deletes * 2 <= files:
            return False
        if self.held is None:
            log.warning(
                "the server deletes %d of this device's %d files: held until "
                "`cairn sync --confirm-deletes`", deletes, files,
            )  # fmt: skip
            self.held = {"deletes": deletes, "files": files, "since": time.time()}
        else:
            self.held.update(deletes=deletes, files=files)
        return True

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
        more = True
        for _ in range(MAX_PAGES):
            if not more:
                break
            nodes: list[wire.Node] = []
            nxt = cursor
            while more and len(nodes) < LOOKAHEAD:
                page = await self._client.changes(nxt, limit=PAGE)
                try:
                    nodes.extend(wire.Node.from_json(e["node"]) for e in page["entries"])
                    nxt = str(page["cursor"])
                    more = bool(page["has_more"])
                except (KeyError, TypeError) as e:
                    raise InvalidArgument(f"malformed changes page from the server: {e}") from None
            if not more and not self._confirmed and self._deletes(nodes) >= MIN_HALF:
                try:
                    nxt = await self._settle(nodes, nxt)
                except (KeyError, TypeError) as e:
                    raise InvalidArgument(f"malformed changes page from the server: {e}") from None
            if self._guard(nodes):
                return total
            if nodes or nxt != cursor:
                changes = self._store.apply_remote(nodes, cursor=nxt)
                total += len(nodes)
                self.kept_local += len(changes.kept_local)
                if len(self.skipped) < 100_000:
                    self.skipped.update(changes.kept_local)
                if self._invalidate is not None and nodes:
                    await self._invalidate(changes)
            cursor = nxt
        if self.held is not None or self._confirmed:
            if self.held is not None:
                log.info("held deletions applied")
            self.held, self._confirmed = None, False
        return total
