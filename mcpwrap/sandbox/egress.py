"""The egress proxy: the jailed server's only way out, run by mcpwrap on the host.

The jail binds the listeners inside its own network namespace and hands them to mcpwrap
(sandbox/jail.py): an HTTP proxy (CONNECT and absolute-URI requests), a SOCKS5 proxy
(CONNECT, names resolved here), and one listener per `tcp:` entry at that entry's own
address. mcpwrap accepts on them from the host's namespace, asks netpolicy.decide() and
netpolicy.vet(), connects to the vetted address itself, and relays bytes both ways within
the limits. Each connection, admitted or refused, gets one audit record when it ends.

A connection admitted only by tools' network effects lives no longer than the calls it
was attributed to: when the last of them ends (answered, cancelled, timed out), mcpwrap
closes it, so a server cannot open a socket during a call and keep using it afterwards.

Threads: one accept loop per listener, two pumps per admitted connection (one per
direction, so neither side can stall the other), bounded by the connection limit.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from mcpwrap.policy import network as netpolicy
from mcpwrap.policy.network import IP, Entry, Verdict
from mcpwrap.sandbox import proxyauth, tlshello

_HEAD_LIMIT = 64 * 1024  # an HTTP request head larger than this is refused
_CHUNK = 64 * 1024  # a pump's first buffer, and the read size before relaying starts
_MAX_CHUNK = 1024 * 1024  # a pump's buffer doubles up to this while reads fill it
_DIAL_TIMEOUT = 10.0


class Limits(NamedTuple):
    connections: int = 64  # open at once
    idle: float = 300.0  # seconds with no byte either way
    bytes: int = 1 << 30  # each connection, both directions together


class Listener(NamedTuple):
    kind: str  # "http", "socks" or "tcp"
    sock: socket.socket
    target: tuple[str, int] | None = None  # a tcp: forward's endpoint


DEFAULT_LIMITS = Limits()
Record = Callable[..., None]
InFlight = Callable[[], list[tuple[str, object]]]
Resolve = Callable[[str, int], list[IP]]


class Refused(Exception):
    def __init__(self, verdict: Verdict, status: int = 403) -> None:
        super().__init__(verdict.reason)
        self.verdict, self.status = verdict, status


class Egress:
    def __init__(
        self,
        rules: Sequence[Entry],
        listeners: Sequence[Listener],
        *,
        record: Record,
        in_flight: InFlight,
        limits: Limits = DEFAULT_LIMITS,
        resolve: Resolve | None = None,
        broken: Callable[[], str | None] = lambda: None,
        secret: str | None = None,
    ) -> None:
        """secret: the run's proxy credentials (proxyauth), required of every HTTP and
        SOCKS connection when given: listeners on the host's loopback, where other local
        processes can reach them. None: listeners only the jail can reach, no credentials."""
        self._rules = list(rules)
        self._listeners = list(listeners)
        self._record = record
        self._in_flight = in_flight
        self._limits = limits
        self._resolve = resolve or resolve_host
        self._broken = broken
        self._secret = secret
        self._slots = threading.BoundedSemaphore(limits.connections)
        self._closed = threading.Event()
        # Connections admitted by tools' effects: the calls each still waits on.
        self._scoped: dict[_PipeState, set[object]] = {}
        self._scoped_lock = threading.Lock()

    def start(self) -> None:
        for listener in self._listeners:
            name = f"egress-{listener.kind}"
            threading.Thread(target=self._accept, args=(listener,), name=name, daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        for listener in self._listeners:
            _shutdown(listener.sock, socket.SHUT_RDWR)
            listener.sock.close()

    def call_ended(self, call: object) -> None:
        """A tools/call ended: close the tool-scoped connections that no call holds open.
        Cheap and lock-light: the relay calls it while holding its own lock."""
        with self._scoped_lock:
            done = [state for state, calls in self._scoped.items() if _discard(calls, call)]
        for state in done:
            state.end("call ended")

    def _hold(self, state: _PipeState, verdict: Verdict) -> None:
        """Tie a connection admitted by tools' effects to the calls it is attributed to."""
        with self._scoped_lock:
            self._scoped[state] = {_hashable(c) for c in verdict.calls}
        # A call that ended between decide() and now sent its call_ended too early.
        running = {_hashable(c) for _, c in self._in_flight()}
        with self._scoped_lock:
            calls = self._scoped.get(state, set())
            calls &= running
            gone = not calls
        if gone:
            state.end("call ended")

    def _accept(self, listener: Listener) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = listener.sock.accept()
            except OSError:
                return  # closed
            if not self._slots.acquire(blocking=False):
                limit = Verdict(
                    False,
                    "egress.connections",
                    f"{self._limits.connections} egress connections are open already",
                )
                self._refuse(listener, conn, ("", 0), limit)
                continue
            threading.Thread(
                target=self._serve, args=(listener, conn), name="egress-conn", daemon=True
            ).start()

    def _serve(self, listener: Listener, conn: socket.socket) -> None:
        try:
            self._handle(listener, conn)
        finally:
            self._slots.release()

    def _handle(self, listener: Listener, conn: socket.socket) -> None:
        started = time.monotonic()
        conn.settimeout(_DIAL_TIMEOUT)
        host, port, early = "", 0, b""
        try:
            if listener.kind == "http":
                host, port, early, reply = _http_request(conn, self._secret)
            elif listener.kind == "socks":
                host, port = _socks_request(conn, self._secret)
                reply = _SOCKS_OK
            else:
                assert listener.target is not None
                host, port = listener.target
                reply = b""
            verdict, address = self._admit(host, port, tcp=listener.kind == "tcp")
            upstream = _dial(address, port)
        except Refused as exc:
            self._refuse(listener, conn, (host, port), exc.verdict, status=exc.status)
            return
        except (OSError, ValueError) as exc:
            failed = Verdict(False, "egress.protocol", f"bad {listener.kind} request: {exc}")
            self._refuse(listener, conn, (host, port), failed, status=400)
            return
        if reply:  # a tunnel: see which site its TLS asks for before relaying a byte
            try:
                conn.sendall(reply)
                early, hello = self._first_bytes(conn, upstream, early)
                self._check_hello(hello, bool(early), host, port)
            except (Refused, OSError) as exc:
                upstream.close()
                refused = (
                    exc.verdict
                    if isinstance(exc, Refused)
                    else Verdict(False, "egress.protocol", f"tunnel: {exc.strerror or exc}")
                )
                conn.close()
                self._record_connection(refused, listener, (host, port), address=str(address))
                return
        state = _PipeState(self._limits, len(early), conn, upstream)
        scoped = verdict.entry is not None and verdict.entry.tool is not None
        if scoped:
            self._hold(state, verdict)
        try:
            if early:
                upstream.sendall(early)
            self._pipe(state)
        except OSError as exc:  # a side gone before the pipe ran: still one record
            state.end(f"closed: {exc.strerror or exc}")
        finally:
            if scoped:
                with self._scoped_lock:
                    self._scoped.pop(state, None)
            upstream.close()
            conn.close()
        up, down, ended = state.counts["out"], state.counts["in"], state.ended
        self._record_connection(
            verdict,
            listener,
            (host, port),
            address=str(address),
            bytes_out=up,
            bytes_in=down,
            duration_ms=round((time.monotonic() - started) * 1000, 3),
            ended=ended,
            calls=list(verdict.calls),
        )

    def _first_bytes(
        self, conn: socket.socket, upstream: socket.socket, early: bytes
    ) -> tuple[bytes, tlshello.Hello]:
        """What the client sends first through a tunnel, up to a whole TLS ClientHello,
        and what it is. Nothing goes upstream before it is read: a tunnel relays no TLS
        unchecked. A server that speaks first (SSH, SMTP) is not TLS: relayed at once."""
        data = early
        deadline = time.monotonic() + self._limits.idle
        hello = tlshello.parse(data)
        # The size bound stops a stream of empty records, which parse() never finishes.
        while not hello.complete and len(data) <= tlshello.MAX_HELLO:
            waiting = [conn] if data else [conn, upstream]
            ready, _, _ = select.select(waiting, [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise Refused(Verdict(False, "egress.idle", "nothing sent through the tunnel"))
            if upstream in ready:
                return data, tlshello.Hello(True, False)  # the server speaks first
            chunk = conn.recv(_CHUNK)
            if not chunk:
                break
            data += chunk
            hello = tlshello.parse(data)
        return data, hello

    def _check_hello(self, hello: tlshello.Hello, sent: bool, host: str, port: int) -> None:
        """Refuse a tunnel whose TLS names a site the allowlist does not admit."""
        if hello.error:
            reason = f"a malformed TLS ClientHello: {hello.error}"
            raise Refused(Verdict(False, "egress.tls", reason))
        if not hello.complete and sent:
            raise Refused(Verdict(False, "egress.tls", "an incomplete TLS ClientHello"))
        if hello.name is None:
            return
        verdict = netpolicy.decide_server_name(
            host, hello.name, port, self._rules, self._in_flight()
        )
        if not verdict.allowed:
            raise Refused(verdict)

    def _record_connection(
        self, verdict: Verdict, listener: Listener, endpoint: tuple[str, int], **fields: object
    ) -> None:
        """The one audit record of a connection, admitted or refused."""
        host, port = endpoint
        self._record(
            "egress",
            decision="allow" if verdict.allowed else "refuse",
            rule=verdict.rule,
            reason=verdict.reason,
            via=listener.kind,
            endpoint=f"{host}:{port}" if host else None,
            **fields,
        )

    def _admit(self, host: str, port: int, *, tcp: bool) -> tuple[Verdict, IP]:
        broken = self._broken()
        if broken:
            raise Refused(Verdict(False, "audit.broken", f"the audit log is broken: {broken}"))
        verdict = netpolicy.decide(host, port, self._rules, self._in_flight(), tcp=tcp)
        if not verdict.allowed or verdict.entry is None:
            raise Refused(verdict)
        name = netpolicy.canonical_host(host) or host
        try:
            addresses = self._resolve(name, port)
        except OSError as exc:
            raise Refused(Verdict(False, "egress.resolve", f"{name}: {exc}"), 502) from exc
        address, why = netpolicy.vet(verdict.entry, addresses, self._rules, port)
        if address is None:
            raise Refused(Verdict(False, "egress.address", f"{name}: {why}"))
        return verdict, address

    def _refuse(
        self,
        listener: Listener,
        conn: socket.socket,
        endpoint: tuple[str, int],
        verdict: Verdict,
        *,
        status: int = 403,
    ) -> None:
        try:
            if listener.kind == "http":
                conn.sendall(_http_error(status, verdict))
            elif listener.kind == "socks" and status != 407:  # 407: answered in the handshake
                conn.sendall(_SOCKS_REFUSED if status == 403 else _SOCKS_FAILED)
        except OSError:
            pass
        finally:
            conn.close()
        self._record_connection(verdict, listener, endpoint)

    def _pipe(self, state: _PipeState) -> None:
        """Relay both ways until both are done or a limit or the end of a call ends it."""
        back = threading.Thread(
            target=state.pump,
            args=(state.upstream, state.conn, "in"),
            name="egress-in",
            daemon=True,
        )
        back.start()
        state.pump(state.conn, state.upstream, "out")
        back.join()


def _hashable(call: object) -> object:
    return call if isinstance(call, (str, int, float, type(None))) else repr(call)


def _discard(calls: set[object], call: object) -> bool:
    """Drop call from calls; True if that emptied it (the connection's last call ended)."""
    key = _hashable(call)
    if key not in calls:
        return False
    calls.discard(key)
    return not calls


class _PipeState:
    """One admitted connection: its byte counts, last activity and why it ended."""

    def __init__(
        self, limits: Limits, sent: int, conn: socket.socket, upstream: socket.socket
    ) -> None:
        self.limits = limits
        self.conn, self.upstream = conn, upstream
        self.counts = {"out": sent, "in": 0}
        self.last = time.monotonic()
        self.ended = "closed"
        self.lock = threading.Lock()
        self.done = False

    def end(self, why: str) -> None:
        """End the connection from outside the pumps (both wake up on the shutdown)."""
        self._end(why, self.conn, self.upstream)

    def pump(self, src: socket.socket, dst: socket.socket, way: str) -> None:
        # Small for chatty connections, grown for bulk ones: fewer, larger copies
        # without 2 MiB per idle connection.
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        src.settimeout(min(self.limits.idle, 5.0))
        full = 0  # reads in a row that filled the buffer
        while not self.done:
            try:
                n = src.recv_into(buf)
            except TimeoutError:
                if time.monotonic() - self.last >= self.limits.idle:
                    self._end("idle", src, dst)
                    return
                continue
            except OSError:
                n = 0
            if n == 0:
                _shutdown(dst, socket.SHUT_WR)  # pass the half-close on
                return
            with self.lock:
                self.counts[way] += n
                total = self.counts["out"] + self.counts["in"]
                self.last = time.monotonic()
            if total > self.limits.bytes:
                self._end("bytes limit", src, dst)
                return
            try:
                dst.sendall(view[:n])
            except OSError:
                self._end("closed", src, dst)
                return
            full = full + 1 if n == len(buf) else 0
            if full >= 2 and len(buf) < _MAX_CHUNK:
                buf, full = bytearray(len(buf) * 2), 0
                view = memoryview(buf)

    def _end(self, why: str, *socks: socket.socket) -> None:
        with self.lock:
            if not self.done:
                self.ended = why
            self.done = True
        for s in socks:
            _shutdown(s, socket.SHUT_RDWR)


def _shutdown(sock: socket.socket, how: int) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(how)


def _dial(address: IP, port: int) -> socket.socket:
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(_DIAL_TIMEOUT)
    try:
        sock.connect((str(address), port))
    except OSError as exc:
        sock.close()
        reason = f"{address}:{port}: {exc.strerror or exc}"
        raise Refused(Verdict(False, "egress.connect", reason), 502) from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


# --- names -------------------------------------------------------------------------------


def resolve_host(host: str, port: int) -> list[IP]:
    """Addresses for host, from the test hosts file if one is set, else the system's
    resolver. MCPWRAP_TEST_HOSTS (hosts(5) format) lets tests map names to loopback,
    private and metadata addresses without touching the machine's resolver."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    override = os.environ.get("MCPWRAP_TEST_HOSTS")
    if override:
        found = _hosts_file(override).get(host)
        if found:
            return found
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(i[4][0]) for i in infos))


def _hosts_file(path: str) -> dict[str, list[IP]]:
    table: dict[str, list[IP]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            words = line.split("#", 1)[0].split()
            if len(words) >= 2:
                for name in words[1:]:
                    table.setdefault(name.lower(), []).append(ipaddress.ip_address(words[0]))
    return table


# --- HTTP proxy --------------------------------------------------------------------------

_HOP_BY_HOP = frozenset(
    (b"connection", b"proxy-connection", b"keep-alive", b"proxy-authorization", b"te", b"trailer")
)


def _http_request(conn: socket.socket, secret: str | None = None) -> tuple[str, int, bytes, bytes]:
    """(host, port, bytes to send upstream first, reply to the client once connected).
    With a secret, Refused (407) unless the request carries it in Proxy-Authorization."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(8192)
        if not chunk:
            raise ValueError("the client closed before a full request head")
        data += chunk
        if len(data) > _HEAD_LIMIT and b"\r\n\r\n" not in data[:_HEAD_LIMIT]:
            raise ValueError(f"request head over {_HEAD_LIMIT} bytes")
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    # Refused, not repaired: a bare CR or LF, or a folded line, is a second header that
    # this parser would miss and the upstream might see (a Host header smuggled past us).
    if any(b"\r" in line or b"\n" in line or line[:1] in (b" ", b"\t") for line in lines):
        raise ValueError("bare CR or LF, or a folded line, in the request head")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise ValueError(f"not an HTTP/1.x request line: {lines[0][:100]!r}")
    method, target, version = parts
    if secret is not None:
        _check_proxy_authorization(lines[1:], secret)
    if method == b"CONNECT":
        host, port = _authority(target.decode("ascii", "replace"), None)
        return host, port, rest, b"HTTP/1.1 200 Connection established\r\n\r\n"
    text = target.decode("ascii", "replace")
    scheme, sep, remainder = text.partition("://")
    if not sep or scheme.lower() != "http":
        raise ValueError(
            f"{text[:100]!r}: only absolute http:// URIs and CONNECT go through this proxy"
        )
    cut = min((i for i in map(remainder.find, "/?#") if i >= 0), default=len(remainder))
    authority, path = remainder[:cut], remainder[cut:].partition("#")[0]
    authority = authority.rpartition("@")[2]  # credentials in the URI are not a host
    host, port = _authority(authority, 80)
    # The Host header is the URI's authority, whatever the client sent: a different one
    # would ask the vetted address for another site (fronting through a shared host).
    headers = [
        line
        for line in lines[1:]
        if line.split(b":", 1)[0].strip().lower() not in (*_HOP_BY_HOP, b"host")
    ]
    # One request per connection: the next one could name another host.
    origin = path if path.startswith("/") else "/" + path  # "?q" alone is "/?q"
    first = b" ".join((method, origin.encode("ascii"), version))
    host_line = b"Host: " + authority.encode("ascii")
    upstream_head = b"\r\n".join([first, host_line, *headers, b"Connection: close"]) + b"\r\n\r\n"
    return host, port, upstream_head + rest, b""


def _check_proxy_authorization(header_lines: list[bytes], secret: str) -> None:
    values = [
        value
        for name, colon, value in (line.partition(b":") for line in header_lines)
        if colon and name.strip().lower() == b"proxy-authorization"
    ]
    why = proxyauth.check_basic(values, secret)
    if why is not None:
        raise Refused(Verdict(False, "egress.credentials", why), 407)


def _authority(text: str, default: int | None) -> tuple[str, int]:
    if text.startswith("["):
        host, _, tail = text[1:].partition("]")
        port_text = tail.removeprefix(":")
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            host, port_text = text, ""
    if not port_text:
        if default is None:
            raise ValueError(f"{text!r} has no port")
        return host, default
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r} has no valid port")
    return host, int(port_text)


def _http_error(status: int, verdict: Verdict) -> bytes:
    words = {
        400: "Bad Request",
        403: "Forbidden",
        407: "Proxy Authentication Required",
        502: "Bad Gateway",
    }.get(status, "Error")
    challenge = 'Proxy-Authenticate: Basic realm="mcpwrap"\r\n' if status == 407 else ""
    body = f"mcpwrap refused this connection: {verdict.reason} (rule {verdict.rule})\n".encode()
    head = (
        f"HTTP/1.1 {status} {words}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
        f"X-Mcpwrap-Rule: {verdict.rule}\r\n{challenge}\r\n"
    )
    return head.encode() + body


# --- SOCKS5 (RFC 1928), CONNECT only; username/password (RFC 1929) when there is a secret --

_SOCKS_OK = b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00"
_SOCKS_REFUSED = b"\x05\x02\x00\x01\x00\x00\x00\x00\x00\x00"  # not allowed by ruleset
_SOCKS_FAILED = b"\x05\x04\x00\x01\x00\x00\x00\x00\x00\x00"  # host unreachable


def _exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ValueError("the client closed mid-handshake")
        data += chunk
    return data


def _socks_request(conn: socket.socket, secret: str | None = None) -> tuple[str, int]:
    version, count = _exactly(conn, 2)
    if version != 5:
        raise ValueError(f"SOCKS version {version}; only SOCKS5 is served")
    methods = _exactly(conn, count)
    if secret is not None:
        _socks_authenticate(conn, methods, secret)
    elif 0 not in methods:
        conn.sendall(b"\x05\xff")
        raise ValueError("the client offers no method without authentication")
    else:
        conn.sendall(b"\x05\x00")
    version, command, _, kind = _exactly(conn, 4)
    if kind == 1:
        host = str(ipaddress.IPv4Address(_exactly(conn, 4)))
    elif kind == 4:
        host = str(ipaddress.IPv6Address(_exactly(conn, 16)))
    elif kind == 3:
        host = _exactly(conn, _exactly(conn, 1)[0]).decode("ascii", "replace")
    else:
        raise ValueError(f"SOCKS address type {kind}")
    port = int.from_bytes(_exactly(conn, 2), "big")
    if command != 1:
        conn.sendall(b"\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00")
        raise ValueError(f"SOCKS command {command}; only CONNECT is served")
    return host, port


def _socks_authenticate(conn: socket.socket, methods: bytes, secret: str) -> None:
    """Username/password or nothing: "no authentication" (0) is refused, not chosen."""
    if 2 not in methods:
        conn.sendall(b"\x05\xff")
        raise Refused(Verdict(False, "egress.credentials", proxyauth.NO_CREDENTIALS), 407)
    conn.sendall(b"\x05\x02")
    try:
        head = _exactly(conn, 2)
        user = _exactly(conn, head[1])
        plen = _exactly(conn, 1)
        request = proxyauth.parse_userpass(head + user + plen + _exactly(conn, plen[0]))
    except ValueError as exc:  # answered in RFC 1929's terms, not with a SOCKS5 reply
        with contextlib.suppress(OSError):
            conn.sendall(b"\x01\x01")
        raise Refused(Verdict(False, "egress.protocol", f"bad socks request: {exc}"), 407) from exc
    why = proxyauth.check_userpass(request, secret)
    if why is not None:
        conn.sendall(b"\x01\x01")
        raise Refused(Verdict(False, "egress.credentials", why), 407)
    conn.sendall(b"\x01\x00")
