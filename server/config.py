"""The server's configuration: one frozen object per process.

Loaded from ``DATA_DIR/cairn-server.toml``, then overridden by environment variables
(``CAIRN_LISTEN``, ``CAIRN_DATABASE_URL``) and command-line flags, then validated as a whole.
Every problem raises ``ConfigError`` with a one-line message that names the key, e.g.
``limits.json_body: must be a positive integer``. Unknown keys are refused so that a typo
does not silently fall back to a default.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cairn.core.errors import ConfigError

CONFIG_NAME = "cairn-server.toml"
DEFAULT_PORT = 8470
DEFAULT_DATA_DIR = "/var/lib/cairn"
MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    json_body: int = 32 * MiB
    chunk_body: int = 16 * MiB + 64
    commit_ops: int = 1000
    missing_ids: int = 1000
    page_limit: int = 1000
    poll_timeout: int = 60


@dataclass(frozen=True)
class RateLimits:
    login_failures: int = 10  # per user and per address, within login_window
    login_window: float = 60.0
    api_rate: float = 0.0  # requests per second per device; 0 = unlimited
    api_burst: float = 200.0


@dataclass(frozen=True)
class Config:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    database_url: str = ""
    blobs: Mapping[str, Any] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    rate_limits: RateLimits = field(default_factory=RateLimits)
    cpu_threads: int = 2
    workers: int = 1  # server processes sharing the listening port (SO_REUSEPORT)
    hint_ping: float = 20.0
    hints_backend: str = "memory"  # "memory" | "postgres"
    shutdown_timeout: float = 30.0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


_TOP = {
    "listen",
    "database_url",
    "cpu_threads",
    "workers",
    "shutdown_timeout",
    "blobs",
    "limits",
    "rate_limits",
    "hints",
}


def parse_listen(text: object, key: str = "listen") -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT`` or ``:PORT`` → (host, port)."""
    if not isinstance(text, str):
        raise ConfigError(f"{key}: must be a string HOST:PORT")
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]]*):(\d{1,5})", text)
    if not m:
        raise ConfigError(f"{key}: {text!r} is not HOST:PORT")
    host = m.group(1) or m.group(3) or "127.0.0.1"
    port = int(m.group(2) or m.group(4))
    if not 0 <= port <= 65535:
        raise ConfigError(f"{key}: port {port} is out of range")
    return host, port


def _num(raw: Mapping[str, Any], section: str, key: str, default: Any, lo: float) -> Any:
    if key not in raw:
        return default
    value = raw[key]
    kind = type(default)
    ok = isinstance(value, int | float) if kind is float else isinstance(value, int)
    if isinstance(value, bool) or not ok or value < lo:
        word = "a number" if kind is float else "an integer"
        raise ConfigError(f"{section}{key}: must be {word} >= {lo:g}")
    return kind(value)


