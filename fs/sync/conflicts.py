"""Conflicted copies: what the pusher does with an op the server refused.

Contract (the rules are written out in ``docs/sync.md``): nothing written on any device is
lost. ``Resolver.resolve(refused)`` takes the ``(op, result)`` pairs of one commit whose
result was ``conflict`` or ``error`` (already removed from the outbox by the pusher) and

1. plans a *fix-up* op for each (or none, or "park" when nothing sensible can be done):

   - ``update`` refused (``stale_base``: the other device's edit won; ``moved``): our
     content becomes a NEW node ``NAME (conflicted copy DEVICE YYYY-MM-DD HHMMSS).EXT``
     beside the file; on ``deleted`` (edit/delete) the edit is re-created at its own name;
   - ``create`` / ``mkdir`` / ``symlink`` whose name is taken (create/create): the same
     node goes to the conflicted-copy name; whose parent is gone (the other device deleted
     the directory): the node goes to the root instead, under its own name (or a copy name);
   - ``rename`` to a taken name, or over a file another device changed meanwhile
     (``replaced_changed``): renamed to the copy name; ``rename``/``unlink``/``setattr``
     refused because the node moved or changed: dropped, the server's node is taken (a
     delete never beats a concurrent edit or rename; the first rename wins);
   - anything else (``link``, quota, invalid names...): parked in ``parked.jsonl`` as
     before (data kept locally, nothing pushed);

2. commits the fix-ups in one batch (a fix-up refused again is re-planned, at most
   ``ROUNDS`` times, with a numbered copy name);
3. applies the server's side locally (``current`` of each refusal, then the node each
   fix-up produced) with ``store.apply_remote``, so the device shows what the server has,
   and invalidates kernel caches.

The chunks a fix-up names are those of the refused op: already uploaded before the first
commit, so no upload happens here. Runs under the pusher's push/pull lock.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from cairn.core import wire
from cairn.core.errors import CairnError

from ..client import Client
from ..store import new_node_id, new_op_id

log = logging.getLogger("cairn.fs.sync")

ROUNDS = 3  # fix-up commits per refused batch
MAX_NAME = 255  # bytes, as the server and the kernel count them
RECENT = 50  # conflicts remembered for `cairn status`
RESTORE_MAX = 10_000  # nodes fetched back when a local delete of a directory is refused


def copy_name(name: str, device: str, when: float | None = None, n: int = 0) -> str:
    """``NAME (conflicted copy DEVICE YYYY-MM-DD HHMMSS).EXT``; ``n`` > 0 adds `` n`` before
    the closing parenthesis (a second copy in the same second). UTC time. The stem is cut
    so the result fits in 255 bytes."""
    stem, ext = os.path.splitext(name)
    if stem == "" or len(ext.encode()) > 32:  # ".bashrc" or a "dot" in odd places
        stem, ext = name, ""
    stamp = time.strftime("%Y-%m-%d %H%M%S", time.gmtime(time.time() if when is None else when))
    tag = f" (conflicted copy {device} {stamp}{'' if n == 0 else f' {n}'})"
    room = MAX_NAME - len((tag + ext).encode())
    raw = stem.encode()[: max(room, 1)]
    return raw.decode(errors="ignore") + tag + ext


@dataclasses.dataclass
class Conflict:
    """One resolved conflict, for ``cairn status``."""

    when: float
    node: str
    kind: str  # the refused op
    reason: str
    outcome: str  # e.g. "copy 'doc (conflicted copy B ...).txt'", "server version kept"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Resolver:
    def __init__(
        self,
        store: Any,
        client: Client,
        *,
        ns: int,
        device: str,
        park: Callable[[wire.Op, dict[str, Any]], None],
        invalidate: Callable[[Any], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._client = client
        self._ns = ns
        self._device = device
        self._park = park
        self._invalidate = invalidate
        self.recent: collections.deque[Conflict] = collections.deque(maxlen=RECENT)
        self.resolved = 0

    # --- local lookups --------------------------------------------------------------------

    def _local_place(self, node_id: str) -> tuple[str, str] | None:
        """(parent id, name) of the node's first local name, if the device still has one."""
        ino = self._store.ino_of(node_id)
        node = None if ino is None else self._store.node(ino)
        if node is None or not node.names:
            return None
        pino, name = sorted(node.names)[0]
        parent = self._store.node(pino)
        return None if parent is None else (parent.id, name)

    def _local_mode(self, node_id: str, default: int = 0o644) -> int:
        ino = self._store.ino_of(node_id)
        node = None if ino is None else self._store.node(ino)
        return default if node is None else int(node.mode)

    # --- planning -------------------------------------------------------------------------

    def _plan(
        self, op: wire.Op, res: dict[str, Any], made: dict[str, int], attempt: int
    ) -> wire.Op | None | str:
        """The fix-up op for one refusal, None (take the server's side), "restore" or
        "park". ``made``: nodes created by fix-ups so far → the base_rev their next update
        takes (planned fix-ups of this round count: they are committed in order)."""
        status = res.get("status")
        reason = str(res.get("reason") or res.get("error") or "")
        cur = res.get("current") if isinstance(res.get("current"), dict) else None
        if status == "conflict":
            if isinstance(op, wire.Update):
                place = self._local_place(op.node)
                if reason == "deleted" and place is None:
                    # deleted here too, after this edit (pulls leave a node with queued
                    # ops alone): the edit was superseded on this device: delete/delete
                    return None
                if place is None and cur and cur.get("names"):
                    place = (cur["names"][0][0], cur["names"][0][1])
                if place is None:
                    place = (self._store.root_id, f"{op.node}")
                parent, name = place
                if reason != "deleted" or attempt > 0:
                    name = copy_name(name, self._device, n=attempt)
                return wire.Create(new_op_id(), new_node_id(), parent, name,
                                   self._local_mode(op.node), op.mtime_ns, op.blocklist)  # fmt: skip
            if isinstance(op, (wire.Create, wire.Mkdir, wire.Symlink)) and reason == "name_taken":
                name = copy_name(op.name, self._device, n=attempt)
                return dataclasses.replace(op, op_id=new_op_id(), name=name)
            if isinstance(op, wire.Rename) and reason in ("name_taken", "replaced_changed"):
                # replaced_changed: another device changed the file this rename would
                # replace (e.g. its save-by-rename raced an edit): keep both
                name = copy_name(op.new_name, self._device, n=attempt)
                return dataclasses.replace(op, op_id=new_op_id(), new_name=name, replace=False,
                                           replaces=None, replaces_rev=None)  # fmt: skip
            if isinstance(op, (wire.Unlink, wire.Rename, wire.Setattr)):
                return None
            return "park"
        if status == "error" and res.get("error") in ("not_found", "not_a_directory"):
            if isinstance(op, wire.Update) and op.node in made:
                # Queued behind its own create, which was refused and is now fixed.
                return dataclasses.replace(op, op_id=new_op_id(), base_rev=made[op.node])
            if isinstance(op, (wire.Create, wire.Mkdir, wire.Symlink)):
                parent = op.parent if op.parent in made else self._store.root_id
                name = op.name if attempt == 0 else copy_name(op.name, self._device, n=attempt)
                return dataclasses.replace(op, op_id=new_op_id(), parent=parent, name=name)
            if isinstance(op, (wire.Unlink, wire.Setattr, wire.Rename)) and op.node not in made:
                return None
        if status == "error" and isinstance(op, wire.Unlink):
            return "restore"  # directory_not_empty: the other device added something in it
        return "park"

    async def _restore(self, node_id: str) -> list[wire.Node]:
        """The server's subtree under ``node_id`` (parents first, files with blocklists),
        at most ``RESTORE_MAX`` nodes: a directory this device deleted while another
        device added to it comes back with what is still in it."""
        out = [wire.Node.from_json(await self._client.node(self._ns, node_id))]
        queue = [node_id] if out[0].type == "dir" else []
        while queue and len(out) < RESTORE_MAX:
            parent = queue.pop(0)
            cursor: str | None = None
            for _ in range(RESTORE_MAX):
                page = await self._client.children(self._ns, parent, cursor)
                for e in page.get("entries", []):
                    child = e["node"]
                    if child.get("type") == "file":
                        child = await self._client.node(self._ns, child["id"])
                    node = wire.Node.from_json(child)
                    out.append(node)
                    if node.type == "dir":
                        queue.append(node.id)
                cursor = page.get("cursor")
                if not page.get("has_more") or len(out) >= RESTORE_MAX:
                    break
        return out

    # --- the round ------------------------------------------------------------------------

    async def resolve(self, refused: list[tuple[wire.Op, dict[str, Any]]]) -> list[bytes]:
        """Resolve one commit's refusals (see the module docstring). Returns the chunk ids
        that fix-ups committed (the caller marks them clean)."""
        apply: list[wire.Node] = []
        clean: list[bytes] = []
        made: dict[str, int] = {}  # nodes fix-ups create → next base_rev (see _plan)
        todo = [(op, res, op) for op, res in refused]  # (original, last result, last try)
        for attempt in range(ROUNDS + 1):
            fixes: list[tuple[wire.Op, dict[str, Any], wire.Op]] = []
            for orig, res, tried in todo:
                cur = res.get("current")
                if isinstance(cur, dict):
                    try:
                        apply.append(wire.Node.from_json(cur))
                    except Exception:  # noqa: BLE001 - a bad node only costs the local view
                        log.error("server sent a malformed node in a conflict result")
                plan = "park" if attempt == ROUNDS else self._plan(tried, res, made, attempt)
                if plan == "park":
                    self._park(orig, res)
                elif plan == "restore":
                    try:
                        apply.extend(await self._restore(orig.node))
                    except (CairnError, KeyError, TypeError) as e:
                        log.error("cannot fetch node %s back from the server: %s", orig.node, e)
                        self._park(orig, res)
                        continue
                    self._note(orig, res, "server's directory and what it holds kept")
                elif plan is None:
                    self._note(orig, res, "server version kept")
                else:
                    assert not isinstance(plan, str)
                    if isinstance(plan, (wire.Create, wire.Mkdir, wire.Symlink)):
                        made[plan.node] = 1
                    elif isinstance(plan, wire.Update) and plan.node in made:
                        made[plan.node] = plan.base_rev + 1
                    fixes.append((orig, res, plan))
            if not fixes:
                break
            results = await self._client.commit(self._ns, [f.to_json() for _, _, f in fixes])
            todo = []
            for (orig, first, fix), r in zip(fixes, results, strict=True):
                if r.get("status") == "applied":
                    node = r.get("node")
                    if isinstance(node, dict):
                        apply.append(wire.Node.from_json(node))
                    if (
                        fix.node in made
                        and isinstance(node, dict)
                        and isinstance(node.get("rev"), int)
                    ):
                        made[fix.node] = node["rev"]
                    if isinstance(fix, (wire.Create, wire.Update)):
                        clean.extend(fix.blocklist.chunk_ids())
                    where = getattr(fix, "new_name", None) or getattr(fix, "name", "")
                    self._note(orig, first, f"kept as {where!r}")
                else:
                    todo.append((orig, r, fix))
        if apply:
            changes = self._store.apply_remote(apply)
            if self._invalidate is not None:
                await self._invalidate(changes)
        return clean

    def _note(self, op: wire.Op, res: dict[str, Any], outcome: str) -> None:
        reason = str(res.get("reason") or res.get("error") or res.get("status"))
        self.recent.append(Conflict(time.time(), op.node, op.kind, reason, outcome))
        self.resolved += 1
        log.info("conflict on %s of node %s (%s): %s", op.kind, op.node, reason, outcome)
