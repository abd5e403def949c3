"""The chunk frame: how one chunk is stored in the cache, in the blob store and on the wire.

Layout (all integers big-endian; full description in docs/format.md)::

    0   4  magic  b"CRNF"
    4   1  version (1)
    5   1  flags: bits 0-1 compression (0 none, 1 zstd), bits 2-3 encryption
           (0 none, 1 AES-256-GCM), bits 4-7 reserved (must be 0)
    6   8  key id (zero when not encrypted)
    14  4  plaintext length (<= MAX_PLAIN)
    18 12  nonce (only when encrypted)
    ..     payload: the (compressed) chunk; when encrypted, ciphertext followed by a 16-byte tag

When encrypted, the associated data is the header and nonce (bytes 0..29) followed by the
32-byte chunk id, so a frame cannot be replayed under another id or have its header altered.
Decoding verifies everything it can and raises a ``FrameError`` subclass instead of returning
unverified bytes; plaintext frames are checked by recomputing the keyed chunk id.

The compressed form is kept only when it saves at least 1/32; chunks of 64 KiB or more are
first probed on four 8 KiB samples, and stored raw without a full zstd pass when the samples
do not shrink (incompressible media costs little).

All functions here are thread-safe. The compression and hash libraries release the GIL (and
cryptography does for AEAD since pyca/cryptography#15361), so callers run them in a thread
pool.
"""

from __future__ import annotations

import os
import struct
import threading
from dataclasses import dataclass

import zstandard
from cryptography.exceptions import InvalidTag

from . import ids
from .errors import FrameCorrupt, IdMismatch, UnknownKey, UnknownVersion
from .keys import KEY_ID_SIZE, DataKey, Keyring

MAGIC = b"CRNF"
VERSION = 1
MAX_PLAIN = 16 * 1024 * 1024
COMP_NONE, COMP_ZSTD = 0, 1
ENC_NONE, ENC_AESGCM = 0, 1
NONCE_SIZE = 12
TAG_SIZE = 16
DEFAULT_LEVEL = 3
# A compression setting for chunks that must be framed fast (a sequential write that the
# framing holds back): zstd's "fast" strategy with a 512-entry match table (it stays in the
# L1 cache) and matches of 7 bytes or more. zstd's negative levels gain speed by leaving the
# literals without entropy coding, which is most of what text saves; this keeps that and
# gives up on matches far apart instead. Any zstd decoder reads its frames. Measured (one
# core, 1 MiB chunks): 15-26% faster than level 1 on source code and logs for frames 0-28%
# larger; 2.2x faster on bench/fs.py's text half (docs/benchmarks.md).
FAST = "fast"
Level = int | str
_FAST_PARAMS = {"window_log": 19, "chain_log": 12, "hash_log": 9, "search_log": 1,
                "min_match": 7, "target_length": 0, "strategy": zstandard.STRATEGY_FAST}  # fmt: skip

_HEADER = struct.Struct(">4sBB8sI")
HEADER_SIZE = _HEADER.size  # 18
_NO_KEY = bytes(KEY_ID_SIZE)
# Keep the compressed form only when it saves at least 1/32 of the chunk: below that the
# saving is not worth a decompression on every read.
_MIN_SAVING_SHIFT = 5

# Compressibility probe: chunks of at least _PROBE_MIN bytes are sampled first.
_PROBE_SAMPLE = 8 * 1024
_PROBE_COUNT = 4
_PROBE_MIN = 64 * 1024
_ZSTD_FHD = 4  # offset of the zstd frame header descriptor, after its 4-byte magic

_local = threading.local()


def _compressor(level: Level) -> zstandard.ZstdCompressor:
    # zstandard objects must not be used by two threads at once; one per thread and level.
    cache: dict[Level, zstandard.ZstdCompressor] = _local.__dict__.setdefault("c", {})
    c = cache.get(level)
    if c is None:
        if level == FAST:
            params = zstandard.ZstdCompressionParameters(**_FAST_PARAMS, write_content_size=True)
            c = zstandard.ZstdCompressor(compression_params=params)
        elif isinstance(level, int):
            c = zstandard.ZstdCompressor(level=level, write_content_size=True)
        else:
            raise ValueError(f"unknown compression level {level!r}")
        cache[level] = c
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor()
    return d


