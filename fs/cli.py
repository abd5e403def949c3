"""The ``cairn`` command: login, mount, unmount, status, sync.

Contract: every failure the user can cause or meet (wrong password, server down, missing
state dir, bad mountpoint, ...) ends as one line ``cairn: MESSAGE`` on stderr and a non-zero
exit status, never a traceback. Exit statuses: 0 ok, 1 failed, 2 bad usage, 3 server
unreachable, 4 not logged in / authentication refused.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import socket
import sys
import time
from pathlib import Path

import trio

from cairn.core.errors import CairnError, ConfigError, Unauthenticated, Unavailable

from . import control, mount
from .client import Client
from .statedir import Device, StateDir, default_state_dir, state_for_mount

EXIT_FAIL, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_AUTH = 1, 2, 3, 4
DEFAULT_DRAIN_TIMEOUT = 60.0


class UsageError(Exception):
    """Bad command-line input; exit status 2."""


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``10G``, ``512MiB``, ``1.5g``, ``4096`` → bytes (binary multiples)."""
    m = _SIZE.match(text)
    if not m:
        raise UsageError(f"not a size: {text!r} (e.g. 10G, 512M)")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def _state(args: argparse.Namespace) -> StateDir:
    return StateDir(args.state) if args.state else StateDir(default_state_dir())


# --- login ----------------------------------------------------------------------------------


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.user}: ")
    else:
        raise UsageError("no terminal to ask for the password; use --password-stdin")
    if not password:
        raise UsageError("empty password")
    return password


def cmd_login(args: argparse.Namespace) -> int:
    url = args.server_url.rstrip("/")
    if not re.match(r"^https?://[^/\s]+$", url):
        raise UsageError(f"server URL must look like http://HOST:PORT, not {args.server_url!r}")
    password = _read_password(args)
    device_name = args.device or socket.gethostname()
    state = _state(args)

    async def login() -> dict[str, object]:
        async with Client(url) as c:
            return await c.login(args.user, password, device_name)

    try:
        answer = trio.run(login)
    except Unauthenticated:
        raise Unauthenticated(
            f"login refused: wrong user name or password for {args.user}"
        ) from None
    try:
        home = answer["home"]
        assert isinstance(home, dict)
        device = Device(
            server_url=url,
            user=str(answer.get("user", args.user)),
            device=device_name,
            device_id=answer["device_id"],  # type: ignore[arg-type]
            home_ns=int(home["ns"]),
            home_root=str(home["root"]),
            dedupe_key=str(answer["dedupe_key"]),
        )
        bytes.fromhex(device.dedupe_key)
        token = str(answer["token"])
    except (KeyError, TypeError, ValueError, AssertionError):
        raise Unavailable(f"server {url} answered the login with an unexpected body") from None
    state.init(device, token)
    print(f"logged in to {url} as {device.user} (device {device_name}); state in {state.root}")
    return 0


# --- mount / unmount ------------------------------------------------------------------------


def cmd_mount(args: argparse.Namespace) -> int:
    state = _state(args)
    state.check()
    mountpoint = Path(args.mountpoint).absolute()
    cache_size = parse_size(args.cache_size) if args.cache_size else None
    options = [o for opt in args.o or [] for o in opt.split(",") if o]
    mount.check_mountpoint(mountpoint, state)
    if args.foreground:
        return mount.run(state, mountpoint, cache_size=cache_size, options=options, foreground=True)
    mount.spawn(state, mountpoint, cache_size=cache_size, options=options)
    print(f"mounted {state.root} at {mountpoint}")
    return 0


def cmd_unmount(args: argparse.Namespace) -> int:
    mountpoint = Path(args.mountpoint).absolute()
    state = StateDir(args.state) if args.state else state_for_mount(mountpoint)
    if state is None or state.mount_info() is None:
        if not os.path.ismount(mountpoint):
            raise ConfigError(f"{mountpoint} is not mounted")
        # No live mount process known: the mount is stale (the process was killed).
        mount.fusermount_unmount(mountpoint)
        print(f"unmounted {mountpoint} (no mount process was running)")
        return 0
    message = mount.drain_and_stop(state, mountpoint, timeout=args.timeout)
    if message:
        print(f"cairn: {message}", file=sys.stderr)
    print(f"unmounted {mountpoint}")
    return 0


