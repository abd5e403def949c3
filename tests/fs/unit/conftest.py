"""Fixtures of the drive's fast tier (see ``helpers.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cairn.core.keys import DataKey
from tests.fs.unit.helpers import Drive, FrameSource, open_drive


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


@pytest.fixture
async def drive(tmp_path: Path) -> AsyncIterator[Drive]:
    d = open_drive(tmp_path, DataKey.generate(), FrameSource())
    yield d
    for content in list(d.ops._files.values()):
        content.discard()
    d.store.close()
    d.cache.close()
