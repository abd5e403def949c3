"""Tree snapshots and convergence checks for the multi-device tier.

``snapshot(root)`` maps each relative path to what a user would compare between devices:
``("dir", mode)``, ``("symlink", target)`` or ``("file", mode, size, sha256)``. Times are
left out (a pulled directory's mtime follows its own entries).
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import pytest

Snapshot = dict[str, tuple[object, ...]]


class HasMount(Protocol):
    name: str
    mnt: Path

    def status(self) -> str: ...


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def snapshot(root: Path) -> Snapshot:
    out: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_size, file_digest(p))
    return out


def safe_snapshot(root: Path) -> Snapshot | None:
    """A snapshot, or None when the tree changed under the walk (a pull in progress)."""
    try:
        return snapshot(root)
    except OSError:
        return None


def digests(snap: Snapshot) -> set[str]:
    """Every file content hash present in a snapshot."""
    return {str(v[3]) for v in snap.values() if v[0] == "file"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def diff(a: Snapshot, b: Snapshot) -> str:
    """A short human-readable difference between two snapshots."""
    lines = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            lines.append(f"  {k}: {a.get(k)!r} != {b.get(k)!r}")
    return "\n".join(lines[:40]) or "  (equal)"


def pending_zero(dev: HasMount) -> bool:
    return "pending:  0 changes" in dev.status()


def converge(devs: Sequence[HasMount], deadline_s: float, what: str = "") -> Snapshot:
    """Poll until every device's outbox is empty and all their trees are equal (checked
    twice in a row, so a pull landing between walks does not pass). Returns the tree; on
    timeout fails with the last difference seen."""
    end = time.monotonic() + deadline_s
    last: list[Snapshot | None] = []
    delay = 0.1
    stable = 0
    while True:
        snaps = [safe_snapshot(d.mnt) for d in devs]
        if all(s is not None and s == snaps[0] for s in snaps):
            if all(pending_zero(d) for d in devs):
                stable += 1
                if stable >= 2:
                    assert snaps[0] is not None
                    return snaps[0]
            else:
                stable = 0
        else:
            stable = 0
        last = snaps
        if time.monotonic() > end:
            detail = ""
            if len(last) >= 2 and last[0] is not None and last[1] is not None:
                detail = diff(last[0], last[1])
            trees = "\n".join(
                f"{d.name}: {sorted((s or {}).items())!r}"[:2000]
                for d, s in zip(devs, last, strict=True)
            )
            pytest.fail(
                f"devices did not converge in {deadline_s:g} s {what}\n"
                f"first two differ:\n{detail}\n{trees}"
            )
        time.sleep(delay)  # poll interval between convergence checks
        delay = min(delay * 1.5, 0.5)


def write_file(path: Path, data: bytes) -> None:
    """Write and close (the close seals the file on a Cairn mount)."""
    with open(path, "wb") as f:
        f.write(data)
