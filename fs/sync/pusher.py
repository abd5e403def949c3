"""The pusher: drains the store's outbox to the server, in order.

One round (``push_once``) repeats until the outbox is empty:

1. take up to ``BATCH`` queued ops (``store.outbox_peek``);
2. chain base revisions inside the batch: a later ``update``/``unlink`` of a node that an
   earlier op of the same batch creates or updates gets the revision that op will produce
   (``create`` → 1, ``update`` → base + 1), because the store only rewrites ops still queued;
3. ask ``chunks/missing`` for every chunk the batch's blocklists name and upload those
   (``Uploader``: bounded concurrency, retries with backoff);
4. commit the batch; walk the results in order:
   - ``applied``: done; for a create or update the node's new ``rev`` goes to
     ``store.outbox_done`` (which rebases later queued ops of that node; see ``_REV_OPS``);
   - ``missing_chunks``: stop here; everything before is done, this op and the rest are sent
     again next round after uploading (ops are idempotent by ``op_id``, so ops after it that
     the server applied simply return their stored result);
   - ``conflict`` / ``error``: removed from the outbox and handed to the ``Resolver``
     (``conflicts.py``), which makes conflicted copies / re-creates and takes the server's
     side locally; what it cannot resolve is *parked*: appended, whole (blocklist
     included), to ``parked.jsonl`` in the state dir with the server's answer, its chunks
     left dirty in the cache, so nothing is lost.

Before sending, ``coalesce`` folds a later ``update`` of a node into that node's earlier
``update`` of the same batch (content is a whole blocklist, so only the last one matters):
otherwise, when the first is refused as stale, the second — chained onto the revision the
first would have made — could match the OTHER device's revision and silently replace it.
(An ``update`` behind its node's ``create`` is not folded: if the create is refused, the
update fails as ``not_found`` and the resolver re-sends it behind the fixed create.)

Crash safety: nothing leaves the outbox before the server has answered for it, and
``outbox_done`` is one synced batch, so a kill at any point re-sends at most one batch, which
the server recognises by op id.

Concurrency: ``push_once`` runs in one task only (the agent's pusher loop); the store is
touched from the trio thread only. The commit and the bookkeeping of its results hold the
lock shared with the puller: a changes page fetched before our commit and applied after
``outbox_done`` would otherwise roll the node back to its pre-commit state until the next
pull.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from cairn.core import wire
from cairn.core.errors import NotFound

from ..client import Client
from ..statedir import write_private
from .conflicts import Resolver
from .uploader import Uploader

log = logging.getLogger("cairn.fs.sync")

BATCH = 1000  # ops per commit (the server's bound)
MISSING_BATCH = 1000  # ids per chunks/missing (the server's bound)
MISSING_RETRIES = 3  # an op still missing chunks after this many uploads is parked
MAX_ROUNDS = 1_000_000  # a bound on one drain; each round commits at least one op
GATHER_STEP = 0.05  # see Pusher._gather
GATHER_MAX = 3.0
"""Longest wait for a lull (``Pusher._gather``, ``Pusher.lull``): under continuous file
system activity a change waits at most this long for its round. 1 s put a round (its
upload, commit and echo pull, ~100 µs of the trio thread per file) in the middle of a
2,000-file burst or of the stat pass after it; 3 s lets a burst of that size and what
follows it finish first (``docs/benchmarks.md``, session 5). Syncthing's watcher waits 10 s
by default; a lone edit on a quiet drive still goes after one ``GATHER_STEP``."""


# Ops whose answer's revision follows from what this device sent: a create makes rev 1 and
# an update is applied only on its base_rev (making base + 1). The other ops (rename,
# setattr, link, unlink) do not check or change the content revision, so their answer
# carries whatever revision the node has on the server, possibly another device's edit
# that this device never saw; rebasing queued ops onto it (``outbox_done``) would let a
# queued update or delete replace that edit unseen.
_REV_OPS = (wire.Create, wire.Mkdir, wire.Symlink, wire.Update)


def safe_prefix(entries: list[Any], sent: frozenset[int] | set[int] = frozenset()) -> list[Any]:
    """The longest prefix of ``entries`` in which no op depends on the outcome of an
    earlier ``update`` of its node in the same commit.

    An ``update`` or a conditional ``unlink`` behind an ``update`` of the same node would be
    chained onto the revision that update produces (``chain_revs``). If the update is
    refused as stale because another device made exactly one revision meanwhile, the
    chained op MATCHES that revision: an unlink then deletes the other device's version
    unseen. So such an op waits for the next commit, when ``outbox_done`` has given it the
    revision the server really produced. A later ``update`` that ``coalesce`` folds into the
    earlier one is fine (one op), except into an entry in ``sent`` (see ``coalesce``).
    Chaining behind a ``create`` stays: a refused create leaves no node to match."""
    updated: set[str] = set()  # nodes with an update earlier in the batch
    foldable: set[str] = set()  # ... whose next update coalesce folds into it
    for i, e in enumerate(entries):
        op = e.op
        if (
            isinstance(op, (wire.Update, wire.Unlink))
            and op.node in updated
            and op.base_rev is not None
            and not (isinstance(op, wire.Update) and op.node in foldable)
        ):
            return entries[:i]
        if isinstance(op, wire.Rename) and op.replaces in updated and op.replaces_rev is not None:
            return entries[:i]  # a rename over it deletes it: the same as an unlink
        if isinstance(op, (wire.Unlink, wire.Link)):
            foldable.discard(op.node)
        if isinstance(op, wire.Update):
            updated.add(op.node)
            if e.seq in sent:
                foldable.discard(op.node)
            else:
                foldable.add(op.node)
    return entries


def chain_revs(ops: list[wire.Op]) -> list[wire.Op]:
    """Give later ops of a node the revision its earlier ops in the same batch produce."""
    after: dict[str, int] = {}
    out: list[wire.Op] = []
    for op in ops:
        if isinstance(op, (wire.Update, wire.Unlink)) and op.node in after:
            if isinstance(op, wire.Update) or op.base_rev is not None:
                op = dataclasses.replace(op, base_rev=after[op.node])
        elif isinstance(op, wire.Rename) and op.replaces in after and op.replaces_rev:
            op = dataclasses.replace(op, replaces_rev=after[op.replaces])
        if isinstance(op, wire.Create):
            after[op.node] = 1
        elif isinstance(op, wire.Update) and op.base_rev:
            after[op.node] = op.base_rev + 1
        out.append(op)
    return out


def coalesce(
    entries: list[Any], sent: frozenset[int] | set[int] = frozenset()
) -> tuple[list[Any], dict[int, list[int]]]:
    """Fold each ``update`` into the same node's earlier ``update`` of the batch
    (no ``unlink``/``link`` of that node in between). Returns the entries to send (with
    merged ops) and, per kept entry seq, the seqs folded into it (done together with it).

    Nothing is folded into an entry whose seq is in ``sent`` (sent in a commit whose answer
    never came): the server may have applied it already, and would answer the merged op
    by its op id with that stored result, dropping the folded content."""
    out: list[Any] = []
    folded: dict[int, list[int]] = {}
    last: dict[str, int] = {}  # node -> index in out of its latest create/update
    for e in entries:
        op = e.op
        if isinstance(op, (wire.Unlink, wire.Link)):
            last.pop(op.node, None)
        if isinstance(op, wire.Update) and op.node in last:
            i = last[op.node]
            prev = out[i]
            merged = dataclasses.replace(prev.op, blocklist=op.blocklist, mtime_ns=op.mtime_ns)
            out[i] = dataclasses.replace(prev, op=merged)
            folded.setdefault(prev.seq, []).append(e.seq)
            continue
        out.append(e)
        if isinstance(op, wire.Update):
            if e.seq in sent:
                last.pop(op.node, None)
            else:
                last[op.node] = len(out) - 1
    return out, folded


def chunk_ids(ops: list[wire.Op]) -> list[bytes]:
    """Distinct chunk ids named by the batch's blocklists, in first-use order."""
    seen: dict[bytes, None] = {}
    for op in ops:
        if isinstance(op, (wire.Create, wire.Update)):
            for cid in op.blocklist.chunk_ids():
                seen.setdefault(cid, None)
    return list(seen)


