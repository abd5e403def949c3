"""Real-mount tier of the drive: a real ``cairn-server`` process and drives mounted by the
``cairn`` CLI through the kernel. Fixtures live in ``tests/support/drive.py``."""

from tests.support.drive import devices, drive_server  # noqa: F401
