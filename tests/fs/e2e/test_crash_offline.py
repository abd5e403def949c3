"""kill -9 of the mount after fsync loses nothing; a drive without its server keeps working
and catches up when the server returns."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import pytest

from cairn.core.errors import NotFound
from cairn.fs.cache import ChunkCache
from cairn.fs.statedir import StateDir, pid_alive
from cairn.fs.store import Store
from tests.support.drive import Device, lazy_unmount, wait_until

pytestmark = [pytest.mark.fuse, pytest.mark.slow]


def write_fsync(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def same_bytes(path: Path, data: bytes) -> bool:
    try:
        return path.read_bytes() == data
    except OSError:
        return False


def check_cache(state_dir: Path) -> None:
    """Every cached frame decodes under its id; no dirty chunk lacks a blocklist using it;
    no half-written temp file survives."""
    state = StateDir(state_dir)
    cache = ChunkCache(state.cache_dir, state.data_key(), 1 << 40)
    assert not any((state.cache_dir / "tmp").iterdir())
    store = Store.open(state.db_dir, state.device().home_root)
    try:
        used = {
            cid
            for n in store.nodes()
            if n.type == "file"
            for cid in store.blocklist(n.ino).chunk_ids()
        }
        assert store.outbox_len() == 0
    finally:
        store.close()
    orphans = [c.hex() for c in cache.dirty_ids() if c not in used]
    assert not orphans, f"dirty cache entries no file uses: {orphans[:3]}"
    for sub in ("dirty", "clean"):
        for f in (state.cache_dir / sub).rglob("*"):
            if f.is_file():
                cid = bytes.fromhex(f.name)
                assert cache.get(cid) is not None, f"corrupt cache entry {f}"
                try:
                    cache.plain_frame(cid)
                except NotFound:
                    pytest.fail(f"cache entry {f} vanished")


def test_fsync_survives_kill9(devices) -> None:
    a: Device = devices("A")
    a.mount()
    (a.mnt / "docs").mkdir()
    small = b"Z" * 1_048_577
    big = os.urandom(5_000_000)
    write_fsync(a.mnt / "docs" / "fsynced", small)
    write_fsync(a.mnt / "docs" / "big", big)
    a.kill9()
    assert not os.path.ismount(a.mnt)
    a.mount()
    assert (a.mnt / "docs" / "fsynced").read_bytes() == small
    assert (a.mnt / "docs" / "big").read_bytes() == big

    b: Device = devices("B")
    b.mount()
    wait_until(lambda: same_bytes(b.mnt / "docs" / "big", big), 60, "B to see the big file")
    assert (b.mnt / "docs" / "fsynced").read_bytes() == small
    a.unmount()
    check_cache(a.state)


def test_offline_edits_arrive(devices, drive_server) -> None:
    a: Device = devices("A")
    b: Device = devices("B")
    a.mount()
    b.mount()
    cold = os.urandom(2_000_000)
    (a.mnt / "cold.bin").write_bytes(cold)
    (a.mnt / "before").mkdir()
    wait_until(lambda: (b.mnt / "before").is_dir(), 60, "B to see A's first changes")
    wait_until(lambda: os.stat(b.mnt / "cold.bin").st_size == len(cold), 60, "cold.bin on B")

    drive_server.stop()
    # A keeps working offline.
    (a.mnt / "offline").mkdir()
    data = os.urandom(1_500_000)
    (a.mnt / "offline" / "new.bin").write_bytes(data)
    os.rename(a.mnt / "before", a.mnt / "after")
    (a.mnt / "offline" / "note.txt").write_text("written offline")
    assert (a.mnt / "offline" / "new.bin").read_bytes() == data
    # B has cold.bin's metadata but not its content: reading fails with EIO, not a hang.
    with pytest.raises(OSError) as exc:
        (b.mnt / "cold.bin").read_bytes()
    assert exc.value.errno in (errno.EIO, errno.ENOTCONN)
    wait_until(lambda: "no (offline)" in a.status(), 30, "A's status to report offline")
    assert "pending:  0 changes" not in a.status()
    # Unmounting offline says what stays queued; mounting offline works from local state.
    res = a.unmount(timeout=2)
    assert "not uploaded" in res.stderr and "server unreachable" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    a.mount()
    assert (a.mnt / "offline" / "new.bin").read_bytes() == data
    assert "no (offline)" in a.status() or "not yet tried" in a.status()

    drive_server.start()
    wait_until(lambda: same_bytes(b.mnt / "offline" / "new.bin", data), 90, "offline edits on B")
    wait_until(lambda: (b.mnt / "after").is_dir() and not (b.mnt / "before").exists(), 30, "rename")
    assert (b.mnt / "offline" / "note.txt").read_text() == "written offline"
    assert (b.mnt / "cold.bin").read_bytes() == cold


def blob_count(server) -> int:
    return sum(1 for p in (server.data_dir / "blobs").rglob("*") if p.is_file())


def test_kill9_mid_upload_then_offline_kill(devices, drive_server) -> None:
    """Killed while uploading, and killed while offline with a full outbox: after remount
    everything arrives, once."""
    a: Device = devices("A")
    a.mount()
    before = blob_count(drive_server)
    big = os.urandom(48 << 20)
    write_fsync(a.mnt / "big.bin", big)
    # Upload has started (some chunks are stored) but 48 chunks take a while: kill now.
    wait_until(lambda: blob_count(drive_server) > before, 60, "the first uploaded chunk")
    a.kill9()

    drive_server.stop()
    a.mount()  # offline remount from local state
    assert (a.mnt / "big.bin").read_bytes() == big
    small = os.urandom(100_000)
    write_fsync(a.mnt / "written-offline", small)
    a.kill9()
    drive_server.start()
    a.mount()

    b: Device = devices("B")
    b.mount()
    wait_until(
        lambda: same_bytes(b.mnt / "written-offline", small), 90, "B to see the offline file"
    )
    wait_until(lambda: same_bytes(b.mnt / "big.bin", big), 90, "B to see big.bin")
    assert sorted(os.listdir(b.mnt)) == ["big.bin", "written-offline"]
    a.unmount()
    check_cache(a.state)


def test_sigterm_seals_open_files(devices) -> None:
    """A mount ended by SIGTERM seals files still open for writing: the data is kept."""
    a: Device = devices("A")
    a.mount()
    pid = a.pid()
    assert pid is not None
    f = open(a.mnt / "open.txt", "wb")  # noqa: SIM115 - held open across the SIGTERM
    try:
        f.write(b"written, never closed")
        f.flush()
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not pid_alive(pid), 30, "the mount process to exit")
    finally:
        try:
            f.close()
        except OSError:
            pass  # the session is gone: closing may fail with ENOTCONN
    lazy_unmount(a.mnt)
    a.mount()
    assert (a.mnt / "open.txt").read_bytes() == b"written, never closed"
