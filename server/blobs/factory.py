"""``open_blobstore``: the one place where a configured BlobStore is assembled.

Stack (outermost first): ``RetryingBlobStore`` → ``MeteredBlobStore`` → backend. Metrics sit
inside the retries so each real attempt, failed or not, is counted and timed.

Config (the ``[blobs]`` table of ``cairn-server.toml``, as a dict):

- ``{"kind": "local", "path": DIR}``
- ``{"kind": "s3", "bucket": ..., "region": ..., "access_key": ..., "secret_key": ...,
  "endpoint_url": URL (optional, AWS when absent), "prefix": "..." (optional, default "")}``
- optional for both: ``"threads"`` (I/O pool size), ``"retries"`` (attempts per operation).

A missing key, a key of the wrong type or an unknown key is a ``ConfigError`` naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cairn.core.errors import ConfigError

from .base import BlobStore
from .local import LocalBlobStore
from .metered import MeteredBlobStore
from .retry import RetryingBlobStore
from .s3 import S3BlobStore

_COMMON = {"kind": str, "threads": int, "retries": int}
_SCHEMAS: dict[str, tuple[dict[str, type], set[str]]] = {
    # kind: (allowed keys with types, required keys)
    "local": ({**_COMMON, "path": str}, {"path"}),
    "s3": (
        {
            **_COMMON,
            "bucket": str,
            "region": str,
            "access_key": str,
            "secret_key": str,
            "endpoint_url": str,
            "prefix": str,
        },
        {"bucket", "region", "access_key", "secret_key"},
    ),
}


def _validate(cfg: Mapping[str, Any], where: str) -> str:
    kind = cfg.get("kind")
    if kind is None:
        raise ConfigError(f"{where}.kind: missing (one of: {', '.join(_SCHEMAS)})")
    if kind not in _SCHEMAS:
        raise ConfigError(
            f"{where}.kind: unknown blob store kind {kind!r} (one of: {', '.join(_SCHEMAS)})"
        )
    allowed, required = _SCHEMAS[kind]
    for key in sorted(required):
        if key not in cfg:
            raise ConfigError(f"{where}.{key}: missing (required when kind = {kind!r})")
    for key, value in cfg.items():
        if key not in allowed:
            raise ConfigError(f"{where}.{key}: unknown key for kind = {kind!r}")
        want = allowed[key]
        # bool is an int subclass; "threads = true" is still a mistake
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise ConfigError(f"{where}.{key}: must be a {want.__name__}, not {value!r}")
        if isinstance(value, int) and value < 1:
            raise ConfigError(f"{where}.{key}: must be at least 1, not {value}")
        if want is str and key in required and not value:
            raise ConfigError(f"{where}.{key}: must not be empty")
    return str(kind)


def open_blobstore(cfg: Mapping[str, Any], *, where: str = "blobs") -> BlobStore:
    """Build the configured store with retries and metrics. ``where`` prefixes key names in
    error messages (the config table's name)."""
    kind = _validate(cfg, where)
    backend: BlobStore
    if kind == "local":
        backend = LocalBlobStore(cfg["path"], threads=cfg.get("threads", 8))
    else:
        backend = S3BlobStore(
            cfg["bucket"],
            endpoint_url=cfg.get("endpoint_url"),
            region=cfg["region"],
            access_key=cfg["access_key"],
            secret_key=cfg["secret_key"],
            prefix=cfg.get("prefix", ""),
            threads=cfg.get("threads", 16),
        )
    return RetryingBlobStore(MeteredBlobStore(backend, kind), attempts=cfg.get("retries", 4))
