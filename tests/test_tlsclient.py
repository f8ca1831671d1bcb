"""The TLS client for remote servers (mcpwrap/identity/tlsclient.py) against real TLS
servers on loopback, with a test CA made here: each refusal next to the control that
succeeds, and the server's own record of what reached it.

The server is Python's ssl over a plain socket, speaking just enough HTTP/1.1 by hand to
answer one request per connection: it records every byte that arrives after a handshake,
so "nothing was sent" is read from the server's side, not inferred from the client's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mcpwrap.identity import tlsclient
from mcpwrap.identity.tlsclient import TlsRefused, TlsSettings, fetch_pin, http_client, spki_pin

TOKEN = "Bearer tok-" + "7" * 24  # what must never reach a server whose pin is wrong
LOOPBACK = ipaddress.ip_address("127.0.0.1")


# --- certificates -------------------------------------------------------------------------------


class Issued(NamedTuple):
    cert: Path  # PEM
    key: Path  # PEM, unencrypted, mode 0600
    der: bytes  # the certificate


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _pem_key(key: Any, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


class CA:
    """A test CA writing its certificate and the ones it issues under `where`."""

    def __init__(self, where: Path, name: str) -> None:
        self.where, self.name = where / name, name
        self.where.mkdir()
        now = datetime.datetime.now(datetime.UTC)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=30))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
            )
            .add_extension(self.ski, critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.where / "ca.pem"
        self.pem.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        label: str,
        *,
        dns: tuple[str, ...] = (),
        ip: bool = True,
        client: bool = False,
        expired: bool = False,
        rsa_key: bool = False,
    ) -> Issued:
        now = datetime.datetime.now(datetime.UTC)
        start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)
        if expired:
            start, end = now - datetime.timedelta(days=10), now - datetime.timedelta(days=1)
        key: Any = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if rsa_key
            else ec.generate_private_key(ec.SECP256R1())
        )
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
        if ip:
            names.append(x509.IPAddress(LOOPBACK))
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(label))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self.ski), False
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_path, key_path = self.where / f"{label}.pem", self.where / f"{label}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(_pem_key(key))
        key_path.chmod(0o600)
        return Issued(cert_path, key_path, cert.public_bytes(serialization.Encoding.DER))


class PKI(NamedTuple):
    ca: CA
    other_ca: CA
    server: Issued  # for 127.0.0.1, by ca
    client: Issued  # a client certificate, by ca


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    base = tmp_path_factory.mktemp("pki")
    ca, other = CA(base, "test-ca"), CA(base, "other-ca")
    return PKI(ca, other, ca.issue("server"), ca.issue("client", ip=False, client=True))


# --- the server ---------------------------------------------------------------------------------


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


class Server:
    """A TLS (or plain) HTTP server on 127.0.0.1, one request per connection.

    A handshake that fails is closed at once (the peer's request bytes, arriving after,
    then draw a reset that may overtake the alert), or with `linger` after reading what
    the client sends (the client then reads the alert)."""

    def __init__(
        self,
        served: Issued | None,
        *,
        client_ca: Path | None = None,
        reply: bytes = OK,
        context: ssl.SSLContext | None = None,
        linger: bool = False,
    ) -> None:
        self.context, self.linger = context, linger
        if served is not None and context is None:
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(served.cert, served.key)
        if client_ca is not None:
            assert self.context is not None
            self.context.verify_mode = ssl.CERT_REQUIRED
            self.context.load_verify_locations(client_ca)
        self.reply = reply
        self.handshakes: list[str] = []  # "ok", or why it failed
        self.received: list[bytes] = []  # per connection: every byte after the handshake
        self.client_certs: list[Any] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        scheme = "https" if self.context is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}/mcp"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.sock.close()

    @property
    def requests(self) -> list[bytes]:
        return [r for r in self.received if r]

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            with conn:
                self._one(conn)

    def _one(self, conn: socket.socket) -> None:
        stream: socket.socket | ssl.SSLSocket = conn
        if self.context is not None:
            stream = self.context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            try:
                stream.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                self.handshakes.append(f"failed: {exc}")
                if self.linger:  # read what the client sent on before closing: no reset
                    with socket.socket(fileno=stream.detach()) as plain:
                        plain.shutdown(socket.SHUT_WR)
                        with contextlib.suppress(OSError):
                            while plain.recv(65536):
                                pass
                return
            self.handshakes.append("ok")
            self.client_certs.append(stream.getpeercert())
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = stream.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (ssl.SSLError, OSError):
            pass
        self.received.append(data)
        if b"\r\n\r\n" in data:
            stream.sendall(self.reply)
        stream.close()


# --- driving the client ---------------------------------------------------------------------------


def settings(
    ca: Path | None = None,
    *,
    pins: tuple[str, ...] = (),
    cert: Path | None = None,
    key: str | Path | None = None,
) -> TlsSettings:
    return TlsSettings(
        str(ca) if ca else None, str(cert) if cert else None, str(key) if key else None, pins
    )


def get(url: str, tls: TlsSettings) -> httpx2.Response:
    async def go() -> httpx2.Response:
        async with http_client(tls, headers={"Authorization": TOKEN}, timeout=10) as client:
            return await client.get(url)

    return asyncio.run(go())


def refused(url: str, tls: TlsSettings) -> str:
    with pytest.raises(TlsRefused) as caught:
        get(url, tls)
    return str(caught.value)


# --- verifying the server -------------------------------------------------------------------------


def test_the_right_ca_connects_and_another_ca_is_refused(pki: PKI) -> None:
    with Server(pki.server) as server:
        response = get(server.url, settings(pki.ca.pem))
        assert response.status_code == 200 and response.text == "ok"
        assert TOKEN.encode() in server.requests[0]  # the headers went through

        message = refused(server.url, settings(pki.other_ca.pem))
    assert f"127.0.0.1:{server.port}" in message
    assert "not signed by a CA mcpwrap trusts" in message and "[server.tls] ca" in message
    assert len(server.requests) == 1  # the refused one sent nothing


def test_the_system_trust_store_does_not_trust_the_test_ca(pki: PKI) -> None:
    """No CA file means the system store, not "anything goes"."""
    with Server(pki.server) as server:
        message = refused(server.url, settings(None))
        assert get(server.url, settings(pki.ca.pem)).status_code == 200  # control
    assert "not signed by a CA mcpwrap trusts" in message
    assert len(server.requests) == 1


def test_an_expired_certificate_is_refused(pki: PKI) -> None:
    expired = pki.ca.issue("expired", expired=True)
    with Server(expired) as server:
        message = refused(server.url, settings(pki.ca.pem))
    assert f"127.0.0.1:{server.port}" in message and "expired" in message
    assert "renew" in message
    assert server.requests == []


def test_a_certificate_for_another_host_is_refused(pki: PKI) -> None:
    other = pki.ca.issue("other-host", dns=("other.example.test",), ip=False)
    with Server(other) as server:
        message = refused(server.url, settings(pki.ca.pem))
    assert f"127.0.0.1:{server.port}" in message and "certificate is for another host" in message
    assert server.requests == []


def test_tls_older_than_1_2_is_refused(pki: PKI) -> None:
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with pytest.warns(DeprecationWarning):
        old.minimum_version = ssl.TLSVersion.TLSv1_1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    old.load_cert_chain(pki.server.cert, pki.server.key)
    with Server(None, context=old) as server:
        message = refused(server.url, settings(pki.ca.pem))
        # Control: the server does speak TLS 1.1 to a client that allows it.
        willing = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        willing.load_verify_locations(pki.ca.pem)
        with pytest.warns(DeprecationWarning):
            willing.minimum_version = ssl.TLSVersion.TLSv1_1
        willing.set_ciphers("DEFAULT:@SECLEVEL=0")
        with (
            socket.create_connection(("127.0.0.1", server.port)) as raw,
            willing.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.version() == "TLSv1.1"
    assert "TLS 1.2 or newer" in message
    assert server.requests == []
    # Python (since 3.10, for PROTOCOL_TLS_CLIENT) and OpenSSL 3's default security level
    # already refuse TLS 1.1; mcpwrap states the floor itself all the same.
    assert tlsclient._context(settings(pki.ca.pem)).minimum_version == ssl.TLSVersion.TLSv1_2


def test_sslkeylogfile_is_ignored(
    pki: PKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ssl.create_default_context would write the session keys to $SSLKEYLOGFILE."""
    keylog = tmp_path / "keys.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(keylog))
    with Server(pki.server) as server:
        assert get(server.url, settings(pki.ca.pem)).status_code == 200
    assert not keylog.exists()


