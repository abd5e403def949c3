"""The server's secret keys on disk: the data key (frames at rest) and the dedupe key.

Both live in ``DATA_DIR/keys/`` as hex text files, mode 0600 in a 0700 directory. The data
key encrypts every stored frame (AES-256-GCM, ``cairn.core.frame``); the dedupe key keys chunk
ids of standard volumes and is handed to authenticated clients. Losing ``data.key`` loses
every stored chunk: operators back it up separately from the blob store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cairn.core import ids
from cairn.core.errors import ConfigError
from cairn.core.keys import DataKey, Keyring, keyring

KEYS_DIR = "keys"
DATA_KEY = "data.key"
DEDUPE_KEY = "dedupe.key"


@dataclass(frozen=True)
class ServerKeys:
    data_key: DataKey
    dedupe_key: bytes = field(repr=False)

    @property
    def keyring(self) -> Keyring:
        return keyring(self.data_key)


def _write_secret(path: Path, secret: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex() + "\n")
        f.flush()
        os.fsync(f.fileno())


def create(data_dir: Path) -> ServerKeys:
    """Generate both keys into ``DATA_DIR/keys``; refuses to overwrite existing ones."""
    kdir = data_dir / KEYS_DIR
    kdir.mkdir(mode=0o700)
    data_key = DataKey.generate()
    dedupe = ids.new_dedupe_key()
    _write_secret(kdir / DATA_KEY, data_key.secret)
    _write_secret(kdir / DEDUPE_KEY, dedupe)
    dfd = os.open(kdir, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return ServerKeys(data_key, dedupe)


def _read_secret(path: Path) -> bytes:
    key = f"keys/{path.name}"
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise ConfigError(f"{key}: missing ({path})") from None
    except OSError as e:
        raise ConfigError(f"{key}: cannot read ({e.strerror})") from None
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"{key}: not hex") from None
    if len(secret) != 32:
        raise ConfigError(f"{key}: must hold 32 bytes")
    if path.stat().st_mode & 0o077:
        raise ConfigError(f"{key}: readable by group or others (chmod 600 {path})")
    return secret


def load(data_dir: Path) -> ServerKeys:
    kdir = data_dir / KEYS_DIR
    return ServerKeys(DataKey(_read_secret(kdir / DATA_KEY)), _read_secret(kdir / DEDUPE_KEY))
