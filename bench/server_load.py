#!/usr/bin/env python3
"""Server load benchmark (issue 3): a realistic metadata mix against a real ``cairn-server``.

What it does, for each database (``--db sqlite``, ``postgres`` or ``both``):

1. ``cairn-server init`` into a temporary directory (for PostgreSQL: a throwaway cluster is
   initialized and started as the unprivileged ``postgres`` user on 127.0.0.1 and the server
   points at it through ``CAIRN_DATABASE_URL``), ``user add --password-stdin`` for each user,
   ``cairn-server run --listen 127.0.0.1:PORT``.
2. ``--procs`` load processes (this script in worker mode) log in ``--devices`` devices
   between them (spread over ``--users`` users), each device seeds its own directory with
   small files (chunks uploaded first), and reports ready.
3. On "go", every device runs the mix for ``--seconds``: list children, stat a node, poll the
   changes feed, query missing chunks, and commit small batches (1-4 creates/updates of small
   files). This is issue 3's *metadata* mix: a committed file's blocklist picks from the pool
   of chunks the device uploaded for its user during set-up (``--pool`` per device), so no
   chunk body is sent during the measured run. Chunk uploads (``PUT chunks/{id}``) are
   chunk-store traffic; ``--uploads W`` adds them as a separate workload (weight W in the
   mix, each a fresh 256 B-4 KiB chunk, reported as ``upload`` and outside the metadata
   total).
   ``--rate 0`` (default) is a closed loop: each device sends its next request as soon as the
   previous one answered (maximum throughput). ``--rate R`` is an open loop at R requests per
   second in total; latency is measured from each request's *scheduled* time, so a slow server
   cannot hide queueing (no coordinated omission).
4. Reports QPS and p50/p99 latency per operation and overall, the CPU used by the server and
   by the load processes (on a 2-core box a Python load generator competes with the server),
   and with ``--profile`` a py-spy profile of the server during the run (top functions).

Run:  .venv/bin/python bench/server_load.py --db both --seconds 20
Exit status 0 on a complete run, 1 with one line on stderr when the setup fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BenchError, fmt, stop_process, table, wait_until  # noqa: E402

VENV_BIN = Path(sys.executable).parent
PASSWORD = "load-bench-password"
OPS = ("list", "stat", "changes", "missing", "commit", "upload")
METADATA_OPS = ("list", "stat", "changes", "missing", "commit")
# Relative weights of the requests a device chooses. Reads dominate a sync service: devices
# poll the feed, stat and list far more often than they commit. Each commit carries 1-4
# creates/updates whose blocklists reference chunks already uploaded (the pool).
MIX = {"list": 22, "stat": 30, "changes": 25, "missing": 15, "commit": 8}


# ----------------------------------------------------------------------------------------
# worker: one load process driving many devices, each on its own keep-alive connection
# ----------------------------------------------------------------------------------------


class Device:
    """One simulated logged-in device: its token, its directory, the files it made."""

    def __init__(self, name: str, user: str, rng: random.Random) -> None:
        self.name, self.user, self.rng = name, user, rng
        self.auth = b""  # the Authorization header line
        self.conn: Connection  # set by the worker
        self.ns = 0
        self.root = ""
        self.dir = ""
        self.dedupe_key = b""
        self.files: dict[str, int] = {}  # node id -> rev
        self.chunks: list[str] = []  # ids this device uploaded
        self.pool: list[tuple[str, int]] = []  # (id, plain size) uploaded for its user
        self.cursor = ""
        self.seq = 0

    def new_chunk(self) -> tuple[str, bytes, int]:
        from cairn.core import frame, ids

        data = os.urandom(self.rng.randint(256, 4096))
        cid = ids.chunk_id(self.dedupe_key, data)
        return cid.hex(), frame.encode(cid, data, level=None), len(data)


class HttpError(Exception):
    """The server's answer could not be read as HTTP/1.1 (a bench or server bug)."""


