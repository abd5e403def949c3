"""The drive's local state in RocksDB (rocksdict, raw mode): nodes, names, blocklists, outbox.

Keys (``ino`` and ``seq`` are 8-byte big-endian so RocksDB's order is numeric order)::

    n ino                  node record (fixed binary header: id, type, mode, uid, gid,
                           times, size, base_rev, alloc, link count; then JSON:
                           names, xattrs, target)
    b ino                  blocklist of a file (``cairn.core.wire.Blocklist.encode``)
    i node-id (16 bytes)   ino of a node id (both directions: the record holds the id)
    d parent cookie name   child ino; ``cookie`` is 8 bytes derived from the name (see
                           ``name_cookie``), so readdir resumes after a cookie and offsets
                           stay valid while entries come and go
    o seq                  outbox entry (JSON: the op's wire form)
    m key                  metadata: next ino, cursor
    z ino                  a node with no names left, kept while a handle had it open;
                           dropped at release, or at the next open after a crash

Contracts
- Inode 1 is the home namespace's root node; its node id is given to :meth:`Store.open`.
  Node ids are the wire's (32 hex chars); a local create draws a random one at once.
- Every multi-key change goes through a :class:`Txn` and lands in ONE WriteBatch
  (``Txn.commit``). A txn reads its own writes. ``commit(sync=True)`` syncs the WAL; the
  ops layer prefers :class:`cairn.fs.durable.GroupSync` so concurrent fsyncs share a sync.
- Group commit: a committed txn is visible to every read at once, but its writes wait in
  memory (``pending``) and reach RocksDB together with the txns committed after it, as
  one WriteBatch (``flush``): when the group holds ``FLUSH_KEYS`` keys or ``FLUSH_BYTES``,
  at a synced commit or ``sync_wal``, before any iteration (listings, the outbox), at
  ``close``, and otherwise ``FLUSH_DELAY_S`` after the group's first commit (the ops layer
  runs that timer: ``on_pending`` tells it a group started). A burst of creates then
  costs one RocksDB write per few dozen files instead of two per file, and a record
  written twice in a group (a file's create and its seal, a parent directory's times)
  is written once. What a ``kill -9`` can lose is the last ``FLUSH_DELAY_S`` of changes
  nobody asked to be durable (fsync, fsyncdir and unmount flush and sync first); each
  txn still lands whole or not at all, and in order.
- The outbox is an ordered queue of ``cairn.core.wire`` ops appended in the same batch as
  the local change they describe. Ops carry the node's ``base_rev`` at append time; for a
  node never pushed that is 0 (an ``update`` queued behind its ``create``). The pusher:
    1. ``outbox_peek(n)`` → ``[OutboxEntry(seq, op)]`` in order (does not remove);
    2. uploads chunks, commits. Within one commit batch, an op whose node had an earlier op
       in the same batch must take its ``base_rev`` from that earlier result (the store
       only rewrites ops still queued when ``outbox_done`` runs);
    3. ``outbox_done(seqs, revs)`` removes the entries and, for ``revs`` ``{node id: rev}``,
       sets the node's ``base_rev`` and rewrites ``base_rev`` of that node's queued ops.
  A file's first content is folded into its queued ``create`` while no peek has handed
  that create out (``Txn.fold_into_create``): a small new file costs one op, not two.
  ``pending(node_id)`` is true while a node has queued ops: :meth:`apply_remote` never
  overwrites such a node (local wins until the sync layer resolves the conflict) and
  reports it in ``Changes.kept_local``.
- ``apply_remote(entries)`` applies changes-feed entries in one batch (see its docstring).

Thread safety: call from one thread (the trio thread). RocksDB itself is thread-safe, so a
worker thread may run ``sync_wal`` and ``flush`` (the pending group has its own lock).
"""

from __future__ import annotations

import dataclasses
import os
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import rocksdict

from cairn.core import wire
from cairn.core.wire import Blocklist

