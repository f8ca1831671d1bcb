"""The egress proxy's limits and the life of tool-scoped connections.

These drive mcpwrap.sandbox.egress.Egress directly with real sockets on the host's loopback: a
listener the test binds stands in for the one the jail binds in its namespace and hands
over (tests/test_egress.py covers that hand-over with the real jail). Every limit is shown
ending a connection, with a control that the same traffic passes without it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from egress_harness import EchoServer

from mcpwrap.policy import network as netpolicy
from mcpwrap.sandbox import egress


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    try:
        yield server
    finally:
        server.close()


class Proxy:
    """Egress serving one tcp: forward to the echo server, records collected in a list."""

    def __init__(
        self,
        echo: EchoServer,
        entry: netpolicy.Entry,
        limits: egress.Limits = egress.DEFAULT_LIMITS,
        in_flight: list[tuple[str, object]] | None = None,
    ) -> None:
        self.records: list[dict[str, Any]] = []
        self.in_flight = in_flight if in_flight is not None else []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.egress = egress.Egress(
            [entry],
            [egress.Listener("tcp", self.listener, ("127.0.0.1", echo.port))],
            record=lambda event, **fields: self.records.append({"event": event, **fields}),
            in_flight=lambda: list(self.in_flight),
            limits=limits,
        )
        self.egress.start()

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def wait_records(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.records) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.records) >= n, self.records
        return self.records

    def close(self) -> None:
        self.egress.close()


def forward(echo: EchoServer, tool: str | None = None) -> netpolicy.Entry:
    return netpolicy.parse_entry(f"tcp:127.0.0.1:{echo.port}", tool=tool)


def round_trip(sock: socket.socket, data: bytes = b"ping") -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def closed(sock: socket.socket) -> bool:
    """True once the peer has closed: recv returns EOF or a reset."""
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


# --- limits ----------------------------------------------------------------------------


def test_the_connection_limit_refuses_one_over_and_records_it(echo: EchoServer) -> None:
    proxy = Proxy(echo, forward(echo), egress.Limits(connections=1))
    try:
        first = proxy.connect()
        assert round_trip(first) == b"ping"  # control: within the limit it relays
        second = proxy.connect()
        assert closed(second)
        refused = proxy.wait_records(1)[0]
        assert refused["decision"] == "refuse" and refused["rule"] == "egress.connections"
        assert "1 egress connections are open already" in refused["reason"]
        first.close()
        records = proxy.wait_records(2)
        third = proxy.connect()  # the slot is free again
        assert round_trip(third) == b"ping"
        third.close()
        assert [r["decision"] for r in records[:2]] == ["refuse", "allow"]
    finally:
        proxy.close()
    assert echo.accepted == 2


def test_an_idle_connection_is_ended(echo: EchoServer) -> None:
    proxy = Proxy(echo, forward(echo), egress.Limits(idle=0.3))
    try:
        sock = proxy.connect()
        assert round_trip(sock) == b"ping"
        started = time.monotonic()
        assert closed(sock)
        assert time.monotonic() - started < 4
        (record,) = proxy.wait_records(1)
        assert record["ended"] == "idle" and record["bytes_out"] == record["bytes_in"] == 4
    finally:
        proxy.close()


def test_the_byte_limit_ends_a_connection(echo: EchoServer) -> None:
    proxy = Proxy(echo, forward(echo), egress.Limits(bytes=10_000))
    try:
        sock = proxy.connect()
        assert round_trip(sock, b"x" * 4000) == b"x" * 4000  # 8000 both ways: under
        sock.sendall(b"y" * 4000)  # 12000 and more: over
        assert closed(sock)
        (record,) = proxy.wait_records(1)
        assert record["ended"] == "bytes limit"
        assert record["bytes_out"] + record["bytes_in"] > 10_000
    finally:
        proxy.close()


# --- tool-scoped connections end with their calls --------------------------------------


def test_a_tool_scoped_connection_is_closed_when_its_last_call_ends(echo: EchoServer) -> None:
    """Two calls of fetch overlap: the connection survives the first's end and is closed
    at the second's, and its record says so and names both calls."""
    calls: list[tuple[str, object]] = [("fetch", 1), ("fetch", "b")]
    proxy = Proxy(echo, forward(echo, tool="fetch"), in_flight=calls)
    try:
        sock = proxy.connect()
        assert round_trip(sock) == b"ping"
        calls.remove(("fetch", 1))
        proxy.egress.call_ended(1)
        assert round_trip(sock) == b"ping", "still held open by call b"
        calls.remove(("fetch", "b"))
        proxy.egress.call_ended("b")
        assert closed(sock)
        (record,) = proxy.wait_records(1)
        assert record["ended"] == "call ended" and record["calls"] == [1, "b"]
        assert record["rule"] == "tools.fetch.effects"
    finally:
        proxy.close()