# --- pins -------------------------------------------------------------------------------------------


def test_a_matching_pin_connects(pki: PKI) -> None:
    other = spki_pin(pki.client.der)
    with Server(pki.server) as server:
        for pins in [(spki_pin(pki.server.der),), (other, spki_pin(pki.server.der))]:
            assert get(server.url, settings(pki.ca.pem, pins=pins)).status_code == 200
    assert len(server.requests) == 2


def test_a_pin_mismatch_refuses_before_any_byte_is_sent(pki: PKI) -> None:
    expected = spki_pin(pki.client.der)  # a valid pin, of another key
    seen = spki_pin(pki.server.der)
    with Server(pki.server) as server:
        message = refused(server.url, settings(pki.ca.pem, pins=(expected,)))
    assert server.handshakes == ["ok"]  # the handshake happened: the pin is checked after it
    assert server.received == [b""]  # and nothing at all arrived after it
    assert f"127.0.0.1:{server.port}" in message
    assert seen in message and expected in message and "mcpwrap approve" in message


def test_a_pin_is_checked_on_every_new_connection(pki: PKI) -> None:
    """Two servers on one address one after the other, as a key rotation (or an attacker)
    would look: the second connection is checked, not waved through by the first."""
    replaced = pki.ca.issue("replaced")
    pin = spki_pin(pki.server.der)

    async def two_requests(first: Server) -> str:
        async with http_client(
            settings(pki.ca.pem, pins=(pin,)), headers={"Authorization": TOKEN}, timeout=10
        ) as client:
            assert (await client.get(first.url)).status_code == 200
            with Server(replaced) as second, pytest.raises(TlsRefused) as caught:
                await client.get(second.url)
            assert second.received == [b""]  # read once its thread is done
            return str(caught.value)

    with Server(pki.server) as first:
        message = asyncio.run(two_requests(first))
    assert spki_pin(replaced.der) in message


