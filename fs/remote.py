"""Applying the server's changes feed to the local state (``Store.apply_remote``).

``apply_remote(store, nodes, cursor=...)`` applies changes-feed node objects, in feed order,
in ONE WriteBatch together with the new cursor, and returns ``Changes`` (inodes, content and
(parent ino, name) entries touched) so ``Operations.invalidate`` can drop kernel caches.

Each node replaces what was known of it: attributes, blocklist and its whole set of names.
An old name is removed only if its dirent still points at this node; a name held by another
node moves to this one (that node's own newer entry comes later in the feed). Parents not
seen yet get an ino at once (their record follows). Nodes with unpushed local edits
(``store.pending``) are left alone and listed in ``Changes.kept_local``; a name held by such
a node is not taken from it either (the sync layer resolves these as conflicts). A node
the feed repeats unchanged (the echo of this device's own push) only gets its revision:
nothing is reported, so the kernel keeps its cached names and attributes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from cairn.core import wire

from .store import _CURSOR, Changes, Node, Store, Txn


def _unchanged(txn: Txn, old: Node, rn: wire.Node, want: list[tuple[int, str]]) -> bool:
    """True when ``rn`` says nothing new about ``old`` except (maybe) its revision."""
    if (old.type, old.mode, old.mtime_ns, old.target) != (rn.type, rn.mode, rn.mtime_ns, rn.target):
        return False
    if old.type != "symlink" and old.size != rn.size:
        return False
    if old.xattrs != rn.xattrs or sorted(old.names) != sorted(want):
        return False
    return rn.type != "file" or rn.blocklist is None or txn.blocklist(old.ino) == rn.blocklist


def apply_remote(store: Store, entries: Iterable[wire.Node], *, cursor: str | None = None,
                 uid: int | None = None, gid: int | None = None) -> Changes:  # fmt: skip
    uid = os.getuid() if uid is None else uid
    gid = os.getgid() if gid is None else gid
    txn = store.txn()
    ch = Changes()
    for rn in entries:
        ino = txn.ino_of(rn.id)
        if store.pending(rn.id):
            ch.kept_local.append(rn.id)
            continue
        old = None if ino is None else txn.node(ino)
        if rn.deleted:
            if old is not None:
                for p, n in list(old.names):
                    txn.remove_name(old, p, n)
                    ch.entries.add((p, n))
                txn.drop_node(old)
                ch.inodes.add(old.ino)
            continue
        ino = txn.map_ino(rn.id) if ino is None else ino
        want = [(txn.map_ino(p), n) for p, n in rn.names]
        if old is not None and _unchanged(txn, old, rn, want):
            # the echo of our own push (or a repeat): only the revision is news; the kernel's
            # caches are right, so nothing is reported for invalidation
            if old.base_rev != rn.rev:
                old.base_rev = rn.rev
                txn.put_node(old)
            continue
        now = time.time_ns()
        node = old or Node(ino, rn.id, rn.type, rn.mode, uid, gid, rn.mtime_ns, now)
        for p, n in list(node.names):
            if (p, n) not in want:
                txn.remove_name(node, p, n)
                ch.entries.add((p, n))
        for p, n in want:
            holder = txn.lookup(p, n)
            if holder == ino:
                continue
            if holder is not None:
                other = txn.node(holder)
                if other is not None and store.pending(other.id):
                    ch.kept_local.append(other.id)
                    continue
                if other is not None:
                    txn.remove_name(other, p, n)
                    txn.put_node(other)
                    ch.inodes.add(other.ino)
            txn.add_name(node, p, n)
            ch.entries.add((p, n))
        content_changed = old is None or old.size != rn.size
        if rn.type == "file" and rn.blocklist is not None:
            if txn.blocklist(ino) != rn.blocklist:
                content_changed = True
                txn.put_blocklist(ino, rn.blocklist)
            node.alloc = sum(n for cid, n in rn.blocklist if cid is not None)
        node.type, node.mode, node.mtime_ns, node.size = rn.type, rn.mode, rn.mtime_ns, rn.size
        node.target, node.xattrs, node.base_rev, node.ctime_ns = (
            rn.target, dict(rn.xattrs), rn.rev, now)  # fmt: skip
        txn.put_node(node)
        ch.inodes.add(ino)
        if content_changed and old is not None:
            ch.content.add(ino)
    if cursor is not None:
        txn.put(_CURSOR, cursor.encode())
    txn.commit()
    return ch
