"""Transport identity outward: the HTTP client mcpwrap uses to reach a remote MCP server.

Verifying the peer: TLS 1.2 or newer, the certificate checked against a CA file or the
system trust store, the host name checked; nothing here can turn that off. When the lock
holds SPKI pins, every new connection's server key is checked right after the handshake,
before a byte of any request (headers, bearer token) is written: the check sits in the
network stream httpcore2 hands its connections, so a mismatch closes the socket before the
HTTP layer ever holds it.

Proving who we are: a client certificate for mTLS, whose key comes from the OS keyring
(kept off the disk: it reaches OpenSSL through a memfd) or from a file only its owner can
read.

Imported only for a remote server: `run` over stdio never pays for ssl, httpx2 or
cryptography (tests/test_lean.py).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import re
import ssl
import stat
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import httpcore2
import httpx2

from mcpwrap.basics.errors import MCPWrapError

_PIN = re.compile(r"sha256/[A-Za-z0-9+/]{43}=")
_KEYRING = "keyring:"
_CONNECT_TIMEOUT = 30.0  # fetch_pin's, for one handshake
# OpenSSL's verify codes (X509_V_ERR_*) that have a more useful message than its own.
_EXPIRED, _NOT_YET_VALID = 10, 9
_UNKNOWN_ISSUER = {2, 18, 19, 20, 21}
_WRONG_NAME = {62, 63, 64}
# Alerts a server sends when it does not accept our client certificate (or its absence).
_CLIENT_CERT_ALERTS = (
    "CERTIFICATE_REQUIRED",
    "BAD_CERTIFICATE",
    "UNKNOWN_CA",
    "CERTIFICATE_UNKNOWN",
    "CERTIFICATE_EXPIRED",
    "UNSUPPORTED_CERTIFICATE",
    "ACCESS_DENIED",
)


class TlsRefused(MCPWrapError):
    """A connection to a remote server refused for its TLS identity, or ours that cannot be
    set up: the message names the host (or the setting), what was wrong and what to do."""


class TlsSettings(NamedTuple):
    ca_file: str | None  # PEM bundle; None: the system trust store
    client_cert: str | None  # PEM certificate (chain) file for mTLS
    client_key: str | None  # "keyring:SERVICE/USER", or a file only its owner can read
    pins: tuple[str, ...]  # accepted SPKI pins "sha256/<base64>" (empty: no pinning)
    # The (host, port) the pins are for; None: every connection. An authorization server
    # on another host has a key of its own, verified by the CA and its name only.
    pinned: tuple[str, int] | None = None


def spki_pin(cert_der: bytes) -> str:
    """The certificate's pin, RFC 7469 style: "sha256/" and the base64 of the SHA-256 of its
    SubjectPublicKeyInfo (DER)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key = x509.load_der_x509_certificate(cert_der).public_key()
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256/" + base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


class Connection(NamedTuple):
    """One connection the client opened or was refused, for the caller's audit record."""

    event: str  # "egress": the TCP connection; "tls": its handshake (https only)
    host: str
    port: int
    address: str | None  # the peer's IP address, once connected
    pin: str | None  # the server key's pin, once verified
    refused: str | None  # why it was refused; None: allowed


# (host, port) -> None to allow the connection, or the reason it is refused.
Admit = Callable[[str, int], str | None]
Watch = Callable[[Connection], None]


def http_client(
    tls: TlsSettings,
    *,
    headers: dict[str, str],
    timeout: float,
    admit: Admit | None = None,
    watch: Watch | None = None,
) -> httpx2.AsyncClient:
    """An AsyncClient that verifies the server (and its pin) on every new connection.

    Redirects are not followed (the MCP SDK follows those within the origin itself), and
    nothing is taken from the environment: no proxy, no .netrc, no SSLKEYLOGFILE. `admit`
    decides each new connection's host and port before it is opened; `watch` is told of
    each connection and each handshake, allowed or refused.
    """
    pins = _checked_pins(tls.pins)
    pinned = (tls.pinned[0].lower(), tls.pinned[1]) if tls.pinned is not None else None
    transport = _Transport(
        _context(tls), pins, tls.client_cert is not None, admit, watch, pinned=pinned
    )
    return httpx2.AsyncClient(
        transport=transport,
        headers=headers,
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
    )


