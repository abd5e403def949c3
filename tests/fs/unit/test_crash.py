"""After fsync returns (and for a closed file, once its commit group is written), the data
survives kill -9 of the process: the store reopens with the file's blocklist and outbox
entries, every chunk it names is in the cache (dirty, so it will be uploaded) and decodes,
and no half-written cache or staging files are left behind."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cairn.core import wire
from cairn.core.keys import DataKey
from tests.fs.unit.helpers import CTX, ROOT_INO, FrameSource, open_drive, read_all

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parents[3]
DEADLINE_S = 60


def run_writer_until_synced_then_kill(tmp_path: Path, key: DataKey) -> None:
    """Start the writer, wait (bounded) for its "synced", then SIGKILL it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fs.unit.crash_writer", str(tmp_path), key.secret.hex()],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        ready, _, _ = select.select([proc.stdout], [], [], DEADLINE_S)
        assert ready, f"the writer did not report within {DEADLINE_S} s"
        line = proc.stdout.readline()  # b"" if it died
        assert line == b"synced\n", proc.stderr.read().decode() if proc.poll() is not None else line
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=DEADLINE_S)
        proc.stdin.close()
        proc.stdout.close()
        proc.stderr.close()


async def test_fsynced_data_survives_kill_9(tmp_path: Path) -> None:
    key = DataKey.generate()
    run_writer_until_synced_then_kill(tmp_path, key)
    drive = open_drive(tmp_path, key, FrameSource())
    try:
        ops = drive.ops
        data = bytearray(random.Random(7).randbytes(300_000))
        data[1000:1011] = b"random edit"
        ino = (await ops.lookup(ROOT_INO, b"durable", CTX)).st_ino
        assert await read_all(ops, ino) == bytes(data)
        kinds = [(e.op.kind, e.op.node) for e in drive.store.outbox_peek(None)]
        nid = drive.store.node(ino).id
        assert ("create", nid) in kinds
        content = [
            e.op
            for e in drive.store.outbox_peek(None)
            if e.op.kind in ("create", "update") and e.op.node == nid
        ]
        assert isinstance(content[-1], wire.Create | wire.Update)
        assert content[-1].blocklist.size == len(data)
        for cid in content[-1].blocklist.chunk_ids():
            assert drive.cache.is_dirty(cid) and drive.cache.get(cid) is not None
        closed = (await ops.lookup(ROOT_INO, b"closed", CTX)).st_ino
        assert await read_all(ops, closed) == b"closed, then its group was written"
        assert list((tmp_path / "cache" / "tmp").iterdir()) == []
        assert list(ops.staging_dir.iterdir()) == []
    finally:
        drive.store.close()
        drive.cache.close()
