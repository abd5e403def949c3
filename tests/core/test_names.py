"""The name rule (core/names.py)."""

from __future__ import annotations

import pytest

from cairn.core.errors import InvalidArgument, InvalidName
from cairn.core.names import check_name, is_valid_name, name_from_bytes, split_path


@pytest.mark.parametrize("name", ["a", "a.txt", "Ünïcödé 名前", "x" * 255, "é" * 127, "..."])
def test_valid_names_pass_unchanged(name: str) -> None:
    assert check_name(name) is name
    assert is_valid_name(name)


@pytest.mark.parametrize(
    "name, why",
    [
        ("", "not a valid"),
        (".", "not a valid"),
        ("..", "not a valid"),
        ("a/b", "'/'"),
        ("a\x00b", "NUL"),
        ("x" * 256, "256 bytes"),
        ("é" * 128, "256 bytes"),
        ("bad\udcffname", "UTF-8"),
        (b"bytes", "string"),
        (None, "string"),
    ],
)
def test_invalid_names_raise_invalid_name(name: object, why: str) -> None:
    with pytest.raises(InvalidName, match=why):
        check_name(name)
    assert not is_valid_name(name)


def test_invalid_name_is_an_invalid_argument() -> None:
    # The HTTP layer maps both to 400; code differs so clients can tell them apart.
    assert issubclass(InvalidName, InvalidArgument)
    assert InvalidName.code == "invalid_name"


def test_name_from_bytes_decodes_strictly() -> None:
    assert name_from_bytes("café".encode()) == "café"
    with pytest.raises(InvalidName, match="UTF-8"):
        name_from_bytes(b"\xff\xfe")
    with pytest.raises(InvalidName):
        name_from_bytes(b"..")


def test_split_path() -> None:
    assert split_path("/") == []
    assert split_path("/a/b") == ["a", "b"]
    assert split_path("//a///b/") == ["a", "b"]
    for bad in ["a/b", "", "/a/../b", "/./a", 5, "/" + "x" * 5000]:
        with pytest.raises(InvalidName):
            split_path(bad)