async def fetch_pin(url: str, tls: TlsSettings) -> str:
    """The pin of the server at `url`, verified as http_client verifies it (CA, host name,
    TLS version) but whatever `tls.pins` says: `lock` and `approve` record what they see.
    Only a handshake: no HTTP request is sent."""
    parsed = httpx2.URL(url)
    if parsed.scheme != "https":
        raise TlsRefused(f"{url}: only an https URL has a server key to pin")
    host, port = parsed.host, parsed.port or 443
    where = _where(host, port)
    context = _context(tls)
    backend = _PinningBackend((), tls.client_cert is not None)
    try:
        plain = await backend.connect_tcp(host, port, timeout=_CONNECT_TIMEOUT)
        stream = await plain.start_tls(context, server_hostname=host, timeout=_CONNECT_TIMEOUT)
    except TlsRefused:
        raise
    except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
        raise TlsRefused(
            f"{where}: cannot connect ({exc or type(exc).__name__}); check the URL and that "
            "the server is up"
        ) from exc
    try:
        return spki_pin(_peer_der(stream, where))
    finally:
        await stream.aclose()


# --- the SSL context ------------------------------------------------------------------------


def _context(tls: TlsSettings) -> ssl.SSLContext:
    # PROTOCOL_TLS_CLIENT: CERT_REQUIRED and check_hostname, which nothing below relaxes.
    # Not ssl.create_default_context: it would write session keys to $SSLKEYLOGFILE.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.ca_file is None:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        try:
            context.load_verify_locations(cafile=tls.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TlsRefused(
                f"[server.tls] ca = {tls.ca_file!r}: cannot be read as a PEM CA bundle "
                f"({_reason(exc)}); name a file holding the CA's certificate"
            ) from exc
    _load_identity(context, tls)
    return context


def _load_identity(context: ssl.SSLContext, tls: TlsSettings) -> None:
    if tls.client_cert is None and tls.client_key is None:
        return
    if tls.client_cert is None or tls.client_key is None:
        missing = "client_key" if tls.client_cert is not None else "client_cert"
        raise TlsRefused(
            f"[server.tls] {missing} is missing: client_cert and client_key go together "
            "(the key as keyring:SERVICE/USER, or a file only you can read)"
        )
    where = f"[server.tls] client_key = {tls.client_key!r}"
    if tls.client_key.startswith(_KEYRING):
        from mcpwrap.identity import secrets

        key = secrets.read_one(tls.client_key, "[server.tls] client_key").encode()
    else:
        key = _key_file(tls.client_key, where)
    if b"PRIVATE KEY-----" not in key:
        raise TlsRefused(f"{where}: not a PEM private key (no BEGIN ... PRIVATE KEY line)")
    if b"ENCRYPTED" in key:
        raise TlsRefused(_encrypted(where))
    key += b"" if key.endswith(b"\n") else b"\n"  # `secret set` drops the last newline
    cert = f"[server.tls] client_cert = {tls.client_cert!r}"
    try:
        _load_chain(context, tls.client_cert, key, where)
    except FileNotFoundError as exc:
        raise TlsRefused(f"{cert}: no such file ({exc.strerror})") from exc
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise TlsRefused(
                f"{where}: this key does not belong to the certificate in {cert}; name the "
                "pair's key"
            ) from exc
        raise TlsRefused(
            f"{cert} with client_key: cannot be loaded ({_reason(exc)}); both must be PEM"
        ) from exc
    except OSError as exc:
        raise TlsRefused(f"{cert}: cannot be read ({exc})") from exc


def _load_chain(context: ssl.SSLContext, cert: str, key: bytes, where: str) -> None:
    """The key goes to OpenSSL through an anonymous memory file, never a file on disk:
    /proc/self/fd/N is its only name, and it is closed as soon as OpenSSL has read it."""
    try:
        fd = os.memfd_create("mcpwrap-client-key", os.MFD_CLOEXEC)
    except (AttributeError, OSError) as exc:
        raise TlsRefused(f"{where}: no memfd_create on this system ({exc})") from exc
    try:
        view = memoryview(key)
        while view:
            view = view[os.write(fd, view) :]
        context.load_cert_chain(cert, keyfile=f"/proc/self/fd/{fd}", password=_no_passphrase(where))
    finally:
        os.close(fd)


def _no_passphrase(where: str) -> Any:
    def refuse() -> bytes:
        # Called by OpenSSL for an encrypted key; without it OpenSSL would prompt on a tty.
        raise TlsRefused(_encrypted(where))

    return refuse


def _encrypted(where: str) -> str:
    return (
        f"{where}: the key is encrypted, and mcpwrap has no passphrase to give it; store it "
        "decrypted in the keyring instead: openssl pkey -in KEY | mcpwrap secret set "
        "keyring:SERVICE/USER, then name that reference as client_key"
    )


def _key_file(path: str, where: str) -> bytes:
    """The key's bytes, if the file is a regular file only its owner can read. Checked on
    the open file, so the file checked is the file read."""
    try:
        # O_NONBLOCK: a FIFO put in the key's place must not hang the open.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise TlsRefused(
            f"{where}: cannot be opened ({exc.strerror}); name the key file, or store the "
            "key with `mcpwrap secret set keyring:SERVICE/USER` and name that"
        ) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise TlsRefused(f"{where}: not a regular file; name the key file itself")
        if info.st_uid != os.geteuid():
            raise TlsRefused(
                f"{where}: owned by uid {info.st_uid}, not by you (uid {os.geteuid()}); "
                f"a key must be yours alone: chown $(id -u) {path}"
            )
        if info.st_mode & 0o077:
            raise TlsRefused(
                f"{where}: mode {stat.S_IMODE(info.st_mode):04o} lets others read it; "
                f"make it yours alone: chmod 600 {path}"
            )
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _checked_pins(pins: Iterable[str]) -> tuple[str, ...]:
    checked = tuple(pins)
    for pin in checked:
        if not _PIN.fullmatch(pin):
            raise TlsRefused(
                f"pin {pin!r} is not sha256/<base64 of 32 bytes>; record pins with "
                "`mcpwrap approve`"
            )
    return checked


