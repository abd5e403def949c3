"""Chunk ids: keyed BLAKE3 of the plaintext.

A chunk id is the 32-byte BLAKE3 keyed hash of the chunk's plaintext under a 32-byte
*dedupe key*. Standard volumes use the server's dedupe key (handed to authenticated clients);
private volumes derive theirs from the volume key (``derive_dedupe_key``). Without the key a
holder of the blob store cannot confirm a guess of any chunk's content from its id.

Text form is lowercase hex (64 characters).
"""

from __future__ import annotations

import os
import re

import blake3

ID_SIZE = 32
KEY_SIZE = 32
_HEX_ID = re.compile(r"[0-9a-f]{64}")
_DEDUPE_CONTEXT = "cairn 2026 private-volume dedupe key v1"

Buffer = bytes | bytearray | memoryview


def new_dedupe_key() -> bytes:
    """A fresh random 32-byte dedupe key."""
    return os.urandom(KEY_SIZE)


def derive_dedupe_key(volume_key: bytes) -> bytes:
    """The dedupe key of a private volume, derived one-way from its volume key."""
    if len(volume_key) != KEY_SIZE:
        raise ValueError("volume key must be 32 bytes")
    return blake3.blake3(volume_key, derive_key_context=_DEDUPE_CONTEXT).digest()


def chunk_id(dedupe_key: bytes, data: Buffer) -> bytes:
    """The 32-byte id of ``data`` under ``dedupe_key``. Releases the GIL for large inputs."""
    if len(dedupe_key) != KEY_SIZE:
        raise ValueError("dedupe key must be 32 bytes")
    # blake3 releases the GIL itself for inputs above a few KiB; max_threads stays 1 so the
    # caller's thread pool, not this call, decides how many cores hash at once.
    return blake3.blake3(data, key=dedupe_key).digest()


def to_hex(cid: bytes) -> str:
    return cid.hex()


def from_hex(text: str) -> bytes:
    """Parse the text form; raises ``ValueError`` for anything but 64 lowercase hex digits."""
    if not isinstance(text, str) or not _HEX_ID.fullmatch(text):
        raise ValueError("a chunk id is 64 lowercase hex digits")
    return bytes.fromhex(text)


def is_hex_id(text: object) -> bool:
    return isinstance(text, str) and bool(_HEX_ID.fullmatch(text))
