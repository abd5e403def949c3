"""A real S3 endpoint for tests: moto's server mode on 127.0.0.1.

``MotoS3`` runs moto's WSGI application in a thread of the test process, on a free loopback
port. Moto keeps its state in process-wide backends, so ``stop()`` followed by ``start()``
(same port) brings the same buckets and objects back: tests use that to produce a real
network failure (connection refused) and a real recovery.

Fixtures: ``moto_s3`` (one server per session) and ``s3_bucket`` (a fresh bucket per test,
emptied and removed afterwards).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

REGION = "us-east-1"
ACCESS_KEY = "testing"
SECRET_KEY = "testing"


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # one line per request would drown the test output


_NOT_IMPLEMENTED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NotImplemented</Code><Message>'
    b"A header you provided implies functionality that is not implemented</Message></Error>"
)


def _without_conditional_puts(app: Any) -> Any:
    """WSGI wrapper: answer 501 NotImplemented to a PUT with If-None-Match, as S3-compatible
    stores without conditional writes do; everything else reaches moto unchanged."""

    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["REQUEST_METHOD"] == "PUT" and environ.get("HTTP_IF_NONE_MATCH"):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            environ["wsgi.input"].read(length)  # drain: the connection is kept alive
            start_response(
                "501 Not Implemented",
                [
                    ("Content-Type", "application/xml"),
                    ("Content-Length", str(len(_NOT_IMPLEMENTED))),
                ],
            )
            return [_NOT_IMPLEMENTED]
        return app(environ, start_response)

    return wrapped


class MotoS3:
    """moto S3 in a thread; ``start``/``stop`` may be repeated and keep the port.

    ``conditional_puts=False`` makes it refuse ``If-None-Match`` puts with 501, like an
    S3-compatible store without conditional writes. Servers in one process share moto's
    state (buckets and objects)."""

    def __init__(self, host: str = "127.0.0.1", *, conditional_puts: bool = True) -> None:
        self.host = host
        self.conditional_puts = conditional_puts
        self.port = 0  # chosen by the kernel on the first start, then kept
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        if self._server is not None:
            return
        app = DomainDispatcherApplication(create_backend_app)
        if not self.conditional_puts:
            app = _without_conditional_puts(app)
        # make_server binds in this thread, so a bind error raises here instead of hanging.
        self._server = make_server(
            self.host, self.port, app, threaded=True, request_handler=_QuietHandler
        )
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="moto-s3", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the listening socket: new connections are refused."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        assert self._thread is not None
        self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def blob_config(self, bucket: str, prefix: str = "") -> dict[str, Any]:
        """An ``open_blobstore`` config for ``bucket`` on this server."""
        return {
            "kind": "s3",
            "bucket": bucket,
            "endpoint_url": self.url,
            "region": REGION,
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
            "prefix": prefix,
        }


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    server = MotoS3()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_s3: MotoS3) -> Iterator[str]:
    """A new, empty bucket; removed (with its objects) after the test."""
    moto_s3.start()  # a test may have left it stopped
    name = f"cairn-test-{uuid.uuid4().hex[:12]}"
    client = moto_s3.client()
    client.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        moto_s3.start()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=name)
        for page in pages:
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=obj["Key"])
        client.delete_bucket(Bucket=name)
        client.close()