def test_a_call_that_ends_while_its_connection_is_admitted_still_closes_it(
    echo: EchoServer,
) -> None:
    """The call's end arrives between the decision and the connection's registration: the
    proxy checks again after registering, so the connection does not outlive it."""
    calls: list[tuple[str, object]] = [("fetch", 5)]
    proxy = Proxy(echo, forward(echo, tool="fetch"), in_flight=calls)
    real_hold = proxy.egress._hold

    def late_end(state: Any, verdict: netpolicy.Verdict) -> None:
        calls.clear()
        proxy.egress.call_ended(5)  # too early: nothing is registered yet
        real_hold(state, verdict)

    proxy.egress._hold = late_end  # type: ignore[method-assign]
    try:
        sock = proxy.connect()
        assert closed(sock)
        (record,) = proxy.wait_records(1)
        assert record["ended"] == "call ended"
    finally:
        proxy.close()


def test_a_profile_wide_connection_outlives_calls(echo: EchoServer) -> None:
    """The control: a [sandbox] egress entry is not tied to any call."""
    calls: list[tuple[str, object]] = [("fetch", 1)]
    proxy = Proxy(echo, forward(echo), in_flight=calls)
    try:
        sock = proxy.connect()
        assert round_trip(sock) == b"ping"
        calls.clear()
        proxy.egress.call_ended(1)
        assert round_trip(sock, b"again") == b"again"
        sock.close()
        (record,) = proxy.wait_records(1)
        assert record["ended"] == "closed" and record["calls"] == [1]
    finally:
        proxy.close()


# --- tunnels: the TLS check waits for the client only when the client speaks first ------


def test_a_tunnel_to_a_server_that_speaks_first_is_not_held_back() -> None:
    """SSH, SMTP and the like talk first; TLS never does. The proxy waits for a ClientHello
    only while the upstream is silent, so the banner arrives without the client sending."""
    banner = socket.create_server(("127.0.0.1", 0))
    port = banner.getsockname()[1]

    def speak() -> None:
        conn, _ = banner.accept()
        with conn:
            conn.sendall(b"SSH-2.0-test\r\n")
            assert conn.recv(100) == b"SSH-2.0-client\r\n"

    threading.Thread(target=speak, daemon=True).start()
    listener = socket.create_server(("127.0.0.1", 0))
    records: list[dict[str, Any]] = []
    proxy = egress.Egress(
        [netpolicy.parse_entry(f"127.0.0.1:{port}")],
        [egress.Listener("http", listener)],
        record=lambda event, **fields: records.append(fields),
        in_flight=list,
    )
    proxy.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=5) as sock:
            sock.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
            # The 200 and the banner may arrive in one read: split them, do not assume.
            got = b""
            while not got.endswith(b"SSH-2.0-test\r\n"):
                chunk = sock.recv(100)
                assert chunk, got
                got += chunk
            head, _, first = got.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            assert first == b"SSH-2.0-test\r\n"
            sock.sendall(b"SSH-2.0-client\r\n")
        deadline = time.monotonic() + 5
        while not records and time.monotonic() < deadline:
            time.sleep(0.01)
        assert records[0]["decision"] == "allow" and records[0]["bytes_in"] == 14, records
    finally:
        proxy.close()
        banner.close()
