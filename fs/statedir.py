"""The drive's state directory: what one logged-in device keeps on disk.

Layout (every file 0600, every directory 0700)::

    STATE/
      device.json     server URL, user, device name and id, home namespace and root,
                      dedupe key (hex) -- written by ``cairn login``
      token           the device's bearer token (one line)
      device.key      the device DataKey (32 raw bytes) that encrypts the chunk cache
      db/             RocksDB: inodes, dirents, blocklists, cursor, outbox (fs/store.py)
      cache/          the chunk cache (fs/cache.py)
      control.sock    the running mount's control socket (fs/control.py)
      mount.json      the running mount: pid, mountpoint, started (removed on clean exit)
      mount.log       the mount process's log

Contract: ``load`` raises ``ConfigError`` with a one-line message naming what is missing, so
the CLI can print it as it is. Secrets are written through a temporary file created 0600 and
renamed into place, so a crash never leaves a half-written or world-readable token.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from cairn.core.errors import ConfigError
from cairn.core.keys import KEY_SIZE, DataKey

DEFAULT_STATE = Path("~/.local/share/cairn")


def default_state_dir() -> Path:
    env = os.environ.get("CAIRN_STATE")
    return Path(env) if env else DEFAULT_STATE.expanduser()


@dataclass(frozen=True)
class Device:
    """What ``cairn login`` learnt from the server (``device.json``)."""

    server_url: str
    user: str
    device: str
    device_id: str | int
    home_ns: int
    home_root: str
    dedupe_key: str  # 64 hex digits

    @property
    def dedupe_key_bytes(self) -> bytes:
        return bytes.fromhex(self.dedupe_key)


def write_private(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, mode 0600, fsynced."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class StateDir:
    """Paths and small files of one state directory. Creating it is ``init``'s job."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().absolute()

    device_file = property(lambda self: self.root / "device.json")
    token_file = property(lambda self: self.root / "token")
    key_file = property(lambda self: self.root / "device.key")
    db_dir = property(lambda self: self.root / "db")
    cache_dir = property(lambda self: self.root / "cache")
    control_socket = property(lambda self: self.root / "control.sock")
    mount_file = property(lambda self: self.root / "mount.json")
    log_file = property(lambda self: self.root / "mount.log")

    # --- writing (cairn login) ------------------------------------------------------------

    def init(self, device: Device, token: str) -> None:
        """Create (or refresh) the state after a login. Keeps an existing device key, db and
        cache when the same user logs in again on the same server; refuses to mix users."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        if self.device_file.exists():
            old = self.device()
            if (old.server_url, old.user) != (device.server_url, device.user):
                raise ConfigError(
                    f"state dir {self.root} belongs to {old.user} at {old.server_url}; "
                    "use another --state"
                )
        if not self.key_file.exists():
            write_private(self.key_file, DataKey.generate().secret)
        write_private(self.token_file, token.encode() + b"\n")
        write_private(self.device_file, json.dumps(asdict(device), indent=1).encode() + b"\n")
        for d in (self.db_dir, self.cache_dir):
            d.mkdir(exist_ok=True, mode=0o700)

    # --- reading --------------------------------------------------------------------------

    def check(self) -> None:
        if not self.root.is_dir():
            raise ConfigError(f"state dir {self.root} does not exist (run cairn login first)")
        if not self.device_file.exists():
            raise ConfigError(f"state dir {self.root} is not logged in (run cairn login first)")

    def device(self) -> Device:
        self.check()
        try:
            raw = json.loads(self.device_file.read_text())
            return Device(**raw)
        except (ValueError, TypeError) as e:
            raise ConfigError(
                f"{self.device_file} is damaged ({e}); run cairn login again"
            ) from None

    def token(self) -> str:
        try:
            return self.token_file.read_text().strip()
        except FileNotFoundError:
            raise ConfigError(f"{self.token_file} is missing; run cairn login again") from None

    def data_key(self) -> DataKey:
        try:
            secret = self.key_file.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"{self.key_file} is missing; run cairn login again") from None
        if len(secret) != KEY_SIZE:
            raise ConfigError(f"{self.key_file} is damaged (not {KEY_SIZE} bytes)")
        return DataKey(secret)

    # --- the running mount ----------------------------------------------------------------

    def write_mount_info(self, mountpoint: Path, pid: int) -> None:
        info = {"pid": pid, "mountpoint": str(mountpoint)}
        write_private(self.mount_file, json.dumps(info).encode() + b"\n")

    def mount_info(self) -> dict[str, object] | None:
        """The running mount's ``{"pid", "mountpoint"}``, or None when none is recorded or
        its process is gone."""
        try:
            info = json.loads(self.mount_file.read_text())
            pid = int(info["pid"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None
        if not pid_alive(pid):
            return None
        return dict(info)

    def clear_mount_info(self) -> None:
        self.mount_file.unlink(missing_ok=True)
        self.control_socket.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` runs. A zombie (killed, not yet reaped by its new parent,
    which in containers may take a while) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True
    # The state letter follows the command name, which is in parentheses and may contain any
    # byte, so split at the last ')'.
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] not in (b"Z", b"X")


# --- which state dir serves a mountpoint (cairn unmount MOUNTPOINT) ------------------------


def _registry_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR")
    root = Path(base) / "cairn" if base else Path(tempfile.gettempdir()) / f"cairn-{os.getuid()}"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return root


def _registry_entry(mountpoint: Path) -> Path:
    key = str(Path(mountpoint).absolute()).replace("/", "%")
    return _registry_dir() / f"{key}.mount"


def register_mount(mountpoint: Path, state: StateDir) -> None:
    write_private(_registry_entry(mountpoint), str(state.root).encode())


def unregister_mount(mountpoint: Path) -> None:
    _registry_entry(mountpoint).unlink(missing_ok=True)


def state_for_mount(mountpoint: Path) -> StateDir | None:
    """The state dir whose mount process serves ``mountpoint``, if one was registered."""
    try:
        return StateDir(_registry_entry(mountpoint).read_text().strip())
    except FileNotFoundError:
        return None