def test_a_malformed_pin_is_refused_at_once(pki: PKI) -> None:
    with pytest.raises(TlsRefused, match="not sha256/<base64"):
        http_client(settings(pki.ca.pem, pins=("sha256/short",)), headers={}, timeout=5)


@pytest.mark.parametrize("rsa_key", [False, True], ids=["ec", "rsa"])
def test_spki_pin_matches_openssl(pki: PKI, rsa_key: bool) -> None:
    issued = pki.ca.issue(f"openssl-{int(rsa_key)}", rsa_key=rsa_key)
    pubkey = subprocess.run(
        ["openssl", "x509", "-pubkey", "-noout", "-in", str(issued.cert)],
        capture_output=True,
        check=True,
    ).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"],
        input=pubkey,
        capture_output=True,
        check=True,
    ).stdout
    digest = subprocess.run(
        ["openssl", "dgst", "-sha256", "-binary"], input=der, capture_output=True, check=True
    ).stdout
    assert spki_pin(issued.der) == "sha256/" + base64.b64encode(digest).decode()


def test_fetch_pin_verifies_and_sends_no_request(pki: PKI) -> None:
    with Server(pki.server) as server:
        pin = asyncio.run(fetch_pin(server.url, settings(pki.ca.pem)))
        # It reports a changed key (what `approve` shows) even when pins say otherwise...
        changed = asyncio.run(
            fetch_pin(server.url, settings(pki.ca.pem, pins=(spki_pin(pki.client.der),)))
        )
        # ...but never one it could not verify.
        with pytest.raises(TlsRefused, match="not signed by a CA"):
            asyncio.run(fetch_pin(server.url, settings(pki.other_ca.pem)))
    assert pin == changed == spki_pin(pki.server.der)
    assert server.requests == []


# --- the client we build ------------------------------------------------------------------------------


def test_redirects_are_not_followed(pki: PKI) -> None:
    with Server(pki.server) as target:
        moved = (
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: " + target.url.encode()
            + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )  # fmt: skip
        with Server(pki.server, reply=moved) as server:
            response = get(server.url, settings(pki.ca.pem))
    assert response.status_code == 307
    assert target.received == []


def test_plain_http_only_to_loopback(pki: PKI) -> None:
    with Server(None) as plain:
        assert get(plain.url, settings()).status_code == 200  # loopback: allowed
        # Pins with a plain URL: refused, there is no key to check.
        message = refused(plain.url, settings(pins=(spki_pin(pki.server.der),)))
        assert "use its https URL" in message
    assert len(plain.requests) == 1
    # TEST-NET-3: refused before any connection is tried.
    message = refused("http://203.0.113.7/mcp", settings())
    assert "203.0.113.7:80" in message and "use https" in message


# --- proving who we are: mTLS ----------------------------------------------------------------------------


