"""Multi-device sync benchmark (issue 5): one cairn-server, two drives (A and B) of one user.

Measures, with issue 5's goals beside each figure:

- propagation latency: a small file rewritten on A (open, write, close), the clock runs from
  close() returning on A until B reads the new content (polling B's mount every 2 ms);
  p50/p99 over ``--changes`` changes (goal p50 <= 300 ms, p99 <= 1 s).
- bulk small files: ``--files`` x 4 KiB files created on A; time from the first create until
  B lists all of them (goal <= 10 s, must be <= 20 s), and how long B trails the last create
  on A (what sync adds to the creation time); B's contents are checked afterwards. The
  server's requests during this phase are counted by route (``/metrics``).
- big-file edits on a ``--big-mib`` MiB file (half random, half text-like): bytes the server
  received (``cairn_chunk_bytes_in_total`` on ``/metrics``) and the close() time on A for a
  1-byte overwrite in the middle and for a 1-byte insert at offset 0 (the file rewritten
  with one byte in front) (goal <= 2 chunks, <= 8 MiB; close <= 100 ms).
- baseline: rsync (Debian's) of the same two edits to an rsync daemon on 127.0.0.1 (delta
  transfer, ``--ignore-times`` so the same-size same-second overwrite is not skipped), its
  "Total bytes sent" and wall time.

Everything runs under one temp dir in /var/tmp; every mount is unmounted and every process it
started is stopped by pid, also on error or Ctrl-C. ``--deadline`` bounds each wait.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    BenchError,
    MiB,
    lazy_unmount,
    mixed_data,
    stop_pid,
    stop_process,
    table,
    wait_until,
)

PASSWORD = "bench-sync-password"
BIN = Path(sys.executable).parent


def _script(name: str) -> str:
    p = BIN / name
    found = str(p) if p.exists() else shutil.which(name)
    if not found:
        raise BenchError(f"console script {name!r} not found")
    return found


def _run(cmd: list[str], what: str, stdin: str | None = None, timeout: float = 120) -> str:
    r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise BenchError(f"{what} failed ({r.returncode}): {r.stderr.strip()[-300:]}")
    return r.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "server"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        cli = _script("cairn-server")
        _run([cli, "init", str(self.data)], "cairn-server init")
        _run(
            [cli, "user", "add", "bench", "--password-stdin", "--data", str(self.data)],
            "cairn-server user add",
            stdin=PASSWORD + "\n",
        )
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        with open(self.base / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [cli, "run", "--data", str(self.data), "--listen", f"127.0.0.1:{port}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        proc = self.proc
        wait_until(self._healthy, 60, "cairn-server /healthz", alive=lambda: proc.poll() is None)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def bytes_in(self) -> int:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("cairn_chunk_bytes_in_total "):
                    return int(float(line.split()[1]))
        raise BenchError("no cairn_chunk_bytes_in_total on /metrics")

    def requests(self) -> dict[str, int]:
        """Requests answered so far, by route name (``cairn_http_requests_total``)."""
        out: dict[str, int] = {}
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as r:
            for line in r.read().decode().splitlines():
                m = re.match(r"cairn_http_requests_total\{(.*)\} (\S+)$", line)
                if m:
                    route = re.search(r'route="([^"]*)"', m.group(1))
                    key = route.group(1) if route else "?"
                    out[key] = out.get(key, 0) + int(float(m.group(2)))
        return out

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


class Drive:
    def __init__(self, base: Path, name: str) -> None:
        self.name = name
        self.state = base / f"{name}.state"
        self.mnt = base / f"{name}.mnt"
        self.mnt.mkdir()
        self.pid: int | None = None
        self.cairn = _script("cairn")

    def start(self, url: str) -> None:
        _run(
            [self.cairn, "login", url, "--user", "bench", "--password-stdin",
             "--device", self.name, "--state", str(self.state)],
            f"cairn login ({self.name})", stdin=PASSWORD + "\n",
        )  # fmt: skip
        _run([self.cairn, "mount", str(self.mnt), "--state", str(self.state)], "cairn mount")
        self.pid = int(json.loads((self.state / "mount.json").read_text())["pid"])
        if not os.path.ismount(self.mnt):
            raise BenchError(f"cairn mount ({self.name}) returned but nothing is mounted")

    def alive(self) -> bool:
        try:
            os.kill(self.pid or 0, 0)
            return bool(self.pid)
        except ProcessLookupError:
            return False

    def drained(self) -> bool:
        r = subprocess.run(
            [self.cairn, "status", "--state", str(self.state)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        return r.returncode == 0 and "\npending:  0 changes" in r.stdout

    def settle(self, deadline: float) -> None:
        wait_until(self.drained, deadline, f"{self.name}'s outbox to drain", alive=self.alive)

    def stop(self) -> None:
        if os.path.ismount(self.mnt):
            subprocess.run(
                [self.cairn, "unmount", str(self.mnt), "--state", str(self.state),
                 "--timeout", "30"],
                capture_output=True, timeout=120,
            )  # fmt: skip
        if self.pid is not None:
            stop_pid(self.pid)
            self.pid = None
        lazy_unmount(str(self.mnt))


def _reads(path: Path, want: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read() == want
    except OSError:
        return False


def bench_latency(a: Drive, b: Drive, changes: int, deadline: float) -> list[float]:
    (a.mnt / "lat").mkdir()
    samples = []
    for i in range(changes):
        name = f"lat/f{i % 10}"  # rewrites as well as creates
        body = f"change {i}\n".encode() * (1 + i % 7)
        with open(a.mnt / name, "wb") as f:
            f.write(body)
        t0 = time.monotonic()  # close() has returned: the change is sealed on A
        end = t0 + deadline
        while not _reads(b.mnt / name, body):
            if time.monotonic() > end:
                raise BenchError(f"change {i} not visible on B after {deadline:.0f} s")
            time.sleep(0.002)  # poll interval of the visibility check
        samples.append(time.monotonic() - t0)
    return samples


def bench_bulk(
    srv: Server, a: Drive, b: Drive, files: int, deadline: float
) -> tuple[float, float, dict[str, int]]:
    """(seconds to create on A, seconds until B lists them all, server requests by route
    meanwhile), contents checked after."""
    before = srv.requests()
    (a.mnt / "bulk").mkdir()
    body = os.urandom(4096)
    t0 = time.monotonic()
    for i in range(files):
        with open(a.mnt / "bulk" / f"s{i:05d}", "wb") as f:
            f.write(body[: 4096 - 5] + b"%05d" % i)
    created = time.monotonic() - t0

    def all_listed() -> bool:
        try:
            return len(os.listdir(b.mnt / "bulk")) >= files
        except OSError:
            return False

    wait_until(all_listed, deadline, f"B to list {files} files", alive=b.alive)
    visible = time.monotonic() - t0
    after = srv.requests()
    requests = {k: n - before.get(k, 0) for k, n in after.items() if n > before.get(k, 0)}
    for i in range(0, files, max(1, files // 200)):  # content check, after the clock
        got = (b.mnt / "bulk" / f"s{i:05d}").read_bytes()
        if got != body[: 4096 - 5] + b"%05d" % i:
            raise BenchError(f"B read wrong content for bulk/s{i:05d}")
    return created, visible, requests


def _timed_close_write(path: Path, offset: int | None, data: bytes) -> float:
    """Overwrite ``data`` at ``offset`` (or rewrite the whole file if None); close() time."""
    if offset is None:
        f = open(path, "wb")  # noqa: SIM115 - the close is what is timed
        f.write(data)
    else:
        f = open(path, "r+b")  # noqa: SIM115
        f.seek(offset)
        f.write(data)
    t0 = time.monotonic()
    f.close()
    return time.monotonic() - t0


def bench_big(
    srv: Server, a: Drive, b: Drive, size: int, deadline: float
) -> list[tuple[str, int, float]]:
    data = mixed_data(size, seed=5)
    path = a.mnt / "big.bin"
    with open(path, "wb") as f:
        f.write(data)
    a.settle(deadline)
    out = []
    mid = size // 2 + 12345
    edits = [
        ("1-byte overwrite", mid, b"\xff"),
        ("1-byte insert at 0", None, b"\x00" + data[:mid] + b"\xff" + data[mid + 1 :]),
    ]
    for label, offset, payload in edits:
        before = srv.bytes_in()
        secs = _timed_close_write(path, offset, payload)
        a.settle(deadline)
        out.append((label, srv.bytes_in() - before, secs))
    want = edits[1][2]
    wait_until(lambda: os.path.getsize(b.mnt / "big.bin") == len(want), deadline, "B big.bin")
    wait_until(lambda: _reads(b.mnt / "big.bin", want), deadline, "B's big.bin to match")
    return out


class Rsyncd:
    def __init__(self, base: Path) -> None:
        self.root = base / "rsyncd"
        self.root.mkdir()
        self.port = _free_port()
        conf = base / "rsyncd.conf"
        conf.write_text(
            f"use chroot = no\npid file = {base / 'rsyncd.pid'}\nuid = 0\ngid = 0\n"
            f"[m]\npath = {self.root}\nread only = no\n"
        )
        rsync = shutil.which("rsync")
        if not rsync:
            raise BenchError("rsync not installed (apt-get install rsync)")
        self.rsync = rsync
        self.proc = subprocess.Popen(
            [rsync, "--daemon", "--no-detach", f"--config={conf}", f"--port={self.port}",
             "--address=127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(self._up, 20, "rsync daemon", alive=lambda: self.proc.poll() is None)

    def _up(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def push(self, src: Path) -> tuple[int, float]:
        t0 = time.monotonic()
        out = _run(
            [self.rsync, "--stats", "--ignore-times", "--no-whole-file", str(src),
             f"rsync://127.0.0.1:{self.port}/m/{src.name}"],
            "rsync", timeout=600,
        )  # fmt: skip
        secs = time.monotonic() - t0
        m = re.search(r"Total bytes sent: ([\d,]+)", out)
        if not m:
            raise BenchError(f"no 'Total bytes sent' in rsync output: {out[-300:]}")
        return int(m.group(1).replace(",", "")), secs

    def stop(self) -> None:
        stop_process(self.proc)


def bench_rsync(base: Path, size: int) -> list[tuple[str, int, float]]:
    d = Rsyncd(base)
    try:
        src = base / "rsrc" / "big.bin"
        src.parent.mkdir()
        data = mixed_data(size, seed=5)
        src.write_bytes(data)
        d.push(src)  # initial copy
        mid = size // 2 + 12345
        out = []
        with open(src, "r+b") as f:
            f.seek(mid)
            f.write(b"\xff")
        out.append(("1-byte overwrite", *d.push(src)))
        src.write_bytes(b"\x00" + data[:mid] + b"\xff" + data[mid + 1 :])
        out.append(("1-byte insert at 0", *d.push(src)))
        return out
    finally:
        d.stop()


def fmt_ms(s: float) -> str:
    return f"{s * 1000:,.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--changes", type=int, default=200, help="latency samples (default 200)")
    ap.add_argument("--files", type=int, default=10_000, help="bulk 4 KiB files (default 10000)")
    ap.add_argument("--big-mib", type=int, default=256, help="big file size in MiB (default 256)")
    ap.add_argument("--deadline", type=float, default=120, help="bound on each wait, seconds")
    ap.add_argument("--tmp", default="/var/tmp", help="where the temp dir goes")
    args = ap.parse_args()
    if args.changes < 1 or args.files < 1 or args.big_mib < 1 or args.deadline <= 0:
        print("bench/sync.py: --changes, --files, --big-mib, --deadline must be > 0",
              file=sys.stderr)  # fmt: skip
        return 2
    base = Path(tempfile.mkdtemp(prefix="cairn-bench-sync-", dir=args.tmp))
    srv = Server(base)
    drives = [Drive(base, "A"), Drive(base, "B")]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally on SIGTERM
    try:
        srv.start()
        for d in drives:
            d.start(srv.url)
        a, b = drives
        lat = bench_latency(a, b, args.changes, args.deadline)
        a.settle(args.deadline)
        created, visible, bulk_requests = bench_bulk(srv, a, b, args.files, args.deadline)
        big = bench_big(srv, a, b, args.big_mib * MiB, args.deadline)
        rs = bench_rsync(base, args.big_mib * MiB)
    except BenchError as e:
        print(f"bench/sync.py: {e}", file=sys.stderr)
        return 1
    finally:
        for d in drives:
            d.stop()
        srv.stop()
        shutil.rmtree(base, ignore_errors=True)

    p50 = statistics.median(lat)
    p99 = sorted(lat)[max(0, int(len(lat) * 0.99) - 1)] if len(lat) > 1 else lat[0]
    print(f"bench/sync.py --changes {args.changes} --files {args.files} --big-mib {args.big_mib}")
    rows = [
        ["propagation p50", "ms", fmt_ms(p50), "<= 300", "ok" if p50 <= 0.3 else "MISS"],
        ["propagation p99", "ms", fmt_ms(p99), "<= 1,000", "ok" if p99 <= 1.0 else "MISS"],
        ["propagation max", "ms", fmt_ms(max(lat)), "", ""],
        [f"{args.files} x 4 KiB created on A", "s", f"{created:.1f}", "", ""],
        [f"{args.files} x 4 KiB visible on B", "s", f"{visible:.1f}", "<= 10 (must <= 20)",
         "ok" if visible <= 10 else "MISS" if visible > 20 else "slow"],
        ["  B trails the last create on A by", "s", f"{visible - created:.1f}", "", ""],
    ]  # fmt: skip
    for (label, sent, secs), (_, rsent, rsecs) in zip(big, rs, strict=True):
        rows.append([f"{label}: uploaded", "KiB", f"{sent / 1024:,.1f}", "<= 8,192",
                     "ok" if sent <= 8 * MiB else "MISS"])  # fmt: skip
        rows.append([f"{label}: close()", "ms", fmt_ms(secs), "<= 100",
                     "ok" if secs <= 0.1 else "MISS"])  # fmt: skip
        rows.append([f"  rsync {label}: sent", "KiB", f"{rsent / 1024:,.1f}", "baseline", ""])
        rows.append([f"  rsync {label}: wall", "ms", fmt_ms(rsecs), "baseline", ""])
    print(table(["measure", "unit", "cairn", "goal", "verdict"], rows))
    busiest = sorted(bulk_requests.items(), key=lambda kv: -kv[1])
    print("server requests during the bulk phase: "
          + ", ".join(f"{route} {n}" for route, n in busiest))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