# --- the connection: verified, then pinned, before the HTTP layer sees it ---------------------


class _Stream(httpcore2.AsyncNetworkStream):
    """A stream that passes everything on to the backend's own."""

    def __init__(self, inner: httpcore2.AsyncNetworkStream, where: str) -> None:
        self._inner, self._where = inner, where

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _PinningStream(_Stream):
    """A plain TCP stream whose start_tls checks the server's key against the pins."""

    def __init__(
        self,
        inner: httpcore2.AsyncNetworkStream,
        where: str,
        pins: tuple[str, ...],
        ours: bool,
        told: Callable[[str | None, str | None], None] = lambda pin, refused: None,
    ) -> None:
        super().__init__(inner, where)
        self._pins, self._ours, self._told = pins, ours, told

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        try:
            stream = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        except httpcore2.ConnectError as exc:  # the inner stream closed itself
            refusal = _refusal(exc, self._where, self._ours)
            self._told(None, str(refusal or exc))
            if refusal is None:
                raise
            raise refusal from exc
        try:
            seen = spki_pin(_peer_der(stream, self._where))
        except BaseException as exc:
            self._told(None, str(exc))
            await stream.aclose()
            raise
        if self._pins and seen not in self._pins:
            await stream.aclose()
            refusal = TlsRefused(
                f"{self._where}: the server's public key changed: its pin is {seen}, and "
                f"only {', '.join(self._pins)} are accepted (the profile's [server.tls] pins "
                "where it names some, else the lock's); nothing was sent. If the change is "
                "expected (the operator replaced the key), run `mcpwrap approve` to review "
                "and record the new pin, or add it to [server.tls] pins where the profile "
                "names them; if not, someone may be intercepting the connection"
            )
            self._told(seen, str(refusal))
            raise refusal
        self._told(seen, None)
        return _AnsweredStream(stream, self._where, self._ours)


class _AnsweredStream(_Stream):
    """A verified TLS stream that explains a connection the server drops before its first
    answer. Under TLS 1.3 a server checks our client certificate only after our side of
    the handshake is done: its refusal arrives as an alert at our first read, or, when it
    closes the socket on our request bytes, as a bare reset that has lost the alert."""

    def __init__(self, inner: httpcore2.AsyncNetworkStream, where: str, ours: bool) -> None:
        super().__init__(inner, where)
        self._ours, self._answered = ours, False

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._answered:
            return await self._inner.read(max_bytes, timeout)
        try:
            data = await self._inner.read(max_bytes, timeout)
        except (httpcore2.ReadError, ssl.SSLError) as exc:
            raise _refusal(exc, self._where, self._ours) or TlsRefused(self._dropped()) from exc
        if not data:
            raise TlsRefused(self._dropped())
        self._answered = True
        return data

    def _dropped(self) -> str:
        if self._ours:
            likely = (
                "if it requires a client certificate, it did not accept ours: check "
                "[server.tls] client_cert and client_key, or ask its operator which CA it trusts"
            )
        else:
            likely = (
                "if it requires a client certificate (mTLS), name one with [server.tls] "
                "client_cert and client_key"
            )
        return (
            f"{self._where}: the server closed the connection after the TLS handshake "
            f"without answering; {likely}; otherwise see the server's logs"
        )


