"""Suite-wide test policy.

- A test fails on an unexpected WARNING (or worse) log record from Cairn's own loggers:
  warnings are how the code reports trouble it survived, and a test should say it expected one
  (``caplog`` + the ``expect_warnings`` marker).
- Fixtures for real processes live in ``tests/support/`` (one module per part) and are pulled
  in by each tier's conftest.
"""

from __future__ import annotations

import logging

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "expect_warnings: the test expects WARNING log records from cairn.*"
    )


@pytest.fixture(autouse=True)
def _fail_on_cairn_warnings(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="cairn")
    yield
    if request.node.get_closest_marker("expect_warnings"):
        return
    bad = [
        r
        for r in caplog.get_records("call")
        if r.name.startswith("cairn") and r.levelno >= logging.WARNING
    ]
    if bad:
        pytest.fail(
            "unexpected warnings from cairn: "
            + "; ".join(f"{r.name}: {r.getMessage()}" for r in bad[:5])
        )
