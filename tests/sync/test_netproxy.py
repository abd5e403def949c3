"""The loopback fault proxy (tests/support/netproxy.py) against a real echo server."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.netproxy import NetProxy


class EchoServer:
    """Echoes each connection's bytes back; one thread per connection, all bounded."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = int(self.sock.getsockname()[1])
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except TimeoutError:
                continue
            t = threading.Thread(target=self._echo, args=(c,), daemon=True)
            self.threads.append(t)
            t.start()

    def _echo(self, c: socket.socket) -> None:
        c.settimeout(10)
        with c:
            try:
                while data := c.recv(65536):
                    c.sendall(data)
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.acceptor.join(5)
        self.sock.close()
        for t in self.threads:
            t.join(5)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    srv = EchoServer()
    yield srv
    srv.close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[NetProxy]:
    with NetProxy(("127.0.0.1", echo.port)) as p:
        yield p


def roundtrip(port: int, payload: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        out = bytearray()
        while chunk := s.recv(65536):
            out += chunk
        return bytes(out)


def test_forwards_both_ways_and_counts(proxy: NetProxy) -> None:
    payload = os.urandom(300_000)
    assert roundtrip(proxy.port, payload) == payload
    assert proxy.bytes_up == len(payload) and proxy.bytes_down == len(payload)
    assert proxy.connections == 1


def test_cut_closes_live_and_refuses_new_until_restore(proxy: NetProxy) -> None:
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    s.sendall(b"ping")
    assert s.recv(4) == b"ping"
    proxy.cut()
    try:  # the live connection ends: EOF or reset, never a hang (timeout=10 bounds it)
        assert s.recv(4) == b""
    except ConnectionResetError:
        pass
    s.close()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s2:
        try:
            s2.sendall(b"x")
            assert s2.recv(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            pass
    proxy.restore()
    assert roundtrip(proxy.port, b"back") == b"back"


def test_cut_hold_blackholes_until_restore(proxy: NetProxy) -> None:
    proxy.cut(hold=True)
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=0.3)
    s.sendall(b"lost")
    with pytest.raises(TimeoutError):
        s.recv(4)  # no answer: the proxy holds the connection without forwarding
    proxy.restore()
    s.settimeout(10)
    try:
        assert s.recv(4) == b""  # restore closes held connections
    except ConnectionResetError:
        pass
    s.close()
    assert roundtrip(proxy.port, b"ok") == b"ok"


def test_throttle_and_delay_slow_the_stream(proxy: NetProxy) -> None:
    # Not a timed assertion on the system under test: the throttle itself is the subject,
    # and the bound is a floor implied by the rate (the transfer cannot be faster).
    proxy.throttle(1_000_000)
    payload = os.urandom(400_000)
    t0 = time.monotonic()
    assert roundtrip(proxy.port, payload) == payload
    assert time.monotonic() - t0 >= 0.7  # 800 kB through a shared 1 MB/s link
    proxy.throttle(0)
    proxy.delay(0.2)
    t0 = time.monotonic()
    assert roundtrip(proxy.port, b"z") == b"z"
    assert time.monotonic() - t0 >= 0.4  # one chunk each way, 0.2 s each


def test_upstream_down_closes_client(echo: EchoServer) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    with NetProxy(("127.0.0.1", dead_port)) as p:
        try:
            assert roundtrip(p.port, b"x") == b""
        except OSError:
            pass  # closed before or with data unread: a reset is the same answer
        assert p.connections == 0


def test_close_ends_every_thread(echo: EchoServer) -> None:
    p = NetProxy(("127.0.0.1", echo.port))
    socks = [socket.create_connection(("127.0.0.1", p.port), timeout=10) for _ in range(5)]
    for s in socks:
        s.sendall(b"a")
        assert s.recv(1) == b"a"
    p.close()
    assert p.live_connections == 0
    assert not any(t.name.startswith("netproxy") for t in threading.enumerate())
    for s in socks:
        s.close()
