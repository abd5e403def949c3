"""Name handlers of the drive's ``Operations``: mkdir, create, mknod, symlink, readlink,
link, unlink, rmdir, rename (replace, ``RENAME_NOREPLACE``, ``RENAME_EXCHANGE``) — a mixin;
``fs/ops.py`` composes it.

Each handler checks, changes the store and queues its outbox op in ONE batch with no
``await`` in between, so handlers are atomic with respect to each other.

- Node ids are drawn here (``new_node_id``), so a create has its wire id at once.
- The last name of a file that is still open keeps the node (without names) until release.
- ``mknod`` of anything but a regular file: EPERM (mknod(2): "the file system does not
  support the type of node requested").
- ``RENAME_EXCHANGE`` is queued as three ``rename`` ops through a temporary name
  (``.cairn-exchange-<hex>``) in the target's directory; the API has no exchange.
- ``link`` of a directory or symlink: EPERM (the API links regular files only).
- Moving a directory into itself: EINVAL (the kernel checks too; this guards direct calls).
"""

from __future__ import annotations

import os
import stat
import time
from typing import TYPE_CHECKING, Any

import pyfuse3

from cairn.core import errors as E
from cairn.core import wire
from cairn.core.names import MAX_NAME_BYTES, check_name
from cairn.core.wire import Blocklist

from .errmap import NameTooLong, translate
from .staging import FileContent
from .store import Node, new_node_id, new_op_id

_EXCHANGE_PREFIX = ".cairn-exchange-"
_MAX_DEPTH = 4096


def _now() -> int:
    return time.time_ns()


