"""Conflict cases that already hold end to end (rename/edit and rename/rename; the
other cases are in ``test_conflict_cases.py``): both devices cut off from the server by the proxy make conflicting changes, the
network comes back, and both devices converge on the same tree.

The helpers here are shared with ``test_conflict_cases.py``."""

from __future__ import annotations

import os
import re

import pytest

from tests.support.drive import wait_until
from tests.sync.tree import converge, digests, sha, write_file

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

DEADLINE = 40


def copy_re(stem: str, ext: str) -> re.Pattern[str]:
    return re.compile(
        rf"^{re.escape(stem)} \(conflicted copy (A|B) \d{{4}}-\d{{2}}-\d{{2}} \d{{6}}\)"
        rf"{re.escape(ext)}$"
    )


def offline_then_reconnect(proxy, a, b, change_a, change_b):  # type: ignore[no-untyped-def]
    """Cut both devices off, wait until both know it, apply the changes, reconnect."""
    proxy.cut()
    for d in (a, b):
        wait_until(lambda d=d: "reachable: no" in d.status(), 30, f"{d.name} sees the cut")
    change_a()
    change_b()
    proxy.restore()


def names(snap):  # type: ignore[no-untyped-def]
    return sorted(snap)


def test_rename_edit_both_apply(sync_devices, proxy) -> None:
    a, b = sync_devices("A"), sync_devices("B")
    write_file(a.mnt / "doc.txt", b"base\n")
    converge([a, b], DEADLINE)
    vb = b"edited on B\n"
    offline_then_reconnect(
        proxy, a, b, lambda: os.rename(a.mnt / "doc.txt", a.mnt / "moved.txt"),
        lambda: write_file(b.mnt / "doc.txt", vb),
    )  # fmt: skip
    snap = converge([a, b], DEADLINE, "after rename/edit")
    assert names(snap) == ["moved.txt"]
    assert (a.mnt / "moved.txt").read_bytes() == vb


def test_rename_rename_one_wins(sync_devices, proxy) -> None:
    a, b = sync_devices("A"), sync_devices("B")
    write_file(a.mnt / "doc.txt", b"base\n")
    converge([a, b], DEADLINE)
    offline_then_reconnect(
        proxy, a, b, lambda: os.rename(a.mnt / "doc.txt", a.mnt / "by-a.txt"),
        lambda: os.rename(b.mnt / "doc.txt", b.mnt / "by-b.txt"),
    )  # fmt: skip
    snap = converge([a, b], DEADLINE, "after rename/rename")
    assert names(snap) in (["by-a.txt"], ["by-b.txt"]), names(snap)
    assert digests(snap) == {sha(b"base\n")}
