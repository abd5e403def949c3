"""The ``cairn-server`` command: init, run, user and device administration.

Errors are one line on stderr and exit status 1 (2 for usage errors, from argparse); no
traceback reaches the operator. Every subcommand but ``init`` finds the data directory from
``--data`` (before or after the subcommand), else ``$CAIRN_DATA``, else /var/lib/cairn.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cairn.core.errors import CairnError, ConfigError, InvalidArgument, NotFound

from . import auth, config, keys

log = logging.getLogger("cairn.server")

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGTP]?)(i?B?)?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def parse_size(text: str) -> int:
    """``10G``, ``512M``, ``1.5T``, ``1000`` → bytes (binary units)."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise InvalidArgument(f"--quota: {text!r} is not a size like 10G or 512M")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
    else:
        if not sys.stdin.isatty():
            raise InvalidArgument("no terminal to ask for a password; use --password-stdin")
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise InvalidArgument("the passwords differ")
    if not password:
        raise InvalidArgument("the password is empty")
    return password


# --- commands -------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> None:
    data = Path(args.dir).absolute()
    if data.exists() and (not data.is_dir() or any(data.iterdir())):
        raise ConfigError(f"{data}: exists and is not empty; refusing to overwrite it")
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    (data / config.CONFIG_NAME).write_text(config.default_toml())
    keys.create(data)
    cfg = config.load(data)
    if cfg.blobs.get("kind") == "local":
        Path(cfg.blobs["path"]).mkdir(mode=0o700, exist_ok=True)

    async def migrate() -> None:
        from .app import open_meta

        meta = await open_meta(cfg)
        await meta.close()

    asyncio.run(migrate())
    print(f"initialized {data}; start it with: cairn-server run --data {data}")


