"""The server name a TLS ClientHello asks for (RFC 8446 4.1.2, RFC 6066 3), read from the
first bytes a client sends through a tunnel.

A pure function of bytes, so that the egress proxy can see which site a tunnel to an
allowlisted address is really for: a different name in the ClientHello asks the same
address (a CDN edge serving many sites) for another site.
"""

from __future__ import annotations

from typing import NamedTuple

MAX_HELLO = 64 * 1024  # more than any real ClientHello; a longer one is refused


class Hello(NamedTuple):
    complete: bool  # False: more bytes are needed to decide
    tls: bool  # the bytes start a TLS handshake
    name: str | None = None  # the host_name in server_name, if the client sent one
    error: str | None = None  # a malformed ClientHello: why


NEED_MORE = Hello(False, True)


def parse(data: bytes) -> Hello:
    """What the first bytes of a tunnel say: not TLS, a ClientHello (with its server
    name, if any), a malformed one, or not enough bytes yet."""
    if not data:
        return NEED_MORE
    if data[0] != 0x16:  # handshake record
        return Hello(True, False)
    handshake = bytearray()
    at = 0
    # A ClientHello may span several records: gather their payloads.
    while True:
        if len(data) < at + 5:
            return NEED_MORE
        kind, major, length = data[at], data[at + 1], int.from_bytes(data[at + 3 : at + 5])
        if kind != 0x16 or major != 3:
            return _bad("a TLS record that is not a handshake interrupts the ClientHello")
        if len(data) < at + 5 + length:
            return NEED_MORE
        handshake += data[at + 5 : at + 5 + length]
        at += 5 + length
        if len(handshake) >= 4:
            if handshake[0] != 0x01:
                return _bad(f"handshake message type {handshake[0]}, not a ClientHello")
            size = int.from_bytes(handshake[1:4])
            if size > MAX_HELLO:
                return _bad(f"a ClientHello of {size} bytes")
            if len(handshake) >= 4 + size:
                return _client_hello(bytes(handshake[4 : 4 + size]))


def _bad(why: str) -> Hello:
    return Hello(True, True, None, why)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise ValueError("the ClientHello ends early")
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    def number(self, width: int) -> int:
        return int.from_bytes(self.take(width))

    def vector(self, width: int) -> bytes:
        return self.take(self.number(width))


def _client_hello(body: bytes) -> Hello:
    try:
        r = _Reader(body)
        r.take(2 + 32)  # legacy_version, random
        r.vector(1)  # legacy_session_id
        r.vector(2)  # cipher_suites
        r.vector(1)  # legacy_compression_methods
        if r.at == len(body):
            return Hello(True, True)  # no extensions at all (an old client)
        extensions = _Reader(r.vector(2))
        name = None
        seen: set[int] = set()
        while extensions.at < len(extensions.data):
            kind, data = extensions.number(2), extensions.vector(2)
            if kind in seen:
                return _bad(f"extension {kind} appears twice")
            seen.add(kind)
            if kind == 0:
                name = _server_name(data)
        return Hello(True, True, name)
    except ValueError as exc:
        return _bad(str(exc))


def _server_name(data: bytes) -> str:
    names = _Reader(_Reader(data).vector(2))
    found: list[str] = []
    while names.at < len(names.data):
        kind, value = names.number(1), names.vector(2)
        if kind == 0:
            found.append(value.decode("ascii", "strict"))
    if len(found) != 1:  # RFC 6066: one host_name at most; none is no name
        raise ValueError(f"server_name holds {len(found)} host names")
    return found[0]
