"""The fsx-style differential runner: one seeded random sequence of file operations applied
identically to two directories — the drive under test and a reference on tmpfs — with the
results compared after every step.

``FsxRun(drive_dir, ref_dir, seed).run(max_ops, deadline_s)`` raises ``FsxMismatch`` (an
``AssertionError``) at the first difference; its message names the seed, the step, the
operation and the last operations before it, so a failure can be replayed with
``CAIRN_FSX_SEED=<seed>``. The same seed always produces the same sequence of operations (the
random choices never depend on timing or on what the drive returns).

Files live in a fixed set of ``SLOTS`` (a few names at the top and in one subdirectory). Each
existing file is held open ``O_RDWR`` on both sides (an fd pair); operations go through those
fds or through paths, as applications do:

write (random size at a random offset, also past EOF → a hole), read, truncate (shrink or
grow, by fd or by path), rename (also replacing a file, also across directories, while open),
unlink, create, chmod, fsync, close + reopen.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import stat
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

SLOTS = ("a", "b", "c", "d/e", "d/f")
DIRS = ("d",)
MAX_SIZE = 8 << 20  # bound on any file's size, so a full comparison stays cheap
MODES = (0o644, 0o600, 0o640, 0o755, 0o444)
KiB = 1024


class FsxMismatch(AssertionError):
    """The drive and the reference disagreed (or the drive failed where tmpfs did not)."""


def tree(root: Path) -> dict[str, tuple[object, ...]]:
    """``relpath → (kind, mode, size, sha256)`` of everything under ``root``."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            if stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", oct(stat.S_IMODE(st.st_mode)))
            else:
                with open(p, "rb") as f:
                    digest = hashlib.file_digest(f, "sha256").hexdigest()
                out[rel] = ("file", oct(stat.S_IMODE(st.st_mode)), st.st_size, digest)
    return out


def tree_diff(want: dict, got: dict, limit: int = 8) -> str:
    lines = []
    for k in sorted(set(want) | set(got)):
        if want.get(k) != got.get(k):
            lines.append(f"  {k}: reference {want.get(k)} / drive {got.get(k)}")
    more = f"\n  ... and {len(lines) - limit} more" if len(lines) > limit else ""
    return "\n".join(lines[:limit]) + more


