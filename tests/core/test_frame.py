"""Chunk frames: round trips for every flag combination, and every tamper class rejected."""

from __future__ import annotations

import os
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cairn.core import frame, ids
from cairn.core.errors import FrameCorrupt, FrameError, IdMismatch, UnknownKey, UnknownVersion
from cairn.core.keys import DataKey, keyring

DEDUPE = bytes(range(32))
KEY = DataKey(bytes(range(100, 132)))
OTHER = DataKey(bytes(range(200, 232)))
KEYS = keyring(KEY)
TEXT = b"".join(b"line %d of a compressible chunk, words words words\n" % i for i in range(8))
RANDOM = random.Random(1).randbytes(300)

COMBOS = [(level, key) for level in (None, 3, frame.FAST) for key in (None, KEY)]
COMBO_IDS = ["plain-raw", "aes-raw", "plain-zstd", "aes-zstd", "plain-fast", "aes-fast"]


def _encode(data: bytes, level: frame.Level | None, key: DataKey | None) -> tuple[bytes, bytes]:
    cid = ids.chunk_id(DEDUPE, data)
    return cid, frame.encode(cid, data, level=level, key=key)


def _decode(f: bytes, cid: bytes) -> bytes:
    return frame.decode(f, cid, keys=KEYS, dedupe_key=DEDUPE)


@pytest.mark.parametrize("level, key", COMBOS, ids=COMBO_IDS)
@pytest.mark.parametrize("data", [b"", b"x", TEXT, RANDOM, TEXT * 4000], ids=len)
def test_round_trip(level: int | None, key: DataKey | None, data: bytes) -> None:
    cid, f = _encode(data, level, key)
    assert _decode(f, cid) == data
    info = frame.peek(f)
    assert info.plain_len == len(data)
    assert info.encrypted == (key is not None)
    assert info.key_id == (key.key_id if key else bytes(8))
    compressed = level is not None and data in (TEXT, TEXT * 4000)
    assert info.compression == (frame.COMP_ZSTD if compressed else frame.COMP_NONE)
    if key is not None:
        assert frame.decode(f, cid, keys=KEYS) == data  # the tag alone verifies it
        assert data[:16] not in f[frame.HEADER_SIZE :] or len(data) < 16


@settings(deadline=None)  # no timing assertions; the machine is shared
@given(st.binary(max_size=3000), st.sampled_from(COMBOS))
def test_round_trip_any_bytes(data: bytes, combo: tuple[int | None, DataKey | None]) -> None:
    cid, f = _encode(data, *combo)
    assert _decode(f, cid) == data


@pytest.mark.parametrize("key", [None, KEY])
def test_incompressible_data_is_stored_raw(key: DataKey | None) -> None:
    data = os.urandom(64 * 1024)
    cid, f = _encode(data, 3, key)
    overhead = frame.HEADER_SIZE + (frame.NONCE_SIZE + frame.TAG_SIZE if key else 0)
    assert len(f) == len(data) + overhead
    assert frame.peek(f).compression == frame.COMP_NONE


def test_compression_shrinks_text() -> None:
    cid, f = _encode(TEXT * 100, 3, None)
    assert len(f) < len(TEXT * 100) // 4
    cid, f = _encode(TEXT * 100, frame.FAST, None)
    assert len(f) < len(TEXT * 100) // 4


def test_unknown_compression_setting_is_refused() -> None:
    with pytest.raises(ValueError):
        frame.encode(ids.chunk_id(DEDUPE, TEXT), TEXT, level="fastest")


def test_encrypt_and_decrypt_frame_keep_the_payload() -> None:
    cid, plain = _encode(TEXT, 3, None)
    sealed = frame.encrypt_frame(plain, cid, KEY)
    assert frame.peek(sealed).encrypted and frame.peek(sealed).compression == frame.COMP_ZSTD
    assert _decode(sealed, cid) == TEXT
    assert frame.decrypt_frame(sealed, cid, KEYS) == plain
    assert frame.decrypt_frame(plain, cid, KEYS) == plain
    with pytest.raises(ValueError):
        frame.encrypt_frame(sealed, cid, KEY)
    with pytest.raises(FrameCorrupt):
        frame.decrypt_frame(sealed, ids.chunk_id(DEDUPE, b"other"), KEYS)


def test_nonces_are_fresh() -> None:
    cid = ids.chunk_id(DEDUPE, TEXT)
    frames = {frame.encode(cid, TEXT, key=KEY) for _ in range(16)}
    assert len(frames) == 16


# --- tampering ---------------------------------------------------------------------------

_N = frame.NONCE_SIZE


def _expected(encrypted: bool, offset: int, bit: int, length: int) -> tuple[type, ...]:
    """Which typed errors a bit flipped at ``offset`` may raise."""
    if offset < 4:
        return (FrameCorrupt,)
    if offset == 4:
        return (UnknownVersion,)
    if offset == 5:
        return (FrameCorrupt, IdMismatch) if bit < 2 and not encrypted else (FrameCorrupt,)
    if offset < 14:
        return (UnknownKey,) if encrypted else (FrameCorrupt,)
    if offset >= frame.HEADER_SIZE and not encrypted:
        # payload: raw bytes hash to another id, zstd bytes fail to decode or hash wrong
        return (FrameCorrupt, IdMismatch)
    return (FrameCorrupt,)  # length, nonce, ciphertext, tag


@pytest.mark.parametrize("level, key", COMBOS, ids=COMBO_IDS)
def test_every_flipped_bit_is_detected(level: int | None, key: DataKey | None) -> None:
    cid, f = _encode(TEXT, level, key)
    for offset in range(len(f)):
        for bit in range(8):
            bad = bytearray(f)
            bad[offset] ^= 1 << bit
            allowed = _expected(key is not None, offset, bit, len(f))
            with pytest.raises(allowed):
                _decode(bytes(bad), cid)