def check_child_name(raw: bytes) -> str:
    """A kernel-given name as text; ENAMETOOLONG / EINVAL for bad ones."""
    if len(raw) > MAX_NAME_BYTES:
        raise NameTooLong(f"name is {len(raw)} bytes, at most {MAX_NAME_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise E.InvalidName("name is not valid UTF-8") from None
    return check_name(text)


_name = check_child_name


class TreeOps:
    """Mixin over ``Operations`` state: ``store``, ``_files`` and the node helpers."""

    store: Any
    staging_dir: Any
    params: Any
    _files: dict[int, FileContent]
    _kernel_seen: dict[int, tuple[int, int]]

    if TYPE_CHECKING:  # provided by Operations / FileOps

        def _node(self, ino: int) -> Node: ...
        def _dir(self, ino: int) -> Node: ...
        def _child(self, parent: int, name: str) -> Node: ...
        def _attr(self, node: Node) -> pyfuse3.EntryAttributes: ...
        def _content(self, node: Node) -> FileContent: ...
        async def release(self, fh: int) -> None: ...

    def _new_node(self, txn: Any, kind: str, mode: int, ctx: Any, now: int) -> Node:
        return Node(txn.alloc_ino(), new_node_id(), kind, mode & 0o7777, ctx.uid, ctx.gid, now, now)

    def _touch(self, txn: Any, now: int, *dirs: Node) -> None:
        """A directory's entries changed: its mtime and ctime move (local only; the server
        keeps its own directory times)."""
        for d in {d.ino: d for d in dirs}.values():
            d.mtime_ns = d.ctime_ns = now
            txn.put_node(d, indexed=True)

    def _check_free(self, parent: int, name: str) -> None:
        if self.store.lookup(parent, name) is not None:
            raise E.AlreadyExists(f"{name!r} exists")

    # --- names ----------------------------------------------------------------------------

    @translate
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        parent = self._dir(parent_inode)
        text = _name(name)
        self._check_free(parent_inode, text)
        now = _now()
        txn = self.store.txn()
        node = self._new_node(txn, "dir", mode, ctx, now)
        txn.add_name(node, parent_inode, text)
        txn.put_node(node)
        txn.outbox_append(wire.Mkdir(new_op_id(), node.id, parent.id, text, node.mode, now))
        self._touch(txn, now, parent)
        txn.commit()
        return self._attr(node)

    @translate
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: Any) -> pyfuse3.EntryAttributes:  # fmt: skip
        parent = self._dir(parent_inode)
        text = _name(name)
        try:
            tgt = target.decode("utf-8")
        except UnicodeDecodeError:
            raise E.InvalidArgument("symlink target is not UTF-8") from None
        if not tgt or len(target) > wire.MAX_TARGET:
            raise NameTooLong("symlink target too long") if tgt else E.NotFound("empty target")
        self._check_free(parent_inode, text)
        now = _now()
        txn = self.store.txn()
        node = self._new_node(txn, "symlink", 0o777, ctx, now)
        node.target = tgt
        node.size = len(target)
        txn.add_name(node, parent_inode, text)
        txn.put_node(node)
        txn.outbox_append(wire.Symlink(new_op_id(), node.id, parent.id, text, tgt, now))
        self._touch(txn, now, parent)
        txn.commit()
        return self._attr(node)

    @translate
    async def readlink(self, inode: int, ctx: Any = None) -> bytes:
        node = self._node(inode)
        if node.type != "symlink":
            raise E.InvalidArgument("not a symlink")
        return (node.target or "").encode()

    @translate
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: Any) -> pyfuse3.EntryAttributes:  # fmt: skip
        if not stat.S_ISREG(mode):
            raise E.PermissionDenied("the drive holds only files, directories and symlinks")
        fi, attr = await self.create(parent_inode, name, mode, os.O_WRONLY, ctx)
        await self.release(fi.fh)
        return attr

    @translate
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: Any) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:  # fmt: skip
        parent = self._dir(parent_inode)
        text = _name(name)
        self._check_free(parent_inode, text)
        now = _now()
        txn = self.store.txn()
        node = self._new_node(txn, "file", mode, ctx, now)
        txn.add_name(node, parent_inode, text)
        txn.put_node(node)
        # no blocklist record: a missing one reads as empty (Store.blocklist)
        txn.outbox_append(
            wire.Create(new_op_id(), node.id, parent.id, text, node.mode, now, Blocklist())
        )
        self._touch(txn, now, parent)
        txn.commit()
        # new and empty: no blocklist to read back (what _content would do)
        content = FileContent(node.ino, (), 0, self.staging_dir, self.params)
        self._files[node.ino] = content
        content.opens += 1
        self._kernel_seen[node.ino] = (0, now)
        return pyfuse3.FileInfo(fh=node.ino), self._attr(node)

    @translate
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: Any) -> pyfuse3.EntryAttributes:  # fmt: skip
        node = self._node(inode)
        if node.type != "file":  # the API links files only (docs/api.md)
            raise E.PermissionDenied("hard links are for regular files only")
        parent = self._dir(new_parent_inode)
        text = _name(new_name)
        self._check_free(new_parent_inode, text)
        txn = self.store.txn()
        txn.add_name(node, new_parent_inode, text)
        node.ctime_ns = _now()
        txn.put_node(node)
        txn.outbox_append(wire.Link(new_op_id(), node.id, parent.id, text))
        self._touch(txn, node.ctime_ns, parent)
        txn.commit()
        return self._attr(node)

    def _remove_name(self, txn: Any, node: Node, parent: Node, name: str) -> None:
        """Unlink one name (caller checked types); the node goes when its last name does and
        no handle holds it open (then at release)."""
        txn.remove_name(node, parent.ino, name)
        base = node.base_rev if node.base_rev > 0 and node.type == "file" else None
        txn.outbox_append(wire.Unlink(new_op_id(), node.id, parent.id, name, base))
        if not node.names and node.ino not in self._files:
            txn.drop_node(node)
        else:
            node.ctime_ns = _now()
            txn.put_node(node)

    @translate
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any = None) -> None:
        parent = self._dir(parent_inode)
        node = self._child(parent_inode, _name(name))
        if node.type == "dir":
            raise E.IsADirectory("unlink of a directory")
        txn = self.store.txn()
        self._remove_name(txn, node, parent, _name(name))
        self._touch(txn, _now(), parent)
        txn.commit()

    @translate
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any = None) -> None:
        parent = self._dir(parent_inode)
        node = self._child(parent_inode, _name(name))
        if node.type != "dir":
            raise E.NotADirectory("rmdir of a non-directory")
        if self.store.has_children(node.ino):
            raise E.DirectoryNotEmpty("directory not empty")
        txn = self.store.txn()
        self._remove_name(txn, node, parent, _name(name))
        self._touch(txn, _now(), parent)
        txn.commit()

    def _is_within(self, ino: int, ancestor: int) -> bool:
        """True when directory ``ino`` is ``ancestor`` or below it (bounded walk up)."""
        for _ in range(4096):
            if ino == ancestor:
                return True
            node = self.store.node(ino)
            if node is None or not node.names:
                return False
            ino = node.names[0][0]
        return True  # absurdly deep: refuse the move rather than risk a cycle

    @translate
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: Any = None) -> None:  # fmt: skip
        noreplace = bool(flags & pyfuse3.RENAME_NOREPLACE)
        exchange = bool(flags & pyfuse3.RENAME_EXCHANGE)
        if flags & ~(pyfuse3.RENAME_NOREPLACE | pyfuse3.RENAME_EXCHANGE) or (
            noreplace and exchange
        ):
            raise E.InvalidArgument("unsupported rename flags")
        old_parent, new_parent = self._dir(parent_inode_old), self._dir(parent_inode_new)
        old, new = _name(name_old), _name(name_new)
        src = self._child(parent_inode_old, old)
        dst_ino = self.store.lookup(parent_inode_new, new)
        dst = None if dst_ino is None else self._node(dst_ino)
        if src.type == "dir" and self._is_within(parent_inode_new, src.ino):
            raise E.InvalidArgument("cannot move a directory into itself")
        if exchange:
            if dst is None:
                raise E.NotFound(f"{new!r} not found")
            if dst.type == "dir" and self._is_within(parent_inode_old, dst.ino):
                raise E.InvalidArgument("cannot move a directory into itself")
            self._exchange(src, old_parent, old, dst, new_parent, new)
            return
        if dst is not None and dst.ino == src.ino:
            return  # two names of one node: POSIX says do nothing
        if dst is not None:
            if noreplace:
                raise E.AlreadyExists(f"{new!r} exists")
            if src.type == "dir" and dst.type != "dir":
                raise E.NotADirectory(f"{new!r} is not a directory")
            if src.type != "dir" and dst.type == "dir":
                raise E.IsADirectory(f"{new!r} is a directory")
            if dst.type == "dir" and self.store.has_children(dst.ino):
                raise E.DirectoryNotEmpty(f"{new!r} is not empty")
        txn = self.store.txn()
        if dst is not None:
            txn.remove_name(dst, parent_inode_new, new)
            if not dst.names and dst.ino not in self._files:
                txn.drop_node(dst)
            else:
                txn.put_node(dst)
        txn.remove_name(src, parent_inode_old, old)
        txn.add_name(src, parent_inode_new, new)
        src.ctime_ns = _now()
        txn.put_node(src)
        if dst is None:
            txn.outbox_append(wire.Rename(new_op_id(), src.id, old_parent.id, old, new_parent.id,
                                          new))  # fmt: skip
        else:  # the server refuses it if dst changed there meanwhile (replaced_changed)
            txn.outbox_append(wire.Rename(new_op_id(), src.id, old_parent.id, old, new_parent.id,
                                          new, replace=True, replaces=dst.id,
                                          replaces_rev=dst.base_rev or None),
                              held=(dst.id,))  # fmt: skip
        self._touch(txn, src.ctime_ns, old_parent, new_parent)
        txn.commit()

    def _exchange(self, a: Node, pa: Node, na: str, b: Node, pb: Node, nb: str) -> None:
        txn = self.store.txn()
        txn.remove_name(a, pa.ino, na)
        txn.remove_name(b, pb.ino, nb)
        txn.add_name(a, pb.ino, nb)
        txn.add_name(b, pa.ino, na)
        now = _now()
        a.ctime_ns = b.ctime_ns = now
        txn.put_node(a)
        txn.put_node(b)
        tmp = _EXCHANGE_PREFIX + new_op_id()
        txn.outbox_append(wire.Rename(new_op_id(), b.id, pb.id, nb, pb.id, tmp))
        txn.outbox_append(wire.Rename(new_op_id(), a.id, pa.id, na, pb.id, nb))
        txn.outbox_append(wire.Rename(new_op_id(), b.id, pb.id, tmp, pa.id, na))
        self._touch(txn, now, pa, pb)
        txn.commit()
