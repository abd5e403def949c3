"""The name rule shared by the drive and the server.

A name (one path component) is a ``str`` whose UTF-8 form is 1..255 bytes long and holds
neither ``/`` nor NUL, and which is not ``.`` or ``..``. Names are compared byte-exact:
no case folding and no Unicode normalization, so a case-only rename is a real rename.

Every function here raises :class:`cairn.core.errors.InvalidName` for a name that breaks the
rule, with a message that says which part of the rule (never echoing an unbounded input).
"""

from __future__ import annotations

from .errors import InvalidName

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096


def _describe(name: str) -> str:
    return repr(name if len(name) <= 40 else name[:40] + "...")


def check_name(name: object) -> str:
    """Return ``name`` unchanged if it is a valid name, else raise ``InvalidName``."""
    if not isinstance(name, str):
        raise InvalidName("a name must be a string")
    if name in ("", ".", ".."):
        raise InvalidName(f"{name!r} is not a valid name")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        # Lone surrogates: the string has no UTF-8 form, so no other device could store it.
        raise InvalidName(f"name {_describe(name)} is not valid UTF-8") from None
    if size > MAX_NAME_BYTES:
        raise InvalidName(f"name is {size} bytes of UTF-8, at most {MAX_NAME_BYTES} allowed")
    if "/" in name:
        raise InvalidName(f"name {_describe(name)} contains '/'")
    if "\x00" in name:
        raise InvalidName(f"name {_describe(name)} contains NUL")
    return name


def name_from_bytes(raw: bytes) -> str:
    """Decode a name as the kernel hands it over (bytes) and check it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidName("name is not valid UTF-8") from None
    return check_name(text)


def is_valid_name(name: object) -> bool:
    try:
        check_name(name)
    except InvalidName:
        return False
    return True


def split_path(path: object) -> list[str]:
    """Split an absolute path (``/a/b``) into checked names; ``/`` gives ``[]``.

    Repeated and trailing slashes are ignored; ``.`` and ``..`` are refused rather than
    interpreted, so a path names exactly one chain of directory entries.
    """
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidName("a path must be a string starting with '/'")
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidName("path is not valid UTF-8") from None
    if size > MAX_PATH_BYTES:
        raise InvalidName(f"path is {size} bytes of UTF-8, at most {MAX_PATH_BYTES} allowed")
    return [check_name(part) for part in path.split("/") if part]
