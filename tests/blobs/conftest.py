"""Blob store tier: pulls in the moto S3 fixtures and runs async tests on asyncio."""

from __future__ import annotations

import pytest

from tests.support.s3 import moto_s3, s3_bucket  # noqa: F401  (fixtures)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the server, and so its blob stores, run on asyncio
