"""Data keys, key ids and passphrase-wrapped keys."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cairn.core import keys
from cairn.core.errors import FormatError, UnknownVersion, WrongPassphrase
from cairn.core.keys import DataKey

# Argon2id at its smallest: keeps the tier fast. One test runs the production parameters.
FAST = {"time_cost": 1, "memory_kib": 64, "lanes": 1}
SECRET = bytes(range(32))
BLOB_SIZE = struct.calcsize(">4sBIIB16s12s") + 32 + 16


def test_key_id_is_stable_and_pinned() -> None:
    """Pinned: a change here is a format change (docs/format.md)."""
    k = DataKey(SECRET)
    assert k.key_id == keys.key_id(SECRET) == DataKey(bytes(SECRET)).key_id
    assert len(k.key_id) == keys.KEY_ID_SIZE
    assert k.key_id.hex() == KEY_ID_OF_0_TO_31


KEY_ID_OF_0_TO_31 = "5f72eb9cf55144aa"


@settings(deadline=None)  # no timing assertions; the machine is shared
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_different_keys_have_different_ids(a: bytes, b: bytes) -> None:
    if a != b:
        assert keys.key_id(a) != keys.key_id(b)


def test_key_id_does_not_reveal_the_key() -> None:
    assert DataKey(SECRET).key_id not in SECRET
    assert "secret" not in repr(DataKey(SECRET)) and SECRET.hex() not in repr(DataKey(SECRET))


def test_generated_keys_are_random() -> None:
    ks = {DataKey.generate().secret for _ in range(8)}
    assert len(ks) == 8 and all(len(s) == 32 for s in ks)


@pytest.mark.parametrize("n", [0, 16, 31, 33])
def test_data_key_must_be_32_bytes(n: int) -> None:
    with pytest.raises(ValueError):
        DataKey(bytes(n))


def test_keyring_maps_ids_to_keys() -> None:
    a, b = DataKey.generate(), DataKey.generate()
    assert keys.keyring(a, b) == {a.key_id: a, b.key_id: b}


@settings(max_examples=20, deadline=None)
@given(st.one_of(st.text(max_size=40), st.binary(max_size=40)))
def test_wrap_unwrap_round_trip(passphrase: str | bytes) -> None:
    k = DataKey.generate()
    blob = keys.wrap_key(k, passphrase, **FAST)
    assert len(blob) == BLOB_SIZE
    assert keys.unwrap_key(blob, passphrase) == k
    assert k.secret not in blob


def test_wrapping_twice_gives_different_blobs() -> None:
    k = DataKey(SECRET)
    assert keys.wrap_key(k, "pw", **FAST) != keys.wrap_key(k, "pw", **FAST)


def test_str_and_utf8_passphrases_are_the_same() -> None:
    blob = keys.wrap_key(DataKey(SECRET), "pässwörd", **FAST)
    assert keys.unwrap_key(blob, "pässwörd".encode()).secret == SECRET


@pytest.mark.parametrize("wrong", ["", "pw ", "PW", "pw\x00"])
def test_wrong_passphrase(wrong: str) -> None:
    blob = keys.wrap_key(DataKey(SECRET), "pw", **FAST)
    with pytest.raises(WrongPassphrase):
        keys.unwrap_key(blob, wrong)


def _with_header(blob: bytes, **fields: int) -> bytes:
    magic, version, t, m, p, salt, nonce = struct.unpack_from(">4sBIIB16s12s", blob)
    return (
        struct.pack(
            ">4sBIIB16s12s",
            magic,
            fields.get("version", version),
            fields.get("t", t),
            fields.get("m", m),
            fields.get("p", p),
            salt,
            nonce,
        )
        + blob[struct.calcsize(">4sBIIB16s12s") :]
    )


def test_every_tampered_byte_is_detected() -> None:
    blob = keys.wrap_key(DataKey(SECRET), "pw", **FAST)
    for i in range(len(blob)):
        for bit in (0, 7):
            bad = bytearray(blob)
            bad[i] ^= 1 << bit
            # magic -> FormatError; version -> UnknownVersion; KDF parameters -> FormatError or
            # (when still in range) a different KEK; salt, nonce, ciphertext, tag -> bad tag
            with pytest.raises((FormatError, UnknownVersion, WrongPassphrase)):
                keys.unwrap_key(bytes(bad), "pw")


def test_unknown_version() -> None:
    blob = keys.wrap_key(DataKey(SECRET), "pw", **FAST)
    with pytest.raises(UnknownVersion):
        keys.unwrap_key(_with_header(blob, version=2), "pw")


@pytest.mark.parametrize(
    "fields",
    [{"t": 0}, {"t": 65}, {"p": 0}, {"m": 7}, {"m": 1024 * 1024 + 1}, {"m": 8, "p": 2}],
)
def test_out_of_range_kdf_parameters_are_refused_without_running_argon2(
    fields: dict[str, int],
) -> None:
    blob = keys.wrap_key(DataKey(SECRET), "pw", **FAST)
    with pytest.raises(FormatError, match="out-of-range"):
        keys.unwrap_key(_with_header(blob, **fields), "pw")


@pytest.mark.parametrize("cut", [0, 4, 20, BLOB_SIZE - 1])
def test_wrong_length_and_magic(cut: int) -> None:
    blob = keys.wrap_key(DataKey(SECRET), "pw", **FAST)
    with pytest.raises(FormatError):
        keys.unwrap_key(blob[:cut], "pw")
    with pytest.raises(FormatError):
        keys.unwrap_key(blob + b"\x00", "pw")
    with pytest.raises(FormatError, match="magic"):
        keys.unwrap_key(b"XXXX" + blob[4:], "pw")


def test_wrap_refuses_bad_parameters() -> None:
    with pytest.raises(ValueError):
        keys.wrap_key(DataKey(SECRET), "pw", time_cost=0, memory_kib=64, lanes=1)


@pytest.mark.slow
def test_production_parameters_round_trip() -> None:
    k = DataKey.generate()
    blob = keys.wrap_key(k, "correct horse battery staple")
    t, m, p = struct.unpack_from(">II B", blob, 5)
    assert (t, m, p) == (keys.ARGON2_TIME, keys.ARGON2_MEMORY_KIB, keys.ARGON2_LANES)
    assert keys.unwrap_key(blob, "correct horse battery staple") == k
    with pytest.raises(WrongPassphrase):
        keys.unwrap_key(blob, "correct horse battery stapl")
