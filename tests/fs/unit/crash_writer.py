"""Subprocess half of ``test_crash.py``: write through ``Operations``, fsync one file, leave
another unsynced and open, say "synced", then wait to be killed with SIGKILL."""

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
    data = random.Random(7).randbytes(300_000)
    fi, _ = await ops.create(ROOT_INO, b"durable", 0o644, os.O_WRONLY, CTX)
    for off in range(0, len(data), 65536):
        await ops.write(fi.fh, off, data[off : off + 65536])
    await ops.write(fi.fh, 1000, b"random edit")  # a staged extent too
    await ops.fsync(fi.fh, False)
    other, _ = await ops.create(ROOT_INO, b"unsynced", 0o644, os.O_WRONLY, CTX)
    await ops.write(other.fh, 0, b"may be lost")
    print("synced", flush=True)
    sys.stdin.read()  # the test kills us here


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]), DataKey(bytes.fromhex(sys.argv[2])))