def _notify_systemd(state: str) -> None:
    """sd_notify without libsystemd: one datagram to $NOTIFY_SOCKET (Type=notify units)."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.sendall(state.encode())


async def _serve(
    cfg: config.Config, peers: Any = None, ready: Callable[[], None] | None = None
) -> None:
    """Serve until SIGTERM/SIGINT. ``peers``/``ready``: given to each worker of several
    (workers.py), which listen on one port with SO_REUSEPORT and report readiness to the
    supervisor instead of systemd."""
    from aiohttp import web

    from .app import create_app

    app = create_app(cfg, peers=peers)
    runner = web.AppRunner(app, shutdown_timeout=cfg.shutdown_timeout, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(
            runner, cfg.host, cfg.port, reuse_address=True, reuse_port=cfg.workers > 1
        )
        try:
            await site.start()
        except OSError as e:
            raise ConfigError(
                f"listen: cannot listen on {cfg.host}:{cfg.port}: {e.strerror}"
            ) from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if ready is None:
            log.info("cairn-server ready at %s (data %s)", cfg.url, cfg.data_dir)
            _notify_systemd("READY=1")
        else:
            log.info("worker %d ready at %s", os.getpid(), cfg.url)
            ready()
        await stop.wait()
        log.info("shutting down: finishing in-flight requests")
        if ready is None:
            _notify_systemd("STOPPING=1")
    finally:
        await runner.cleanup()
    log.info("stopped")


def cmd_run(args: argparse.Namespace) -> None:
    cfg = config.load(config.resolve_data_dir(args.data), {"listen": args.listen})
    if cfg.workers == 1:
        asyncio.run(_serve(cfg))
    else:
        from . import workers

        workers.run(cfg, _serve, _notify_systemd)


async def _with_meta(args: argparse.Namespace, fn: Callable[[Any], Awaitable[None]]) -> None:
    from .app import open_meta

    cfg = config.load(config.resolve_data_dir(args.data))
    meta = await open_meta(cfg)
    try:
        await fn(meta)
    finally:
        await meta.close()


async def _user(meta: Any, name: str) -> Any:
    user = await meta.get_user(name)
    if user is None:
        raise NotFound(f"no user named {name!r}")
    return user


def cmd_user_add(args: argparse.Namespace) -> None:
    quota = parse_size(args.quota) if args.quota else None
    password = _read_password(args.password_stdin)

    async def go(meta: Any) -> None:
        await meta.add_user(args.name, auth.hash_password(password), quota)
        print(f"added user {args.name}")

    asyncio.run(_with_meta(args, go))


def cmd_user_list(args: argparse.Namespace) -> None:
    async def go(meta: Any) -> None:
        for u in await meta.list_users():
            quota = "unlimited" if u.quota is None else str(u.quota)
            print(f"{u.name}\tquota={quota}\tused={await meta.usage(u.id)}")

    asyncio.run(_with_meta(args, go))


def cmd_user_passwd(args: argparse.Namespace) -> None:
    password = _read_password(args.password_stdin)

    async def go(meta: Any) -> None:
        await _user(meta, args.name)
        await meta.set_password(args.name, auth.hash_password(password))
        print(f"password of {args.name} changed")

    asyncio.run(_with_meta(args, go))


def cmd_device_list(args: argparse.Namespace) -> None:
    async def go(meta: Any) -> None:
        user = await _user(meta, args.name)
        for d in await meta.list_devices(user.id):
            extra = "".join(
                f"\t{k}={getattr(d, k)}"
                for k in ("created_ns", "last_seen_ns", "revoked")
                if getattr(d, k, None) is not None
            )
            print(f"{d.id}\t{d.name}{extra}")

    asyncio.run(_with_meta(args, go))


def cmd_device_revoke(args: argparse.Namespace) -> None:
    async def go(meta: Any) -> None:
        user = await _user(meta, args.name)
        count = await meta.revoke_device(user.id, args.device)
        if not count:
            raise NotFound(f"user {args.name} has no device {args.device!r}")
        print(f"revoked {count} device token(s) of {args.name}")

    asyncio.run(_with_meta(args, go))


# --- argument parsing -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data", default=argparse.SUPPRESS, metavar="DATA_DIR",
                      help="data directory (default $CAIRN_DATA, else /var/lib/cairn)")  # fmt: skip
    p = argparse.ArgumentParser(prog="cairn-server", parents=[data],
                                description="Cairn sync server")  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("init", help="create a new data directory")
    s.add_argument("dir", metavar="DATA_DIR")
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("run", parents=[data], help="serve until SIGTERM/SIGINT")
    s.add_argument("--listen", metavar="HOST:PORT", help="override the listen address")
    s.set_defaults(func=cmd_run)

    user = sub.add_parser("user", help="manage users").add_subparsers(
        dest="user_command", required=True, metavar="ACTION"
    )
    s = user.add_parser("add", parents=[data], help="add a user")
    s.add_argument("name")
    s.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    s.add_argument("--quota", metavar="SIZE", help="storage quota, e.g. 10G")
    s.set_defaults(func=cmd_user_add)
    s = user.add_parser("list", parents=[data], help="list users")
    s.set_defaults(func=cmd_user_list)
    s = user.add_parser("passwd", parents=[data], help="change a user's password")
    s.add_argument("name")
    s.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    s.set_defaults(func=cmd_user_passwd)

    dev = sub.add_parser("device", help="manage devices").add_subparsers(
        dest="device_command", required=True, metavar="ACTION"
    )
    s = dev.add_parser("list", parents=[data], help="list a user's devices")
    s.add_argument("name")
    s.set_defaults(func=cmd_device_list)
    s = dev.add_parser("revoke", parents=[data], help="revoke a device (id or name)")
    s.add_argument("name")
    s.add_argument("device")
    s.set_defaults(func=cmd_device_revoke)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not hasattr(args, "data"):
        args.data = None
    # The server logs its progress; one-shot admin commands speak only through their output.
    default_level = "INFO" if args.command == "run" else "WARNING"
    logging.basicConfig(
        level=os.environ.get("CAIRN_LOG_LEVEL", default_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # migration chatter is not news
    try:
        args.func(args)
    except CairnError as e:
        print(f"cairn-server: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"cairn-server: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a bug: still one line for the operator; CAIRN_DEBUG=1 for more
        if os.environ.get("CAIRN_DEBUG"):
            raise
        print(f"cairn-server: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
