"""A comparable snapshot of a directory tree as a user sees it through the kernel."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

BIG = 1 << 30  # files above this are compared by size and samples, not by a full hash
SAMPLES = (0, 4096, 1 << 20, 1 << 30)


def _digest(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size > BIG:
            for off in (*SAMPLES, size - 4096):
                f.seek(off)
                h.update(f.read(4096))
        else:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def _xattrs(path: Path) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {
        n: os.getxattr(path, n, follow_symlinks=False)
        for n in sorted(names)
        if n.startswith("user.")
    }


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """``relpath → (kind, mode, mtime_ns, content-or-target, xattrs)``; directory mtimes are
    left out (they move with every entry added)."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), _xattrs(p))
            else:
                out[rel] = (
                    "file", stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_size,
                    _digest(p, st.st_size), _xattrs(p),
                )  # fmt: skip
    return out
