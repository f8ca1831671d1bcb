"""The egress proxy's request parsers: what reaches the upstream, and what is refused.

Each case feeds bytes through a real socket pair into the parser the proxy runs on a
connection (tests/test_egress.py runs the same proxy with real clients in the jail).
"""

from __future__ import annotations

import socket
import threading

import pytest

from mcpwrap.sandbox import egress


def http(request: bytes) -> tuple[str, int, bytes, bytes]:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.sendall(request)
        ours.shutdown(socket.SHUT_WR)
        return egress._http_request(theirs)


def upstream_head(request: bytes) -> list[bytes]:
    _, _, early, _ = http(request)
    return early.split(b"\r\n\r\n")[0].split(b"\r\n")


def test_an_absolute_uri_becomes_an_origin_request_with_the_uris_host() -> None:
    host, port, early, reply = http(
        b"GET http://api.example.test:8080/v1/x?q=1 HTTP/1.1\r\n"
        b"Host: other.example.test\r\nProxy-Authorization: Basic eA==\r\n"
        b"Connection: keep-alive\r\nAccept: */*\r\n\r\nbody"
    )
    assert (host, port, reply) == ("api.example.test", 8080, b"")
    head, _, rest = early.partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [
        b"GET /v1/x?q=1 HTTP/1.1",
        b"Host: api.example.test:8080",
        b"Accept: */*",
        b"Connection: close",
    ]
    assert rest == b"body"


@pytest.mark.parametrize(
    ("uri", "host", "port", "first"),
    [
        (b"http://a.test", "a.test", 80, b"GET / HTTP/1.1"),
        (b"http://a.test?x=1", "a.test", 80, b"GET /?x=1 HTTP/1.1"),
        (b"http://a.test/p#frag", "a.test", 80, b"GET /p HTTP/1.1"),
        (b"http://user:pw@a.test:81/", "a.test", 81, b"GET / HTTP/1.1"),
        (b"http://[2001:db8::1]:8080/", "2001:db8::1", 8080, b"GET / HTTP/1.1"),
    ],
)
def test_absolute_uri_forms(uri: bytes, host: str, port: int, first: bytes) -> None:
    got_host, got_port, early, _ = http(b"GET " + uri + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (got_host, got_port) == (host, port)
    lines = early.split(b"\r\n")
    assert lines[0] == first and lines[1].startswith(b"Host: ")
    assert b"Host: x" not in lines and b"user" not in early


def test_connect_keeps_bytes_sent_early_for_the_upstream() -> None:
    host, port, early, reply = http(b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test\r\n\r\n\x16\x03")
    assert (host, port, early) == ("a.test", 443, b"\x16\x03")
    assert reply.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    ("request_bytes", "why"),
    [
        (b"GET https://a.test/ HTTP/1.1\r\n\r\n", "only absolute http://"),
        (b"GET /relative HTTP/1.1\r\nHost: a.test\r\n\r\n", "only absolute http://"),
        (b"CONNECT a.test HTTP/1.1\r\n\r\n", "has no port"),
        (b"CONNECT a.test:0 HTTP/1.1\r\n\r\n", "no valid port"),
        (b"CONNECT a.test:99999 HTTP/1.1\r\n\r\n", "no valid port"),
        (b"GET http://a.test/ HTTP/2\r\n\r\n", "not an HTTP/1.x request line"),
        (b"hello\r\n\r\n", "not an HTTP/1.x request line"),
        (b"GET http://a.test/ HTTP/1.1\r\nX: y\nHost: evil.test\r\n\r\n", "bare CR or LF"),
        (b"GET http://a.test/ HTTP/1.1\r\nX: y\r\n Host: evil.test\r\n\r\n", "folded"),
        (b"GET http://a.test/ HTTP/1.1\r\nX: y\rHost: evil.test\r\n\r\n", "bare CR or LF"),
        (b"GET http://a.test/ HTTP/1.1\r\n", "closed before a full request head"),
        (b"GET http://a.test/ HTTP/1.1\r\nX: " + b"y" * 70_000, "request head over"),
    ],
)
def test_bad_http_requests_are_refused_with_the_reason(request_bytes: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        http(request_bytes)


# --- SOCKS5 -------------------------------------------------------------------------------


def socks(*messages: bytes) -> tuple[tuple[str, int] | Exception, bytes]:
    """Run the SOCKS parser against the client messages: (its result, what it replied)."""
    ours, theirs = socket.socketpair()
    result: list[tuple[str, int] | Exception] = []

    def serve() -> None:
        try:
            result.append(egress._socks_request(theirs))
        except ValueError as exc:
            result.append(exc)
        finally:
            theirs.shutdown(socket.SHUT_WR)

    with ours, theirs:
        worker = threading.Thread(target=serve)
        worker.start()
        ours.sendall(b"".join(messages))
        ours.shutdown(socket.SHUT_WR)
        worker.join(5)
        replies = b""
        while chunk := ours.recv(100):
            replies += chunk
    return result[0], replies


GREETING = b"\x05\x01\x00"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (b"\x03\x06a.test\x01\xbb", ("a.test", 443)),
        (b"\x01\xc6\x33\x64\x07\x00\x50", ("198.51.100.7", 80)),
        (b"\x04" + bytes.fromhex("20010db8" + "0" * 23 + "1") + b"\x00\x50", ("2001:db8::1", 80)),
    ],
)
def test_socks_connect_by_name_and_address(address: bytes, expected: tuple[str, int]) -> None:
    result, replies = socks(GREETING, b"\x05\x01\x00" + address)
    assert result == expected and replies == b"\x05\x00"


@pytest.mark.parametrize(
    ("messages", "why", "replies"),
    [
        ((b"\x04\x01\x00",), "SOCKS version 4", b""),
        ((b"\x05\x01\x02",), "no method without authentication", b"\x05\xff"),
        ((GREETING, b"\x05\x02\x00\x03\x06a.test\x01\xbb"), "only CONNECT", None),
        ((GREETING, b"\x05\x01\x00\x09"), "address type 9", b"\x05\x00"),
        ((GREETING, b"\x05\x01\x00\x03\x06a.t"), "closed mid-handshake", b"\x05\x00"),
    ],
)
def test_bad_socks_requests_are_refused(
    messages: tuple[bytes, ...], why: str, replies: bytes | None
) -> None:
    result, got = socks(*messages)
    assert isinstance(result, ValueError) and why in str(result)
    if replies is not None:
        assert got == replies
    else:  # the command-not-supported reply follows the method choice
        assert got[:2] == b"\x05\x00" and got[2:4] == b"\x05\x07"
