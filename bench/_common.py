"""Helpers shared by Cairn's benchmark scripts (``bench/*.py``, run as scripts).

Nothing here measures anything by itself. The contracts the scripts rely on:

- ``mixed_data(size, seed)``: deterministic bytes, first half random (incompressible), second
  half text-like (compressible, but no two 1 MiB regions alike, so dedupe does not flatter it).
- ``wait_until(pred, deadline_s, what)``: polls a condition with a deadline; raises
  ``BenchError`` naming ``what`` on timeout (or when ``alive()`` turns false).
- ``stop_process(proc)``: SIGTERM, wait, SIGKILL by pid; never touches other processes.
- ``stop_pid(pid)``: the same for a process that is not our child (a daemon), polling its exit.
- ``lazy_unmount(path)``: ``fusermount3 -u -z`` if ``path`` is a mount point.
- ``drop_caches()``: ``sync`` + ``echo 3 > /proc/sys/vm/drop_caches``; returns False (and the
  caller says so in its output) when not permitted.
- ``table(rows, header)``: a plain-text table, right-aligned numbers.
- ``proc_cpu(stat_path)``: user + system CPU seconds from a ``/proc/PID/stat`` or
  ``/proc/PID/task/TID/stat`` file; raises ``OSError`` if it cannot be read.
"""

from __future__ import annotations

import array
import operator
import os
import random
import re
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence

import blake3

MiB = 1 << 20
GiB = 1 << 30


class BenchError(Exception):
    """A benchmark could not run (setup failed, a mount did not come up, bad option)."""


_LETTERS = "etaoinshrdlucmfwypvbgkjqxz"
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?[bB]?)\s*$")


def parse_size(text: str) -> int:
    """'1G', '256M', '4096', '1.5GiB' → bytes (binary multiples)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise BenchError(f"not a size: {text!r} (examples: 4096, 256M, 1G)")
    mult = {"": 1, "k": 1 << 10, "m": MiB, "g": GiB, "t": 1 << 40}[m.group(2).lower()]
    return int(float(m.group(1)) * mult)


def mixed_data(size: int, seed: int = 1) -> bytes:
    """Half random bytes, half text-like lines; deterministic for a given (size, seed)."""
    rng = random.Random(seed)
    half = size // 2
    # BLAKE3's extendable output: incompressible, deterministic, at GB/s (randbytes overflows).
    random_part = blake3.blake3(b"cairn-bench-%d" % seed).digest(length=half)
    words = ["".join(rng.choices(_LETTERS, k=rng.randint(2, 9))) for _ in range(4000)]
    # 65,536 distinct lines (~4 MB, beyond zstd's window at low levels); the text half is a
    # random sequence of them, so it compresses like prose but its chunks do not repeat.
    pool = [
        (" ".join(rng.choices(words, k=rng.randint(4, 14))) + "\n").encode() for _ in range(1 << 16)
    ]
    need = size - half
    nlines = int(need / (sum(map(len, pool)) / len(pool))) + 1024
    # Line indices straight from an XOF stream as uint16 (no per-line Python work).
    indices = array.array("H", blake3.blake3(b"cairn-bench-lines-%d" % seed).digest(2 * nlines))
    text_part = b"".join(operator.itemgetter(*indices)(pool))[:need]
    if len(text_part) < need:  # a short draw (very unlikely): pad with more of the pool
        text_part = (text_part + b"".join(pool) * (need // (len(b"".join(pool))) + 1))[:need]
    return random_part + text_part


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def wait_until(
    pred: Callable[[], bool],
    deadline_s: float,
    what: str,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Poll ``pred`` (backing off to 0.1 s) until true; BenchError after ``deadline_s``."""
    end = time.monotonic() + deadline_s
    delay = 0.005
    while not pred():
        if alive is not None and not alive():
            raise BenchError(f"process died while waiting for {what}")
        if time.monotonic() > end:
            raise BenchError(f"timed out after {deadline_s:.0f} s waiting for {what}")
        time.sleep(delay)  # poll interval of a condition check
        delay = min(delay * 2, 0.1)


def stop_process(proc: subprocess.Popen, timeout_s: float = 15.0) -> None:
    """Stop one child process by its pid: SIGTERM, then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout_s)
    except ProcessLookupError:
        pass


def stop_pid(pid: int, timeout_s: float = 15.0) -> None:
    """Stop a process that is not our child (e.g. a daemon) by pid: SIGTERM, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)  # polling the process's exit with a deadline


def lazy_unmount(path: str) -> None:
    if os.path.ismount(path):
        subprocess.run(["fusermount3", "-u", "-z", path], capture_output=True, timeout=30)


def unmount(path: str, timeout_s: float = 60.0) -> None:
    """Regular unmount (flushes), falling back to a lazy one; waits until it is gone."""
    if not os.path.ismount(path):
        return
    r = subprocess.run(["fusermount3", "-u", path], capture_output=True, timeout=timeout_s)
    if r.returncode != 0:
        lazy_unmount(path)
    wait_until(lambda: not os.path.ismount(path), timeout_s, f"unmount of {path}")


def drop_caches() -> bool:
    """Write back dirty pages and drop the kernel's page, dentry and inode caches."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


def proc_cpu(stat_path: str) -> float:
    """User + system CPU seconds of the process or thread whose ``stat`` file is given."""
    with open(stat_path) as f:
        fields = f.read().rsplit(")", 1)[1].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fmt(value: float, digits: int = 0) -> str:
    if value != value:  # NaN: not measured
        return "-"
    return f"{value:,.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain-text table; first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for n, row in enumerate([header, *rows]):
        cells = [
            str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i])
            for i, c in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
