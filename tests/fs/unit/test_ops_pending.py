"""What a pull may not undo: nodes changed locally by ops not pushed yet stay as the device
has them, including a node that another node's queued op deleted (a replacing rename)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cairn.core import wire
from cairn.core.keys import DataKey
from cairn.fs.store import Store
from tests.fs.unit.helpers import CTX, ROOT_ID, ROOT_INO, FrameSource, create, open_drive

pytestmark = pytest.mark.anyio


def server_view(store: Store, ino: int, name: str, rev: int) -> wire.Node:
    """The node as the server still has it: alive under ``name`` in the root."""
    node = store.node(ino)
    assert node is not None
    return wire.Node(
        id=node.id, ns=1, type="file", mode=node.mode, mtime_ns=node.mtime_ns, rev=rev,
        size=node.size, names=((ROOT_ID, name),), target=None, xattrs={},
        blocklist=store.blocklist(ino), deleted=False, seq=7,
    )  # fmt: skip


async def test_replaced_file_is_not_brought_back_by_a_pull(tmp_path: Path) -> None:
    """fsx seed 10: ``rename e -> x`` replaced file X, then ``rename x -> e``; a pull that
    still saw X alive at ``x`` (its create was pushed, the renames were not) put it back
    under ``x`` until the next pull. The replacing rename now holds X pending."""
    key = DataKey.generate()
    d = open_drive(tmp_path, key, FrameSource())
    try:
        x = await create(d.ops, ROOT_INO, "x", b"old x")
        await create(d.ops, ROOT_INO, "e", b"e")
        x_id = d.store.node(x).id
        stale = server_view(d.store, x, "x", rev=1)
        d.store.outbox_done([e.seq for e in d.store.outbox_peek(None)])  # both creates pushed
        assert not d.store.pending(x_id)

        await d.ops.rename(ROOT_INO, b"e", ROOT_INO, b"x", 0, CTX)  # replaces X
        await d.ops.rename(ROOT_INO, b"x", ROOT_INO, b"e", 0, CTX)
        assert d.store.pending(x_id)
        assert d.store.outbox_len() == 2

        changes = d.store.apply_remote([stale])
        assert x_id in changes.kept_local
        assert d.store.lookup(ROOT_INO, "x") is None and d.store.ino_of(x_id) is None

        # the hold survives a restart of the mount (rebuilt from the outbox) ...
        d.store.close()
        d.cache.close()
        d = open_drive(tmp_path, key, FrameSource())
        assert d.store.pending(x_id) and d.store.outbox_len() == 2
        ops = [e.op for e in d.store.outbox_peek(None)]
        assert all(isinstance(op, wire.Rename) for op in ops) and ops[0].replace
        # ... and ends when the replacing rename is pushed
        d.store.outbox_done([e.seq for e in d.store.outbox_peek(None)])
        assert not d.store.pending(x_id) and d.store.outbox_len() == 0
    finally:
        d.store.close()
        d.cache.close()
