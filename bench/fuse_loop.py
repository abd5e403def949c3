"""Request-loop cost of a pyfuse3 mount: pyfuse3's own trio loop against Cairn's busy poll
(``cairn.fs.fuse_wait``), on a file system that does nothing.

Each round mounts a tiny pyfuse3 file system (``getattr`` answers a constant, attribute
timeout 0 so every ``stat`` reaches it) in a child process, once per loop, interleaved
(the machine is noisy), and runs ``os.stat`` on its root ``--stats`` times from another
process. It prints round trips per second and the mount process's CPU per request, so the
cost of waiting for and answering a request is seen apart from any handler's work.

Usage: ``python bench/fuse_loop.py [--rounds 3] [--stats 20000] [--workdir /var/tmp]``.
Exit status 0 after printing the table, 1 on a failed mount, 2 on bad options.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import BenchError, lazy_unmount, median, proc_cpu, table, wait_until  # noqa: E402

LOOPS = {"pyfuse3": "0", "cairn busy poll": ""}  # CAIRN_FUSE_SPIN_US per loop ("" = default)

# The child: mount, say "ready", serve until SIGTERM.
CHILD = r"""
import signal, stat, sys
import pyfuse3, trio
from cairn.fs import fuse_wait

class Ops(pyfuse3.Operations):
    async def getattr(self, inode, ctx=None):
        e = pyfuse3.EntryAttributes()
        e.st_ino, e.st_mode, e.st_nlink = inode, stat.S_IFDIR | 0o755, 2
        e.attr_timeout = e.entry_timeout = 0
        return e

async def main():
    fuse_wait.install(pyfuse3, fuse_wait.spin_from_env())
    with trio.open_signal_receiver(signal.SIGTERM) as sigs:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pyfuse3.main)
            print("ready", flush=True)
            async for _ in sigs:
                pyfuse3.terminate()
                break

pyfuse3.init(Ops(), sys.argv[1], {"fsname=cairn-bench-loop"})
try:
    trio.run(main)
finally:
    pyfuse3.close(unmount=True)
"""

CLIENT = r"""
import os, sys, time
path, n = sys.argv[1], int(sys.argv[2])
t = time.perf_counter()
for _ in range(n):
    os.stat(path)
print(n / (time.perf_counter() - t))
"""


def one_run(mnt: str, spin: str, stats: int) -> tuple[float, float]:
    """(round trips/s, mount CPU µs per request) for one mount with CAIRN_FUSE_SPIN_US=spin."""
    env = {**os.environ, "CAIRN_FUSE_SPIN_US": spin}
    child = subprocess.Popen([sys.executable, "-c", CHILD, mnt], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise BenchError(f"the test mount did not start: {child.stderr.read()[-500:]}")
        wait_until(
            lambda: os.path.ismount(mnt), 20, "the test mount", alive=lambda: child.poll() is None
        )
        # CPU of the warm-up and idle time is subtracted: measure before and after
        cpu0 = proc_cpu(f"/proc/{child.pid}/stat")
        out = subprocess.run([sys.executable, "-c", CLIENT, mnt, str(stats)], capture_output=True,
                             text=True, timeout=600, check=True).stdout  # fmt: skip
        cpu1 = proc_cpu(f"/proc/{child.pid}/stat")
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)
        lazy_unmount(mnt)
    return float(out), (cpu1 - cpu0) / stats * 1e6


def _cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--stats", type=int, default=20000)
    p.add_argument("--workdir", default="/var/tmp")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.stats < 1000:
        p.error("--rounds >= 1, --stats >= 1000")
    base = tempfile.mkdtemp(prefix="cairn-bench-loop-", dir=args.workdir)
    mnt = os.path.join(base, "mnt")
    os.mkdir(mnt)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in LOOPS}
    print(f"# python bench/fuse_loop.py --rounds {args.rounds} --stats {args.stats}")
    try:
        for r in range(1, args.rounds + 1):
            for name, spin in LOOPS.items():
                rate, cpu = one_run(mnt, spin, args.stats)
                results[name].append((rate, cpu))
                print(f"# round {r} {name}: {rate:,.0f} stat/s, {cpu:.1f} us CPU per request",
                      flush=True)  # fmt: skip
    except (BenchError, subprocess.SubprocessError, OSError) as e:
        print(f"bench/fuse_loop.py: {e}", file=sys.stderr)
        return 1
    finally:
        lazy_unmount(mnt)
        os.rmdir(mnt)
        os.rmdir(base)
    rows = []
    base_rate = median([x[0] for x in results["pyfuse3"]])
    for name in LOOPS:
        rate = median([x[0] for x in results[name]])
        cpu = median([x[1] for x in results[name]])
        rows.append([name, f"{rate:,.0f}", f"{cpu:.1f}", f"{rate / base_rate:.2f}x"])
    print(
        f"\nMedians of {args.rounds} interleaved rounds, {args.stats} stats each, do-nothing getattr."
    )
    print(table(["request loop", "stat/s", "us CPU/request", "vs pyfuse3"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
