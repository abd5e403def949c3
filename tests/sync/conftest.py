"""Multi-device tier: one real ``cairn-server``, a loopback fault proxy in front of it and
two or three devices (real FUSE mounts, separate state dirs) that log in through the proxy.

Thin wrappers over ``tests/support/drive.py`` (not edited here): ``SyncDevice`` logs in with
the proxy's URL so every byte it exchanges with the server can be cut, delayed or slowed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.drive import PASSWORD, Device, DriveServer, drive_server  # noqa: F401
from tests.support.netproxy import NetProxy


class SyncDevice(Device):
    """A ``Device`` whose server URL is the proxy's (``url``), not the server's."""

    def __init__(self, root: Path, name: str, server: DriveServer, url: str) -> None:
        super().__init__(root, name, server)
        self.url = url

    def login(self, user: str, password: str = PASSWORD) -> None:
        res = self.cli(
            "login", self.url, "--user", user, "--password-stdin", "--device", self.name,
            "--state", str(self.state), input=password + "\n",
        )  # fmt: skip
        assert res.returncode == 0, f"login failed: {res.stderr}"


@pytest.fixture
def proxy(drive_server: DriveServer) -> Iterator[NetProxy]:  # noqa: F811
    """A proxy in front of the server (it follows a restart: same port)."""
    with NetProxy(("127.0.0.1", drive_server.port)) as p:
        yield p


@pytest.fixture
def sync_devices(
    tmp_path: Path,
    drive_server: DriveServer,  # noqa: F811
    proxy: NetProxy,
) -> Iterator[Callable[..., SyncDevice]]:
    """``sync_devices("A")`` → a device logged in as alice through the proxy and mounted
    (``mount=False`` to leave it unmounted); all stopped and unmounted at teardown."""
    made: list[SyncDevice] = []

    def make(name: str, *, mount: bool = True, via_proxy: bool = True) -> SyncDevice:
        url = proxy.url if via_proxy else drive_server.url
        d = SyncDevice(tmp_path, name, drive_server, url)
        made.append(d)
        d.login("alice")
        if mount:
            d.mount()
        return d

    try:
        yield make
    finally:
        for d in made:
            d.teardown()