# --- status ---------------------------------------------------------------------------------


def _size(n: object) -> str:
    if not isinstance(n, int):
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n}"


def _when(t: object) -> str:
    if not isinstance(t, (int, float)):
        return "never"
    ago = max(0.0, time.time() - t)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
    return f"{stamp} ({ago:.0f} s ago)"


def _offline_status(state: StateDir) -> dict[str, object]:
    """What can be known without the mount process: the server, the outbox, the cache."""
    from .cache import ChunkCache
    from .store import Store

    dev = state.device()
    out: dict[str, object] = {}

    async def reach() -> bool:
        async with Client(dev.server_url) as c:
            return await c.healthz()

    out["online"] = trio.run(reach)
    try:
        store = Store.open(state.db_dir, dev.home_root)
    except Exception as e:  # rocksdict raises plain Exception for a locked or damaged db
        out["store_error"] = str(e).splitlines()[0] if str(e) else type(e).__name__
    else:
        try:
            entries = store.outbox_peek(None)
            files = {e.op.node: e.op.blocklist.size for e in entries if hasattr(e.op, "blocklist")}
            out["pending"] = {
                "ops": len(entries),
                "files": len(files),
                "bytes": sum(files.values()),
            }
        finally:
            store.close()
    cache = ChunkCache(state.cache_dir, state.data_key(), limit=1 << 62)
    out["cache_used"] = cache.used
    out["cache_dirty"] = cache.dirty_bytes
    return out


def render_status(state: StateDir) -> str:
    dev = state.device()
    info = state.mount_info()
    lines = [
        f"state:    {state.root}",
        f"server:   {dev.server_url} (user {dev.user}, device {dev.device})",
    ]
    st: dict[str, object]
    if info is not None:
        lines.append(f"mounted:  {info['mountpoint']} (pid {info['pid']})")
        answer = control.request(state.control_socket, "status")
        st = answer.get("status") or {}
    else:
        lines.append("mounted:  no")
        st = _offline_status(state)
    online = st.get("online")
    lines.append(
        "reachable: " + ("yes" if online else "not yet tried" if online is None else "no (offline)")
    )
    if info is not None:
        lines.append(f"last sync: {_when(st.get('last_sync'))}")
        hints = st.get("hints")
        if isinstance(hints, dict):
            lines.append(
                "hints:    "
                + ("connected (websocket)" if hints.get("connected") else str(hints.get("mode")))
            )
    pending = st.get("pending")
    if isinstance(pending, dict):
        lines.append(
            f"pending:  {pending.get('ops', 0)} changes, {pending.get('files', 0)} files, "
            f"{_size(pending.get('bytes', 0))} to upload"
        )
    elif "store_error" in st:
        lines.append(f"pending:  unknown ({st['store_error']})")
    up = st.get("upload")
    if isinstance(up, dict):
        lines.append(
            f"uploading: {up.get('chunks', 0)} of {up.get('total', 0)} chunks "
            f"({_size(up.get('bytes', 0))} sent)"
        )
    down = st.get("download")
    if isinstance(down, dict) and (down.get("chunks") or down.get("inflight")):
        lines.append(
            f"downloads: {down.get('inflight', 0)} chunks in flight; {down.get('chunks', 0)} "
            f"chunks ({_size(down.get('bytes', 0))}) fetched since mount"
            + (f", {down['failed']} failed" if down.get("failed") else "")
        )
    limit = st.get("cache_limit")
    lines.append(
        f"cache:    {_size(st.get('cache_used'))} used"
        + (f" of {_size(limit)}" if isinstance(limit, int) else "")
        + f", {_size(st.get('cache_dirty'))} not yet uploaded"
    )
    parked = st.get("parked")
    if parked:
        lines.append(
            f"parked:   {parked} changes refused by the server (see {state.root}/parked.jsonl)"
        )
    held = st.get("held_deletes")
    if isinstance(held, dict):
        lines.append(
            f"deletes:  HELD: the server deletes {held.get('deletes')} of this device's "
            f"{held.get('files')} files; run `cairn sync --confirm-deletes` to apply"
        )
    raw = st.get("conflicts")
    conflicts = [c for c in raw if isinstance(c, dict)] if isinstance(raw, list) else []
    if conflicts:
        lines.append(f"conflicts: {len(conflicts)} resolved recently:")
        for c in conflicts[-5:]:
            lines.append(
                f"  {_when(c.get('when'))}: {c.get('kind')} of node {str(c.get('node'))[:12]} "
                f"({c.get('reason')}): {c.get('outcome')}"
            )
    errs = st.get("errors") or []
    if errs:
        lines.append("recent errors:")
        for t, msg in list(errs)[-5:]:  # type: ignore[misc]
            lines.append(f"  {_when(t)}: {msg}")
    else:
        lines.append("errors:   none")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    state = _state(args)
    state.check()
    print(render_status(state))
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    state = _state(args)
    state.check()
    if state.mount_info() is None:
        raise UsageError("the drive is not mounted (cairn sync talks to the running mount)")
    answer = control.request(state.control_socket, "sync", confirm_deletes=args.confirm_deletes)
    if args.confirm_deletes:
        held = answer.get("held")
        print("held deletions released" if held else "no deletions were held; syncing now")
    else:
        print("syncing now")
    return 0


