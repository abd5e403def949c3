"""The mount process, and how the CLI starts and stops it.

Process side (``run``, also ``python -m cairn.fs.mount``): open the state dir (RocksDB,
cache, device key), build the FUSE ``Operations`` with a chunk source backed by the server,
``pyfuse3.init`` the mountpoint, then ``trio.run`` one nursery that holds ``pyfuse3.main()``,
the sync agent and the control server. It ends on SIGTERM/SIGINT, on the control command
``stop``, or when the kernel mount goes away (``fusermount3 -u``); in every case the
store is closed cleanly and ``mount.json`` / the control socket are removed.

Launcher side (``spawn``, ``drain_and_stop``): ``cairn mount`` re-executes this module in a
new session (so its command line holds "cairn", "mount" and the mountpoint, which is how
tools find it) and waits on a pipe until the child writes ``ok`` (mounted and serving) or
``error: MESSAGE``; the parent then exits 0, or 1 with the child's message.
"""

from __future__ import annotations

import argparse
import errno
import gc
import logging
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from cairn.core.errors import CairnError, ConfigError

from . import control, fuse_wait
from .readahead import raise_read_ahead
from .statedir import StateDir, pid_alive, register_mount, unregister_mount

log = logging.getLogger("cairn.fs.mount")

READY_TIMEOUT = 60.0
SEAL_TIMEOUT = 30.0
EXIT_TIMEOUT = 30.0


class MountError(Exception):
    """The mount could not be made or stopped; the message is one line for the user."""


# --- checks shared by parent and child ------------------------------------------------------


def check_mountpoint(mountpoint: Path, state: StateDir, *, nonempty: bool = False) -> None:
    """Refuse a missing, non-directory, already mounted or non-empty mountpoint, and a
    state dir already mounted elsewhere."""
    info = state.mount_info()
    if info is not None:
        raise MountError(
            f"state dir {state.root} is already mounted at {info['mountpoint']} (pid {info['pid']})"
        )
    try:
        st = os.stat(mountpoint)
    except FileNotFoundError:
        raise MountError(f"mountpoint {mountpoint} does not exist") from None
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            raise MountError(
                f"mountpoint {mountpoint} is a dead mount; run: fusermount3 -u -z {mountpoint}"
            ) from None
        raise MountError(f"mountpoint {mountpoint}: {e.strerror}") from None
    if not os.path.isdir(mountpoint) or not (st.st_mode & 0o040000):
        raise MountError(f"mountpoint {mountpoint} is not a directory")
    if os.path.ismount(mountpoint):
        raise MountError(f"{mountpoint} is already a mountpoint")
    if not nonempty and os.listdir(mountpoint):
        raise MountError(f"mountpoint {mountpoint} is not empty")


# fstab and generic options that mean nothing to (or are the default of) the FUSE session.
_IGNORED_OPTIONS = frozenset(
    "rw defaults auto noauto user users owner group _netdev nofail dev suid exec async "
    "atime relatime norelatime strictatime".split()
)


def fuse_options(options: list[str]) -> tuple[set[str], bool]:
    """The pyfuse3 option set for user ``-o`` options, and whether ``nonempty`` was asked."""
    import pyfuse3

    opts = set(pyfuse3.default_options)
    opts.discard("default_permissions")
    opts |= {"fsname=cairn", "subtype=cairn", "default_permissions"}
    nonempty = False
    for o in options:
        if o in ("allow_other", "ro", "noatime", "nodev", "nosuid", "noexec", "dirsync"):
            opts.add(o)
        elif o in _IGNORED_OPTIONS:
            continue  # fstab-only options that mean nothing to the FUSE session
        elif o == "nonempty":
            nonempty = True
        elif o.startswith(("x-", "comment=")):
            continue
        else:
            raise MountError(f"unsupported mount option {o!r}")
    return opts, nonempty


# --- process side ---------------------------------------------------------------------------

DEFAULT_CACHE_SIZE = 10 << 30


