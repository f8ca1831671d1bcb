"""Reading the server name from a TLS ClientHello: real ones made by OpenSSL (through
Python's ssl module), cut, split across records and broken on purpose."""

from __future__ import annotations

import ssl

import pytest

from mcpwrap.sandbox import tlshello
from mcpwrap.sandbox.tlshello import Hello


def client_hello(server_name: str | None) -> bytes:
    """The first flight of a real TLS client (OpenSSL, via ssl.SSLObject)."""
    context = ssl.create_default_context()
    if server_name is None:
        context.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def records(hello: bytes, sizes: list[int]) -> bytes:
    """The same handshake re-framed as several records of the given payload sizes."""
    payload, out = hello[5:], b""
    for size in [*sizes, len(payload)]:
        chunk, payload = payload[:size], payload[size:]
        if chunk:
            out += b"\x16\x03\x01" + len(chunk).to_bytes(2) + chunk
    return out


def test_a_real_client_hello_names_its_server() -> None:
    assert tlshello.parse(client_hello("api.example.test")) == Hello(True, True, "api.example.test")


def test_a_hello_without_server_name() -> None:
    assert tlshello.parse(client_hello(None)) == Hello(True, True, None)


def test_a_hello_split_across_records_is_read_whole() -> None:
    hello = client_hello("api.example.test")
    split = records(hello, [3, 40, 100])
    assert tlshello.parse(split).name == "api.example.test"


def test_every_cut_of_a_hello_asks_for_more() -> None:
    hello = records(client_hello("api.example.test"), [60])
    for cut in range(len(hello)):
        assert tlshello.parse(hello[:cut]) == tlshello.NEED_MORE, cut


@pytest.mark.parametrize(
    "data",
    [b"GET / HTTP/1.1\r\n", b"SSH-2.0-OpenSSH\r\n", b"\x00\x01", b"x"],
)
def test_other_protocols_are_not_tls(data: bytes) -> None:
    assert tlshello.parse(data) == Hello(True, False)


def _with_extensions(extensions: bytes) -> bytes:
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    body += len(extensions).to_bytes(2) + extensions
    handshake = b"\x01" + len(body).to_bytes(3) + body
    return b"\x16\x03\x01" + len(handshake).to_bytes(2) + handshake


def _sni(*names: tuple[int, bytes]) -> bytes:
    entries = b"".join(bytes([k]) + len(n).to_bytes(2) + n for k, n in names)
    data = len(entries).to_bytes(2) + entries
    return b"\x00\x00" + len(data).to_bytes(2) + data


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (_with_extensions(_sni((0, b"a.test")) + _sni((0, b"b.test"))), "appears twice"),
        (_with_extensions(_sni((0, b"a.test"), (0, b"b.test"))), "2 host names"),
        (_with_extensions(_sni()), "0 host names"),
        (_with_extensions(_sni((0, b"\xff.test"))), "codec can't decode"),
        (_with_extensions(b"\x00\x00\x00\x09\x00"), "ends early"),
        (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", "type 2, not a ClientHello"),
        (b"\x16\x03\x01\x00\x01\x01" + b"\x17\x03\x03\x00\x01x", "not a handshake"),
        (b"\x16\x03\x01\x00\x04\x01\xff\xff\xff", "a ClientHello of 16777215 bytes"),
    ],
)
def test_malformed_hellos_are_errors(data: bytes, error: str) -> None:
    hello = tlshello.parse(data)
    assert hello.complete and hello.tls and hello.error is not None and error in hello.error


def test_a_hand_built_hello_names_its_server() -> None:
    data = _with_extensions(b"\x00\x17\x00\x00" + _sni((0, b"a.test")))
    assert tlshello.parse(data) == Hello(True, True, "a.test")