@pytest.mark.parametrize("level, key", COMBOS, ids=COMBO_IDS)
def test_every_truncation_is_detected(level: int | None, key: DataKey | None) -> None:
    cid, f = _encode(TEXT, level, key)
    for n in range(len(f)):
        with pytest.raises(FrameCorrupt):
            _decode(f[:n], cid)


@pytest.mark.parametrize("level, key", COMBOS, ids=COMBO_IDS)
@pytest.mark.parametrize("extra", [b"\x00", b"junk", bytes(100)], ids=len)
def test_trailing_bytes_are_detected(level: int | None, key: DataKey | None, extra: bytes) -> None:
    cid, f = _encode(TEXT, level, key)
    with pytest.raises(FrameCorrupt):
        _decode(f + extra, cid)


@pytest.mark.parametrize("level", [None, 3])
def test_wrong_or_missing_key(level: int | None) -> None:
    cid, f = _encode(TEXT, level, KEY)
    for keys in ({}, keyring(OTHER), None):
        with pytest.raises(UnknownKey):
            frame.decode(f, cid, keys=keys)


@pytest.mark.parametrize("level, key", COMBOS, ids=COMBO_IDS)
def test_wrong_chunk_id(level: int | None, key: DataKey | None) -> None:
    cid, f = _encode(TEXT, level, key)
    other = ids.chunk_id(DEDUPE, b"another chunk")
    # encrypted: the id is associated data, so the tag fails; plain: the hash differs
    with pytest.raises(FrameCorrupt if key else IdMismatch):
        _decode(f, other)


def test_encrypted_frame_made_under_a_lying_id_is_caught_with_the_dedupe_key() -> None:
    liar = ids.chunk_id(DEDUPE, b"what the sender claimed")
    f = frame.encode(liar, TEXT, key=KEY)
    assert frame.decode(f, liar, keys=KEYS) == TEXT  # the key holder vouched for it
    with pytest.raises(IdMismatch):
        frame.decode(f, liar, keys=KEYS, dedupe_key=DEDUPE)


def _reheader(f: bytes, **fields: int) -> bytes:
    magic, version, flags, kid, plain_len = struct.unpack_from(">4sBB8sI", f)
    version = fields.get("version", version)
    flags = fields.get("flags", flags)
    plain_len = fields.get("plain_len", plain_len)
    return struct.pack(">4sBB8sI", magic, version, flags, kid, plain_len) + f[18:]


@pytest.mark.parametrize("key", [None, KEY])
@pytest.mark.parametrize("version", [0, 2, 255])
def test_unknown_version(key: DataKey | None, version: int) -> None:
    cid, f = _encode(TEXT, 3, key)
    with pytest.raises(UnknownVersion):
        _decode(_reheader(f, version=version), cid)


@pytest.mark.parametrize("key", [None, KEY])
@pytest.mark.parametrize("flags_or", [0x10, 0x20, 0x40, 0x80, 0x02, 0x08])
def test_reserved_or_unknown_flags(key: DataKey | None, flags_or: int) -> None:
    cid, f = _encode(TEXT, 3, key)
    flags = frame.peek(f).compression | (frame.peek(f).encryption << 2)
    with pytest.raises(FrameCorrupt):
        _decode(_reheader(f, flags=flags | flags_or), cid)


@pytest.mark.parametrize("key", [None, KEY])
def test_oversized_length(key: DataKey | None) -> None:
    cid, f = _encode(TEXT, None, key)
    with pytest.raises(FrameCorrupt, match="oversized"):
        _decode(_reheader(f, plain_len=frame.MAX_PLAIN + 1), cid)
    with pytest.raises(FrameCorrupt, match="oversized"):
        _decode(_reheader(f, plain_len=2**32 - 1), cid)


def test_encode_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        frame.encode(ids.chunk_id(DEDUPE, b""), bytes(frame.MAX_PLAIN + 1))
    with pytest.raises(ValueError):
        frame.encode(b"short id", b"data")


def test_plain_frame_needs_the_dedupe_key() -> None:
    cid, f = _encode(TEXT, 3, None)
    with pytest.raises(TypeError):
        frame.decode(f, cid)


@settings(deadline=None)  # no timing assertions; the machine is shared
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_decode(junk: bytes) -> None:
    cid = ids.chunk_id(DEDUPE, junk)
    with pytest.raises(FrameError):
        _decode(junk, cid)


@settings(deadline=None)  # no timing assertions; the machine is shared
@given(st.binary(max_size=100))
def test_arbitrary_bytes_after_a_valid_header_never_decode(junk: bytes) -> None:
    cid, f = _encode(TEXT, 3, KEY)
    with pytest.raises(FrameError):
        _decode(f[: frame.HEADER_SIZE + _N] + junk, cid)


def test_compressibility_probe_decides_for_large_chunks() -> None:
    """Chunks >= 64 KiB are sampled at 4 places; the guess only picks raw vs zstd storage."""
    rnd = random.Random(3).randbytes(256 * 1024)
    text = (TEXT * 3000)[: 256 * 1024]
    # text everywhere but at the sampled places: the probe says raw, and raw it is
    step = (len(rnd) - 8192) // 3
    mostly_text = bytearray(text)
    for i in range(4):
        mostly_text[i * step : i * step + 8192] = rnd[i * step : i * step + 8192]
    for data, comp in (
        (text, frame.COMP_ZSTD),
        (rnd, frame.COMP_NONE),
        (mostly_text, frame.COMP_NONE),
    ):
        cid, f = _encode(bytes(data), 3, KEY)
        assert frame.peek(f).compression == comp
        assert _decode(f, cid) == data
