"""``fs/readahead.py``: finding the mount's device in mountinfo and setting its readahead
(here on a stand-in sysfs tree; through a real mount in tests/fs/e2e)."""

from __future__ import annotations

from pathlib import Path

from cairn.fs.readahead import device_of, raise_read_ahead

MOUNTINFO = (
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    "98 22 0:52 / /mnt/my\\040drive rw,nosuid,nodev,relatime shared:50 - fuse cairn rw\n"
    "99 22 0:53 / /mnt/d rw shared:51 - fuse cairn rw\n"
    "101 99 0:60 / /mnt/d rw shared:52 - fuse cairn rw\n"
)


def test_device_of_unescapes_and_takes_the_top_mount() -> None:
    assert device_of(MOUNTINFO, "/mnt/my drive") == "0:52"
    assert device_of(MOUNTINFO, "/mnt/d") == "0:60"  # mounted over 0:53: the top one
    assert device_of(MOUNTINFO, "/mnt/none") is None


def test_raise_read_ahead_only_raises_and_never_raises_errors(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    bdi = tmp_path / "bdi"
    (bdi / "0:60").mkdir(parents=True)
    knob = bdi / "0:60" / "read_ahead_kb"
    knob.write_text("128\n")
    assert "was 128" in raise_read_ahead("/mnt/d", 1024, mountinfo=info, bdi_root=bdi)
    assert knob.read_text().strip() == "1024"
    knob.write_text("4096\n")  # someone set more: left as it is
    assert "already" in raise_read_ahead("/mnt/d", 1024, mountinfo=info, bdi_root=bdi)
    assert knob.read_text().strip() == "4096"
    # no such device directory (as when /sys is not ours): a log line, not an exception
    assert "unchanged" in raise_read_ahead("/mnt/my drive", mountinfo=info, bdi_root=bdi)
    assert "not in" in raise_read_ahead("/mnt/none", mountinfo=info, bdi_root=bdi)
