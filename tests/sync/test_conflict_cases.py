"""Issue 5's conflict cases end to end: both devices cut off from the server (the proxy
refuses them) make conflicting changes, the network comes back, and then both devices
hold the same tree with every written version present (the loser as
``NAME (conflicted copy DEVICE YYYY-MM-DD HHMMSS).EXT``)."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.support.drive import wait_until
from tests.sync.test_conflicts import DEADLINE, copy_re, names, offline_then_reconnect
from tests.sync.tree import converge, digests, pending_zero, sha, write_file

pytestmark = [
    pytest.mark.fuse,
    pytest.mark.slow,
]


def test_edit_edit(sync_devices, proxy) -> None:
    a, b = sync_devices("A"), sync_devices("B")
    write_file(a.mnt / "doc.txt", b"base\n")
    converge([a, b], DEADLINE)
    va, vb = b"edited on A\n", b"edited on B, longer\n"
    offline_then_reconnect(
        proxy, a, b, lambda: write_file(a.mnt / "doc.txt", va),
        lambda: write_file(b.mnt / "doc.txt", vb),
    )  # fmt: skip
    snap = converge([a, b], DEADLINE, "after edit/edit")
    assert {sha(va), sha(vb)} <= digests(snap), names(snap)
    copies = [n for n in snap if copy_re("doc", ".txt").match(n)]
    assert "doc.txt" in snap and len(copies) == 1, names(snap)


def test_edit_delete_keeps_the_edit(sync_devices, proxy) -> None:
    a, b = sync_devices("A"), sync_devices("B")
    write_file(a.mnt / "doc.txt", b"base\n")
    converge([a, b], DEADLINE)
    va = b"edited on A\n"
    offline_then_reconnect(
        proxy, a, b, lambda: write_file(a.mnt / "doc.txt", va),
        lambda: os.unlink(b.mnt / "doc.txt"),
    )  # fmt: skip
    snap = converge([a, b], DEADLINE, "after edit/delete")
    assert sha(va) in digests(snap), names(snap)


def test_delete_delete(sync_devices, proxy) -> None:
    a, b = sync_devices("A"), sync_devices("B")
    write_file(a.mnt / "doc.txt", b"base\n")
    write_file(a.mnt / "keep.txt", b"keep\n")
    converge([a, b], DEADLINE)
    offline_then_reconnect(
        proxy, a, b, lambda: os.unlink(a.mnt / "doc.txt"), lambda: os.unlink(b.mnt / "doc.txt")
    )
    snap = converge([a, b], DEADLINE, "after delete/delete")
    assert names(snap) == ["keep.txt"]
    for d in (a, b):  # deleting what is already deleted is not a conflict to park
        assert not (d.state / "parked.jsonl").exists(), (d.state / "parked.jsonl").read_text()


def test_create_create_same_name(sync_devices, proxy) -> None:
    a, b = sync_devices("A"), sync_devices("B")
    converge([a, b], DEADLINE)
    va, vb = b"new on A\n", b"new on B\n"
    offline_then_reconnect(
        proxy, a, b, lambda: write_file(a.mnt / "new.txt", va),
        lambda: write_file(b.mnt / "new.txt", vb),
    )  # fmt: skip
    snap = converge([a, b], DEADLINE, "after create/create")
    assert {sha(va), sha(vb)} <= digests(snap), names(snap)
    copies = [n for n in snap if copy_re("new", ".txt").match(n)]
    assert "new.txt" in snap and len(copies) == 1, names(snap)


def test_deleted_dir_keeps_file_added_elsewhere(sync_devices, proxy) -> None:
    a, b = sync_devices("A"), sync_devices("B")
    (a.mnt / "d" / "sub").mkdir(parents=True)
    write_file(a.mnt / "d" / "old.txt", b"old\n")
    write_file(a.mnt / "d" / "sub" / "deep.txt", b"deep\n")
    converge([a, b], DEADLINE)
    vb = b"added on B while A deleted the dir\n"
    offline_then_reconnect(
        proxy, a, b, lambda: shutil.rmtree(a.mnt / "d"),
        lambda: write_file(b.mnt / "d" / "sub" / "added.txt", vb),
    )  # fmt: skip
    snap = converge([a, b], DEADLINE, "after dir-delete/add")
    assert sha(vb) in digests(snap), names(snap)
    assert any(n.endswith("added.txt") for n in snap), names(snap)


def test_save_by_rename_does_not_delete_an_edit_made_elsewhere(sync_devices, proxy) -> None:
    """Editors save by writing a temporary file and renaming it over the original. Done on
    B (offline) while A edited the original and pushed it, that rename would delete A's
    edit on the server; the server refuses it (``replaced_changed``) and B's version
    becomes a conflicted copy beside A's."""
    a, b = sync_devices("A", via_proxy=False), sync_devices("B")  # only B can be cut off
    write_file(a.mnt / "doc.txt", b"base\n")
    converge([a, b], DEADLINE)
    va, vb = b"edited on A\n", b"saved on B through a temporary file\n"
    proxy.cut()
    wait_until(lambda: "reachable: no" in b.status(), 30, "B sees the cut")
    write_file(b.mnt / ".doc.txt.swp", vb)
    os.rename(b.mnt / ".doc.txt.swp", b.mnt / "doc.txt")
    write_file(a.mnt / "doc.txt", va)
    wait_until(lambda: pending_zero(a), DEADLINE, "A's edit pushed")
    proxy.restore()
    snap = converge([a, b], DEADLINE, "after edit/save-by-rename")
    assert {sha(va), sha(vb)} <= digests(snap), names(snap)
    assert (a.mnt / "doc.txt").read_bytes() == va
    copies = [n for n in snap if copy_re("doc", ".txt").match(n)]
    assert len(copies) == 1 and (a.mnt / copies[0]).read_bytes() == vb, names(snap)