class Drive:
    """Everything one mount holds open: store, cache, client, sync agent, FUSE operations."""

    def __init__(self, state: StateDir, *, cache_size: int | None) -> None:
        from .cache import ChunkCache
        from .client import Client
        from .store import Store
        from .sync.agent import RemoteSource, SyncAgent

        dev = state.device()
        token = state.token()
        key = state.data_key()
        try:
            self.store = Store.open(state.db_dir, dev.home_root)
        except Exception as e:  # rocksdict raises a plain Exception (lock held, damaged db)
            text = str(e).splitlines()[0] if str(e) else type(e).__name__
            if "lock" in text.lower():
                raise ConfigError(
                    f"state dir {state.root} is in use by another cairn process"
                ) from None
            raise ConfigError(f"cannot open the local database in {state.db_dir}: {text}") from None
        try:
            self.cache = ChunkCache(state.cache_dir, key, cache_size or DEFAULT_CACHE_SIZE)
            self.client = Client(dev.server_url, token)
            self.agent = SyncAgent(
                self.store,
                self.cache,
                self.client,
                ns=dev.home_ns,
                parked_file=state.root / "parked.jsonl",
                device=dev.device,
            )
            self.source = RemoteSource(self.client, self.agent)
            self.staging_dir = state.root / "staging"
            self.ops = _make_ops(self, dev)
        except BaseException:
            self.store.close()
            if hasattr(self, "cache"):
                self.cache.close()
            raise

    def close(self) -> None:
        self.store.close()
        self.cache.close()


def _make_ops(drive: Drive, dev):  # type: ignore[no-untyped-def]
    """Build the FUSE ``Operations`` of the local half and connect it to the sync agent."""
    from .ops import Operations

    ops = Operations(
        drive.store,
        drive.cache,
        drive.source,
        dedupe_key=dev.dedupe_key_bytes,
        staging_dir=drive.staging_dir,
    )
    drive.agent.invalidate_hook = ops.invalidate
    drive.agent.quota_hook = ops.set_quota
    drive.agent.set_activity(ops.activity)
    return ops


def open_drive(state: StateDir, *, cache_size: int | None) -> Drive:
    return Drive(state, cache_size=cache_size)