from .kvbatch import write_changes
from .records import (
    BASE_REV_OFFSET,
    Changes,
    Node,
    NodeAttrs,
    OutboxEntry,
    dump_json,
    load_json,
    name_cookie,
    new_node_id,
    new_op_id,
)

__all__ = ["ROOT_INO", "Changes", "Node", "NodeAttrs", "OutboxEntry", "Store", "Txn",
           "name_cookie", "new_node_id", "new_op_id"]  # fmt: skip

ROOT_INO = 1
_U64 = struct.Struct(">Q")
_N, _B, _I, _D, _O, _M, _Z = b"n", b"b", b"i", b"d", b"o", b"m", b"z"
_NEXT_INO = _M + b"next_ino"
RECORDS_MAX = 100_000  # node records kept in memory (~250 bytes each with the dict)
NODES_MAX = 10_000  # decoded node records kept (~1 KB each): the ones just written or read
# Queued ops kept decoded in memory (see Store._ops): a burst of new files is peeked and
# settled without decoding each op again. Only small ops (a small file's create is ~350
# bytes of JSON; an update of a big file carries its whole blocklist) and at most this many,
# so the memory stays within a few tens of MiB; the others are decoded from RocksDB.
OPS_MAX = 10_000
FLUSH_KEYS = 2_000  # pending keys that make a commit write the group at once
FLUSH_BYTES = 4 << 20  # ... or pending bytes (keys and values)
FLUSH_DELAY_S = 0.005  # the longest a commit waits in memory (see the docstring)
_MISSING = object()
OP_MAX_BYTES = 2048
_CURSOR = _M + b"cursor"


def _k(prefix: bytes, n: int) -> bytes:
    return prefix + _U64.pack(n)


def _dkey(parent: int, name: str) -> bytes:
    return (
        _D
        + _U64.pack(parent)
        + _U64.pack(name_cookie(name))
        + name.encode("utf-8", "surrogateescape")
    )


def _op_nodes(obj: dict[str, Any]) -> list[str]:
    """The nodes a queued op keeps pending: its own, and those it displaces (``_held``)."""
    return [obj["node"], *obj.get("_held", ())]


def _op_from_json(obj: dict[str, Any]) -> wire.Op:
    obj = {k: v for k, v in obj.items() if k != "_held"}  # local bookkeeping, not wire
    # wire.parse_op insists on base_rev >= 1 (what the server accepts); queued ops of a node
    # not yet pushed carry 0 until outbox_done rewrites them.
    if obj.get("op") == "update" and obj.get("base_rev") == 0:
        return dataclasses.replace(wire.parse_op({**obj, "base_rev": 1}), base_rev=0)  # type: ignore[arg-type]
    return wire.parse_op(obj)