# --- entry point ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cairn", description="Cairn drive: a synced folder.")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    state_help = "state directory (default ~/.local/share/cairn or $CAIRN_STATE)"

    s = sub.add_parser("login", help="log this device in to a server")
    s.add_argument("server_url", metavar="SERVER_URL")
    s.add_argument("--user", required=True)
    s.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    s.add_argument("--device", help="device name (default: host name)")
    s.add_argument("--state", help=state_help)
    s.set_defaults(func=cmd_login)

    s = sub.add_parser("mount", help="mount the drive")
    s.add_argument("mountpoint", metavar="MOUNTPOINT")
    s.add_argument("--state", help=state_help)
    s.add_argument("--foreground", "-f", action="store_true", help="do not daemonize")
    s.add_argument("--cache-size", help="chunk cache limit, e.g. 10G")
    s.add_argument("-o", action="append", metavar="OPTS", help="mount options, e.g. allow_other")
    s.set_defaults(func=cmd_mount)

    s = sub.add_parser("unmount", aliases=["umount"], help="upload pending changes and unmount")
    s.add_argument("mountpoint", metavar="MOUNTPOINT")
    s.add_argument("--state", help=state_help)
    s.add_argument(
        "--timeout",
        type=float,
        default=float(os.environ.get("CAIRN_DRAIN_TIMEOUT", DEFAULT_DRAIN_TIMEOUT)),
        help="seconds to wait for pending uploads (default 60)",
    )
    s.set_defaults(func=cmd_unmount)

    s = sub.add_parser("sync", help="push and pull now")
    s.add_argument("--state", help=state_help)
    s.add_argument(
        "--confirm-deletes", action="store_true", help="apply a held mass deletion from the server"
    )
    s.set_defaults(func=cmd_sync)

    s = sub.add_parser("status", help="show the drive's state")
    s.add_argument("--state", help=state_help)
    s.set_defaults(func=cmd_status)
    return p


def exit_code(err: BaseException) -> int:
    if isinstance(err, UsageError):
        return EXIT_USAGE
    if isinstance(err, Unavailable):
        return EXIT_UNAVAILABLE
    if isinstance(err, Unauthenticated):
        return EXIT_AUTH
    return EXIT_FAIL


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (CairnError, UsageError, control.ControlError, mount.MountError) as e:
        print(f"cairn: {e}", file=sys.stderr)
        return exit_code(e)
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        print(f"cairn: {e.strerror or e}{where}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        print("cairn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
