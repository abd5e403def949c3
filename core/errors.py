"""The exception hierarchy of Cairn.

Every layer raises these; each boundary translates them exactly once:
``cairn.fs.errmap`` to an errno, ``cairn.server`` to an HTTP status with a JSON body
``{"error": code, "message": ...}``, the command-line tools to a one-line message and a
non-zero exit status. ``code`` is the stable machine-readable name used on the wire.
"""

from __future__ import annotations


class CairnError(Exception):
    """Base of every error Cairn raises on purpose."""

    code = "error"


# --- bytes that do not decode -------------------------------------------------------------


class FormatError(CairnError):
    """Bytes that are not a valid object of a Cairn format (frame, wrapped key, ...)."""

    code = "bad_format"


class FrameError(FormatError):
    """A chunk frame failed to decode; never returns partial or unverified bytes."""

    code = "bad_frame"


class FrameCorrupt(FrameError):
    """Bad magic, truncated, trailing bytes, reserved flags set, or failed authentication."""

    code = "frame_corrupt"


class UnknownVersion(FrameError):
    """A frame (or other versioned object) of a version this code does not know."""

    code = "unknown_version"


class UnknownKey(FrameError):
    """The frame's key id names no key this reader holds."""

    code = "unknown_key"


class IdMismatch(FrameError):
    """The plaintext does not hash to the chunk id the frame was stored or sent under."""

    code = "id_mismatch"


class WrongPassphrase(FormatError):
    """A wrapped key did not open with the given passphrase (or the blob was altered)."""

    code = "wrong_passphrase"


# --- domain errors shared by the server and the drive ------------------------------------


class InvalidArgument(CairnError):
    code = "invalid_argument"


class InvalidName(InvalidArgument):
    """A file name breaks the name rules (empty, '.', '..', '/', NUL, > 255 bytes UTF-8)."""

    code = "invalid_name"


class NotFound(CairnError):
    code = "not_found"


class AlreadyExists(CairnError):
    code = "already_exists"


class NotADirectory(CairnError):
    code = "not_a_directory"


class IsADirectory(CairnError):
    code = "is_a_directory"


class DirectoryNotEmpty(CairnError):
    code = "directory_not_empty"


class Conflict(CairnError):
    """The base revision an operation started from is no longer the head."""

    code = "conflict"


class PermissionDenied(CairnError):
    code = "forbidden"


class Unauthenticated(CairnError):
    code = "unauthenticated"


class QuotaExceeded(CairnError):
    code = "quota_exceeded"


class TooLarge(CairnError):
    """A body, batch, name or value exceeds a configured bound."""

    code = "too_large"


class RateLimited(CairnError):
    code = "rate_limited"


class Unavailable(CairnError):
    """A remote part (server, blob store, database) cannot be reached right now; retryable."""

    code = "unavailable"


class ConfigError(CairnError):
    """A configuration key is missing or wrong; the message names the key."""

    code = "config_error"