@dataclass(frozen=True)
class FrameInfo:
    version: int
    compression: int
    encryption: int
    key_id: bytes
    plain_len: int

    @property
    def encrypted(self) -> bool:
        return self.encryption != ENC_NONE


def peek(frame: bytes | memoryview) -> FrameInfo:
    """Parse and check the header only (magic, version, flags, length bounds)."""
    if len(frame) < HEADER_SIZE:
        raise FrameCorrupt("frame shorter than its header")
    magic, version, flags, kid, plain_len = _HEADER.unpack_from(frame)
    if magic != MAGIC:
        raise FrameCorrupt("not a chunk frame (bad magic)")
    if version != VERSION:
        raise UnknownVersion(f"frame version {version} is not supported")
    comp, enc = flags & 0b11, (flags >> 2) & 0b11
    if flags >> 4 or comp > COMP_ZSTD or enc > ENC_AESGCM:
        raise FrameCorrupt("frame has unknown flags")
    if plain_len > MAX_PLAIN:
        raise FrameCorrupt("frame claims an oversized chunk")
    if (enc == ENC_NONE) != (kid == _NO_KEY):
        raise FrameCorrupt("key id does not match the encryption flag")
    return FrameInfo(version, comp, enc, kid, plain_len)


def _header(comp: int, enc: int, kid: bytes, plain_len: int) -> bytes:
    return _HEADER.pack(MAGIC, VERSION, comp | (enc << 2), kid, plain_len)


def _saves_enough(packed_len: int, plain_len: int) -> bool:
    return packed_len < plain_len - (plain_len >> _MIN_SAVING_SHIFT)


def _looks_incompressible(data: ids.Buffer, level: Level) -> bool:
    """A cheap guess, from a few samples, that zstd will not save enough on ``data``.

    Compressing a whole incompressible chunk (media, archives, encrypted files) costs about as
    much as chunking and hashing it together; compressing 4 x 8 KiB samples costs ~3% of that.
    A wrong guess only stores a chunk raw (valid, a little larger), never corrupts it.
    """
    n = len(data)
    if n < _PROBE_MIN:
        return False
    view = memoryview(data)
    step = (n - _PROBE_SAMPLE) // (_PROBE_COUNT - 1)
    c = _compressor(level)
    # Each sample is its own zstd frame, so one cannot match another and make random data
    # look compressible.
    packed = sum(
        len(c.compress(view[i * step : i * step + _PROBE_SAMPLE])) for i in range(_PROBE_COUNT)
    )
    return not _saves_enough(packed, _PROBE_SAMPLE * _PROBE_COUNT)


def _compress(data: ids.Buffer, level: Level | None) -> tuple[int, ids.Buffer]:
    """(COMP_ZSTD, packed) when zstd saves at least 1/32 of the chunk, else (COMP_NONE, data)."""
    if level is None or _looks_incompressible(data, level):
        return COMP_NONE, data
    packed = _compressor(level).compress(data)
    if _saves_enough(len(packed), len(data)):
        return COMP_ZSTD, packed
    return COMP_NONE, data


def encode(
    cid: bytes,
    plaintext: bytes | bytearray | memoryview,
    *,
    level: Level | None = DEFAULT_LEVEL,
    key: DataKey | None = None,
) -> bytes:
    """Frame one chunk. ``level`` is a zstd level or ``FAST``; ``None`` disables compression;
    ``key`` enables encryption.

    ``cid`` is the chunk's id (bound into the encryption); it is not recomputed here.
    """
    if len(plaintext) > MAX_PLAIN:
        raise ValueError("chunk larger than the frame format allows")
    if len(cid) != ids.ID_SIZE:
        raise ValueError("chunk id must be 32 bytes")
    comp, payload = _compress(plaintext, level)
    if key is None:
        return b"".join((_header(comp, ENC_NONE, _NO_KEY, len(plaintext)), payload))
    return _seal(_header(comp, ENC_AESGCM, key.key_id, len(plaintext)), payload, cid, key)


def _seal(header: bytes, payload: ids.Buffer, cid: bytes, key: DataKey) -> bytes:
    nonce = os.urandom(NONCE_SIZE)
    head = header + nonce
    return head + key.aead.encrypt(nonce, payload, head + cid)


