"""Content-addressed blob storage for chunk frames: interface, backends, wrappers.

Use ``open_blobstore(cfg)``; see ``base.py`` for the contract every store keeps.
"""

from .base import BlobNotFound, BlobStore, BlobStoreError
from .factory import open_blobstore
from .local import LocalBlobStore
from .metered import MeteredBlobStore
from .retry import RetryingBlobStore
from .s3 import S3BlobStore

__all__ = [
    "BlobNotFound",
    "BlobStore",
    "BlobStoreError",
    "LocalBlobStore",
    "MeteredBlobStore",
    "RetryingBlobStore",
    "S3BlobStore",
    "open_blobstore",
]
