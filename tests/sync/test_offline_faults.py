"""Offline edits and network faults between two devices and one server: after each fault
the trees converge with every written version present exactly once (no duplicate, nothing
lost, nothing parked)."""

from __future__ import annotations

import os
import shutil
import urllib.request

import pytest

from tests.support.drive import wait_until
from tests.sync.tree import converge, sha, write_file

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

DEADLINE = 60


def nothing_parked(*devs) -> None:  # type: ignore[no-untyped-def]
    for d in devs:
        p = d.state / "parked.jsonl"
        assert not p.exists() or not p.read_text().strip(), f"{d.name} parked: {p.read_text()}"


def file_map(snap):  # type: ignore[no-untyped-def]
    return {k: v[3] for k, v in snap.items() if v[0] == "file"}


def server_counter(url: str, name: str) -> float:
    """The value of an unlabelled counter on the server's ``/metrics``."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def chunk_bytes_in(url: str) -> float:
    return server_counter(url, "cairn_chunk_bytes_in_total")


def test_server_down_both_edit_then_converge(sync_devices, drive_server) -> None:
    a, b = sync_devices("A"), sync_devices("B")
    (a.mnt / "shared").mkdir()
    write_file(a.mnt / "shared" / "a.txt", b"a0")
    write_file(a.mnt / "shared" / "b.txt", b"b0")
    converge([a, b], DEADLINE)
    drive_server.stop()
    for d in (a, b):
        wait_until(lambda d=d: "reachable: no" in d.status(), 30, f"{d.name} sees the outage")
    want: dict[str, bytes] = {}
    for i in range(5):  # several versions in order: the last one must win
        write_file(a.mnt / "shared" / "a.txt", f"a{i + 1}".encode() * 1000)
        write_file(b.mnt / "shared" / "b.txt", f"b{i + 1}".encode() * 1000)
    want["shared/a.txt"] = b"a5" * 1000
    want["shared/b.txt"] = b"b5" * 1000
    (a.mnt / "only-a").mkdir()
    write_file(a.mnt / "only-a" / "new.bin", os.urandom(3_000_000))
    want["only-a/new.bin"] = (a.mnt / "only-a" / "new.bin").read_bytes()
    write_file(b.mnt / "from-b.txt", b"written on B offline")
    want["from-b.txt"] = b"written on B offline"
    drive_server.start()
    snap = converge([a, b], DEADLINE * 2, "after the server came back")
    assert file_map(snap) == {k: sha(v) for k, v in want.items()}
    nothing_parked(a, b)


def test_cut_mid_sync_delay_and_throttle(sync_devices, proxy, drive_server) -> None:
    a, b = sync_devices("A"), sync_devices("B")
    want: dict[str, bytes] = {}
    # 1. cut while a 24 MB upload is under way (throttled so the cut lands mid-way)
    big = os.urandom(24_000_000)
    proxy.throttle(8_000_000)
    start = chunk_bytes_in(drive_server.url)
    write_file(a.mnt / "big.bin", big)
    want["big.bin"] = big
    wait_until(
        lambda: chunk_bytes_in(drive_server.url) - start > 4_000_000, DEADLINE, "upload to start"
    )
    proxy.cut()
    write_file(a.mnt / "during-cut.txt", b"made while cut")
    want["during-cut.txt"] = b"made while cut"
    proxy.restore()
    proxy.throttle(0)
    snap = converge([a, b], DEADLINE, "after a cut mid-upload")
    assert file_map(snap) == {k: sha(v) for k, v in want.items()}
    # 2. 150 ms per forwarded chunk of data, both ways
    proxy.delay(0.15)
    for i in range(10):
        write_file(a.mnt / f"slow{i}.txt", f"delayed {i}".encode())
        want[f"slow{i}.txt"] = f"delayed {i}".encode()
    write_file(b.mnt / "from-b.txt", b"B under delay")
    want["from-b.txt"] = b"B under delay"
    snap = converge([a, b], DEADLINE, "under a 150 ms delay")
    assert file_map(snap) == {k: sha(v) for k, v in want.items()}
    proxy.delay(0)
    # 3. a slow link (200 kB/s shared) for a few MB each way
    proxy.throttle(200_000)
    blob_a, blob_b = os.urandom(700_000), os.urandom(500_000)
    write_file(a.mnt / "thr-a.bin", blob_a)
    write_file(b.mnt / "thr-b.bin", blob_b)
    want.update({"thr-a.bin": blob_a, "thr-b.bin": blob_b})
    snap = converge([a, b], DEADLINE, "under a 200 kB/s throttle")
    proxy.throttle(0)
    assert file_map(snap) == {k: sha(v) for k, v in want.items()}
    nothing_parked(a, b)


def test_fresh_state_same_device_name_deletes_nothing(sync_devices) -> None:
    a, b = sync_devices("A"), sync_devices("B")
    (a.mnt / "keep").mkdir()
    for i in range(20):
        write_file(a.mnt / "keep" / f"f{i}", f"content {i}".encode())
    want = converge([a, b], DEADLINE)
    a.unmount()
    # A's local state vanishes (disk replaced, dir wiped); it logs in again as "A".
    shutil.rmtree(a.state)
    a.login("alice")
    a.mount()
    got = converge([a, b], DEADLINE, "after A came back with fresh state")
    assert got == want
    nothing_parked(a, b)