def test_mtls_with_the_client_certificate_connects(pki: PKI) -> None:
    tls = settings(pki.ca.pem, cert=pki.client.cert, key=pki.client.key)
    with Server(pki.server, client_ca=pki.ca.pem) as server:
        assert get(server.url, tls).status_code == 200
    subject = dict(x[0] for x in server.client_certs[0]["subject"])
    assert subject["commonName"] == "client"


@pytest.mark.parametrize("linger", [True, False], ids=["alert", "reset"])
def test_mtls_without_a_client_certificate_is_refused(pki: PKI, linger: bool) -> None:
    with Server(pki.server, client_ca=pki.ca.pem, linger=linger) as server:
        message = refused(server.url, settings(pki.ca.pem))
    assert f"127.0.0.1:{server.port}" in message
    assert "client certificate" in message and "[server.tls] client_cert" in message
    if linger:
        assert "requires a client certificate (TLSV13_ALERT_CERTIFICATE_REQUIRED)" in message
    assert server.requests == [] and server.handshakes[0].startswith("failed")


@pytest.mark.parametrize("linger", [True, False], ids=["alert", "reset"])
def test_mtls_with_a_certificate_of_another_ca_is_refused(pki: PKI, linger: bool) -> None:
    stranger = pki.other_ca.issue(f"stranger-{linger}", ip=False, client=True)
    tls = settings(pki.ca.pem, cert=stranger.cert, key=stranger.key)
    with Server(pki.server, client_ca=pki.ca.pem, linger=linger) as server:
        message = refused(server.url, tls)
    assert f"127.0.0.1:{server.port}" in message
    assert "did not accept ours" in message or "refused our client certificate" in message
    if linger:
        assert "refused our client certificate (" in message
    assert server.requests == []


def test_a_key_file_others_can_read_is_refused(pki: PKI, tmp_path: Path) -> None:
    key = tmp_path / "client.key"
    key.write_bytes(pki.client.key.read_bytes())
    key.chmod(0o644)
    with pytest.raises(TlsRefused) as caught:
        http_client(settings(pki.ca.pem, cert=pki.client.cert, key=key), headers={}, timeout=5)
    assert "mode 0644" in str(caught.value) and f"chmod 600 {key}" in str(caught.value)
    key.chmod(0o600)  # control: the same file, the owner's alone
    with Server(pki.server, client_ca=pki.ca.pem) as server:
        assert (
            get(server.url, settings(pki.ca.pem, cert=pki.client.cert, key=key)).status_code == 200
        )


def test_a_key_that_is_not_a_regular_file_is_refused(pki: PKI, tmp_path: Path) -> None:
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo, 0o600)  # would hang an open() without O_NONBLOCK
    with pytest.raises(TlsRefused, match="not a regular file"):
        http_client(settings(pki.ca.pem, cert=pki.client.cert, key=fifo), headers={}, timeout=5)
    with pytest.raises(TlsRefused, match="cannot be opened"):
        http_client(
            settings(pki.ca.pem, cert=pki.client.cert, key=tmp_path / "absent.key"),
            headers={},
            timeout=5,
        )