def _data(rng: random.Random, n: int) -> bytes:
    """Random bytes, or text-like (compressible) bytes, or a run of one byte value."""
    kind = rng.random()
    if kind < 0.5:
        return rng.randbytes(n)
    if kind < 0.85:
        words = [rng.randbytes(3).hex().encode() for _ in range(64)]
        line = b" ".join(rng.choices(words, k=16)) + b"\n"
        return (line * (n // len(line) + 1))[:n]
    return bytes([rng.randrange(256)]) * n


class _Pair:
    """The two fds (drive, reference) of one open file."""

    def __init__(self, drive_fd: int, ref_fd: int) -> None:
        self.drive = drive_fd
        self.ref = ref_fd

    def close(self) -> None:
        os.close(self.drive)
        os.close(self.ref)


class FsxRun:
    def __init__(self, drive: Path, ref: Path, seed: int, log_path: Path | None = None) -> None:
        self.drive = drive
        self.log_path = log_path
        self.ref = ref
        self.seed = seed
        self.rng = random.Random(seed)
        self.open: dict[str, _Pair] = {}  # slot → fds of the file now named so
        self.exists: set[str] = set()
        self.history: deque[str] = deque(maxlen=12)
        self.step = 0
        self.counts: dict[str, int] = {}

    # --- reporting ----------------------------------------------------------------------------

    def fail(self, what: str) -> FsxMismatch:
        recent = "\n  ".join(self.history)
        full = f"\n every operation: {self.log_path}" if self.log_path else ""
        return FsxMismatch(
            f"fsx seed={self.seed} (replay: CAIRN_FSX_SEED={self.seed}) step {self.step}: "
            f"{what}\n last operations (newest last):\n  {recent}{full}"
        )

    def both(self, what: str, fn: Callable[[Path | int], object], drive_arg, ref_arg) -> object:
        """Run ``fn`` on the reference and on the drive; their outcomes (value or errno) must
        be equal. Returns the reference's value."""
        try:
            want: object = fn(ref_arg)
        except OSError as e:
            want = OSError(e.errno, errno.errorcode.get(e.errno or 0, "?"))
        try:
            got: object = fn(drive_arg)
        except OSError as e:
            got = OSError(e.errno, errno.errorcode.get(e.errno or 0, "?"))
        if isinstance(want, OSError) or isinstance(got, OSError):
            if not (
                isinstance(want, OSError) and isinstance(got, OSError) and want.errno == got.errno
            ):
                raise self.fail(f"{what}: reference gave {want!r}, drive gave {got!r}")
            return None
        if got != want:
            raise self.fail(f"{what}: results differ ({_short(want)} vs drive {_short(got)})")
        return want

    # --- checks -------------------------------------------------------------------------------

    def check_region(self, slot: str, off: int, length: int) -> None:
        pair = self.open.get(slot)
        if pair is None:
            return
        off = max(0, off)
        want = os.pread(pair.ref, length, off)
        got = os.pread(pair.drive, length, off)
        if got != want:
            first = next(
                (i for i, (x, y) in enumerate(zip(want, got, strict=False)) if x != y),
                min(len(want), len(got)),
            )
            raise self.fail(
                f"read {slot} [{off}, +{length}): {len(got)} bytes from the drive, "
                f"{len(want)} from the reference; first difference at offset {off + first}"
            )

    def check_names(self) -> None:
        """Every slot: same existence, type, size and mode on both sides."""
        for slot in SLOTS:

            def look(root: Path, slot: str = slot) -> tuple[int, int]:
                st = os.lstat(root / slot)
                return (stat.S_IFMT(st.st_mode) | stat.S_IMODE(st.st_mode), st.st_size)

            self.both(f"lstat {slot}", look, self.drive, self.ref)
            pair = self.open.get(slot)
            if pair is not None:
                want = os.fstat(pair.ref).st_size
                got = os.fstat(pair.drive).st_size
                if got != want:
                    raise self.fail(f"fstat {slot}: size {got} on the drive, {want} expected")

    def check_all(self) -> None:
        want, got = tree(self.ref), tree(self.drive)
        if got != want:
            raise self.fail("trees differ:\n" + tree_diff(want, got))

    # --- operations ---------------------------------------------------------------------------

    def _size(self, slot: str) -> int:
        return os.lstat(self.ref / slot).st_size

    def _open(self, slot: str, flags: int, mode: int = 0o644) -> None:
        fds: dict[str, int] = {}
        for side, root in (("ref", self.ref), ("drive", self.drive)):
            try:
                fds[side] = os.open(root / slot, flags, mode)
            except OSError as e:
                for fd in fds.values():
                    os.close(fd)
                raise self.fail(f"open {slot} on the {side} side: {e}") from None
        self.open[slot] = _Pair(fds["drive"], fds["ref"])

    def _close(self, slot: str) -> None:
        pair = self.open.pop(slot, None)
        if pair is not None:
            pair.close()

    def op_create(self, slot: str) -> str:
        mode = self.rng.choice(MODES[:4])
        self._open(slot, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
        self.exists.add(slot)
        # chmod after create: the mode must not depend on the process umask
        self.both(f"chmod {slot}", lambda r: os.chmod(r / slot, mode), self.drive, self.ref)
        return f"create {slot} mode {oct(mode)}"

    def op_write(self, slot: str) -> str:
        size = self._size(slot)
        r = self.rng.random()
        if r < 0.6:
            length = self.rng.randint(1, 64 * KiB)
        elif r < 0.9:
            length = self.rng.randint(64 * KiB, 1024 * KiB)
        else:
            length = self.rng.randint(1024 * KiB, 3 * 1024 * KiB)
        r = self.rng.random()
        if r < 0.15:
            off = size  # append
        elif r < 0.3:
            off = size + self.rng.randint(1, 2 * 1024 * KiB)  # past EOF: leaves a hole
        else:
            off = self.rng.randint(0, max(size, 1))
        off = min(off, MAX_SIZE - length)
        data = _data(self.rng, length)
        pair = self.open[slot]
        self.both(f"pwrite {slot}", lambda fd: os.pwrite(fd, data, off), pair.drive, pair.ref)
        self.check_region(slot, off - 4 * KiB, length + 8 * KiB)
        return f"write {slot} off={off} len={length}"

    def op_read(self, slot: str) -> str:
        size = self._size(slot)
        off = self.rng.randint(0, size + 4 * KiB)
        length = self.rng.randint(1, 1024 * KiB)
        self.check_region(slot, off, length)
        return f"read {slot} off={off} len={length}"

    def op_truncate(self, slot: str) -> str:
        size = self._size(slot)
        r = self.rng.random()
        if r < 0.45:
            new = self.rng.randint(0, size)  # shrink
        elif r < 0.9:
            new = min(MAX_SIZE, size + self.rng.randint(1, 2 * 1024 * KiB))  # grow: zeros
        else:
            new = 0
        if self.rng.random() < 0.7:
            pair = self.open[slot]
            self.both(f"ftruncate {slot}", lambda fd: os.ftruncate(fd, new), pair.drive, pair.ref)
            how = "ftruncate"
        else:
            self.both(
                f"truncate {slot}", lambda r: os.truncate(r / slot, new), self.drive, self.ref
            )
            how = "truncate(path)"
        self.check_region(slot, new - 8 * KiB, 12 * KiB)
        return f"{how} {slot} {size} -> {new}"

    def op_rename(self, slot: str) -> str:
        dst = self.rng.choice([s for s in SLOTS if s != slot])
        replaced = dst in self.exists
        # The replaced file keeps its fds half of the time (an orphan, like unlink while open).
        orphan = self.open.pop(dst, None)
        if orphan is not None and self.rng.random() < 0.5:
            orphan.close()
            orphan = None
        try:
            self.both(
                f"rename {slot} -> {dst}",
                lambda r: os.rename(r / slot, r / dst),
                self.drive,
                self.ref,
            )
        except FsxMismatch:
            if orphan is not None:
                orphan.close()
            raise
        self.exists.discard(slot)
        self.exists.add(dst)
        if slot in self.open:
            self.open[dst] = self.open.pop(slot)  # the open fds follow the file
        self.check_region(dst, 0, 64 * KiB)
        done = f"rename {slot} -> {dst}" + (" (replacing)" if replaced else "")
        if orphan is not None:
            done += ", replaced file still open: " + self._orphan_io(orphan, dst)
        return done

    def _orphan_io(self, pair: _Pair, slot: str) -> str:
        """Write, read back and maybe fsync through the fds of a file that lost its name, then
        close them: the data must read back, and the old name must not come back."""
        try:
            off = self.rng.randint(0, os.fstat(pair.ref).st_size + 64 * KiB)
            data = _data(self.rng, self.rng.randint(1, 256 * KiB))
            self.both(
                f"pwrite to unlinked {slot}",
                lambda fd: os.pwrite(fd, data, off),
                pair.drive,
                pair.ref,
            )
            want = os.pread(pair.ref, len(data) + 8 * KiB, max(0, off - 4 * KiB))
            got = os.pread(pair.drive, len(data) + 8 * KiB, max(0, off - 4 * KiB))
            if got != want:
                raise self.fail(f"read of unlinked open {slot} differs near offset {off}")
            if self.rng.random() < 0.5:
                self.both(f"fsync unlinked {slot}", os.fsync, pair.drive, pair.ref)
        finally:
            pair.close()
        return f"write off={off} len={len(data)} to the orphan, close"

    def op_unlink(self, slot: str) -> str:
        if self.rng.random() < 0.6:
            self._close(slot)
            self.both(f"unlink {slot}", lambda r: os.unlink(r / slot), self.drive, self.ref)
            self.exists.discard(slot)
            return f"unlink {slot}"
        # Unlink while open: the fds still reach the orphaned file.
        pair = self.open.pop(slot)
        try:
            self.both(f"unlink {slot} (open)", lambda r: os.unlink(r / slot), self.drive, self.ref)
        except FsxMismatch:
            pair.close()
            raise
        self.exists.discard(slot)
        return f"unlink {slot} while open, " + self._orphan_io(pair, slot)

    def op_chmod(self, slot: str) -> str:
        mode = self.rng.choice(MODES)
        self.both(f"chmod {slot}", lambda r: os.chmod(r / slot, mode), self.drive, self.ref)
        return f"chmod {slot} {oct(mode)}"

    def op_fsync(self, slot: str) -> str:
        pair = self.open[slot]
        self.both(f"fsync {slot}", os.fsync, pair.drive, pair.ref)
        return f"fsync {slot}"

    def op_reopen(self, slot: str) -> str:
        self._close(slot)
        # as root the 0o444 mode does not stop O_RDWR, on both sides alike
        self._open(slot, os.O_RDWR)
        self.check_region(slot, 0, 64 * KiB)
        return f"close+reopen {slot}"

    # weights of the operations on an existing file
    FILE_OPS = (
        ("op_write", 30),
        ("op_read", 12),
        ("op_truncate", 12),
        ("op_rename", 8),
        ("op_unlink", 5),
        ("op_chmod", 4),
        ("op_fsync", 8),
        ("op_reopen", 8),
    )

    def choose(self) -> tuple[str, str]:
        """The next (operation method name, slot); depends only on the seed and the model."""
        free = [s for s in SLOTS if s not in self.exists]
        if free and (not self.exists or self.rng.random() < 0.12):
            return "op_create", self.rng.choice(free)
        slot = self.rng.choice(sorted(self.exists))
        names = [n for n, _ in self.FILE_OPS]
        weights = [w for _, w in self.FILE_OPS]
        return self.rng.choices(names, weights)[0], slot

    # --- driver -------------------------------------------------------------------------------

    def setup(self) -> None:
        for d in DIRS:
            self.both(f"mkdir {d}", lambda r, d=d: os.mkdir(r / d, 0o755), self.drive, self.ref)

    def run(
        self,
        max_ops: int,
        deadline_s: float,
        full_check_every: int = 50,
        on_full_check: Callable[[], None] | None = None,
    ) -> int:
        """Run up to ``max_ops`` operations or until ``deadline_s`` seconds have passed; leaves
        every file closed. Returns the number of operations done. ``on_full_check`` runs after
        each periodic whole-tree comparison (e.g. to read the tree on another device)."""
        end = time.monotonic() + deadline_s
        log = open(self.log_path, "w", buffering=1) if self.log_path else None  # noqa: SIM115
        try:
            for self.step in range(1, max_ops + 1):
                if time.monotonic() > end:
                    self.step -= 1
                    break
                name, slot = self.choose()
                self.history.append(f"#{self.step} {name[3:]} {slot} (failed)")
                try:
                    done = getattr(self, name)(slot)
                except OSError as e:  # an unexpected error on either side, outside both()
                    raise self.fail(f"{name[3:]} {slot}: unexpected {e!r}") from e
                self.history[-1] = f"#{self.step} {done}"
                if log is not None:
                    log.write(f"#{self.step} {done}\n")
                kind = done.split()[0]
                self.counts[kind] = self.counts.get(kind, 0) + 1
                self.check_names()
                if self.step % full_check_every == 0:
                    self.check_all()
                    if on_full_check is not None:
                        on_full_check()
        finally:
            for slot in list(self.open):
                self._close(slot)
            if log is not None:
                log.close()
        self.check_all()
        return self.step


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."
