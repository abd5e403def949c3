"""Crash-safety of ``LocalBlobStore``: a blob is visible under its final name only complete.

A real writer process is killed with SIGKILL while it stores blobs; afterwards every id the
store lists must hold bytes that hash to that id, and temporary files must be neither listed
nor readable, and must be removable by ``remove_stale_temps``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import blake3
import pytest

from cairn.server.blobs import LocalBlobStore
from cairn.server.blobs.local import TEMP_PREFIX

pytestmark = pytest.mark.anyio

WRITER = r"""
import asyncio, os, sys
import blake3
from cairn.server.blobs import LocalBlobStore

async def main(root):
    store = LocalBlobStore(root, threads=4)
    for _ in range(2000):  # bounded; the test kills us long before
        batch = [os.urandom(1 << 20) * 4 for _ in range(4)]  # 4 MiB each: slow enough to be cut
        await asyncio.gather(*(store.put(blake3.blake3(b).digest(), b) for b in batch))

asyncio.run(main(sys.argv[1]))
"""


def temp_files(root) -> list[str]:
    return [
        os.path.join(d, n)
        for d, _, names in os.walk(root)
        for n in names
        if n.startswith(TEMP_PREFIX)
    ]


def final_files(root) -> list[str]:
    return [
        os.path.join(d, n)
        for d, _, names in os.walk(root)
        for n in names
        if not n.startswith(TEMP_PREFIX)
    ]


def kill_writer_midway(root) -> None:
    """Run the writer until it has stored a few blobs, then SIGKILL it."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root)])
    try:
        deadline = time.monotonic() + 60
        while len(final_files(root)) < 8:
            assert proc.poll() is None, "writer exited early"
            assert time.monotonic() < deadline, "writer stored too little in 60 s"
            time.sleep(0.01)  # polling interval of a condition with a deadline
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.mark.slow
async def test_sigkill_during_puts_leaves_only_complete_blobs(tmp_path) -> None:
    root = tmp_path / "blobs"
    kill_writer_midway(root)
    store = LocalBlobStore(root)
    try:
        ids = [cid async for cid in store.iter_ids()]
        # every file under a final name is a listed blob, and every listed blob is whole
        assert len(ids) == len(final_files(root)) >= 8
        for cid in ids:
            assert blake3.blake3(await store.get(cid)).digest() == cid
        await store.remove_stale_temps(older_than=0)
        assert temp_files(root) == []
        assert sorted([cid async for cid in store.iter_ids()]) == sorted(ids)
    finally:
        await store.close()


async def test_temp_files_are_ignored_and_cleaned(tmp_path) -> None:
    store = LocalBlobStore(tmp_path)
    try:
        cid = os.urandom(32)
        await store.put(cid, b"complete")
        h = cid.hex()
        fan = tmp_path / h[:2]
        # what an interrupted put leaves behind, and a stray non-blob file
        (fan / f"{TEMP_PREFIX}{h[:16]}-000000").write_bytes(b"compl")
        (fan / "README").write_text("not a blob")
        assert [c async for c in store.iter_ids()] == [cid]
        # a young temporary file may belong to a put in progress: kept
        assert await store.remove_stale_temps(older_than=3600) == 0
        assert await store.remove_stale_temps(older_than=0) == 1
        assert temp_files(tmp_path) == []
        assert await store.get(cid) == b"complete"
    finally:
        await store.close()


async def test_put_leaves_no_temp_file_and_fsyncs_a_complete_file(tmp_path) -> None:
    store = LocalBlobStore(tmp_path)
    try:
        blobs = {os.urandom(32): os.urandom(n) for n in (0, 1, 4096, 1 << 20)}
        for cid, data in blobs.items():
            await store.put(cid, data)
        assert temp_files(tmp_path) == []
        for cid, data in blobs.items():
            h = cid.hex()
            assert (tmp_path / h[:2] / h).read_bytes() == data
    finally:
        await store.close()
