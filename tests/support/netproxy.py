"""A loopback TCP proxy that tests put between devices and the server to inject faults.

Usage::

    with NetProxy(("127.0.0.1", srv.port)) as proxy:   # listens on 127.0.0.1:proxy.port
        device.login_url(proxy.url)
        proxy.cut()            # close live connections; new ones are refused (or held)
        proxy.restore()
        proxy.delay(0.2)       # each forwarded chunk waits 0.2 s
        proxy.throttle(1 << 20)  # all traffic shares 1 MiB/s (0 = unlimited)

Contract:

- Threads only: one acceptor and one pump thread per live connection (at most
  ``max_conns``; beyond that a new connection is closed at once). Every thread wakes at
  least every ``TICK`` seconds to check for ``close()``; ``close()`` shuts every socket down
  and joins every thread with a deadline.
- ``cut(hold=False)``: every live connection is shut down (both sides see EOF/RST) and new
  connections are accepted and closed immediately. ``cut(hold=True)`` blackholes instead:
  new connections are accepted and kept open without forwarding (a client sees a hang, as
  behind a dead route) until ``restore()``, which closes them.
- ``bytes_up`` / ``bytes_down``: bytes forwarded client→server and server→client.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from types import TracebackType

TICK = 0.05
CHUNK = 64 * 1024


class NetProxy:
    def __init__(self, upstream: tuple[str, int], *, max_conns: int = 256) -> None:
        self.upstream = upstream
        self.max_conns = max_conns
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._cut = False
        self._hold = False
        self._delay = 0.0
        self._rate = 0
        self._next_slot = 0.0  # throttle: when the shared link is next free (monotonic)
        self._live: dict[int, tuple[socket.socket, socket.socket | None]] = {}
        self._held: list[socket.socket] = []
        self._threads: set[threading.Thread] = set()
        self._ids = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self._listener.settimeout(TICK)
        self.port = int(self._listener.getsockname()[1])
        self._acceptor = threading.Thread(target=self._accept_loop, name="netproxy-accept")
        self._acceptor.daemon = True
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- fault controls -------------------------------------------------------------------

    def cut(self, hold: bool = False) -> None:
        """Shut down every live connection and refuse (or hold, if ``hold``) new ones."""
        with self._lock:
            self._cut, self._hold = True, hold
            live = list(self._live.values())
        for pair in live:
            _shutdown(*pair)

    def restore(self) -> None:
        """Forward new connections again; connections held during a cut are closed."""
        with self._lock:
            self._cut, self._hold = False, False
            held, self._held = self._held, []
        for s in held:
            _shutdown(s, None)
            s.close()

    def delay(self, seconds: float) -> None:
        """Every forwarded chunk (either direction) waits ``seconds`` first (0 = none)."""
        self._delay = max(0.0, seconds)

    def throttle(self, bytes_per_sec: int) -> None:
        """Limit all forwarded traffic together to ``bytes_per_sec`` (0 = unlimited)."""
        with self._lock:
            self._rate = max(0, int(bytes_per_sec))
            self._next_slot = time.monotonic()

    @property
    def live_connections(self) -> int:
        with self._lock:
            return len(self._live)

    # --- lifecycle ------------------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        """Stop accepting, shut every connection down and join every thread."""
        self._stop.set()
        self.cut()
        self.restore()
        self._acceptor.join(timeout)
        self._listener.close()
        end = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(max(0.0, end - time.monotonic()))

    def __enter__(self) -> NetProxy:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- internals ------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                cut, hold, full = self._cut, self._hold, len(self._live) >= self.max_conns
                if cut and hold and len(self._held) < self.max_conns:
                    self._held.append(client)
                    continue
            if cut or full:
                client.close()
                continue
            self._start_pump(client)

    def _start_pump(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()  # upstream down: the client sees its connection closed
            return
        for s in (client, server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.settimeout(30)  # a peer that stops reading cannot block a pump forever
        with self._lock:
            self._ids += 1
            cid = self._ids
            self._live[cid] = (client, server)
            self.connections += 1
            t = threading.Thread(
                target=self._pump, args=(cid, client, server), name=f"netproxy-{cid}"
            )
            t.daemon = True
            self._threads.add(t)
        t.start()

    def _pump(self, cid: int, client: socket.socket, server: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        try:
            sel.register(client, selectors.EVENT_READ, (server, True))
            sel.register(server, selectors.EVENT_READ, (client, False))
            open_dirs = 2
            while open_dirs and not self._stop.is_set():
                for key, _ in sel.select(TICK):
                    dst, up = key.data
                    src = key.fileobj
                    assert isinstance(src, socket.socket)
                    data = src.recv(CHUNK)
                    if not data:  # half-close: pass the EOF on, keep the other direction
                        sel.unregister(src)
                        open_dirs -= 1
                        _half_close(dst)
                        continue
                    self._pace(len(data))
                    dst.sendall(data)
                    with self._lock:
                        if up:
                            self.bytes_up += len(data)
                        else:
                            self.bytes_down += len(data)
        except OSError:
            pass  # reset, cut or timeout: the connection ends
        finally:
            sel.close()
            with self._lock:
                self._live.pop(cid, None)
                self._threads.discard(threading.current_thread())
            _shutdown(client, server)
            client.close()
            server.close()

    def _pace(self, n: int) -> None:
        """Apply the delay and the shared throttle to one chunk of ``n`` bytes."""
        if self._delay:
            self._stop.wait(self._delay)  # the injected latency itself
        with self._lock:
            rate = self._rate
            if not rate:
                return
            start = max(time.monotonic(), self._next_slot)
            self._next_slot = start + n / rate
            until = self._next_slot
        wait = until - time.monotonic()
        if wait > 0:
            self._stop.wait(wait)  # the throttle's pacing


def _half_close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _shutdown(a: socket.socket, b: socket.socket | None) -> None:
    for s in (a, b):
        if s is None:
            continue
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
