"""Data keys, key ids, and keys wrapped under a passphrase.

A *data key* is 32 random bytes used with AES-256-GCM for frames. Its *key id* is the first
8 bytes of a BLAKE3 derivation of the key, so a frame names the key it needs without
revealing it. A *wrapped key* is a data key encrypted under a key-encryption key that
Argon2id derives from a passphrase; the byte layout is in docs/format.md.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

import blake3
from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import FormatError, UnknownVersion, WrongPassphrase

KEY_SIZE = 32
KEY_ID_SIZE = 8
_KEY_ID_CONTEXT = "cairn 2026 data key id v1"

WRAP_MAGIC = b"CRNK"
WRAP_VERSION = 1
# Argon2id parameters for wrapping: 3 passes over 64 MiB with 2 lanes (RFC 9106's second
# recommended option, scaled to this project's 2-core machines). Stored in each blob, so they
# can be raised later without breaking old blobs.
ARGON2_TIME = 3
ARGON2_MEMORY_KIB = 64 * 1024
ARGON2_LANES = 2
_WRAP_HEADER = struct.Struct(">4sBIIB16s12s")  # magic, version, t, m KiB, p, salt, nonce


def key_id(secret: bytes) -> bytes:
    """The 8-byte id of a data key."""
    return blake3.blake3(secret, derive_key_context=_KEY_ID_CONTEXT).digest(length=KEY_ID_SIZE)


@dataclass(frozen=True)
class DataKey:
    """A 32-byte AES-256-GCM key with its id. Safe to share between threads."""

    secret: bytes = field(repr=False)
    key_id: bytes = field(init=False)
    aead: AESGCM = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_SIZE:
            raise ValueError("a data key is 32 bytes")
        object.__setattr__(self, "key_id", key_id(self.secret))
        object.__setattr__(self, "aead", AESGCM(self.secret))

    @classmethod
    def generate(cls) -> DataKey:
        return cls(os.urandom(KEY_SIZE))


Keyring = Mapping[bytes, DataKey]


def keyring(*keys: DataKey) -> dict[bytes, DataKey]:
    """A key-id → key mapping, as frame decoding wants it."""
    return {k.key_id: k for k in keys}


def _kdf_params_ok(t: int, m: int, p: int) -> bool:
    # Bounded so a crafted blob cannot make unwrapping take minutes or gigabytes: at most
    # 64 passes over 1 GiB. Argon2 itself needs at least 8 KiB per lane.
    return 1 <= t <= 64 and 1 <= p <= 64 and 8 * p <= m <= 1024 * 1024


def _kek(passphrase: bytes, salt: bytes, t: int, m: int, p: int) -> bytes:
    return hash_secret_raw(passphrase, salt, t, m, p, KEY_SIZE, Type.ID)


def wrap_key(
    key: DataKey,
    passphrase: str | bytes,
    *,
    time_cost: int = ARGON2_TIME,
    memory_kib: int = ARGON2_MEMORY_KIB,
    lanes: int = ARGON2_LANES,
) -> bytes:
    """Encrypt ``key`` under a passphrase; the result holds everything needed to unwrap it."""
    if not _kdf_params_ok(time_cost, memory_kib, lanes):
        raise ValueError(
            "Argon2 parameters out of range (1-64 passes, 1-64 lanes, 8*lanes KiB-1 GiB)"
        )
    pw = passphrase.encode() if isinstance(passphrase, str) else passphrase
    salt, nonce = os.urandom(16), os.urandom(12)
    header = _WRAP_HEADER.pack(WRAP_MAGIC, WRAP_VERSION, time_cost, memory_kib, lanes, salt, nonce)
    kek = _kek(pw, salt, time_cost, memory_kib, lanes)
    return header + AESGCM(kek).encrypt(nonce, key.secret, header)


def unwrap_key(blob: bytes, passphrase: str | bytes) -> DataKey:
    """Open a wrapped key. Raises ``WrongPassphrase`` when the passphrase (or blob) is wrong."""
    pw = passphrase.encode() if isinstance(passphrase, str) else passphrase
    if len(blob) != _WRAP_HEADER.size + KEY_SIZE + 16:
        raise FormatError("wrapped key has the wrong length")
    magic, version, t, m, p, salt, nonce = _WRAP_HEADER.unpack_from(blob)
    if magic != WRAP_MAGIC:
        raise FormatError("not a wrapped key (bad magic)")
    if version != WRAP_VERSION:
        raise UnknownVersion(f"wrapped key version {version} is not supported")
    if not _kdf_params_ok(t, m, p):
        raise FormatError("wrapped key has out-of-range KDF parameters")
    header = blob[: _WRAP_HEADER.size]
    try:
        secret = AESGCM(_kek(pw, salt, t, m, p)).decrypt(nonce, blob[_WRAP_HEADER.size :], header)
    except InvalidTag:
        raise WrongPassphrase("the passphrase does not open this key") from None
    return DataKey(secret)