class Pusher:
    def __init__(
        self,
        store: Any,
        client: Client,
        uploader: Uploader,
        *,
        ns: int,
        parked_file: Path,
        on_committed: Callable[[list[bytes]], Awaitable[None]] | None = None,
        lock: trio.Lock | None = None,
        device: str = "device",
        on_applied: Callable[[Any], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._client = client
        self._uploader = uploader
        self._ns = ns
        self._parked_file = parked_file
        self._on_committed = on_committed
        self._lock = lock or trio.Lock()
        self.parked = 0
        self.committed = 0
        self._missing_streak: tuple[str, int] = ("", 0)
        self._progress: dict[str, int] | None = None  # see upload_progress
        # Outbox seqs sent in a commit and not settled since (no answer: cut connection,
        # server gone; or left queued behind missing chunks): nothing is folded into them
        # (see coalesce). In memory: a restart forgets them.
        self._unanswered: set[int] = set()
        self._on_applied = on_applied
        self.skipped: set[str] = set()  # the puller's (shared): see _catch_up
        # A counter of requests the file system served (set by the mount: FUSE handlers
        # bump it); _gather waits while it moves. None: only the outbox is watched.
        self.activity: Callable[[], int] | None = None
        self._busy_seen = -1  # activity() when the last gather ended
        self.own_seq = 0  # highest journal seq our applied ops produced (see SyncAgent._pull)
        self.unpulled = 0  # ops applied since the last pull: the size of the echo to come
        self.resolver = Resolver(
            store, client, ns=ns, device=device, park=self._park, invalidate=on_applied
        )

    async def _upload_missing(self, ids: list[bytes]) -> None:
        up = self._uploader
        prog = {"total": 0, "chunks0": up.uploaded_chunks, "bytes0": up.uploaded_bytes}
        self._progress = prog
        try:
            for i in range(0, len(ids), MISSING_BATCH):
                group = ids[i : i + MISSING_BATCH]
                missing = await self._client.missing_chunks([c.hex() for c in group])
                prog["total"] += len(missing)
                await up.upload([bytes.fromhex(m) for m in missing])
        finally:
            self._progress = None

    def upload_progress(self) -> dict[str, int] | None:
        """The upload under way, for ``cairn status``: chunks sent of those found missing
        so far (the total grows while the server is asked in groups), bytes sent."""
        prog = self._progress
        if prog is None or prog["total"] == 0:
            return None
        up = self._uploader
        return {
            "chunks": up.uploaded_chunks - prog["chunks0"],
            "total": prog["total"],
            "bytes": up.uploaded_bytes - prog["bytes0"],
        }

    def _park(self, op: wire.Op, result: dict[str, Any]) -> None:
        record = {"op": op.to_json(), "result": result}
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        old = self._parked_file.read_bytes() if self._parked_file.exists() else b""
        write_private(self._parked_file, old + line)
        self.parked += 1
        status = result.get("status")
        why = result.get("reason") or result.get("error") or status
        log.warning(
            "server refused %s of node %s (%s: %s); local data kept, op parked in %s",
            op.kind,
            op.node,
            status,
            why,
            self._parked_file.name,
        )

    async def push_batch(self) -> bool:
        """Push one batch. Returns False when the outbox was empty."""
        entries = self._store.outbox_peek(BATCH)
        if not entries:
            return False
        entries, folded = coalesce(safe_prefix(entries, self._unanswered), self._unanswered)
        ops = chain_revs([e.op for e in entries])
        started = time.monotonic()
        up_chunks, up_bytes = self._uploader.uploaded_chunks, self._uploader.uploaded_bytes
        await self._upload_missing(chunk_ids(ops))
        async with self._lock:
            # Until settled, these ops may be applied on the server already (see coalesce).
            self._unanswered.update(e.seq for e in entries)
            results = await self._client.commit(self._ns, [op.to_json() for op in ops])
            clean, retry_missing, refused = self._settle(entries, ops, results, folded)
            # a synced write on the trio thread would stall every FUSE request meanwhile
            await trio.to_thread.run_sync(self._store.sync_wal)
            await self._catch_up(ops, results)
            if refused:
                clean.extend(await self.resolver.resolve(refused))
        took = time.monotonic() - started
        up_bytes = self._uploader.uploaded_bytes - up_bytes
        log.info(
            "pushed %d changes, uploaded %d chunks (%.1f MiB) in %.2f s (%.1f MiB/s)",
            len(ops), self._uploader.uploaded_chunks - up_chunks, up_bytes / 2**20, took,
            up_bytes / 2**20 / max(took, 1e-6),
        )  # fmt: skip
        if clean and self._on_committed is not None:
            await self._on_committed(clean)
        if retry_missing:
            log.info("server misses %d chunks of a committed op; uploading", len(retry_missing))
            await self._uploader.upload(retry_missing)
        return True

    async def _catch_up(self, ops: list[wire.Op], results: list[dict[str, Any]]) -> None:
        """A pull skipped these nodes' remote changes while our ops were queued; now that
        the server applied our op, take the node as the server has it, e.g. our rename with
        the other device's content.

        A commit result shows the node as that op left it, mid-batch: a later op of the
        same batch may have renamed, unlinked or (``replace``) deleted it. Applying that
        stale state resurrected replaced files under their old name and took the name
        from the node now holding it. So a result is used only when no later op of the
        batch touches the node and no later rename replaces anything; otherwise the
        node's current state is fetched from the server."""
        if not self.skipped:
            return
        nodes: list[wire.Node] = []
        refetch: list[str] = []
        seen: set[str] = set()
        for i in range(len(ops) - 1, -1, -1):  # newest first: the last op of each node
            op, res = ops[i], results[i] if i < len(results) else {}
            if op.node in seen:
                continue
            seen.add(op.node)
            node = res.get("node")
            if (
                op.node not in self.skipped
                or res.get("status") != "applied"
                or not isinstance(node, dict)
                or self._store.pending(op.node)
            ):
                continue
            later_replace = any(isinstance(o, wire.Rename) and o.replace for o in ops[i + 1 :])
            if later_replace or (node.get("type") == "file" and node.get("blocklist") is None):
                refetch.append(op.node)
            else:
                nodes.append(wire.Node.from_json(node))
        for node_id in refetch:
            try:
                nodes.append(wire.Node.from_json(await self._client.node(self._ns, node_id)))
            except NotFound:
                continue  # gone for good: the changes feed brings its deletion
        for n in nodes:
            self.skipped.discard(n.id)
        if nodes:
            changes = self._store.apply_remote(nodes)
            if self._on_applied is not None:
                await self._on_applied(changes)

    def _settle(
        self,
        entries: list[Any],
        ops: list[wire.Op],
        results: list[dict[str, Any]],
        folded: dict[int, list[int]] | None = None,
    ) -> tuple[list[bytes], list[bytes], list[tuple[wire.Op, dict[str, Any]]]]:
        """Record the results (no await: atomic with respect to the puller). Returns the
        chunks that are now committed, those the server still wants, and the refused ops
        (out of the outbox now, for the resolver)."""
        folded = folded or {}
        refused: list[tuple[wire.Op, dict[str, Any]]] = []
        done: list[int] = []
        revs: dict[str, int] = {}
        clean: list[bytes] = []
        retry_missing: list[bytes] = []
        for entry, op, res in zip(entries, ops, results, strict=True):
            status = res.get("status")
            if status != "missing_chunks":
                done.extend(folded.get(entry.seq, ()))
            if status == "applied":
                done.append(entry.seq)
                node = res.get("node") or {}
                if isinstance(node.get("rev"), int) and isinstance(op, _REV_OPS):
                    revs[op.node] = node["rev"]
                if isinstance(node.get("seq"), int) and node["seq"] > self.own_seq:
                    self.own_seq = node["seq"]
                self.unpulled += 1
                if isinstance(op, (wire.Create, wire.Update)):
                    clean.extend(op.blocklist.chunk_ids())
            elif status == "missing_chunks":
                last, streak = self._missing_streak
                streak = streak + 1 if last == op.op_id else 1
                self._missing_streak = (op.op_id, streak)
                if streak > MISSING_RETRIES:
                    # The server keeps asking for chunks we keep sending: do not spin.
                    self._park(op, res)
                    done.append(entry.seq)
                    done.extend(folded.get(entry.seq, ()))
                    continue
                retry_missing = [bytes.fromhex(m) for m in res.get("missing", [])]
                break
            else:
                refused.append((op, res))
                done.append(entry.seq)
        # Ops left queued (behind a missing_chunks answer) may be applied on the server
        # already: they stay in _unanswered, so nothing is folded into them.
        self._unanswered.difference_update(done)
        self._store.outbox_done(done, revs, sync=False)  # synced by push_batch, off-thread
        self.committed += len(done)
        return clean, retry_missing, refused

    async def push_once(self) -> None:
        """Push until the outbox is empty. Raises ``Unavailable`` (and other client errors)
        to the caller, which backs off; what was done so far stays done."""
        for _ in range(MAX_ROUNDS):
            await self._gather()
            if not await self.push_batch():
                return

    async def lull(self) -> None:
        """Wait until the file system served no request for one ``GATHER_STEP``, at most
        ``GATHER_MAX`` (at once without an ``activity`` hook)."""
        activity = self.activity
        if activity is None:
            return
        busy = activity()
        with trio.move_on_after(GATHER_MAX):
            while True:  # bounded by the scope
                await trio.sleep(GATHER_STEP)
                now_busy = activity()
                if now_busy == busy:
                    return
                busy = now_busy

    async def _gather(self) -> None:
        """Wait for a lull before a round: while the outbox grows (a burst of new files)
        or the file system keeps serving requests (``activity``: the stat pass after the
        burst, a build reading its sources), wait in ``GATHER_STEP`` steps, at most
        ``GATHER_MAX`` — so under continuous activity a round still starts every
        ``GATHER_MAX``. A full batch (``BATCH`` ops) goes at once when no request came
        since the previous round began (draining a backlog); a lone edit waits one step.

        Why: every round costs a missing-chunks query, an upload, a commit and a pull, all
        on the trio thread that also serves FUSE requests, and each one settles and pulls
        back its batch. A burst of creates thus becomes one or two rounds, run when the
        writer pauses, instead of rounds interleaved with every step of the burst."""
        activity = self.activity
        n = self._store.outbox_len()
        busy = activity() if activity is not None else 0
        try:
            if n >= BATCH and (activity is None or busy == self._busy_seen):
                return
            with trio.move_on_after(GATHER_MAX):
                while n > 0:
                    await trio.sleep(GATHER_STEP)
                    m = self._store.outbox_len()
                    now_busy = activity() if activity is not None else 0
                    if m <= n and now_busy == busy:
                        return
                    n, busy = m, now_busy
        finally:
            self._busy_seen = activity() if activity is not None else 0