def test_save_by_rename_without_a_concurrent_edit_replaces(sync_devices, proxy) -> None:
    a, b = sync_devices("A"), sync_devices("B")
    write_file(a.mnt / "doc.txt", b"base\n")
    converge([a, b], DEADLINE)
    write_file(b.mnt / "doc.txt", b"edited on B first\n")  # B's own edit, then its save
    write_file(b.mnt / ".doc.txt.swp", b"saved on B\n")
    os.rename(b.mnt / ".doc.txt.swp", b.mnt / "doc.txt")
    snap = converge([a, b], DEADLINE, "after save-by-rename")
    assert names(snap) == ["doc.txt"]
    assert (a.mnt / "doc.txt").read_bytes() == b"saved on B\n"


def test_rename_edit_delete_offline_keeps_an_edit_made_elsewhere(sync_devices, proxy) -> None:
    """A (offline) renames a file, rewrites it and deletes it; meanwhile B (online) edits
    it. A's rename is applied over B's edit (renames do not check content revisions), and
    its answer carries B's revision: A's queued delete must not be rebased onto it, or it
    deletes B's version unseen (found by test_random_ops, seed 702987668)."""
    a = sync_devices("A")
    b = sync_devices("B", via_proxy=False)  # stays online while A is cut off
    write_file(a.mnt / "doc.txt", b"base\n")
    converge([a, b], DEADLINE)
    proxy.cut()
    wait_until(lambda: "reachable: no" in a.status(), 30, "A sees the cut")
    os.rename(a.mnt / "doc.txt", a.mnt / "moved.txt")
    write_file(a.mnt / "moved.txt", b"rewritten on A\n")
    os.unlink(a.mnt / "moved.txt")
    vb = b"edited on B while A was away\n"
    write_file(b.mnt / "doc.txt", vb)
    wait_until(lambda: pending_zero(b), DEADLINE, "B pushes its edit")
    proxy.restore()
    snap = converge([a, b], DEADLINE, "after A's rename/edit/delete and B's edit")
    assert sha(vb) in digests(snap), names(snap)
