"""The control socket of a running mount: how ``cairn status`` and ``cairn unmount`` talk to it.

Protocol: a unix stream socket in the state dir (0600). The client sends one JSON object on
one line, ``{"cmd": NAME, ...args}``; the mount answers one JSON object on one line and closes.
Commands:

- ``status`` → ``{"ok": true, "status": {...}}`` (see ``SyncAgent.status``);
- ``sync`` ``{"confirm_deletes": bool}`` → pushes and pulls now; with ``confirm_deletes``
  the held mass deletion (if any) is applied: ``{"ok": true, "held": bool | null}``;
- ``drain`` ``{"timeout": S}`` → seals open files, then waits up to S seconds for the outbox
  to empty: ``{"ok": true, "drained": bool, "pending": N, "reason": TEXT}``;
- ``stop`` → ``{"ok": true}``, then the mount unmounts itself and exits.

Unknown commands or malformed lines → ``{"ok": false, "error": TEXT}``. A request line is at
most 64 KiB. The server side (``serve``) runs in the mount's trio nursery; the client side
(``request``) is plain blocking code for the CLI.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

log = logging.getLogger("cairn.fs.control")

MAX_LINE = 64 * 1024
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlError(Exception):
    """The control socket could not be reached or answered garbage."""


# --- server side (inside the mount process) -----------------------------------------------


async def _read_line(stream: trio.SocketStream) -> bytes:
    buf = bytearray()
    while b"\n" not in buf:
        data = await stream.receive_some(4096)
        if not data:
            break
        buf += data
        if len(buf) > MAX_LINE:
            raise ValueError("request line too long")
    return bytes(buf).split(b"\n", 1)[0]


async def _serve_one(stream: trio.SocketStream, handlers: dict[str, Handler]) -> None:
    async with stream:
        try:
            with trio.fail_after(10):
                line = await _read_line(stream)
            req = json.loads(line)
            if not isinstance(req, dict):
                raise ValueError("request is not a JSON object")
            handler = handlers.get(str(req.get("cmd")))
            if handler is None:
                answer: dict[str, Any] = {
                    "ok": False,
                    "error": f"unknown command {req.get('cmd')!r}",
                }
            else:
                answer = await handler(req)
        except (ValueError, trio.TooSlowError) as e:
            answer = {"ok": False, "error": f"bad request: {e}"}
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the client went away
        except Exception as e:  # noqa: BLE001 - a failing command must not end the mount
            log.exception("control command failed")
            answer = {"ok": False, "error": f"internal error: {e!r}"}
        try:
            await stream.send_all(json.dumps(answer).encode() + b"\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


def _remove(path: Path) -> None:
    # A stale socket from a killed mount; a local unlink does not need a worker thread.
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


async def serve(
    path: Path,
    handlers: dict[str, Handler],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``path`` until cancelled; each connection is handled in its own task."""
    _remove(path)
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        await sock.bind(str(path))
    finally:
        os.umask(old)
    sock.listen(16)
    listener = trio.SocketListener(sock)
    task_status.started()
    try:
        async with trio.open_nursery() as nursery:
            while True:
                stream = await listener.accept()
                nursery.start_soon(_serve_one, stream, handlers)
    finally:
        _remove(path)
        await listener.aclose()


# --- client side (the CLI) ----------------------------------------------------------------


def request(path: Path, cmd: str, *, timeout: float = 10.0, **args: Any) -> dict[str, Any]:
    """Send one command and return the answer. Raises ``ControlError`` when no mount listens
    on ``path`` or the answer is not a JSON object."""
    if not path.exists():
        raise ControlError("no mount is running for this state dir")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            chunks = []
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
    except (ConnectionRefusedError, FileNotFoundError):
        raise ControlError("no mount is running for this state dir") from None
    except TimeoutError:
        raise ControlError(
            f"the mount process did not answer {cmd!r} within {timeout:g} s"
        ) from None
    except OSError as e:
        raise ControlError(f"control socket {path}: {e.strerror or e}") from None
    try:
        answer = json.loads(b"".join(chunks))
    except ValueError:
        raise ControlError("the mount process answered garbage") from None
    if not isinstance(answer, dict):
        raise ControlError("the mount process answered garbage")
    return answer
