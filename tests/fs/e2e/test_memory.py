"""Files of any size with bounded memory: writing a big file into the drive and uploading it
keeps the mount process's RSS under 300 MiB (soak: 10 GiB by default, ``CAIRN_BIG_GIB``)."""

from __future__ import annotations

import os
import threading

import blake3
import psutil
import pytest

from tests.support.drive import Device, wait_until

pytestmark = [pytest.mark.fuse, pytest.mark.soak, pytest.mark.timeout(3600)]

MIB = 1 << 20
RSS_LIMIT = 300 * MIB


class RssWatch:
    """Samples a process's RSS on a thread until stopped; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):  # sampling period, not synchronization
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return

    def stop(self) -> int:
        self._stop.set()
        self._t.join(5)
        return self.peak


def test_big_file_bounded_rss(devices) -> None:
    gib = float(os.environ.get("CAIRN_BIG_GIB", "10"))
    size = int(gib * (1 << 30))
    a: Device = devices("A")
    a.mount()
    pid = a.pid()
    assert pid is not None
    watch = RssWatch(pid)
    # Unique, incompressible content generated fast (BLAKE3 XOF), so nothing deduplicates.
    xof = blake3.blake3(b"cairn big file")
    with open(a.mnt / "big.bin", "wb") as f:
        for off in range(0, size, 4 * MIB):
            f.write(xof.digest(length=min(4 * MIB, size - off), seek=off))
        f.flush()
        os.fsync(f.fileno())
    wait_until(lambda: "pending:  0 changes" in a.status(), 3600, "the upload to finish")
    peak = watch.stop()
    print(f"big file {gib:g} GiB: peak mount RSS {peak / MIB:.0f} MiB")
    assert peak < RSS_LIMIT, f"peak RSS {peak / MIB:.0f} MiB"
    assert os.stat(a.mnt / "big.bin").st_size == size
