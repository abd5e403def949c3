"""Chunk ids: keyed BLAKE3, hex text form."""

from __future__ import annotations

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cairn.core import ids

keys_st = st.binary(min_size=32, max_size=32)


@settings(deadline=None)  # no timing assertions; the machine is shared
@given(keys_st, st.binary(max_size=5000))
def test_id_is_keyed_blake3_of_the_plaintext(key: bytes, data: bytes) -> None:
    cid = ids.chunk_id(key, data)
    assert len(cid) == ids.ID_SIZE
    assert cid == blake3.blake3(data, key=key).digest()
    assert cid == ids.chunk_id(key, memoryview(data)) == ids.chunk_id(key, bytearray(data))


@settings(deadline=None)  # no timing assertions; the machine is shared
@given(keys_st, keys_st, st.binary(max_size=2000))
def test_other_key_gives_other_id(k1: bytes, k2: bytes, data: bytes) -> None:
    if k1 != k2:
        assert ids.chunk_id(k1, data) != ids.chunk_id(k2, data)


@settings(deadline=None)  # no timing assertions; the machine is shared
@given(keys_st, st.binary(max_size=500), st.binary(max_size=500))
def test_other_data_gives_other_id(key: bytes, a: bytes, b: bytes) -> None:
    if a != b:
        assert ids.chunk_id(key, a) != ids.chunk_id(key, b)


def test_id_is_not_the_unkeyed_hash() -> None:
    key = ids.new_dedupe_key()
    assert ids.chunk_id(key, b"secret") != blake3.blake3(b"secret").digest()


def test_known_vector() -> None:
    """Pins the scheme: a change here is a format change (docs/format.md)."""
    assert (
        ids.to_hex(ids.chunk_id(bytes(range(32)), b"cairn"))
        == blake3.blake3(b"cairn", key=bytes(range(32))).hexdigest()
    )


@pytest.mark.parametrize("bad", [b"", bytes(31), bytes(33)])
def test_dedupe_key_must_be_32_bytes(bad: bytes) -> None:
    with pytest.raises(ValueError):
        ids.chunk_id(bad, b"x")
    with pytest.raises(ValueError):
        ids.derive_dedupe_key(bad)


def test_new_dedupe_keys_are_random() -> None:
    assert len({ids.new_dedupe_key() for _ in range(8)}) == 8


def test_private_dedupe_key_is_derived_one_way() -> None:
    vk = bytes(range(32))
    dk = ids.derive_dedupe_key(vk)
    assert len(dk) == 32 and dk != vk
    assert dk == ids.derive_dedupe_key(vk)
    assert dk != ids.derive_dedupe_key(bytes(32))


@settings(deadline=None)  # no timing assertions; the machine is shared
@given(st.binary(min_size=32, max_size=32))
def test_hex_round_trip(cid: bytes) -> None:
    text = ids.to_hex(cid)
    assert ids.is_hex_id(text)
    assert ids.from_hex(text) == cid


@pytest.mark.parametrize(
    "bad",
    ["", "0" * 63, "0" * 65, "A" * 64, "g" * 64, " " + "0" * 63, "0" * 64 + "\n", b"0" * 64, None],
)
def test_hex_rejects_everything_else(bad: object) -> None:
    assert not ids.is_hex_id(bad)
    with pytest.raises(ValueError):
        ids.from_hex(bad)  # type: ignore[arg-type]
