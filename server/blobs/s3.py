"""``S3BlobStore``: blobs as objects in an S3 bucket, through boto3.

Key of a blob: ``PREFIX + hex id`` (S3 needs no fan-out directories). The bucket must exist.

Concurrency: ONE boto3 client is shared by a bounded ``ThreadPoolExecutor`` (boto3 clients
are thread-safe, sessions are not; the session is used only here, in the constructor).
``max_pool_connections`` equals the pool size so no thread waits for an HTTP connection.
botocore's own retries are off: ``RetryingBlobStore`` retries, once, in one place.

Errors: a missing key is ``BlobNotFound`` (``get``) or ``False`` (``has``); every other
botocore / network failure becomes ``BlobStoreError``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import boto3
import botocore.config
import botocore.exceptions

from .base import BlobNotFound, BlobStore, BlobStoreError, check_id

T = TypeVar("T")
log = logging.getLogger("cairn.server.blobs")

_HEX_ID = re.compile(r"^[0-9a-f]{64}$")
_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
_ALREADY_STORED_CODES = {"PreconditionFailed", "412"}
_NO_CONDITIONAL_CODES = {"NotImplemented", "501"}
_LIST_PAGE = 1000


def _is_missing(e: botocore.exceptions.ClientError) -> bool:
    return str(e.response.get("Error", {}).get("Code", "")) in _MISSING_CODES


class S3BlobStore(BlobStore):
    """Blob store on an S3 bucket (AWS or compatible: MinIO, Garage, moto)."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
        prefix: str = "",
        threads: int = 16,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._conditional = True  # use If-None-Match until the store says it cannot
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="blobs-s3")
        config = botocore.config.Config(
            region_name=region,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=threads,
            retries={"total_max_attempts": 1, "mode": "standard"},
        )
        session = boto3.session.Session(
            aws_access_key_id=access_key, aws_secret_access_key=secret_key
        )
        self._client: Any = session.client("s3", endpoint_url=endpoint_url, config=config)

    def __repr__(self) -> str:
        return f"S3BlobStore(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def _key(self, cid: bytes) -> str:
        return self.prefix + check_id(cid)

    async def _run(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, fn, *args)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as e:
            raise BlobStoreError(f"S3 {what} on bucket {self.bucket!r} failed: {e}") from e

    # --- blocking halves, run in the pool ------------------------------------------------

    def _put(self, key: str, data: bytes) -> None:
        # S3 PUT is atomic and acknowledged only once stored: durable on return. The
        # conditional put never overwrites a stored blob: a blob is immutable, and an
        # overwrite racing a reader gains nothing. 412 "already there" means the very same
        # bytes are stored: success. 409 (another conditional put of this key is in flight
        # and may yet fail) is left an error, so the retry wrapper asks again.
        if not self._conditional:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data)
            return
        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*")
        except botocore.exceptions.ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in _NO_CONDITIONAL_CODES:
                # An S3-compatible store without conditional writes: plain (overwriting)
                # puts of identical bytes are still correct, just not overwrite-free.
                log.info(
                    "bucket %r refuses If-None-Match (%s); using plain puts", self.bucket, code
                )
                self._conditional = False
                self._client.put_object(Bucket=self.bucket, Key=key, Body=data)
            elif code not in _ALREADY_STORED_CODES:
                raise

    def _get(self, key: str) -> bytes:
        try:
            resp = self._client.get_object(Bucket=self.bucket, Key=key)
        except botocore.exceptions.ClientError as e:
            if _is_missing(e):
                raise BlobNotFound(f"no blob {key}") from None
            raise
        body = resp["Body"]
        try:
            data: bytes = body.read()
        finally:
            body.close()
        return data

    def _has(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=key)
        except botocore.exceptions.ClientError as e:
            if _is_missing(e):
                return False
            raise
        return True

    def _delete(self, key: str) -> None:
        # DeleteObject succeeds for a missing key: idempotent by itself.
        self._client.delete_object(Bucket=self.bucket, Key=key)

    def _list_page(self, token: str | None) -> tuple[list[bytes], str | None]:
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix, "MaxKeys": _LIST_PAGE}
        if token:
            args["ContinuationToken"] = token
        resp = self._client.list_objects_v2(**args)
        ids = []
        for obj in resp.get("Contents", []):
            name = obj["Key"][len(self.prefix) :]
            if _HEX_ID.match(name):  # foreign objects under the prefix are not blobs
                ids.append(bytes.fromhex(name))
        nxt = resp.get("NextContinuationToken") if resp.get("IsTruncated") else None
        return ids, nxt

    # --- the async interface -------------------------------------------------------------

    async def put(self, cid: bytes, data: bytes) -> None:
        await self._run("put", self._put, self._key(cid), data)

    async def get(self, cid: bytes) -> bytes:
        return await self._run("get", self._get, self._key(cid))

    async def has(self, cid: bytes) -> bool:
        return await self._run("head", self._has, self._key(cid))

    async def delete(self, cid: bytes) -> None:
        await self._run("delete", self._delete, self._key(cid))

    async def iter_ids(self) -> AsyncGenerator[bytes, None]:
        token: str | None = None
        # Bounded by the bucket's size: each page advances the continuation token.
        while True:
            ids, token = await self._run("list", self._list_page, token)
            for cid in ids:
                yield cid
            if token is None:
                return

    async def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()
