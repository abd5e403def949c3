"""kill -9 of a mount in the middle of a large upload (download): after a restart the
transfer resumes and the server's chunk byte counters show no chunk sent twice (at most the
chunks in flight at the kill: one per upload worker, the read-ahead window)."""

from __future__ import annotations

import hashlib
import os
import re

import pytest

from cairn.core.chunker import MAX_SIZE
from cairn.fs.files import MAX_READAHEAD
from cairn.fs.sync.uploader import DEFAULT_CONCURRENCY
from tests.support.drive import wait_until
from tests.sync.test_offline_faults import chunk_bytes_in, server_counter
from tests.sync.tree import file_digest, pending_zero

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

SIZE = 200 << 20
FRAME_OVERHEAD = 4096  # generous per-frame header + tag allowance


def test_kill9_mid_upload_resumes_without_resending(sync_devices, proxy, drive_server) -> None:
    a = sync_devices("A")
    base = chunk_bytes_in(drive_server.url)
    h = hashlib.sha256()
    proxy.throttle(40 << 20)  # 200 MiB takes ~5 s: the kill lands mid-upload
    with open(a.mnt / "big.bin", "wb") as f:
        for _ in range(SIZE >> 22):  # random 4 MiB blocks: incompressible, no dedupe
            block = os.urandom(4 << 20)
            h.update(block)
            f.write(block)
    wait_until(
        lambda: chunk_bytes_in(drive_server.url) - base > SIZE // 4, 60, "a quarter uploaded"
    )
    # cairn status shows the upload under way, e.g. "uploading: 12 of 180 chunks (12.0 MiB sent)"
    progress = re.search(r"^uploading: (\d+) of (\d+) chunks", a.status(), re.M)
    assert progress is not None, a.status()
    assert 0 < int(progress[2]) and int(progress[1]) <= int(progress[2])
    a.kill9()
    before_restart = chunk_bytes_in(drive_server.url) - base
    assert before_restart < SIZE, "the upload finished before the kill: nothing to resume"
    proxy.throttle(0)
    a.mount()
    wait_until(lambda: pending_zero(a), 120, "A's outbox to drain after the restart")
    sent = chunk_bytes_in(drive_server.url) - base
    chunks = SIZE // (256 << 10) + 1  # upper bound on chunk count (MIN_SIZE 256 KiB)
    limit = SIZE + chunks * FRAME_OVERHEAD + DEFAULT_CONCURRENCY * (MAX_SIZE + FRAME_OVERHEAD)
    assert sent <= limit, f"server received {sent} B for a {SIZE} B file (limit {limit})"
    b = sync_devices("B")
    wait_until(lambda: (b.mnt / "big.bin").exists(), 60, "B sees big.bin")
    assert file_digest(b.mnt / "big.bin") == h.hexdigest()
    fetched = re.search(r"^downloads: \d+ chunks in flight; (\d+) chunks", b.status(), re.M)
    assert fetched is not None and int(fetched[1]) >= SIZE // MAX_SIZE, b.status()


def chunk_bytes_out(url: str) -> float:
    return server_counter(url, "cairn_chunk_bytes_out_total")


def test_kill9_mid_download_refetches_nothing_cached(sync_devices, drive_server) -> None:
    """B reads half of a large file (fetching it chunk by chunk into its cache), is killed,
    comes back and reads it all: the server's chunk-bytes-out counter shows the first half
    was not fetched again (at most the read-ahead window in flight at the kill)."""
    size = 96 << 20
    a = sync_devices("A", via_proxy=False)
    body = os.urandom(size)
    with open(a.mnt / "big.bin", "wb") as f:
        f.write(body)
    wait_until(lambda: pending_zero(a), 120, "A's upload")
    b = sync_devices("B", via_proxy=False)
    wait_until(lambda: (b.mnt / "big.bin").exists(), 60, "B sees big.bin")
    base = chunk_bytes_out(drive_server.url)
    with open(b.mnt / "big.bin", "rb") as f:
        first = f.read(size // 2)
    assert first == body[: size // 2]
    half = chunk_bytes_out(drive_server.url) - base
    assert half >= size // 2 - MAX_SIZE, f"only {half} B fetched for half of the file"
    b.kill9()
    b.mount()
    assert file_digest(b.mnt / "big.bin") == hashlib.sha256(body).hexdigest()
    sent = chunk_bytes_out(drive_server.url) - base
    chunks = size // (256 << 10) + 1
    limit = size + chunks * FRAME_OVERHEAD + (MAX_READAHEAD + 1) * (MAX_SIZE + FRAME_OVERHEAD)
    assert sent <= limit, f"server sent {sent} B for a {size} B file (limit {limit})"