class _PinningBackend(httpcore2.AsyncNetworkBackend):
    def __init__(
        self,
        pins: tuple[str, ...],
        ours: bool,
        admit: Admit | None = None,
        watch: Watch | None = None,
        pinned: tuple[str, int] | None = None,
    ) -> None:
        self._inner, self._pins, self._ours = httpcore2.AnyIOBackend(), pins, ours
        self._admit, self._watch, self._pinned = admit, watch, pinned

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        where = _where(host, port)
        watch = self._watch or (lambda connection: None)
        why = self._admit(host, port) if self._admit is not None else None
        if why is not None:
            watch(Connection("egress", host, port, None, None, why))
            raise TlsRefused(f"{where}: not connecting: {why}")
        try:
            inner = await self._inner.connect_tcp(
                host, port, timeout, local_address, socket_options
            )
        except Exception as exc:
            watch(Connection("egress", host, port, None, None, f"cannot connect: {exc!r}"))
            raise
        peer = inner.get_extra_info("server_addr")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else None
        watch(Connection("egress", host, port, address, None, None))

        def told(pin: str | None, refused: str | None) -> None:
            watch(Connection("tls", host, port, address, pin, refused))

        pins = self._pins if self._pinned in (None, (host.lower(), port)) else ()
        return _PinningStream(inner, where, pins, self._ours, told)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.AsyncNetworkStream:
        raise TlsRefused(f"{path}: a remote server is reached over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _Transport(httpx2.AsyncHTTPTransport):
    """httpx2's transport over a pool whose connections come from _PinningBackend."""

    def __init__(
        self,
        context: ssl.SSLContext,
        pins: tuple[str, ...],
        ours: bool,
        admit: Admit | None = None,
        watch: Watch | None = None,
        *,
        pinned: tuple[str, int] | None = None,
    ) -> None:
        super().__init__(verify=context, trust_env=False)
        # httpx2 offers no network_backend argument; its pool is replaced by one built
        # alike with the pinning backend. Should httpx2 rename the attribute, fail here
        # rather than run with a pool that does not pin.
        if not isinstance(getattr(self, "_pool", None), httpcore2.AsyncConnectionPool):
            raise RuntimeError("httpx2's AsyncHTTPTransport no longer keeps its pool in _pool")
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=context,
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=_PinningBackend(pins, ours, admit, watch, pinned),
        )
        self._pins, self._ours, self._pinned = pins, ours, pinned

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        where = _where(url.host, port)
        if url.scheme != "https":
            if self._pins and self._pinned in (None, (url.host.lower(), port)):
                raise TlsRefused(
                    f"{where}: the lock pins this server's key, but the URL is {url.scheme}; "
                    "use its https URL"
                )
            if not _loopback(url.host):
                raise TlsRefused(
                    f"{where}: plain {url.scheme} is allowed to this machine only; use https"
                )
        try:
            return await super().handle_async_request(request)
        except TlsRefused:
            raise
        except Exception as exc:  # an ssl error httpx2 passed on raw, or wrapped
            refusal = _refusal(exc, where, self._ours)
            if refusal is None:
                raise
            raise refusal from exc


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- errors: what went wrong, said for a person ---------------------------------------------


def _refusal(exc: BaseException, where: str, ours: bool) -> TlsRefused | None:
    """A TlsRefused for an ssl error somewhere in exc's chain, or None if there is none."""
    found = _ssl_cause(exc)
    if isinstance(found, ssl.SSLCertVerificationError):
        return TlsRefused(_verify_message(found, where))
    if found is None:
        return None
    reason = _reason(found)
    if "ALERT" in reason and any(alert in reason for alert in _CLIENT_CERT_ALERTS):
        if ours:
            return TlsRefused(
                f"{where}: the server refused our client certificate ({reason}); check "
                "[server.tls] client_cert and client_key, or ask the server's operator which "
                "CA it trusts"
            )
        return TlsRefused(
            f"{where}: the server requires a client certificate ({reason}); name one with "
            "[server.tls] client_cert and client_key"
        )
    if "VERSION" in reason or "PROTOCOL" in reason:
        return TlsRefused(
            f"{where}: the TLS handshake failed ({reason}); mcpwrap needs TLS 1.2 or newer, "
            "which the server does not seem to offer"
        )
    return TlsRefused(f"{where}: the TLS connection failed ({reason})")


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _verify_message(exc: ssl.SSLCertVerificationError, where: str) -> str:
    code, said = exc.verify_code, exc.verify_message
    if code == _EXPIRED:
        return (
            f"{where}: the server's certificate has expired ({said}); its operator must "
            "renew it (if it was renewed, check this machine's clock)"
        )
    if code == _NOT_YET_VALID:
        return (
            f"{where}: the server's certificate is not valid yet ({said}); check this "
            "machine's clock"
        )
    if code in _UNKNOWN_ISSUER:
        return (
            f"{where}: the server's certificate is not signed by a CA mcpwrap trusts ({said}); "
            "if the server uses a private CA, name its certificate in [server.tls] ca, "
            "otherwise someone may be intercepting the connection"
        )
    if code in _WRONG_NAME:
        return (
            f"{where}: the server's certificate is for another host ({said}); connect with "
            "a name the certificate holds, or ask the server's operator"
        )
    return f"{where}: the server's certificate was refused ({said or _reason(exc)})"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _peer_der(stream: httpcore2.AsyncNetworkStream, where: str) -> bytes:
    ssl_object = stream.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise TlsRefused(f"{where}: the server sent no certificate")
    return bytes(der)
