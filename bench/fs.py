"""Drive benchmark (issue 4): Cairn's mount beside raw disk, gocryptfs and rclone, in one run.

    python bench/fs.py [--only raw,gocryptfs,rclone,cairn] [--size 1G] [--files 2000]
                       [--listdir-entries 5000] [--rounds 3] [--workdir /var/tmp]

Every system is set up once (backing store on the same file system, under ``--workdir``), then
rounds run interleaved — raw, gocryptfs, rclone, cairn, raw, ... — and the table reports the
median of each workload over the rounds, because this 2-core machine is shared and noisy.

Workloads (same input for every system: ``_common.mixed_data``, half random, half text-like):
- seq write: SIZE bytes in 1 MiB ``write`` calls, then ``fsync`` + ``close`` (``conv=fsync``).
- warm read: the file read once, then read again and timed (page cache of the mount kept).
- cold read: remount (a FUSE client drops its in-memory state; on-disk caches such as Cairn's
  chunk cache or rclone's VFS cache stay), ``drop_caches``, then read. Raw disk only drops.
  Every read is compared with the input after the clock stops.
- create: FILES files, each open(O_CREAT|O_EXCL) + 4 KiB write + close.
- stat: ``os.stat`` over those files, 3 passes.
- listdir: ``os.listdir`` of a directory of LISTDIR_ENTRIES files (made at set-up), median of 3.
- delete: unlink of the FILES files.

Needs root (mounts, ``drop_caches``), ``fusermount3``, ``gocryptfs`` and ``rclone`` for those
columns, and the ``cairn`` / ``cairn-server`` console scripts for Cairn's. Everything it
starts is stopped by pid and every mount is unmounted, also on Ctrl-C or SIGTERM.
Exit status: 0 after printing the table, 1 on a failed setup or workload, 2 on bad options.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from _common import (
    BenchError,
    MiB,
    drop_caches,
    fmt,
    lazy_unmount,
    median,
    mixed_data,
    parse_size,
    proc_cpu,
    stop_pid,
    stop_process,
    table,
    wait_until,
)

MOUNT_DEADLINE_S = 60.0
UPLOAD_DEADLINE_S = 300.0
PASSWORD = "bench-password-not-secret"


def _tail(path: str, lines: int = 3) -> str:
    try:
        with open(path, errors="replace") as f:
            return " | ".join(f.read().strip().splitlines()[-lines:])
    except OSError:
        return ""


def _run(cmd: list[str], what: str, stdin: str | None = None, timeout: float = 120.0) -> None:
    """Run a set-up command; BenchError with its last stderr line if it fails."""
    try:
        r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise BenchError(f"{what}: {cmd[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what}: {' '.join(cmd)} timed out after {timeout:.0f} s") from None
    if r.returncode != 0:
        last = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:] or ["(no output)"]
        raise BenchError(f"{what} failed (exit {r.returncode}): {last[0]}")


class System:
    """One column of the table: a directory ``root`` to run the workloads in.

    ``start`` sets it up, ``remount`` drops the client's in-memory state (cold reads),
    ``stop`` unmounts and stops everything ``start`` started, and must be safe to call after a
    partial ``start``.
    """

    name = "?"

    def __init__(self, base: str) -> None:
        self.base = base
        os.makedirs(base)
        self.root = ""
        self.listdir_dir = ""
        self.notes: set[str] = set()

    def start(self) -> None:
        raise NotImplementedError

    def remount(self) -> None:
        pass

    def settle(self) -> None:
        """Wait until background work (uploads) is done, so it does not spill into the next
        measurement of this or another system."""

    def stop(self) -> None:
        pass

    def make_listdir(self, n: int) -> None:
        self.listdir_dir = os.path.join(self.root, "listdir")
        os.mkdir(self.listdir_dir)
        # O_WRONLY: rclone never uploads a file created with O_RDONLY|O_CREAT (seen here).
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        for i in range(n):
            os.close(os.open(os.path.join(self.listdir_dir, f"entry-{i:06d}"), flags, 0o644))


class Raw(System):
    """A plain directory on the local file system (no remount: drop_caches alone)."""

    name = "raw"

    def start(self) -> None:
        self.root = os.path.join(self.base, "root")
        os.mkdir(self.root)


class FuseProcess(System):
    """A FUSE file system served by one foreground process that this script owns."""

    def __init__(self, base: str) -> None:
        super().__init__(base)
        self.mnt = os.path.join(base, "mnt")
        os.mkdir(self.mnt)
        self.log = os.path.join(base, f"{self.name}.log")
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def mount(self) -> None:
        with open(self.log, "ab") as log:
            try:
                self.proc = subprocess.Popen(
                    self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log
                )
            except FileNotFoundError:
                raise BenchError(f"{self.name}: {self.command()[0]} is not installed") from None
        proc = self.proc
        try:
            wait_until(
                lambda: os.path.ismount(self.mnt),
                MOUNT_DEADLINE_S,
                f"{self.name} to mount",
                alive=lambda: proc.poll() is None,
            )
        except BenchError as e:
            raise BenchError(f"{e}: {_tail(self.log)}") from None
        self.root = self.mnt

    def unmount(self, grace_s: float = MOUNT_DEADLINE_S) -> None:
        """Unmount, give the process ``grace_s`` to exit on its own, then stop it by pid."""
        if os.path.ismount(self.mnt):
            r = subprocess.run(["fusermount3", "-u", self.mnt], capture_output=True, timeout=60)
            if r.returncode != 0:
                lazy_unmount(self.mnt)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                stop_process(self.proc)
            self.proc = None

    def remount(self) -> None:
        self.unmount()
        self.mount()

    def stop(self) -> None:
        # Cleanup (also after Ctrl-C): rclone lingers after an unmount while it still has
        # uploads in flight, so do not wait the full deadline for it.
        try:
            self.unmount(grace_s=5.0)
        finally:
            if self.proc is not None:
                stop_process(self.proc)
            lazy_unmount(self.mnt)


class Gocryptfs(FuseProcess):
    name = "gocryptfs"

    def start(self) -> None:
        self.cipher = os.path.join(self.base, "cipher")
        os.mkdir(self.cipher)
        self.passfile = os.path.join(self.base, "passfile")
        fd = os.open(self.passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, PASSWORD.encode() + b"\n")
        os.close(fd)
        _run(
            ["gocryptfs", "-init", "-q", "-passfile", self.passfile, self.cipher], "gocryptfs -init"
        )
        self.mount()

    def command(self) -> list[str]:
        return ["gocryptfs", "-fg", "-q", "-passfile", self.passfile, self.cipher, self.mnt]


def _tree_sizes(top: str) -> dict[str, int]:
    """{relative path: size} of every regular file under ``top``."""
    out = {}
    for dirpath, _, files in os.walk(top):
        for n in files:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, top)] = os.path.getsize(p)
    return out


class Rclone(FuseProcess):
    """rclone mount of a local remote, VFS cache mode full (its fsync is not durable)."""

    name = "rclone"

    def start(self) -> None:
        self.remote = os.path.join(self.base, "remote")
        self.cache = os.path.join(self.base, "cache")
        os.mkdir(self.remote)
        self.notes.add("fsync returns before data reaches the remote (not durable)")
        self.mount()

    def command(self) -> list[str]:
        return [
            "rclone", "mount", self.remote, self.mnt, "--config", "",
            "--vfs-cache-mode", "full", "--cache-dir", self.cache,
        ]  # fmt: skip

    def settle(self) -> None:
        # Unmounting with uploads pending loses them (seen: the listdir files vanished), so
        # wait until the remote holds every file of the mount at its full size.
        sizes = _tree_sizes(self.mnt)
        wait_until(
            lambda: _tree_sizes(self.remote) == sizes,
            UPLOAD_DEADLINE_S,
            "rclone to upload to its remote",
        )

    def remount(self) -> None:
        self.settle()
        super().remount()


def _console_script(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise BenchError(f"cairn: console script {name!r} not found (use --only to skip cairn)")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cairn(System):
    """A real cairn-server (temp data dir) and a drive mounted through the CLI, as a user would:
    ``cairn mount`` daemonizes and returns once the mount is ready; its pid is read from the
    state dir's ``mount.json`` so cleanup can stop it by pid."""

    name = "cairn"

    def __init__(self, base: str) -> None:
        super().__init__(base)
        self.mnt = os.path.join(base, "mnt")
        os.mkdir(self.mnt)
        self.server: subprocess.Popen | None = None
        self.mount_pid: int | None = None

    def start(self) -> None:
        self.cairn = _console_script("cairn")
        server_cli = _console_script("cairn-server")
        self.data = os.path.join(self.base, "server")
        self.state = os.path.join(self.base, "state")
        _run([server_cli, "init", self.data], "cairn-server init")
        _run(
            [server_cli, "user", "add", "bench", "--password-stdin", "--data", self.data],
            "cairn-server user add",
            stdin=PASSWORD + "\n",
        )
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        server_log = os.path.join(self.base, "server.log")
        with open(server_log, "ab") as log:
            self.server = subprocess.Popen(
                [server_cli, "run", "--data", self.data, "--listen", f"127.0.0.1:{port}"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        server = self.server

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                    return r.status == 200
            except (urllib.error.URLError, OSError):
                return False

        try:
            wait_until(healthy, MOUNT_DEADLINE_S, "cairn-server /healthz",
                       alive=lambda: server.poll() is None)  # fmt: skip
        except BenchError as e:
            raise BenchError(f"{e}: {_tail(server_log)}") from None
        _run(
            [self.cairn, "login", url, "--user", "bench", "--password-stdin",
             "--device", "bench", "--state", self.state],
            "cairn login",
            stdin=PASSWORD + "\n",
        )  # fmt: skip
        self.mount()

    def mount(self) -> None:
        _run(
            [self.cairn, "mount", self.mnt, "--state", self.state],
            "cairn mount",
            timeout=MOUNT_DEADLINE_S,
        )
        if not os.path.ismount(self.mnt):
            raise BenchError("cairn mount returned but nothing is mounted")
        try:
            with open(os.path.join(self.state, "mount.json")) as f:
                self.mount_pid = int(json.load(f)["pid"])
        except (OSError, ValueError, KeyError) as e:
            raise BenchError(f"cairn mount: no pid in mount.json ({e})") from None
        self.root = self.mnt

    def unmount(self, drain_s: float = UPLOAD_DEADLINE_S) -> None:
        # `cairn unmount` seals open files, waits (up to drain_s) for the outbox to drain, and
        # waits for the mount process to exit.
        if os.path.ismount(self.mnt):
            _run(
                [self.cairn, "unmount", self.mnt, "--state", self.state,
                 "--timeout", str(int(drain_s))],
                "cairn unmount",
                timeout=drain_s + 60,
            )  # fmt: skip
        self.mount_pid = None

    def remount(self) -> None:
        self.unmount()
        self.mount()

    def settle(self) -> None:
        def drained() -> bool:
            r = subprocess.run(
                [self.cairn, "status", "--state", self.state],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            return r.returncode == 0 and "\npending:  0 changes" in r.stdout

        wait_until(drained, UPLOAD_DEADLINE_S, "cairn's outbox to drain (cairn status)")

    def thread_cpu(self) -> float:
        """CPU seconds (user + system) of the mount's main thread — the trio thread that
        serves every FUSE request and runs the sync agent; nan if unknown."""
        if self.mount_pid is None:
            return float("nan")
        try:
            return proc_cpu(f"/proc/{self.mount_pid}/task/{self.mount_pid}/stat")
        except OSError:
            return float("nan")

    def stop(self) -> None:
        try:
            self.unmount(drain_s=30.0)  # the server goes away next: no point waiting longer
        finally:
            if self.mount_pid is not None:
                stop_pid(self.mount_pid)
                self.mount_pid = None
            lazy_unmount(self.mnt)
            if self.server is not None:
                stop_process(self.server)
                self.server = None


SYSTEMS: dict[str, type[System]] = {
    "raw": Raw,
    "gocryptfs": Gocryptfs,
    "rclone": Rclone,
    "cairn": Cairn,
}


SMALL = 4096
STAT_PASSES = 3
LISTDIR_REPEATS = 3

# (key, label, unit, higher_is_better)
WORKLOADS = [
    ("write", "seq write + fsync", "MB/s", True),
    ("warm", "seq read warm", "MB/s", True),
    ("cold", "seq read cold", "MB/s", True),
    ("create", "create+4K write+close", "files/s", True),
    ("stat", "stat", "stats/s", True),
    ("listdir", "listdir N entries", "ms", False),
    ("delete", "delete", "files/s", True),
    # Cairn only: CPU of the mount's trio thread per file created / per stat of the passes
    # (from /proc; far less sensitive to the load of a shared box than the wall clock)
    ("create_cpu", "create: trio thread CPU", "us/file", False),
    ("stat_cpu", "stat: trio thread CPU", "us/stat", False),
]

# Issue 4's goals for Cairn: (kind, value) with kind "x_gocryptfs" (ratio) or "min"/"max".
GOALS = {
    "write": ("x_gocryptfs", 0.8),
    "warm": ("min", 1000.0),
    "cold": ("x_gocryptfs", 1.0),
    "create": ("min", 2000.0),
    "stat": ("min", 50000.0),
    "listdir": ("max", 20.0),
}


def _write_file(path: str, data: memoryview) -> float:
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for off in range(0, len(data), MiB):
            os.write(fd, data[off : off + MiB])
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def _read_file(path: str, into: memoryview) -> tuple[float, int]:
    """Read the whole file in 1 MiB requests into ``into``; return (seconds, bytes read)."""
    t0 = time.perf_counter()
    got = 0
    with open(path, "rb", buffering=0) as f:
        for _ in range(len(into) // MiB + 2):  # bounded: one request per MiB, plus EOF
            n = f.readinto(into[got : got + MiB])
            if not n:
                break
            got += n
    return time.perf_counter() - t0, got


def _check_read(system: System, what: str, got: int, buf: bytearray, data: bytes) -> None:
    if got != len(data) or buf != data:
        raise BenchError(f"{system.name}: {what} returned wrong bytes ({got} of {len(data)})")


def _seq_round(system: System, data: bytes, buf: bytearray, out: dict[str, float]) -> None:
    """The sequential workloads: write + fsync, warm read, cold read (after a remount)."""
    mb = len(data) / 1e6
    big = os.path.join(system.root, "big.bin")
    out["write"] = mb / _write_file(big, memoryview(data))
    view = memoryview(buf)
    _read_file(big, view)
    secs, got = _read_file(big, view)
    _check_read(system, "warm read", got, buf, data)
    out["warm"] = mb / secs

    system.remount()
    if not drop_caches():
        system.notes.add("cold read: drop_caches not permitted, page cache kept")
    secs, got = _read_file(big, view)
    _check_read(system, "cold read", got, buf, data)
    out["cold"] = mb / secs
    os.unlink(big)


def run_round(system: System, data: bytes, buf: bytearray, args: argparse.Namespace) -> dict:
    """One pass of every workload on one system; returns {workload key: figure}."""
    out: dict[str, float] = {}
    cpu = getattr(system, "thread_cpu", lambda: float("nan"))
    if not args.skip_seq:
        _seq_round(system, data, buf, out)

    small_dir = os.path.join(system.root, "small")
    os.mkdir(small_dir)
    paths = [os.path.join(small_dir, f"f{i:06d}") for i in range(args.files)]
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    c0, t0 = cpu(), time.perf_counter()
    for i, p in enumerate(paths):
        fd = os.open(p, flags, 0o644)
        # distinct 4 KiB per file (from the random half), so no system gets a dedupe bonus
        os.write(fd, data[i * SMALL : (i + 1) * SMALL])
        os.close(fd)
    out["create"] = len(paths) / (time.perf_counter() - t0)
    c1 = cpu()
    out["create_cpu"] = (c1 - c0) / len(paths) * 1e6

    t0 = time.perf_counter()
    for _ in range(STAT_PASSES):
        for p in paths:
            os.stat(p)
    out["stat"] = STAT_PASSES * len(paths) / (time.perf_counter() - t0)
    out["stat_cpu"] = (cpu() - c1) / (STAT_PASSES * len(paths)) * 1e6

    times = []
    for _ in range(LISTDIR_REPEATS):
        t0 = time.perf_counter()
        names = os.listdir(system.listdir_dir)
        times.append(time.perf_counter() - t0)
        if len(names) != args.listdir_entries:
            raise BenchError(f"{system.name}: listdir saw {len(names)} entries")
    out["listdir"] = median(times) * 1000

    t0 = time.perf_counter()
    for p in paths:
        os.unlink(p)
    out["delete"] = len(paths) / (time.perf_counter() - t0)
    os.rmdir(small_dir)
    return out


def _goal_cell(key: str, results: dict[str, dict[str, float]]) -> tuple[str, str]:
    """(goal text, verdict) for Cairn's figure of one workload."""
    goal = GOALS.get(key)
    if goal is None:
        return "", ""
    kind, value = goal
    unit = next(w[2] for w in WORKLOADS if w[0] == key)
    cairn = results.get("cairn", {}).get(key, float("nan"))
    if kind == "x_gocryptfs":
        text = f">= {value:g}x gocryptfs"
        ref = results.get("gocryptfs", {}).get(key, float("nan"))
        ok = cairn >= value * ref
    elif kind == "min":
        text = f">= {fmt(value)} {unit}"
        ok = cairn >= value
    else:
        text = f"<= {fmt(value)} {unit}"
        ok = cairn <= value
    if cairn != cairn or ("x_gocryptfs" == kind and "gocryptfs" not in results):
        return text, ""
    return text, "met" if ok else "MISSED"


def report(results: dict[str, dict[str, float]], order: list[str], args) -> str:
    header = ["workload", "unit", *order]
    if "cairn" in results and "gocryptfs" in results:
        header.append("cairn/gocryptfs")
    header += ["goal (cairn)", "verdict"]
    rows = []
    for key, label, unit, _ in WORKLOADS:
        if key == "listdir":
            label = f"listdir {args.listdir_entries} entries"
        digits = 1 if key == "listdir" else 0
        figures = [results[s][key] for s in order]
        if all(f != f for f in figures):
            continue  # not measured in this run (--skip-seq)
        row = [label, unit] + [fmt(f, digits) for f in figures]
        if "cairn/gocryptfs" in header:
            ref = results["gocryptfs"][key]
            row.append(fmt(results["cairn"][key] / ref, 2) + "x" if ref == ref and ref else "-")
        row += list(_goal_cell(key, results))
        rows.append(row)
    return table(header, rows)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=",".join(SYSTEMS), help="comma-separated systems")
    p.add_argument("--size", default="1G", help="seq write/read size (default 1G)")
    p.add_argument("--files", type=int, default=2000, help="small files (default 2000)")
    p.add_argument("--listdir-entries", type=int, default=5000, help="(default 5000)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--workdir", default="/var/tmp", help="where backing stores live")
    p.add_argument("--skip-seq", action="store_true",
                   help="metadata workloads only (no seq write / warm / cold read)")  # fmt: skip
    args = p.parse_args(argv)
    args.systems = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in args.systems if s not in SYSTEMS]
    if unknown or not args.systems:
        p.error(f"--only: unknown system(s) {unknown}; choose from {', '.join(SYSTEMS)}")
    try:
        args.size_bytes = parse_size(args.size)
    except BenchError as e:
        p.error(str(e))
    if args.size_bytes < MiB or args.files < 1 or args.rounds < 1 or args.listdir_entries < 1:
        p.error("--size must be >= 1M; --files, --rounds, --listdir-entries >= 1")
    if args.files * SMALL > args.size_bytes // 2:
        p.error("--files * 4 KiB must fit in half of --size (small files take the random half)")
    if not os.path.isdir(args.workdir):
        p.error(f"--workdir {args.workdir!r} is not a directory")
    return args


def _raise_on_sigterm(signum, frame):
    raise KeyboardInterrupt  # so the finally blocks below unmount and stop everything


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    print(f"# {' '.join(['python', 'bench/fs.py', *(sys.argv[1:] if argv is None else argv)])}")
    print(f"# {platform.node()} {platform.release()}, {os.cpu_count()} cpus, {time.ctime()}")
    print(f"# preparing {args.size} of input (half random, half text-like) ...", flush=True)
    data = mixed_data(args.size_bytes)
    buf = bytearray(len(data))
    top = tempfile.mkdtemp(prefix="cairn-bench-fs-", dir=args.workdir)
    systems: list[System] = []
    per_round: dict[str, list[dict[str, float]]] = {s: [] for s in args.systems}
    try:
        for name in args.systems:
            system = SYSTEMS[name](os.path.join(top, name))
            systems.append(system)
            print(f"# setting up {name} ...", flush=True)
            system.start()
            system.make_listdir(args.listdir_entries)
            system.settle()
        for r in range(args.rounds):
            for system in systems:
                figures = run_round(system, data, buf, args)
                per_round[system.name].append(figures)
                system.settle()
                shown = ", ".join(f"{k} {fmt(v, 1)}" for k, v in figures.items())
                print(f"# round {r + 1} {system.name}: {shown}", flush=True)
    except BenchError as e:
        print(f"bench/fs.py: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench/fs.py: interrupted, cleaning up", file=sys.stderr)
        return 1
    finally:
        for system in reversed(systems):
            try:
                system.stop()
            except BenchError as e:
                print(f"bench/fs.py: cleanup of {system.name}: {e}", file=sys.stderr)
        shutil.rmtree(top, ignore_errors=True)
    results = {
        s: {k: median([fig[k] for fig in per_round[s] if k in fig]) for k, *_ in WORKLOADS}
        for s in args.systems
    }
    print()
    print(
        f"Medians of {args.rounds} interleaved rounds; seq {args.size} (MB = 10^6 bytes), "
        f"{args.files} small files, listdir of {args.listdir_entries}."
    )
    print(report(results, args.systems, args))
    for system in systems:
        for note in sorted(system.notes):
            print(f"note ({system.name}): {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