class Connection:
    """One keep-alive HTTP/1.1 connection on asyncio streams.

    The load generator is not the system under test, and aiohttp's client cost ~0.4 ms of
    CPU per request, which on a 2-core box is CPU taken from the server. This sends a
    request and reads the whole answer (status line, headers, ``Content-Length`` bytes of
    body) with a few stream calls; that is all the Cairn server's answers need (its JSON
    bodies always carry a Content-Length). A connection that fails is dropped and the next
    request opens a new one.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, headers: bytes, body: bytes
    ) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        try:
            self.writer.write(
                b"%s %s HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n%s\r\n%s"
                % (method.encode(), path.encode(), len(body), headers, body)
            )
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:")
            if at < 0:
                raise HttpError(f"{method} {path}: answer without Content-Length")
            length = int(lower[at + 17 : lower.index(b"\r\n", at + 2)])
            data = await self.reader.readexactly(length) if length else b""
            if b"\r\nconnection: close" in lower:
                self.close()
            return status, data
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Worker:
    def __init__(self, spec: dict[str, Any]) -> None:
        parts = spec["url"].split("//", 1)[1].rsplit(":", 1)
        self.host, self.port = parts[0], int(parts[1])
        self.prefix = "/api/v1"
        self.spec = spec
        self.lat: dict[str, list[float]] = defaultdict(list)
        self.errors: Counter[str] = Counter()

    async def call(
        self,
        dev: Device,
        op: str,
        method: str,
        path: str,
        t0: float | None = None,
        json_body: Any = None,
        data: bytes | None = None,
        decode: bool = False,
    ) -> Any:
        """One request on the device's connection; latency counts from ``t0`` (the
        scheduled time) when given. Returns the decoded JSON body when ``decode`` (else
        True), or None (and counts an error) for a 4xx/5xx answer. The body is always read
        whole."""
        t0 = t0 or time.perf_counter()
        if json_body is not None:
            data = json.dumps(json_body).encode()
            headers = dev.auth + b"Content-Type: application/json\r\n"
        elif data is not None:
            headers = dev.auth + b"Content-Type: application/octet-stream\r\n"
        else:
            headers = dev.auth
        async with asyncio.timeout(60):
            status, body = await dev.conn.request(method, self.prefix + path, headers, data or b"")
        self.lat[op].append(time.perf_counter() - t0)
        if status >= 400:
            self.errors[f"{op} {status}"] += 1
            return None
        return json.loads(body) if decode and body else True

    async def login(self, dev: Device) -> None:
        body = json.dumps({"user": dev.user, "password": PASSWORD, "device": dev.name}).encode()
        status, raw = await dev.conn.request(
            "POST", self.prefix + "/login", b"Content-Type: application/json\r\n", body
        )
        if status != 200:
            raise BenchError(f"login of {dev.user}/{dev.name}: HTTP {status}")
        info = json.loads(raw)
        dev.auth = f"Authorization: Bearer {info['token']}\r\n".encode()
        dev.ns, dev.root = info["home"]["ns"], info["home"]["root"]
        dev.dedupe_key = bytes.fromhex(info["dedupe_key"])

    async def upload(self, dev: Device, t0: float | None = None) -> tuple[str, int]:
        cid, framed, size = dev.new_chunk()
        await self.call(dev, "upload", "PUT", f"/chunks/{cid}", data=framed, t0=t0)
        dev.chunks.append(cid)
        dev.pool.append((cid, size))
        return cid, size

    async def seed(self, dev: Device, nfiles: int, pool: int) -> None:
        for _ in range(pool):  # the chunk pool that measured commits reference
            await self.upload(dev)
        dev.dir = os.urandom(16).hex()
        ops: list[dict[str, Any]] = [
            {
                "op_id": f"{dev.name}-seed-dir",
                "op": "mkdir",
                "node": dev.dir,
                "parent": dev.root,
                "name": dev.name,
                "mode": 0o755,
                "mtime_ns": time.time_ns(),
            }
        ]
        for i in range(nfiles):
            cid, size = dev.pool[i % len(dev.pool)] if dev.pool else await self.upload(dev)
            node = os.urandom(16).hex()
            ops.append(
                {
                    "op_id": f"{dev.name}-seed-{i}",
                    "op": "create",
                    "node": node,
                    "parent": dev.dir,
                    "name": f"f{i:04d}.txt",
                    "mode": 0o644,
                    "mtime_ns": time.time_ns(),
                    "blocklist": [[cid, size]],
                }
            )
            dev.files[node] = 1
        await self.commit(dev, ops)
        self.lat.clear()  # seeding is not measured
        self.errors.clear()

    async def commit(self, dev: Device, ops: list[dict[str, Any]], t0: float | None = None) -> None:
        res = await self.call(
            dev,
            "commit",
            "POST",
            f"/ns/{dev.ns}/commit",
            json_body={"ops": ops},
            t0=t0,
            decode=True,
        )
        if res is None:
            return
        for r in res["results"]:
            if r["status"] == "applied":
                node = r["node"]
                if node["type"] == "file":
                    dev.files[node["id"]] = node["rev"]
            else:
                self.errors[f"commit-op {r['status']}"] += 1

    async def step(self, dev: Device, op: str, t0: float) -> None:
        rng = dev.rng
        if op == "list":
            parent = dev.dir if rng.random() < 0.7 else dev.root
            await self.call(
                dev, op, "GET", f"/ns/{dev.ns}/nodes/{parent}/children?limit=100", t0=t0
            )
        elif op == "stat":
            node = rng.choice(list(dev.files)) if dev.files else dev.root
            await self.call(dev, op, "GET", f"/ns/{dev.ns}/nodes/{node}", t0=t0)
        elif op == "changes":
            q = f"?cursor={dev.cursor}&limit=500" if dev.cursor else "?limit=500"
            res = await self.call(dev, op, "GET", f"/changes{q}", t0=t0, decode=True)
            if res is not None:
                dev.cursor = res["cursor"]
        elif op == "missing":
            known = rng.sample(dev.chunks, min(5, len(dev.chunks)))
            fresh = [os.urandom(32).hex() for _ in range(5)]
            await self.call(
                dev, op, "POST", "/chunks/missing", json_body={"ids": known + fresh}, t0=t0
            )
        elif op == "upload":  # chunk-store workload (--uploads), not part of the metadata mix
            await self.upload(dev, t0=t0)
        else:  # commit: 1-4 creates/updates of small files whose chunks are in the pool
            ops = []
            touched: set[str] = set()
            for _ in range(rng.randint(1, 4)):
                cid, size = rng.choice(dev.pool)
                dev.seq += 1
                op_id = f"{dev.name}-{dev.seq}"
                # an update of a node already in this batch would carry a stale base_rev
                candidates = [n for n in dev.files if n not in touched]
                if candidates and rng.random() < 0.5:
                    node = rng.choice(candidates)
                    touched.add(node)
                    ops.append(
                        {
                            "op_id": op_id,
                            "op": "update",
                            "node": node,
                            "base_rev": dev.files[node],
                            "blocklist": [[cid, size]],
                            "mtime_ns": time.time_ns(),
                        }
                    )
                else:
                    node = os.urandom(16).hex()
                    ops.append(
                        {
                            "op_id": op_id,
                            "op": "create",
                            "node": node,
                            "parent": dev.dir,
                            "name": f"n{dev.seq:06d}",
                            "mode": 0o644,
                            "mtime_ns": time.time_ns(),
                            "blocklist": [[cid, size]],
                        }
                    )
            await self.commit(dev, ops, t0=t0)

    async def run_device(self, dev: Device, end: float, interval: float) -> None:
        mix = self.spec["mix"]
        ops, weights = list(mix), list(mix.values())
        rng = dev.rng
        # open loop: scheduled times at a fixed interval, random phase per device
        nxt = time.perf_counter() + (rng.random() * interval if interval else 0.0)
        for _ in range(10_000_000):  # bounded; the deadline ends it long before
            now = time.perf_counter()
            if now >= end:
                return
            if interval:
                if nxt > now:
                    await asyncio.sleep(nxt - now)  # pacing of the open loop, not a sync
                    if nxt >= end:
                        return
                t0 = nxt
                nxt += interval
            else:
                t0 = now
            op = rng.choices(ops, weights)[0]
            try:
                await self.step(dev, op, t0)
            except (HttpError, asyncio.IncompleteReadError, ValueError, OSError) as e:
                self.errors[f"{op} {type(e).__name__}"] += 1

    async def main(self) -> dict[str, Any]:
        spec = self.spec
        devs = [
            Device(name, user, random.Random(f"{spec['seed']}-{name}"))
            for name, user in spec["devices"]
        ]
        for d in devs:  # one keep-alive connection per device, as a real client holds
            d.conn = Connection(self.host, self.port)
        sem = asyncio.Semaphore(8)  # logins are Argon2id-bound on the server: a few at once

        async def prepare(dev: Device) -> None:
            async with sem:
                await self.login(dev)
                await self.seed(dev, spec["seed_files"], spec["pool"])

        try:
            await asyncio.gather(*(prepare(d) for d in devs))
            # initial full listing, not measured: devices start from an up-to-date cursor
            for d in devs:
                for _ in range(1000):
                    res = await self.call(
                        d, "changes", "GET", f"/changes?cursor={d.cursor}&limit=1000", decode=True
                    )
                    if res is None or not res["has_more"]:
                        if res is not None:
                            d.cursor = res["cursor"]
                        break
                    d.cursor = res["cursor"]
            self.lat.clear()
            self.errors.clear()
            print("ready", flush=True)
            line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            if line.strip() != "go":
                raise BenchError("worker: no go signal")
            interval = len(devs) / spec["rate"] if spec["rate"] else 0.0
            cpu0, t0 = time.process_time(), time.perf_counter()
            end = t0 + spec["seconds"]
            await asyncio.gather(*(self.run_device(d, end, interval) for d in devs))
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        finally:
            for d in devs:
                d.conn.close()
        return {"lat": self.lat, "errors": dict(self.errors), "wall": wall, "cpu": cpu}


def worker_main(spec_path: str, out_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    try:
        result = asyncio.run(Worker(spec).main())
    except BenchError as e:
        print(f"server_load worker: {e}", file=sys.stderr)
        return 1
    Path(out_path).write_text(json.dumps(result))
    return 0


# ----------------------------------------------------------------------------------------
# orchestration: server, database, load processes, report
# ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(
    cmd: list[str], env: dict[str, str], stdin: str | None = None, user: str | None = None
) -> None:
    r = subprocess.run(
        cmd, input=stdin, env=env, capture_output=True, text=True, timeout=120, user=user
    )
    if r.returncode != 0:
        last = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise BenchError(f"{' '.join(cmd[:3])} failed: {last[0]}")


class Postgres:
    """A throwaway PostgreSQL cluster in a temp dir, run as the unprivileged postgres user."""

    def __init__(self, base: Path) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        if not bins:
            raise BenchError("PostgreSQL binaries not found under /usr/lib/postgresql")
        self.bin = bins[-1]
        self.dir = base / "pg"
        self.port = free_port()
        self.started = False

    def start(self, env: dict[str, str]) -> str:
        user = "postgres" if os.geteuid() == 0 else None
        self.dir.mkdir(mode=0o700)
        if user:
            shutil.chown(self.dir, user, user)
            shutil.chown(self.dir.parent, user, user)
        run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.dir / "data"),
                "-U",
                "cairn",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
            env,
            user=user,
        )
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} "
            "-c fsync=on -c synchronous_commit=on -c max_connections=200 "
            "-c shared_buffers=128MB"
        )
        run(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.dir / "data"),
                "-l",
                str(self.dir / "log"),
                "-o",
                opts,
                "-w",
                "start",
            ],
            env,
            user=user,
        )
        self.started = True
        run(
            [
                str(self.bin / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "cairn",
                "cairn",
            ],
            env,
            user=user,
        )
        return f"postgresql+asyncpg://cairn@127.0.0.1:{self.port}/cairn"

    def cpu_seconds(self) -> float:
        """User + system CPU of the postmaster and its live backends."""
        import psutil

        try:
            pid = int((self.dir / "data" / "postmaster.pid").read_text().split()[0])
            procs = [psutil.Process(pid)]
            procs += procs[0].children(recursive=True)
        except (OSError, ValueError, IndexError, psutil.Error):
            return 0.0
        total = 0.0
        for p in procs:
            try:
                total += sum(p.cpu_times()[:4])  # user, system, children user/system
            except psutil.Error:
                continue  # a backend that just exited
        return total

    def stop(self, env: dict[str, str]) -> None:
        if self.started:
            user = "postgres" if os.geteuid() == 0 else None
            run(
                [
                    str(self.bin / "pg_ctl"),
                    "-D",
                    str(self.dir / "data"),
                    "-m",
                    "fast",
                    "-w",
                    "stop",
                ],
                env,
                user=user,
            )
            self.started = False


def percentile(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    return sorted_vals[min(len(sorted_vals) - 1, int(q * len(sorted_vals)))]


def summarize(results: list[dict[str, Any]], seconds: float) -> tuple[str, dict[str, Any]]:
    lat: dict[str, list[float]] = defaultdict(list)
    errors: Counter[str] = Counter()
    for r in results:
        for op, vals in r["lat"].items():
            lat[op].extend(vals)
        errors.update(r["errors"])
    wall = max(r["wall"] for r in results)
    rows, figures = [], {}
    everything: list[float] = []
    for op in OPS:
        vals = sorted(lat.get(op, []))
        if op in METADATA_OPS:
            everything.extend(vals)
        if not vals:
            continue
        qps = len(vals) / wall
        p50, p99 = percentile(vals, 0.50) * 1000, percentile(vals, 0.99) * 1000
        rows.append([op, str(len(vals)), fmt(qps), fmt(p50, 1), fmt(p99, 1)])
        figures[op] = {"qps": qps, "p50_ms": p50, "p99_ms": p99}
    everything.sort()
    total_qps = len(everything) / wall
    p50, p99 = percentile(everything, 0.5) * 1000, percentile(everything, 0.99) * 1000
    rows.append(["ALL metadata", str(len(everything)), fmt(total_qps), fmt(p50, 1), fmt(p99, 1)])
    figures["all"] = {"qps": total_qps, "p50_ms": p50, "p99_ms": p99}
    text = table(["operation", "requests", "QPS", "p50 ms", "p99 ms"], rows)
    if errors:
        text += "\nerrors: " + ", ".join(f"{k}: {v}" for k, v in sorted(errors.items()))
    figures["errors"] = dict(errors)
    return text, figures


def blob_store_line(port: int) -> str:
    """Mean blob store put latency and put count, from the server's own /metrics."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
            chunks = []
            for _ in range(10_000):  # bounded read of one response
                part = sock.recv(65536)
                if not part:
                    break
                chunks.append(part)
    except OSError:
        return ""
    sums: dict[str, float] = {}
    for line in b"".join(chunks).decode(errors="replace").splitlines():
        for kind in ("sum", "count"):
            head = f"cairn_blobstore_operation_seconds_{kind}{{"
            if line.startswith(head) and 'op="put"' in line:
                sums[kind] = sums.get(kind, 0.0) + float(line.rsplit(" ", 1)[1])
    if not sums.get("count"):
        return ""
    mean = 1000 * sums["sum"] / sums["count"]
    return f"blob store (server /metrics, whole run incl. seeding): {sums['count']:.0f} puts, mean {mean:.1f} ms"


