"""The ONE place where the drive turns errors into errno values for the kernel.

``fs/ops.py`` raises ``cairn.core.errors`` types (plus the two drive-only ones below) and
wraps every handler in :func:`translate`; lower layers raise ``OSError`` for local I/O
trouble. Anything else is a bug: it is logged with its traceback once and becomes EIO, so
the kernel never sees a hang or a crashed request.
"""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import pyfuse3

from cairn.core import errors as E

log = logging.getLogger("cairn.fs.ops")


class NotSupported(E.CairnError):
    """The drive does not do this (non-``user.*`` xattrs, device nodes, ...)."""

    code = "not_supported"


class NameTooLong(E.InvalidName):
    code = "name_too_long"


class NoAttribute(E.NotFound):
    """No such extended attribute (ENODATA, not ENOENT)."""

    code = "no_attribute"


class ChunkMissing(E.CairnError):
    """A blocklist names a chunk that is neither cached nor on the server (EIO)."""

    code = "chunk_missing"


class TooManyLinks(E.CairnError):
    code = "too_many_links"


# Most specific first: the first isinstance match wins.
_TABLE: list[tuple[type[BaseException], int]] = [
    (NoAttribute, errno.ENODATA),
    (NameTooLong, errno.ENAMETOOLONG),
    (NotSupported, errno.ENOTSUP),
    (TooManyLinks, errno.EMLINK),
    (E.NotFound, errno.ENOENT),
    (E.AlreadyExists, errno.EEXIST),
    (E.NotADirectory, errno.ENOTDIR),
    (E.IsADirectory, errno.EISDIR),
    (E.DirectoryNotEmpty, errno.ENOTEMPTY),
    (E.PermissionDenied, errno.EPERM),
    (E.QuotaExceeded, errno.EDQUOT),
    (E.TooLarge, errno.E2BIG),
    (E.InvalidArgument, errno.EINVAL),
    (E.Unavailable, errno.EIO),
    (E.FrameError, errno.EIO),
    (E.Unauthenticated, errno.EACCES),
    (E.Conflict, errno.EBUSY),
    (E.CairnError, errno.EIO),
]


_QUICK = {cls: num for cls, num in _TABLE}


def to_errno(exc: BaseException) -> int:
    """The errno for ``exc``: OSError keeps its own, Cairn errors go through the table."""
    if isinstance(exc, pyfuse3.FUSEError):
        return exc.errno
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    for cls, num in _TABLE:
        if isinstance(exc, cls):
            return num
    return errno.EIO


def quick_error(cls: type[E.CairnError]) -> pyfuse3.FUSEError:
    """The ``FUSEError`` that :func:`translate` would make of a ``cls`` error, made
    directly: for the misses the kernel asks about all the time (the lookup before every
    create, ``security.capability`` before every write), where building, raising and
    mapping the Cairn error costs more than the rest of the request."""
    return pyfuse3.FUSEError(_QUICK[cls])


P = ParamSpec("P")
T = TypeVar("T")


def translate(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Decorate an ``Operations`` handler: every error leaves as ``FUSEError(errno)``."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except (E.CairnError, OSError) as e:
            raise pyfuse3.FUSEError(to_errno(e)) from e
        except Exception as e:
            log.error("internal error in %s: %r", fn.__name__, e, exc_info=True)
            raise pyfuse3.FUSEError(errno.EIO) from e

    return wrapper
