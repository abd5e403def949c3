"""``open_blobstore`` config validation: every mistake is a ConfigError naming the key."""

from __future__ import annotations

import pytest

from cairn.core.errors import ConfigError
from cairn.server.blobs import LocalBlobStore, MeteredBlobStore, RetryingBlobStore, open_blobstore

pytestmark = pytest.mark.anyio

S3 = {"kind": "s3", "bucket": "b", "region": "r", "access_key": "a", "secret_key": "s"}


@pytest.mark.parametrize(
    ("cfg", "named"),
    [
        ({}, "blobs.kind"),
        ({"kind": "ftp"}, "blobs.kind"),
        ({"kind": "local"}, "blobs.path"),
        ({"kind": "local", "path": 3}, "blobs.path"),
        ({"kind": "local", "path": "/x", "bucket": "b"}, "blobs.bucket"),
        ({"kind": "local", "path": "/x", "threads": 0}, "blobs.threads"),
        ({"kind": "local", "path": "/x", "retries": True}, "blobs.retries"),
        ({**S3, "bucket": ""}, "blobs.bucket"),
        ({k: v for k, v in S3.items() if k != "secret_key"}, "blobs.secret_key"),
        ({**S3, "endpoint_url": None}, "blobs.endpoint_url"),
        ({**S3, "path": "/x"}, "blobs.path"),
    ],
)
def test_bad_config_names_the_key(cfg, named) -> None:
    with pytest.raises(ConfigError, match=rf"^{named}: "):
        open_blobstore(cfg)


def test_where_prefixes_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^storage\.path: missing"):
        open_blobstore({"kind": "local"}, where="storage")


async def test_stack_order(tmp_path) -> None:
    store = open_blobstore({"kind": "local", "path": str(tmp_path), "retries": 2})
    try:
        assert isinstance(store, RetryingBlobStore) and store.attempts == 2
        assert isinstance(store.inner, MeteredBlobStore)
        assert isinstance(store.inner.inner, LocalBlobStore)
    finally:
        await store.close()