def _open(frame: bytes | memoryview, info: FrameInfo, cid: bytes, keys: Keyring) -> bytes:
    key = keys.get(info.key_id)
    if key is None:
        raise UnknownKey(f"no key with id {info.key_id.hex()}")
    head_len = HEADER_SIZE + NONCE_SIZE
    if len(frame) < head_len + TAG_SIZE:
        raise FrameCorrupt("encrypted frame is truncated")
    head = bytes(frame[:head_len])
    try:
        return key.aead.decrypt(head[HEADER_SIZE:], bytes(frame[head_len:]), head + cid)
    except InvalidTag:
        raise FrameCorrupt("frame failed authentication (altered, truncated or wrong id)") from None


def _inflate(payload: bytes | memoryview, info: FrameInfo) -> bytes:
    if info.compression == COMP_NONE:
        if len(payload) != info.plain_len:
            raise FrameCorrupt("stored payload length does not match the header")
        return bytes(payload)
    # zstd decoders ignore the frame header descriptor's unused bit (0x10); insist on zero so
    # that no bit of a stored frame can change without being noticed.
    if len(payload) > _ZSTD_FHD and payload[_ZSTD_FHD] & 0x18:
        raise FrameCorrupt("zstd frame header has reserved bits set")
    # The decoder sizes its output from the zstd frame's own content size, so check it against
    # the (bounded) header first: a forged size must not become a huge allocation.
    try:
        content_size = zstandard.frame_content_size(payload)
    except zstandard.ZstdError:
        raise FrameCorrupt("compressed payload has no valid zstd frame header") from None
    if content_size != info.plain_len:
        raise FrameCorrupt("zstd content size does not match the header")
    try:
        # allow_extra_data=False: bytes after the zstd frame are tampering, not padding.
        out = _decompressor().decompress(
            payload, max_output_size=info.plain_len, allow_extra_data=False
        )
    except zstandard.ZstdError as e:
        raise FrameCorrupt(f"compressed payload does not decode: {e}") from None
    if len(out) != info.plain_len:
        raise FrameCorrupt("decompressed length does not match the header")
    return out


def decode(
    frame: bytes | memoryview,
    cid: bytes,
    *,
    keys: Keyring | None = None,
    dedupe_key: bytes | None = None,
) -> bytes:
    """Return the verified plaintext of ``frame`` stored under chunk id ``cid``.

    Encrypted frames need their key in ``keys``; plain frames need ``dedupe_key`` so the id can
    be recomputed (with it, encrypted frames are checked against the id as well).
    Raises ``FrameCorrupt``, ``UnknownVersion``, ``UnknownKey`` or ``IdMismatch``.
    """
    info = peek(frame)
    if info.encrypted:
        payload: bytes | memoryview = _open(frame, info, cid, keys or {})
    elif dedupe_key is None:
        raise TypeError("decoding a plain frame needs the dedupe key to verify the chunk id")
    else:
        payload = memoryview(frame)[HEADER_SIZE:]
    plain = _inflate(payload, info)
    if dedupe_key is not None and ids.chunk_id(dedupe_key, plain) != cid:
        raise IdMismatch("chunk does not match its id")
    return plain


def encrypt_frame(frame: bytes | memoryview, cid: bytes, key: DataKey) -> bytes:
    """Encrypt a plain frame under ``key`` without recompressing it.

    The caller has verified the frame (``decode`` with the dedupe key) beforehand.
    """
    info = peek(frame)
    if info.encrypted:
        raise ValueError("frame is already encrypted")
    header = _header(info.compression, ENC_AESGCM, key.key_id, info.plain_len)
    return _seal(header, memoryview(frame)[HEADER_SIZE:], cid, key)


def decrypt_frame(frame: bytes | memoryview, cid: bytes, keys: Keyring) -> bytes:
    """Turn an encrypted frame into the plain frame of the same payload (authenticated)."""
    info = peek(frame)
    if not info.encrypted:
        return bytes(frame)
    payload = _open(frame, info, cid, keys)
    return _header(info.compression, ENC_NONE, _NO_KEY, info.plain_len) + payload
