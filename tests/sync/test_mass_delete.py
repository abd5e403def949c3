"""Mass-delete guard: a pull that would delete > 1,000 files (or > half of a tree) is held
on the receiving device; ``cairn status`` says so and ``cairn sync --confirm-deletes``
releases it."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.support.drive import wait_until
from tests.sync.tree import converge, write_file

pytestmark = [
    pytest.mark.fuse,
    pytest.mark.slow,
]

DEADLINE = 60


def held(dev) -> bool:  # type: ignore[no-untyped-def]
    return "held" in dev.status().lower()


def confirm(dev) -> None:  # type: ignore[no-untyped-def]
    res = dev.cli("sync", "--confirm-deletes", "--state", str(dev.state))
    assert res.returncode == 0, f"cairn sync --confirm-deletes failed: {res.stderr}"


def test_more_than_1000_deletes_held_then_released(sync_devices) -> None:
    a, b = sync_devices("A"), sync_devices("B")
    (a.mnt / "many").mkdir()
    for i in range(1100):
        write_file(a.mnt / "many" / f"f{i:04d}", b"%d" % i)
    for i in range(1200):  # the tree is large enough that 1,100 deletes are < half of it
        write_file(a.mnt / f"keep{i:04d}", b"k")
    converge([a, b], DEADLINE * 2)
    shutil.rmtree(a.mnt / "many")
    wait_until(lambda: held(b), DEADLINE, "B's status to report held deletes")
    assert len(os.listdir(b.mnt / "many")) == 1100
    confirm(b)
    snap = converge([a, b], DEADLINE, "after --confirm-deletes")
    assert not any(k.startswith("many") for k in snap)


def test_more_than_half_of_a_small_tree_held(sync_devices) -> None:
    a, b = sync_devices("A"), sync_devices("B")
    for i in range(10):
        write_file(a.mnt / f"f{i}", b"%d" % i)
    converge([a, b], DEADLINE)
    for i in range(6):
        os.unlink(a.mnt / f"f{i}")
    wait_until(lambda: held(b), DEADLINE, "B's status to report held deletes")
    assert sorted(os.listdir(b.mnt)) == sorted(f"f{i}" for i in range(10))
    confirm(b)
    snap = converge([a, b], DEADLINE, "after --confirm-deletes")
    assert sorted(snap) == sorted(f"f{i}" for i in range(6, 10))
