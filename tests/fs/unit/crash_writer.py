"""Subprocess half of ``test_crash.py``: write through ``Operations``, fsync one file, close
another and wait until the store's group timer has written it, leave a third unsynced and
open, say "synced", then wait to be killed with SIGKILL."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import trio

from cairn.core.keys import DataKey
from tests.fs.unit.helpers import CTX, ROOT_INO, FrameSource, open_drive


async def main(root: Path, key: DataKey) -> None:
    drive = open_drive(root, key, FrameSource())
    ops = drive.ops
    async with trio.open_nursery() as nursery:
        await nursery.start(ops.run)  # the store's group timer runs here
        data = random.Random(7).randbytes(300_000)
        fi, _ = await ops.create(ROOT_INO, b"durable", 0o644, os.O_WRONLY, CTX)
        for off in range(0, len(data), 65536):
            await ops.write(fi.fh, off, data[off : off + 65536])
        await ops.write(fi.fh, 1000, b"random edit")  # a staged extent too
        await ops.fsync(fi.fh, False)
        # closed, not fsynced: in RocksDB (not synced) once its group is written
        closed, _ = await ops.create(ROOT_INO, b"closed", 0o644, os.O_WRONLY, CTX)
        await ops.write(closed.fh, 0, b"closed, then its group was written")
        await ops.release(closed.fh)
        with trio.fail_after(10):
            # a condition with a deadline: the store has no event to wait on
            while drive.store.pending_keys():  # noqa: ASYNC110
                await trio.sleep(0.001)
        other, _ = await ops.create(ROOT_INO, b"unsynced", 0o644, os.O_WRONLY, CTX)
        await ops.write(other.fh, 0, b"may be lost")
        print("synced", flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)  # the test kills us here


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]), DataKey(bytes.fromhex(sys.argv[2])))
