"""The kernel's readahead for the drive's mount.

A FUSE mount gets the kernel's default readahead of 128 KiB, so a sequential read of an
uncached file reaches the drive as 128 KiB READ requests: eight requests (and eight
passes through the request loop) per ~1 MiB chunk. Raised to ``READ_AHEAD_KB`` (the
largest request FUSE sends, 256 pages), the kernel asks for whole MiBs; on this machine a
cold read of a 512 MiB file went from ~445 to ~545 MB/s with 30 % less CPU on the mount's
request thread (docs/benchmarks.md, "Session 6"). The kernel only lets the file system
lower it through FUSE's init reply, so the mount writes the backing device's
``/sys/class/bdi/MAJ:MIN/read_ahead_kb`` instead; that takes root, and elsewhere (a user
mount, a read-only ``/sys``) the drive keeps the default and says so in its log.

Small random reads are not penalised: the kernel starts every readahead window small and
grows it only while reads stay sequential.
"""

from __future__ import annotations

from pathlib import Path

READ_AHEAD_KB = 1024
BDI_ROOT = Path("/sys/class/bdi")


def _unescape(field: str) -> str:
    """A mountinfo path field: spaces, tabs, newlines and backslashes come octal-escaped."""
    for code, ch in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, ch)
    return field


def device_of(mountinfo: str, mountpoint: str) -> str | None:
    """The ``MAJ:MIN`` of the file system mounted at ``mountpoint`` (the last such mount:
    the one on top), from the text of ``/proc/self/mountinfo``; None if not mounted."""
    found = None
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) > 4 and _unescape(fields[4]) == mountpoint:
            found = fields[2]
    return found


def raise_read_ahead(mountpoint: Path | str, kb: int = READ_AHEAD_KB, *,
                     mountinfo: Path = Path("/proc/self/mountinfo"),
                     bdi_root: Path = BDI_ROOT) -> str:  # fmt: skip
    """Set the readahead of the mount at ``mountpoint`` to at least ``kb`` KiB, without a
    request to the mount itself (its request loop may not run yet). Returns what happened,
    for the log; never raises for a readahead that cannot be changed."""
    try:
        dev = device_of(mountinfo.read_text(), str(mountpoint))
        if dev is None:
            return f"readahead unchanged: {mountpoint} is not in {mountinfo}"
        knob = bdi_root / dev / "read_ahead_kb"
        now = int(knob.read_text())
        if now >= kb:
            return f"readahead {now} KiB (already, {knob})"
        knob.write_text(f"{kb}\n")
        return f"readahead {kb} KiB (was {now}, {knob})"
    except (OSError, ValueError) as e:
        return f"readahead unchanged (needs root and a writable /sys): {e}"