def summarize_profile(raw_path: Path, top: int = 18) -> str:
    """Top functions by own (leaf) samples and by inclusive samples, from py-spy's raw
    (collapsed stacks) output."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    if not total:
        return "(no samples)"
    lines = [f"py-spy: {total} samples of the server process (all threads)", "own time:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines.append("inclusive time:")
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(top)]
    return "\n".join(lines)


def bench_one(db: str, args: argparse.Namespace, base: Path) -> dict[str, Any]:
    import psutil

    env = dict(os.environ)
    env.pop("CAIRN_DATA", None)
    env.pop("CAIRN_LISTEN", None)
    env.pop("CAIRN_DATABASE_URL", None)
    pg = Postgres(base) if db == "postgres" else None
    server = None
    workers: list[subprocess.Popen[str]] = []
    spy = None
    try:
        if pg is not None:
            env["CAIRN_DATABASE_URL"] = pg.start(env)
        data = base / "data"
        cli = str(VENV_BIN / "cairn-server")
        run([cli, "init", str(data)], env)
        if args.workers > 1:
            toml = data / "cairn-server.toml"
            text = toml.read_text()
            if "\nworkers = 1\n" not in text:
                raise BenchError("cairn-server.toml has no 'workers = 1' line to override")
            toml.write_text(text.replace("\nworkers = 1\n", f"\nworkers = {args.workers}\n"))
        if args.cpu_threads:
            # sizes the server's CPU pool (frame checks, encryption, Argon2)
            toml = data / "cairn-server.toml"
            text = toml.read_text()
            if "\ncpu_threads = " not in text:
                raise BenchError("cairn-server.toml has no cpu_threads line to override")
            toml.write_text(
                re.sub(r"(?m)^cpu_threads = \d+", f"cpu_threads = {args.cpu_threads}", text)
            )
        users = [f"user{i:03d}" for i in range(args.users)]
        for u in users:
            run(
                [cli, "--data", str(data), "user", "add", u, "--password-stdin"],
                env,
                stdin=PASSWORD + "\n",
            )
        port = free_port()
        log = open(base / "server.log", "w")  # noqa: SIM115  closed in finally
        run_args = ["--data", str(data), "run", "--listen", f"127.0.0.1:{port}"]
        if args.switch_interval:
            # Experiment: the same server entry point with a shorter GIL switch interval.
            boot = (
                f"import sys; sys.setswitchinterval({args.switch_interval!r}); "
                "from cairn.server.cli import main; sys.exit(main(sys.argv[1:]))"
            )
            server_cmd = [str(VENV_BIN / "python"), "-c", boot, *run_args]
        else:
            server_cmd = [cli, *run_args]
        server = subprocess.Popen(
            server_cmd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                    return b" 200 " in s.recv(200)
            except OSError:
                return False

        wait_until(healthy, 60, "the server's /healthz", alive=lambda: server.poll() is None)

        devices = [(f"dev{i:03d}", users[i % len(users)]) for i in range(args.devices)]
        for p in range(args.procs):
            spec = {
                "url": url,
                "devices": devices[p :: args.procs],
                "seconds": args.seconds,
                "rate": args.rate / args.procs,
                "seed_files": args.seed_files,
                "pool": args.pool,
                "seed": f"{args.seed}-{p}",
                "mix": args.mix,
            }
            spec_path = base / f"worker{p}.json"
            spec_path.write_text(json.dumps(spec))
            workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "_worker",
                        str(spec_path),
                        str(base / f"out{p}.json"),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env,
                )
            )
        for w in workers:
            assert w.stdout is not None
            line = w.stdout.readline()  # blocks until the worker has logged in and seeded
            if line.strip() != "ready":
                raise BenchError("a load process failed during login/seeding (see its stderr)")
        proc = psutil.Process(server.pid)

        def server_cpu_seconds() -> float:
            """User + system CPU of the server and its workers (alive for the whole run)."""
            total = 0.0
            for p in [proc, *proc.children(recursive=True)]:
                try:
                    total += sum(p.cpu_times()[:2])
                except psutil.Error:
                    continue
            return total

        if args.profile:
            raw = base / "profile.txt"
            spy = subprocess.Popen(
                [
                    str(VENV_BIN / "py-spy"),
                    "record",
                    "--pid",
                    str(server.pid),
                    "--rate",
                    "200",
                    "--duration",
                    str(int(args.seconds)),
                    "--format",
                    "raw",
                    # only the thread holding the GIL: where the CPU of a GIL-bound server
                    # goes (threads waiting on queues and locks are left out)
                    "--gil",
                    "--nonblocking",
                    *(["--subprocesses"] if args.workers > 1 else []),
                    "-o",
                    str(raw),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        cpu0 = server_cpu_seconds()
        pg_cpu0 = pg.cpu_seconds() if pg is not None else 0.0
        machine0 = psutil.cpu_times()
        t0 = time.monotonic()
        for w in workers:
            assert w.stdin is not None
            w.stdin.write("go\n")
            w.stdin.flush()
        for w in workers:
            w.wait(timeout=args.seconds + 120)
            if w.returncode != 0:
                raise BenchError(f"load process exited with status {w.returncode}")
        wall = time.monotonic() - t0
        server_cpu = server_cpu_seconds() - cpu0
        pg_cpu = pg.cpu_seconds() - pg_cpu0 if pg is not None else 0.0
        machine1 = psutil.cpu_times()
        busy = (sum(machine1) - machine1.idle - machine1.iowait) - (
            sum(machine0) - machine0.idle - machine0.iowait
        )
        blob_line = blob_store_line(port)
        results = [json.loads((base / f"out{p}.json").read_text()) for p in range(args.procs)]
        text, figures = summarize(results, args.seconds)
        load_cpu = sum(r["cpu"] for r in results)
        others = busy - server_cpu - load_cpu - pg_cpu

        def pct(x: float) -> str:
            return f"{100 * x / wall:.0f}%"

        cpu_line = (
            f"CPU over {wall:.1f} s (100% = one core; {os.cpu_count()} cores): server "
            f"{pct(server_cpu)}, load processes {pct(load_cpu)}"
            + (f", PostgreSQL {pct(pg_cpu)}" if pg is not None else "")
            + f", everything else on the machine {pct(others)}; load average "
            f"{os.getloadavg()[0]:.1f}"
        )
        nreq = sum(len(v) for r in results for v in r["lat"].values())
        per_k = 1000 * server_cpu / nreq if nreq else float("nan")
        cpu_line += (
            f"\nserver CPU per 1,000 requests (all operations, {nreq}): {per_k:.3f} s "
            f"(ceiling at one full core: {1000 / per_k if nreq else 0:.0f} req/s)"
        )
        figures["cpu"] = {
            "server_s_per_1000": per_k,
            "server_pct": 100 * server_cpu / wall,
            "load_pct": 100 * load_cpu / wall,
            "postgres_pct": 100 * pg_cpu / wall,
            "others_pct": 100 * others / wall,
        }
        out = [
            f"== {db}: {args.devices} devices, {args.users} users, {args.procs} load "
            f"processes, {'closed loop' if not args.rate else f'open loop at {args.rate:g}/s'}, "
            f"{args.seconds:g} s",
            text,
            cpu_line,
        ]
        if blob_line:
            out.append(blob_line)
        if spy is not None:
            spy.wait(timeout=args.seconds + 60)
            out.append(summarize_profile(base / "profile.txt"))
            if args.profile_dir:
                Path(args.profile_dir).mkdir(parents=True, exist_ok=True)
                shutil.copy(base / "profile.txt", Path(args.profile_dir) / f"server-{db}.txt")
        print("\n".join(out), flush=True)
        return figures
    finally:
        for w in workers:
            stop_process(w)
        if spy is not None:
            stop_process(spy)
        if server is not None:
            stop_process(server)
        if pg is not None:
            pg.stop(env)


def parse_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        if name.strip() not in MIX:
            raise ValueError(f"unknown operation {name.strip()!r} (known: {', '.join(MIX)})")
        mix[name.strip()] = float(weight)
        if not mix[name.strip()] >= 0:
            raise ValueError(f"weight of {name.strip()} must be >= 0")
    if not any(mix.values()):
        raise ValueError("all weights are zero")
    return mix


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_worker"]:
        return worker_main(argv[1], argv[2])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--procs", type=int, default=2, help="load processes")
    ap.add_argument("--rate", type=float, default=0.0, help="total req/s (0: closed loop)")
    ap.add_argument("--seed-files", type=int, default=20, help="files each device starts with")
    ap.add_argument("--seed", default="1")
    ap.add_argument(
        "--pool", type=int, default=20, help="chunks each device uploads at set-up for commits"
    )
    ap.add_argument(
        "--uploads",
        type=float,
        default=0.0,
        help="weight of standalone chunk uploads in the mix (0: metadata only)",
    )
    ap.add_argument(
        "--mix",
        default=",".join(f"{k}={v}" for k, v in MIX.items()),
        help="relative weights, e.g. list=20,stat=25,changes=25,missing=12,commit=18",
    )
    ap.add_argument(
        "--workers", type=int, default=1, help="server processes (cairn-server.toml 'workers')"
    )
    ap.add_argument("--profile", action="store_true", help="py-spy the server during the run")
    ap.add_argument("--profile-dir", help="keep the raw py-spy profiles here")
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument(
        "--cpu-threads", type=int, default=0, help="server cpu_threads (default: as init wrote it)"
    )
    ap.add_argument(
        "--switch-interval",
        type=float,
        default=0.0,
        help="experiment: run the server with sys.setswitchinterval(S) (default: Python's 5 ms)",
    )
    args = ap.parse_args(argv)
    if min(args.devices, args.users, args.procs) < 1 or args.seconds <= 0:
        print(
            "server_load: --devices/--users/--procs/--seconds must be positive",
            file=sys.stderr,
        )
        return 2
    try:
        args.mix = parse_mix(args.mix)
    except ValueError as e:
        print(f"server_load: --mix: {e}", file=sys.stderr)
        return 2
    if args.uploads < 0 or args.pool < 1:
        print("server_load: --uploads must be >= 0 and --pool >= 1", file=sys.stderr)
        return 2
    if args.uploads:
        args.mix["upload"] = args.uploads
    dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    figures = {}
    try:
        for db in dbs:
            with tempfile.TemporaryDirectory(prefix=f"cairn-load-{db}-") as tmp:
                figures[db] = bench_one(db, args, Path(tmp))
    except BenchError as e:
        print(f"server_load: {e}", file=sys.stderr)
        return 1
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