def _section(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: must be a table")
    return value


def _check_keys(table: Mapping[str, Any], allowed: set[str], prefix: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{prefix}{key}: unknown key")


def _database_url(raw: Mapping[str, Any], data_dir: Path) -> str:
    url = raw.get("database_url", "")
    if not isinstance(url, str):
        raise ConfigError("database_url: must be a string")
    if url == "":
        return f"sqlite+aiosqlite:///{data_dir / 'meta.db'}"
    if url.startswith("sqlite+aiosqlite:///"):
        path = url[len("sqlite+aiosqlite:///") :]
        if not path.startswith("/"):  # relative paths are relative to DATA_DIR, not the cwd
            return f"sqlite+aiosqlite:///{data_dir / path}"
        return url
    if url.startswith("postgresql+asyncpg://"):
        return url
    raise ConfigError("database_url: must start with sqlite+aiosqlite:/// or postgresql+asyncpg://")


def _blobs(raw: Mapping[str, Any], data_dir: Path) -> dict[str, Any]:
    """The ``[blobs]`` table with a local path made absolute. Its keys are validated by
    ``cairn.server.blobs.open_blobstore`` (the one owner of that schema) when the server
    starts, with the same ``blobs.KEY: ...`` messages."""
    blobs = dict(_section(raw, "blobs"))
    if "kind" not in blobs:
        blobs["kind"] = "local"
        blobs.setdefault("path", "blobs")
    if blobs["kind"] == "local" and isinstance(blobs.get("path"), str):
        path = Path(blobs["path"])
        blobs["path"] = str(path if path.is_absolute() else data_dir / path)
    return blobs


def build(data_dir: Path, raw: Mapping[str, Any]) -> Config:
    """Validate a parsed TOML document (with overrides applied) into a ``Config``."""
    _check_keys(raw, _TOP, "")
    host, port = parse_listen(raw.get("listen", f"127.0.0.1:{DEFAULT_PORT}"))
    limits_raw, rates_raw = _section(raw, "limits"), _section(raw, "rate_limits")
    hints_raw = _section(raw, "hints")
    d, r = Limits(), RateLimits()
    _check_keys(limits_raw, set(vars(d)), "limits.")
    _check_keys(rates_raw, set(vars(r)), "rate_limits.")
    _check_keys(hints_raw, {"ping_interval", "backend"}, "hints.")
    limits = Limits(**{k: _num(limits_raw, "limits.", k, v, 1) for k, v in vars(d).items()})
    if limits.chunk_body < 64:
        raise ConfigError("limits.chunk_body: must be at least 64")
    rates = RateLimits(**{k: _num(rates_raw, "rate_limits.", k, v, 0) for k, v in vars(r).items()})
    backend = hints_raw.get("backend", "memory")
    if backend not in ("memory", "postgres"):
        raise ConfigError("hints.backend: must be 'memory' or 'postgres'")
    url = _database_url(raw, data_dir)
    if backend == "postgres" and not url.startswith("postgresql"):
        raise ConfigError("hints.backend: 'postgres' needs a postgresql+asyncpg database_url")
    return Config(
        data_dir=data_dir,
        host=host,
        port=port,
        database_url=url,
        blobs=_blobs(raw, data_dir),
        limits=limits,
        rate_limits=rates,
        cpu_threads=_num(raw, "", "cpu_threads", 2, 1),
        workers=_workers(raw),
        hint_ping=_num(hints_raw, "hints.", "ping_interval", 20.0, 1),
        hints_backend=backend,
        shutdown_timeout=_num(raw, "", "shutdown_timeout", 30.0, 0),
    )


MAX_WORKERS = 64


def _workers(raw: Mapping[str, Any]) -> int:
    workers: int = _num(raw, "", "workers", 1, 1)
    if workers > MAX_WORKERS:
        raise ConfigError(f"workers: must be at most {MAX_WORKERS}")
    return workers


def resolve_data_dir(flag: str | None) -> Path:
    """``--data`` if given, else ``$CAIRN_DATA``, else /var/lib/cairn."""
    return Path(flag or os.environ.get("CAIRN_DATA") or DEFAULT_DATA_DIR).absolute()


def load(data_dir: Path, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read ``DATA_DIR/cairn-server.toml``, apply env and flag overrides, validate."""
    path = data_dir / CONFIG_NAME
    try:
        with path.open("rb") as f:
            raw: dict[str, Any] = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (run 'cairn-server init {data_dir}')") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    env = {"listen": "CAIRN_LISTEN", "database_url": "CAIRN_DATABASE_URL"}
    for key, var in env.items():
        if os.environ.get(var):
            raw[key] = os.environ[var]
    for key, value in (overrides or {}).items():
        if value is not None:
            raw[key] = value
    return build(data_dir, raw)


def default_toml() -> str:
    """The commented configuration file ``cairn-server init`` writes."""
    return f"""\
# cairn-server configuration (see docs/server.md for every key).
# Relative paths are relative to this directory.

listen = "127.0.0.1:{DEFAULT_PORT}"
# Empty: SQLite in meta.db beside this file. Or "postgresql+asyncpg://user:pw@host/db".
database_url = ""
# Threads for CPU work (frame verification, encryption, password hashing).
cpu_threads = 2
# Server processes sharing the port (one Python core each; about one per CPU core). They
# hint each other and share rate limits; SQLite lets one of them write at a time.
workers = 1
shutdown_timeout = 30

[blobs]
kind = "local"          # or "s3" with bucket, endpoint_url, region, access_key, secret_key, prefix
path = "blobs"

[limits]
json_body = {32 * MiB}
chunk_body = {16 * MiB + 64}
commit_ops = 1000
missing_ids = 1000
page_limit = 1000
poll_timeout = 60

[rate_limits]
login_failures = 10     # failed logins per user and per address ...
login_window = 60       # ... within this many seconds, then 429
api_rate = 0            # requests per second per device (0: unlimited)
api_burst = 200

[hints]
backend = "memory"      # "postgres": LISTEN/NOTIFY, for several server processes on one DB
ping_interval = 20
"""
