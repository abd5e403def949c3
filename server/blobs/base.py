"""The BlobStore interface: a flat, content-addressed store of immutable blobs.

A blob is stored under its 32-byte chunk id. Ids are content addresses, so two ``put`` calls
with the same id carry the same bytes; implementations may therefore skip a ``put`` whose id
is already present, and concurrent puts of one id are harmless.

Contract shared by every implementation (checked by ``tests/blobs/test_blobstore.py``):

- ``put(cid, data)``: idempotent; the blob is durable when the call returns.
- ``get(cid)``: the bytes, or ``BlobNotFound``.
- ``has(cid)``: presence, never raises for a missing blob.
- ``delete(cid)``: idempotent; deleting a missing blob is not an error.
- ``iter_ids()``: every stored id exactly once, in no particular order; never yields
  temporary or foreign objects. An async generator: ``aclose()`` it when stopping early.
- ``close()``: releases threads and connections; the store is unusable afterwards.

Failures of the medium (disk, network, S3 errors) raise ``BlobStoreError`` (an
``Unavailable``: retryable); raw ``OSError`` or botocore exceptions never escape. Retries and
metrics are wrappers (``retry.py``, ``metered.py``), not part of the backends.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator

from cairn.core.errors import InvalidArgument, NotFound, Unavailable
from cairn.core.ids import ID_SIZE


class BlobNotFound(NotFound):
    """No blob is stored under the requested id."""

    code = "not_found"


class BlobStoreError(Unavailable):
    """The blob store's medium failed (I/O error, network, S3 error); worth retrying."""

    code = "unavailable"


def check_id(cid: bytes) -> str:
    """Validate a chunk id and return its hex form; a bad id is ``InvalidArgument``."""
    if not isinstance(cid, bytes) or len(cid) != ID_SIZE:
        raise InvalidArgument(f"a blob id is {ID_SIZE} bytes")
    return cid.hex()


class BlobStore(abc.ABC):
    """Asynchronous (asyncio) content-addressed blob store; see the module docstring."""

    @abc.abstractmethod
    async def put(self, cid: bytes, data: bytes) -> None:
        """Store ``data`` under ``cid``; idempotent, durable on return."""

    @abc.abstractmethod
    async def get(self, cid: bytes) -> bytes:
        """The blob stored under ``cid``; raises ``BlobNotFound`` if there is none."""

    @abc.abstractmethod
    async def has(self, cid: bytes) -> bool:
        """Whether a blob is stored under ``cid``."""

    @abc.abstractmethod
    async def delete(self, cid: bytes) -> None:
        """Remove the blob under ``cid``; idempotent."""

    @abc.abstractmethod
    def iter_ids(self) -> AsyncGenerator[bytes, None]:
        """Every stored id once (an async generator)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release threads and connections."""

    async def __aenter__(self) -> BlobStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