def _setup_logging(state: StateDir, foreground: bool) -> None:
    root = logging.getLogger("cairn")
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    fd = os.open(state.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    fh = logging.StreamHandler(os.fdopen(fd, "a", buffering=1))
    fh.setFormatter(fmt)
    root.addHandler(fh)
    if foreground:
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(fmt)
        root.addHandler(sh)


class _Ready:
    """Tells the launcher (through the ready pipe, if any) how the start went, once."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def _send(self, line: str) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, line.encode(errors="replace") + b"\n")
            os.close(self._fd)
        except OSError:
            pass
        self._fd = None

    def ok(self) -> None:
        self._send("ok")

    def fail(self, message: str) -> None:
        self._send("error: " + message.replace("\n", " "))


def run(
    state: StateDir,
    mountpoint: Path,
    *,
    cache_size: int | None = None,
    options: list[str] | None = None,
    foreground: bool = True,
    ready_fd: int | None = None,
) -> int:
    """Mount and serve until unmounted or signalled. Returns the exit status."""
    import pyfuse3
    import trio

    ready = _Ready(ready_fd)
    try:
        state.check()
        _setup_logging(state, foreground)
        opts, nonempty = fuse_options(options or [])
        spin_s = fuse_wait.spin_from_env()
        check_mountpoint(mountpoint, state, nonempty=nonempty)
        drive = open_drive(state, cache_size=cache_size)
    except (CairnError, MountError, OSError) as e:
        msg = str(e) if not isinstance(e, OSError) else f"{e.strerror or e} ({e.filename})"
        ready.fail(msg)
        print(f"cairn: {msg}", file=sys.stderr)
        return 1
    # as mountinfo will name it; resolved now, since after the mount a path lookup
    # through the mountpoint would wait on this very process
    real_mountpoint = os.path.realpath(mountpoint)
    try:
        try:
            pyfuse3.init(drive.ops, str(mountpoint), opts)
        except RuntimeError as e:
            raise MountError(f"cannot mount {mountpoint}: {e}") from None
        except OSError as e:
            raise MountError(f"cannot mount {mountpoint}: {e.strerror or e}") from None
    except MountError as e:
        drive.close()
        ready.fail(str(e))
        print(f"cairn: {e}", file=sys.stderr)
        return 1
    # the kernel sets the readahead from the INIT reply: raise it once that is sent
    drive.ops.after_init = lambda: log.info("%s", raise_read_ahead(real_mountpoint))
    state.write_mount_info(mountpoint, os.getpid())
    register_mount(mountpoint, state)
    drive.ops.mounted = True  # from now on remote changes invalidate the kernel's caches
    log.info("mounted %s at %s (pid %d)", state.root, mountpoint, os.getpid())
    # Unmount on the way out unless the kernel mount already went away on its own (a crash
    # of the session must not leave a dead mount behind).
    stopped_by_us = True
    _tune_gc()
    try:
        stopped_by_us = trio.run(_serve, state, drive, ready, spin_s)
    finally:
        try:
            pyfuse3.close(unmount=stopped_by_us)
        finally:
            drive.close()
            state.clear_mount_info()
            unregister_mount(mountpoint)
            log.info("unmounted %s; mount process exits", mountpoint)
    return 0


GC_YOUNG = 20_000
"""Allocations between two young-generation collections of the mount process (Python's
default is 700). Every FUSE request allocates dozens of short-lived objects, so with the
default a burst of creates collects every few requests: 5 % of the request loop's CPU in
a 6,000-file run, a quarter of that with this value (``docs/benchmarks.md``)."""


def _tune_gc() -> None:
    """Collect the young generation less often, and move what the mount set up (the
    drive's objects, imported modules) out of the collector's sight: it lives as long as
    the process, so scanning it at every full collection is wasted."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])


async def _serve(state: StateDir, drive, ready: _Ready, spin_s: float) -> bool:  # type: ignore[no-untyped-def]
    """The mount's one nursery. Returns True when we ended the session (signal or ``stop``)
    and so must unmount, False when the kernel mount went away on its own."""
    import pyfuse3
    import trio

    stopped = False

    def stop() -> None:
        nonlocal stopped
        stopped = True
        pyfuse3.terminate()

    async def on_signals() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                log.info("signal %d: unmounting", signum)
                stop()
                return

    async def h_status(req: dict) -> dict:  # type: ignore[type-arg]
        return {"ok": True, "status": await drive.agent.status()}

    async def h_drain(req: dict) -> dict:  # type: ignore[type-arg]
        timeout = float(req.get("timeout_s", 60))
        return {"ok": True, **await drive.agent.drain(timeout, seal=drive.ops.seal_all)}

    async def h_sync(req: dict) -> dict:  # type: ignore[type-arg]
        held = drive.agent.confirm_deletes() if req.get("confirm_deletes") else None
        drive.agent.wake()
        drive.agent.wake_pull()
        return {"ok": True, "held": held}

    async def h_stop(req: dict) -> dict:  # type: ignore[type-arg]
        # Answer first, then stop: the caller waits for our exit, not for this reply.
        nursery.start_soon(_later, stop)
        return {"ok": True}

    async def _later(fn) -> None:  # type: ignore[no-untyped-def]
        await trio.lowlevel.checkpoint()
        fn()

    handlers = {"status": h_status, "drain": h_drain, "stop": h_stop, "sync": h_sync}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(on_signals)
        await nursery.start(control.serve, state.control_socket, handlers)
        await nursery.start(drive.agent.run)
        nursery.start_soon(drive.ops.run)
        # busy-poll the device during bursts of requests (see fs/fuse_wait.py)
        waiter = fuse_wait.install(pyfuse3, spin_s)
        ready.ok()
        try:
            await pyfuse3.main()
        finally:
            if waiter is not None:
                log.info("served requests: %d waits for the device, %d answered by polling",
                         waiter.waits, waiter.polled)  # fmt: skip
            with trio.CancelScope(shield=True), trio.move_on_after(SEAL_TIMEOUT):
                # Files still open with unsealed writes (SIGTERM, lazy unmount): seal them so
                # their data waits in the outbox for the next mount.
                await drive.ops.seal_all()
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await drive.client.aclose()
    return stopped


# --- launcher side --------------------------------------------------------------------------


def spawn(state: StateDir, mountpoint: Path, *, cache_size: int | None, options: list[str]) -> int:
    """Start the mount process in the background; return its pid once it is serving.
    Raises ``MountError`` with the child's own message when it fails."""
    r, w = os.pipe()
    argv = [
        sys.executable,
        "-m",
        "cairn.fs.mount",
        "--ready-fd",
        str(w),
        "--state",
        str(state.root),
    ]
    if cache_size is not None:
        argv += ["--cache-size", str(cache_size)]
    if options:
        argv += ["-o", ",".join(options)]
    argv.append(str(mountpoint))
    state.root.mkdir(parents=True, exist_ok=True)
    errfd = os.open(state.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errfd,
            pass_fds=(w,),
            start_new_session=True,
            cwd="/",
        )
    finally:
        os.close(w)
        os.close(errfd)
    try:
        line = _read_line(r, READY_TIMEOUT, proc)
    finally:
        os.close(r)
    if line == "ok":
        return proc.pid
    if line.startswith("error: "):
        raise MountError(line[len("error: ") :])
    code = proc.poll()
    if code is None:
        os.kill(proc.pid, signal.SIGTERM)
        raise MountError(f"the mount process did not become ready in {READY_TIMEOUT:g} s")
    raise MountError(f"the mount process exited with status {code}; see {state.log_file}")


def _read_line(fd: int, timeout: float, proc: subprocess.Popen[bytes]) -> str:
    buf = b""
    end = time.monotonic() + timeout
    while b"\n" not in buf:
        left = end - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], min(left, 1.0))
        if not ready:
            continue
        data = os.read(fd, 4096)
        if not data:
            proc.wait(timeout=5)
            break
        buf += data
    return buf.split(b"\n", 1)[0].decode(errors="replace").strip()