def test_a_key_file_of_another_owner_is_refused(pki: PKI, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("chown to another user needs root: run these tests as root", pytrace=False)
    key = tmp_path / "client.key"
    key.write_bytes(pki.client.key.read_bytes())
    key.chmod(0o600)
    os.chown(key, 65534, 65534)
    with pytest.raises(TlsRefused, match="owned by uid 65534"):
        http_client(settings(pki.ca.pem, cert=pki.client.cert, key=key), headers={}, timeout=5)


def test_an_encrypted_key_is_refused_without_a_prompt(pki: PKI, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    plain = load_pem_private_key(pki.client.key.read_bytes(), None)
    key = tmp_path / "encrypted.key"
    key.write_bytes(_pem_key(plain, b"passphrase"))
    key.chmod(0o600)
    with pytest.raises(TlsRefused) as caught:
        http_client(settings(pki.ca.pem, cert=pki.client.cert, key=key), headers={}, timeout=5)
    assert "encrypted" in str(caught.value) and "mcpwrap secret set" in str(caught.value)


def test_a_key_of_another_certificate_is_refused(pki: PKI) -> None:
    with pytest.raises(TlsRefused, match="does not belong to the certificate"):
        http_client(
            settings(pki.ca.pem, cert=pki.client.cert, key=pki.server.key), headers={}, timeout=5
        )


def test_client_cert_and_key_go_together(pki: PKI) -> None:
    with pytest.raises(TlsRefused, match="client_key is missing"):
        http_client(settings(pki.ca.pem, cert=pki.client.cert), headers={}, timeout=5)


# --- a key from the keyring, kept off the disk --------------------------------------------------------

_WRITES: list[tuple[Any, ...]] | None = None  # recording while a list
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _record_writes(event: str, args: tuple[Any, ...]) -> None:
    if _WRITES is None or event != "open":
        return
    _path, mode, flags = (*args, None, None)[:3]
    if (isinstance(mode, str) and set(mode) & set("wax+")) or (
        isinstance(flags, int) and flags & _WRITE_FLAGS
    ):
        _WRITES.append(args)


sys.addaudithook(_record_writes)  # an audit hook cannot be removed: it records only on demand


@pytest.fixture
def open_for_writing() -> Iterator[list[tuple[Any, ...]]]:
    """Every file the process opens for writing while the fixture is active (Python's
    audit events see every open(), os.open() and tempfile the code could make)."""
    global _WRITES  # noqa: PLW0603
    _WRITES = []
    try:
        yield _WRITES
    finally:
        _WRITES = None


def _memfds() -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "mcpwrap-client-key" in target:
            found.append(target)
    return found


def test_a_key_from_the_keyring_loads_and_never_touches_the_disk(
    pki: PKI,
    keyring_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    open_for_writing: list[tuple[Any, ...]],
) -> None:
    import keyring

    pem = pki.client.key.read_text()
    ref = "keyring:mcpwrap-test/client-key"
    keyring.set_password("mcpwrap-test", "client-key", pem.removesuffix("\n"))  # as `secret set`
    spill = tmp_path / "tmp"
    spill.mkdir()
    monkeypatch.setenv("TMPDIR", str(spill))
    open_for_writing.clear()  # set_password itself is not under test

    client = http_client(settings(pki.ca.pem, cert=pki.client.cert, key=ref), headers={}, timeout=5)
    assert open_for_writing == []  # no file of any kind was opened for writing
    assert _memfds() == []  # and the memory file is closed again
    assert not any(spill.iterdir())
    asyncio.run(client.aclose())

    with Server(pki.server, client_ca=pki.ca.pem) as server:
        assert (
            get(server.url, settings(pki.ca.pem, cert=pki.client.cert, key=ref)).status_code == 200
        )
    assert dict(x[0] for x in server.client_certs[0]["subject"])["commonName"] == "client"


def test_a_key_missing_from_the_keyring_says_how_to_store_it(
    pki: PKI, keyring_env: dict[str, str]
) -> None:
    ref = "keyring:mcpwrap-test/absent-key"
    with pytest.raises(Exception, match="mcpwrap secret set keyring:mcpwrap-test/absent-key") as e:
        http_client(settings(pki.ca.pem, cert=pki.client.cert, key=ref), headers={}, timeout=5)
    assert "[server.tls] client_key" in str(e.value)


def test_a_connection_admit_refuses_is_never_opened_and_is_told() -> None:
    """`admit` decides before the connection is opened: refused, nothing reaches the
    listener, and `watch` hears of it; the control admits it and hears of the
    connection and its handshake."""
    import socket as socketmod

    from mcpwrap.identity.tlsclient import Connection

    with socketmod.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        told: list[Connection] = []

        async def attempt() -> None:
            client = http_client(
                TlsSettings(None, None, None, ()),
                headers={},
                timeout=2,
                admit=lambda host, p: "not this one",
                watch=told.append,
            )
            async with client:
                await client.get(f"http://127.0.0.1:{port}/")

        with pytest.raises(TlsRefused, match="not this one"):
            asyncio.run(attempt())
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing ever connected
        assert [(c.event, c.refused) for c in told] == [("egress", "not this one")]


def test_pins_hold_for_the_pinned_origin_only(pki: PKI) -> None:
    """`pinned` names the host and port the pins are for (the MCP server): another origin
    (an authorization server) is verified by its CA and name only; the control pins this
    very origin, and the same wrong pin refuses it."""
    wrong = (spki_pin(pki.client.der),)
    with Server(pki.server) as server:
        elsewhere = settings(pki.ca.pem, pins=wrong)._replace(pinned=("mcp.example", 443))
        assert get(server.url, elsewhere).status_code == 200
        here = settings(pki.ca.pem, pins=wrong)._replace(pinned=("127.0.0.1", server.port))
        assert "public key changed" in refused(server.url, here)