class Txn:
    """Staged writes over the store, read-your-writes, committed as one WriteBatch."""

    def __init__(self, store: Store) -> None:
        self._s = store
        self._w: dict[bytes, bytes | None] = {}
        self._ops: list[tuple[int, str]] = []  # (seq, node id) appended here
        self._creates: list[tuple[int, str]] = []  # (seq, node id) of create ops appended
        self._done: list[tuple[int, str]] = []  # (seq, node id) removed here
        self._dirs: set[int] = set()  # directories whose listing this txn changes
        # ops appended here: seq -> (op, wire JSON object, the value written), installed in
        # the store's decoded-op memory at commit if the value is still the one written
        self._appended: dict[int, tuple[wire.Op, dict[str, Any], bytes]] = {}

    # raw access
    def get(self, key: bytes) -> bytes | None:
        if key in self._w:
            return self._w[key]
        return self._s._get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self._w[key] = value

    def delete(self, key: bytes) -> None:
        self._w[key] = None

    # typed helpers
    def node(self, ino: int) -> Node | None:
        raw = self.get(_k(_N, ino))
        return None if raw is None else self._s._decode_node(ino, raw)

    def put_node(self, node: Node, *, indexed: bool = False) -> None:
        """Write ``node``'s record (and its id -> ino key). ``indexed``: the caller read
        ``node`` from this store in the same handler (a parent whose times move, a file
        being sealed), so its id -> ino key is there already and is not written again."""
        for parent, _ in node.names:
            self._dirs.add(parent)
        raw = node.encode()
        self.put(_k(_N, node.ino), raw)
        self._s._keep_node(raw, node)
        if not indexed:
            self.put(_I + bytes.fromhex(node.id), _U64.pack(node.ino))
        if not node.names and node.ino != ROOT_INO:
            self.put(_k(_Z, node.ino), b"")

    def drop_node(self, node: Node) -> None:
        """Forget a node entirely (its names must already be gone)."""
        self._dirs.update(parent for parent, _ in node.names)
        self.delete(_k(_N, node.ino))
        self.delete(_k(_B, node.ino))
        self.delete(_I + bytes.fromhex(node.id))
        self.delete(_k(_Z, node.ino))

    def set_base_rev(self, ino: int, rev: int) -> bool:
        """Rewrite only the ``base_rev`` field of a node's record (a fixed header field:
        no JSON, and no listing change, since listings do not show it). False when the
        node has no record."""
        key = _k(_N, ino)
        raw = self.get(key)
        if raw is None:
            return False
        patched = bytearray(raw)
        _U64.pack_into(patched, BASE_REV_OFFSET, rev)
        self.put(key, bytes(patched))
        return True

    def blocklist(self, ino: int) -> Blocklist:
        raw = self.get(_k(_B, ino))
        return Blocklist() if raw is None else Blocklist.decode(raw)

    def put_blocklist(self, ino: int, bl: Blocklist) -> None:
        self.put(_k(_B, ino), bl.encode())

    def ino_of(self, node_id: str) -> int | None:
        raw = self.get(_I + bytes.fromhex(node_id))
        return None if raw is None else _U64.unpack(raw)[0]

    def alloc_ino(self) -> int:
        raw = self.get(_NEXT_INO)
        ino = _U64.unpack(raw)[0] if raw else ROOT_INO + 1
        self.put(_NEXT_INO, _U64.pack(ino + 1))
        return ino

    def map_ino(self, node_id: str) -> int:
        """The ino of ``node_id``, allocating one (a placeholder until its record lands)."""
        ino = self.ino_of(node_id)
        if ino is None:
            ino = self.alloc_ino()
            self.put(_I + bytes.fromhex(node_id), _U64.pack(ino))
        return ino

    def lookup(self, parent: int, name: str) -> int | None:
        raw = self.get(_dkey(parent, name))
        return None if raw is None else _U64.unpack(raw)[0]

    def add_name(self, node: Node, parent: int, name: str) -> None:
        """Link ``node`` as ``parent/name`` (caller checked the name is free); updates
        ``node.names`` but does not write the node record."""
        self.put(_dkey(parent, name), _U64.pack(node.ino))
        self._dirs.add(parent)
        node.names.append((parent, name))

    def remove_name(self, node: Node, parent: int, name: str) -> None:
        self._dirs.add(parent)
        if self.lookup(parent, name) == node.ino:
            self.delete(_dkey(parent, name))
        if (parent, name) in node.names:
            node.names.remove((parent, name))

    def outbox_append(self, op: wire.Op, *, held: tuple[str, ...] = ()) -> None:
        """Queue ``op``. ``held``: other nodes this op changes locally, e.g. the node a
        replacing rename deletes: they count as ``pending`` until the op is pushed, so a
        pull cannot bring back what the server still has of them (a replaced file would
        reappear under its old name until the next pull)."""
        seq = self._s._next_seq
        self._s._next_seq += 1
        self._s._inflight.add(seq)
        obj = op.to_json()
        if held:
            obj["_held"] = list(held)
        raw = dump_json(obj)
        self.put(_k(_O, seq), raw)
        self._appended[seq] = (op, obj, raw)
        self._ops.append((seq, op.node))
        if held:
            self._ops.extend((seq, nid) for nid in held)
        if isinstance(op, wire.Create):
            self._creates.append((seq, op.node))

    def fold_into_create(self, node_id: str, bl: Blocklist, mtime_ns: int) -> bool:
        """Put new content into the node's queued ``create`` instead of queueing an
        ``update``, when no ``outbox_peek`` has handed that create out yet (so nobody can be
        sending it). True when folded."""
        s = self._s
        seq = s._creates.get(node_id)
        if seq is None or seq <= s._peeked_upto:
            return False
        key = _k(_O, seq)
        mem = s._ops.get(seq)
        if mem is not None and key not in self._w:
            op, obj = mem
        else:
            raw = self.get(key)
            if raw is None:
                return False
            obj = load_json(raw)
            op = _op_from_json(obj)
        assert isinstance(op, wire.Create)
        obj = {**obj, "blocklist": bl.to_json(), "mtime_ns": mtime_ns}
        raw = dump_json(obj)
        self.put(key, raw)
        # not dataclasses.replace: it inspects the fields on every call (~10 us here)
        new = wire.Create(op.op_id, op.node, op.parent, op.name, op.mode, mtime_ns, bl, op.xattrs)
        self._appended[seq] = (new, obj, raw)
        return True

    def commit(self, *, sync: bool = False) -> None:
        """Commit everything staged at once: visible now, written to RocksDB in one
        WriteBatch with the rest of its group (at once and WAL synced when ``sync``)."""
        s = self._s
        s._write(self._w)
        for seq, (op, obj, raw) in self._appended.items():
            if (
                self._w.get(_k(_O, seq)) is raw
                and len(raw) <= OP_MAX_BYTES
                and len(s._ops) < OPS_MAX
            ):
                s._ops[seq] = (op, obj)
        if self._dirs:
            s._stamp += 1
            for parent in self._dirs:
                s._dir_stamps[parent] = s._stamp
        for seq, nid in self._ops:
            s._queued.setdefault(nid, set()).add(seq)
            s._op_nodes.setdefault(seq, []).append(nid)
            s._inflight.discard(seq)
        # an op holding other nodes is listed once per node: count seqs
        if self._ops:
            s._outbox_count += len({q for q, _ in self._ops})
        if self._done:
            s._outbox_count -= len({q for q, _ in self._done})
        for seq, nid in self._creates:
            s._creates[nid] = seq
        for seq, nid in self._done:
            s._op_nodes.pop(seq, None)
            if s._creates.get(nid) == seq:
                del s._creates[nid]
            left = s._queued.get(nid)
            if left is not None:
                left.discard(seq)
                if not left:
                    del s._queued[nid]
        self._w, self._ops, self._done, self._creates = {}, [], [], []
        self._dirs = set()
        self._appended = {}
        s._flush_due(sync)