def fusermount_unmount(mountpoint: Path) -> None:
    res = subprocess.run(
        ["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True, text=True, timeout=30
    )
    if res.returncode != 0:
        raise MountError(
            f"cannot unmount {mountpoint}: {res.stderr.strip() or 'fusermount3 failed'}"
        )


def drain_and_stop(state: StateDir, mountpoint: Path, *, timeout: float) -> str | None:
    """Ask the mount to upload what is pending (up to ``timeout`` s), then to unmount; wait
    for its exit. Returns a warning for the user when changes stayed pending, else None."""
    info = state.mount_info()
    if info is None:
        raise ConfigError(f"no mount process is running for {state.root}")
    if str(info["mountpoint"]) != str(mountpoint):
        raise ConfigError(f"{state.root} is mounted at {info['mountpoint']}, not {mountpoint}")
    pid = int(info["pid"])  # type: ignore[call-overload]
    warning = None
    try:
        answer = control.request(
            state.control_socket, "drain", timeout=timeout + 15, timeout_s=timeout
        )
        if not answer.get("ok"):
            warning = f"could not drain: {answer.get('error')}"
        elif not answer.get("drained"):
            warning = (
                f"{answer.get('pending', '?')} changes not uploaded ({answer.get('reason')}); "
                "they stay queued in the state dir and go up at the next mount"
            )
        control.request(state.control_socket, "stop", timeout=10)
    except control.ControlError as e:
        warning = f"mount process did not answer ({e}); unmounting anyway"
        os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + EXIT_TIMEOUT
    while pid_alive(pid) and time.monotonic() < end:
        time.sleep(0.05)  # polling the process's exit with a deadline
    if pid_alive(pid):
        raise MountError(f"mount process {pid} did not exit within {EXIT_TIMEOUT:g} s")
    if os.path.ismount(mountpoint):
        fusermount_unmount(mountpoint)
    return warning


# --- python -m cairn.fs.mount ---------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cairn-mount-process")
    p.add_argument("mountpoint")
    p.add_argument("--state", required=True)
    p.add_argument("--ready-fd", type=int)
    p.add_argument("--cache-size", type=int)
    p.add_argument("-o", action="append")
    p.add_argument("--foreground", action="store_true")
    a = p.parse_args(argv)
    options = [o for opt in a.o or [] for o in opt.split(",") if o]
    return run(
        StateDir(a.state),
        Path(a.mountpoint).absolute(),
        cache_size=a.cache_size,
        options=options,
        foreground=a.foreground,
        ready_fd=a.ready_fd,
    )


if __name__ == "__main__":
    sys.exit(main())
