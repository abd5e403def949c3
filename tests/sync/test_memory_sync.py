"""Issue 5's memory bound: syncing a big file between two devices keeps each mount's RSS
under 300 MiB — A writing and uploading it, B fetching and reading it through (soak: 10 GiB
by default, ``CAIRN_BIG_GIB``)."""

from __future__ import annotations

import os

import blake3
import pytest

from tests.fs.e2e.test_memory import MIB, RSS_LIMIT, RssWatch
from tests.support.drive import wait_until
from tests.sync.tree import pending_zero

pytestmark = [pytest.mark.fuse, pytest.mark.soak, pytest.mark.timeout(3600)]


def test_big_file_between_two_devices_bounded_rss(sync_devices) -> None:
    gib = float(os.environ.get("CAIRN_BIG_GIB", "10"))
    size = int(gib * (1 << 30))
    a = sync_devices("A", via_proxy=False)
    b = sync_devices("B", via_proxy=False)
    watch_a, watch_b = RssWatch(a.pid()), RssWatch(b.pid())  # type: ignore[arg-type]
    xof = blake3.blake3(b"cairn big sync file")  # unique, incompressible, generated fast
    want = blake3.blake3()
    with open(a.mnt / "big.bin", "wb") as f:
        for off in range(0, size, 4 * MIB):
            block = xof.digest(length=min(4 * MIB, size - off), seek=off)
            want.update(block)
            f.write(block)
    wait_until(lambda: pending_zero(a), 3600, "A's upload")
    wait_until(
        lambda: (b.mnt / "big.bin").exists() and os.stat(b.mnt / "big.bin").st_size == size,
        120, "B sees the whole file",
    )  # fmt: skip
    got = blake3.blake3()
    with open(b.mnt / "big.bin", "rb") as f:
        for block in iter(lambda: f.read(4 * MIB), b""):
            got.update(block)
    peak_a, peak_b = watch_a.stop(), watch_b.stop()
    print(f"{gib:g} GiB A→B: peak RSS A {peak_a / MIB:.0f} MiB, B {peak_b / MIB:.0f} MiB")
    assert got.hexdigest() == want.hexdigest()
    assert peak_a < RSS_LIMIT and peak_b < RSS_LIMIT, (peak_a / MIB, peak_b / MIB)