class Store:
    """The RocksDB-backed local state. Open with :meth:`open`; close with :meth:`close`."""

    def __init__(self, db: rocksdict.Rdict, root_id: str, path: Path | None = None) -> None:
        self.db = db
        self.path = path
        self.root_id = root_id
        # node id -> seqs of its queued ops: the in-memory index of the outbox by node, so
        # settling a node (outbox_done) touches only that node's ops, not the whole queue
        self._queued: dict[str, set[int]] = {}
        self._op_nodes: dict[int, list[str]] = {}  # ... and back: seq -> the nodes it holds
        # Queued ops decoded: seq -> (op, its wire JSON object). Filled when a txn appends
        # or folds (never from RocksDB), dropped for every outbox key a batch writes
        # (_write), bounded (OPS_MAX, OP_MAX_BYTES). Peek and fold read from here instead
        # of decoding.
        self._ops: dict[int, tuple[wire.Op, dict[str, Any]]] = {}
        self._outbox_count = 0
        self._creates: dict[str, int] = {}  # node id -> seq of its queued create
        self._peeked_upto = 0
        self._next_seq = 1
        self._head = 0  # no queued op has a lower seq (seqs only grow: outbox_append)
        self._inflight: set[int] = set()  # seqs appended by txns not committed yet
        # Node records read or written recently, in memory (kept current by _write, the
        # only writer: replaced by what a batch wrote, dropped when a batch failed or
        # deleted them): a RocksDB point read costs ~1 us of CPU, 60 % of listing a
        # directory.
        self._records: dict[bytes, bytes] = {}
        # The group of committed writes not yet in RocksDB (None: a delete), read before
        # RocksDB by _get; swapped for a new dict once written (see flush).
        self._pending: dict[bytes, bytes | None] = {}
        self._pending_bytes = 0
        self._plock = threading.Lock()  # merging into / writing out the pending group
        #: Called (trio thread) after a commit that leaves a group pending, so after each
        #: commit of a group (make it idempotent): whoever runs the timer should call
        #: ``flush`` ``FLUSH_DELAY_S`` after the first call since the last flush.
        self.on_pending: Callable[[], None] | None = None
        #: Called (any thread) before every group is written: writes what the group's
        #: commits depend on (the chunk cache's small frames, see ``fs/cache.py``).
        self.before_flush: Callable[[], None] | None = None
        # ino -> (record, decoded): see _decode_node
        self._nodes: dict[int, tuple[bytes, Node]] = {}
        # listing_stamp(): directory ino -> number of the last commit that changed its
        # entries or a child's record
        self._stamp = 0
        self._dir_stamps: dict[int, int] = {}
        self._miss: tuple[int, str, int] | None = None  # see lookup
        last = self._last_key(_O)
        if last is not None:
            self._next_seq = _U64.unpack(last[1:])[0] + 1
        for seq, obj in self._outbox_raw():
            for nid in _op_nodes(obj):
                self._queued.setdefault(nid, set()).add(seq)
                self._op_nodes.setdefault(seq, []).append(nid)
            self._outbox_count += 1
            if obj["op"] == "create":
                self._creates[obj["node"]] = seq
        # Highest seq any outbox_peek returned: ops up to it may be on their way to the
        # server and are never rewritten (see Txn.fold_into_create).
        self._peeked_upto = 0

    @classmethod
    def open(cls, path: Path | str, root_id: str, *, uid: int | None = None,
             gid: int | None = None) -> Store:  # fmt: skip
        """Open (creating if needed) the state at ``path``; ensures the root record exists."""
        opts = rocksdict.Options(raw_mode=True)
        opts.create_if_missing(True)
        db = rocksdict.Rdict(str(path), opts)
        store = cls(db, root_id, Path(path))
        txn = store.txn()
        if txn.ino_of(root_id) is None or txn.node(ROOT_INO) is None:
            now = time.time_ns()
            txn.put_node(Node(ROOT_INO, root_id, "dir", 0o755, os.getuid() if uid is None else uid,
                              os.getgid() if gid is None else gid, now, now, base_rev=1))  # fmt: skip
            txn.commit(sync=True)
        store._drop_orphans()
        return store

    def _drop_orphans(self) -> None:
        """Drop nodes whose last name went while open, left by a crash before release."""
        txn = self.txn()
        for key, _ in self._scan(_Z, _Z):
            node = txn.node(_U64.unpack(key[1:])[0])
            if node is not None and not node.names:
                txn.drop_node(node)
            else:
                txn.delete(key)
        txn.commit()

    def close(self) -> None:
        """Write the pending group and close the database."""
        try:
            self.flush()
        finally:
            self.db.close()

    def txn(self) -> Txn:
        return Txn(self)

    def _write(self, writes: dict[bytes, bytes | None]) -> None:
        """Add a committed txn's writes to the pending group (see the module docstring).
        Cannot fail: the caller finishes its bookkeeping, then calls ``_flush_due``."""
        records, ops = self._records, self._ops
        if writes:
            size = 0
            for k, v in writes.items():
                size += len(k) if v is None else len(k) + len(v)
                kind = k[:1]
                if kind == _N:
                    # a record just written is read back soon (a file's seal, the parent
                    # at the next create): keep it rather than read it from RocksDB again
                    if v is not None and len(records) < RECORDS_MAX:
                        records[k] = v
                    else:
                        records.pop(k, None)
                elif kind == _O and ops:
                    ops.pop(_U64.unpack_from(k, 1)[0], None)
            with self._plock:
                self._pending.update(writes)
                self._pending_bytes += size

    def _flush_due(self, sync: bool) -> None:
        """After a commit: write the group now when ``sync`` or when it is large, else make
        sure a new group's timer runs. Raises what ``flush`` raises."""
        if sync or len(self._pending) >= FLUSH_KEYS or self._pending_bytes >= FLUSH_BYTES:
            self.flush(sync=sync)
        elif self._pending and self.on_pending is not None:
            self.on_pending()

    def flush(self, *, sync: bool = False) -> None:
        """Write the pending group to RocksDB as one WriteBatch, then with ``sync`` sync the
        WAL (also with nothing pending). Calls ``before_flush`` first. Any thread. On
        failure the group stays pending, so reads still see it, and the next flush writes
        it again."""
        with self._plock:
            # under the lock: a commit merged after this call cannot be in this batch, so
            # what before_flush wrote covers every commit the batch holds
            if self.before_flush is not None:
                self.before_flush()
            if self._pending:
                write_changes(self.db, self._pending)
                # a new dict, not clear(): a reader on another thread holding the old one
                # finds in it what RocksDB now has as well
                self._pending = {}
                self._pending_bytes = 0
        if sync:  # outside the lock: commits go on while the disk syncs
            self.db.flush_wal(True)

    def pending_keys(self) -> int:
        """Keys committed but not yet written to RocksDB (tests, metrics)."""
        return len(self._pending)

    def _get(self, key: bytes) -> bytes | None:
        """``db.get`` through the pending group, with node records served from (and kept in)
        memory."""
        value = self._pending.get(key, _MISSING)
        if value is not _MISSING:  # committed, not written yet (None: deleted)
            return value  # type: ignore[return-value]
        if key[:1] != _N:
            return self.db.get(key)  # type: ignore[no-any-return]
        raw = self._records.get(key)
        if raw is None:
            raw = self.db.get(key)
            if raw is not None:
                if len(self._records) >= RECORDS_MAX:
                    self._records.clear()  # crude but bounded; refills on demand
                self._records[key] = raw
        return raw

    def listing_stamp(self, parent: int) -> int:
        """Changes whenever a commit adds or removes an entry of ``parent`` or rewrites a
        child's record: a listing built at one stamp is current while the stamp is equal
        (open files aside: their size and mtime live in the file layer)."""
        return self._dir_stamps.get(parent, 0)

    def sync_wal(self) -> None:
        """Make every commit so far durable (blocking; run it off the trio thread)."""
        self.flush(sync=True)

    def _last_key(self, prefix: bytes) -> bytes | None:
        self.flush()
        it = self.db.iter()
        it.seek_for_prev(prefix + b"\xff" * 9)
        if it.valid() and it.key().startswith(prefix):
            return bytes(it.key())
        return None

    def _scan(self, start: bytes, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        self.flush()  # iterators see RocksDB only
        it = self.db.iter()
        it.seek(start)
        while it.valid():
            key = it.key()
            if not key.startswith(prefix):
                return
            yield key, it.value()
            it.next()

    # --- reads (committed state) ----------------------------------------------------------

    def node(self, ino: int) -> Node | None:
        raw = self._get(_k(_N, ino))
        return None if raw is None else self._decode_node(ino, raw)

    def _decode_node(self, ino: int, raw: bytes) -> Node:
        """``Node.decode(ino, raw)``, from a copy of the decoded record when ``raw`` is the
        very object decoded (or encoded) last for ``ino``: a file's seal reads back the
        record its create wrote, a create the parent directory the previous one wrote. The
        identity test cannot be fooled: the kept tuple holds ``raw`` alive."""
        kept = self._nodes.get(ino)
        if kept is not None and kept[0] is raw:
            return kept[1].copy()
        node = Node.decode(ino, raw)
        self._keep_node(raw, node)
        return node

    def _keep_node(self, raw: bytes, node: Node) -> None:
        """Remember ``node`` decoded as ``raw`` (a copy: the caller may change its own)."""
        if len(self._nodes) >= NODES_MAX:
            self._nodes.clear()  # crude but bounded; refills on demand
        self._nodes[node.ino] = (raw, node.copy())

    def attrs(self, ino: int) -> NodeAttrs | None:
        """The stat fields of a node (cheap: fixed header only)."""
        raw = self._get(_k(_N, ino))
        return None if raw is None else NodeAttrs.decode(ino, raw)

    def blocklist(self, ino: int) -> Blocklist:
        raw = self._get(_k(_B, ino))
        return Blocklist() if raw is None else Blocklist.decode(raw)

    def ino_of(self, node_id: str) -> int | None:
        return self.txn().ino_of(node_id)

    def lookup(self, parent: int, name: str) -> int | None:
        """The ino named ``parent/name``, or None. The last miss is remembered until a
        commit changes ``parent``'s entries (``listing_stamp``): the kernel looks a name up
        right before it creates it, and the create checks the name again."""
        stamp = self._dir_stamps.get(parent, 0)
        if self._miss == (parent, name, stamp):
            return None
        raw = self._get(_dkey(parent, name))
        if raw is None:
            self._miss = (parent, name, stamp)
            return None
        return _U64.unpack(raw)[0]  # type: ignore[no-any-return]

    def readdir(self, parent: int, after: int = 0) -> Iterator[tuple[int, str, int]]:
        """``(cookie, name, child ino)`` of ``parent`` in cookie order, after ``after``."""
        prefix = _D + _U64.pack(parent)
        for key, value in self._scan(prefix + _U64.pack(after + 1), prefix):
            cookie = _U64.unpack_from(key, 9)[0]
            yield cookie, key[17:].decode("utf-8", "surrogateescape"), _U64.unpack(value)[0]

    def listing(self, parent: int, after: int = 0) -> Iterator[tuple[int, bytes, int, bytes]]:
        """``(cookie, raw name, child ino, child record)`` after ``after`` in cookie order —
        readdir's fast path: one prefix iteration, names left as bytes, one point read per
        child; children whose record is gone (a race with a delete) are skipped."""
        prefix = _D + _U64.pack(parent)
        get = self._get
        unpack = _U64.unpack_from
        self.flush()
        for key, value in self.db.items(from_key=prefix + _U64.pack(after + 1)):
            if not key.startswith(prefix):
                return
            ino = unpack(value)[0]
            raw = get(_N + value)
            if raw is not None:
                yield unpack(key, 9)[0], key[17:], ino, raw

    def has_children(self, parent: int) -> bool:
        return next(self.readdir(parent), None) is not None

    def nodes(self) -> Iterator[Node]:
        for key, raw in self._scan(_N, _N):
            yield Node.decode(_U64.unpack(key[1:])[0], raw)

    # --- outbox ---------------------------------------------------------------------------

    def outbox_peek(self, n: int | None = 100, *, sending: bool = True) -> list[OutboxEntry]:
        """The first ``n`` (None: all) queued ops in order; does not remove them.

        ``sending=False`` for a look that will not send them (status, counting): only a
        sending peek stops the store from folding new content into a queued ``create``."""
        out: list[OutboxEntry] = []
        ops = self._ops
        # Start at the first entry the previous peek found, not at the prefix: every seq
        # below it is gone, and seeking from the prefix would step over the tombstones of
        # all pushed ops (thousands after a burst of creates) on every peek.
        self.flush()
        it = self.db.iter()
        it.seek(_k(_O, self._head))
        while it.valid() and (n is None or len(out) < n):
            key = it.key()
            if key[:1] != _O:
                break
            seq = _U64.unpack_from(key, 1)[0]
            mem = ops.get(seq)
            op = mem[0] if mem is not None else _op_from_json(load_json(it.value()))
            out.append(OutboxEntry(seq, op))
            it.next()
        head = out[0].seq if out else self._next_seq
        if self._inflight:  # appended by a txn not committed yet: may still land
            head = min(head, min(self._inflight))
        self._head = head
        if out and sending:
            self._peeked_upto = max(self._peeked_upto, out[-1].seq)
        return out

    def _outbox_raw(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for key, raw in self._scan(_O, _O):
            yield _U64.unpack_from(key, 1)[0], load_json(raw)

    def outbox_len(self) -> int:
        return self._outbox_count

    #: Set by the file layer (``Operations``): True while ``node_id`` is an open file with
    #: written data not sealed yet. Those edits are not in the outbox, but a remote change
    #: applied over them would roll the node back under the open file.
    unsealed: Callable[[str], bool] = staticmethod(lambda node_id: False)

    def pending(self, node_id: str) -> bool:
        """True while ``node_id`` has local edits not yet pushed: ops in the outbox, or writes
        to an open file not sealed yet."""
        return node_id in self._queued or self.unsealed(node_id)

    def outbox_done(
        self, seqs: Iterable[int], revs: dict[str, int] | None = None, *, sync: bool = True
    ) -> None:
        """Remove pushed ops and record the revisions the server gave (one batch, synced
        unless ``sync`` is False: the pusher syncs off the trio thread; a crash before that
        only re-sends ops, which the server answers by op id).

        Idempotent: unknown seqs are ignored. For each ``node id → rev`` the node's
        ``base_rev`` becomes ``rev`` and queued ``update``/``unlink`` ops of that node get it.
        """
        txn = self.txn()
        for seq in seqs:
            nids = self._op_nodes.get(seq)  # every queued op is here (and only those)
            if nids is None:
                continue
            txn.delete(_k(_O, seq))
            txn._done.extend((seq, nid) for nid in nids)
        for node_id, rev in (revs or {}).items():
            self._set_base_rev(txn, node_id, rev)
        txn.commit(sync=sync)

    def set_base_rev(self, node_id: str, rev: int) -> None:
        txn = self.txn()
        self._set_base_rev(txn, node_id, rev)
        txn.commit()

    def _set_base_rev(self, txn: Txn, node_id: str, rev: int) -> None:
        ino = txn.ino_of(node_id)
        if ino is not None:
            txn.set_base_rev(ino, rev)
        for seq in sorted(self._queued.get(node_id, ())):
            key = _k(_O, seq)
            raw = txn.get(key)
            if raw is None:  # removed in this txn
                continue
            obj = load_json(raw)
            if obj["op"] in ("update", "unlink") and obj["node"] == node_id:
                obj["base_rev"] = rev
                txn.put(key, dump_json(obj))
            elif obj["op"] == "rename" and obj.get("replaces") == node_id:
                obj["replaces_rev"] = rev  # a rename over this node (it is held: _held)
                txn.put(key, dump_json(obj))

    # --- cursor ---------------------------------------------------------------------------

    def cursor(self) -> str | None:
        raw = self._get(_CURSOR)
        return None if raw is None else raw.decode()

    def set_cursor(self, cursor: str) -> None:
        self._write({_CURSOR: cursor.encode()})
        self._flush_due(False)

    # --- remote changes -------------------------------------------------------------------

    def apply_remote(self, entries: Iterable[wire.Node], *, cursor: str | None = None,
                     uid: int | None = None, gid: int | None = None) -> Changes:  # fmt: skip
        """Apply changes-feed nodes in ONE WriteBatch with ``cursor``; see ``fs/remote.py``."""
        from .remote import apply_remote

        return apply_remote(self, entries, cursor=cursor, uid=uid, gid=gid)
