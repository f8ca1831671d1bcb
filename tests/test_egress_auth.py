"""Per-run proxy credentials: the egress listeners on the host's loopback (the reduced
jail, no network namespace) serve only clients that present the run's secret.

Real parts: a real Egress on the reduced jail's own listeners (host_listeners()), real clients (curl, httpx, undici) run
from the test with the proxy variables host_listeners() gives the server, and a loopback
upstream the allowlist admits. The control (secret=None) shows the same unauthenticated
request gets through, so it is the credentials check that stops it.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from conftest import NODE_MODULES
from egress_harness import HostListeners, Upstream, _settle, hello_server, host_listeners

from mcpwrap.policy import network as netpolicy
from mcpwrap.sandbox import egress, proxyauth
from mcpwrap.sandbox.proxyauth import NO_CREDENTIALS, WRONG_CREDENTIALS, UserPass

NAME = "upstream.test"  # mapped to 127.0.0.1 for the proxy; no_proxy does not skip it


class Proxy(NamedTuple):
    upstream: Upstream
    hosts: HostListeners
    records: list[dict[str, Any]]

    @property
    def url(self) -> str:
        return f"http://{NAME}:{self.upstream.port}"

    def bare(self, kind: str) -> str:
        """The proxy's address without credentials: what another local process knows."""
        return f"127.0.0.1:{self.hosts.ports[0 if kind == 'http' else 1]}"

    def done(self) -> list[dict[str, Any]]:
        _settle()
        return self.records


def serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, secret: bool) -> Iterator[Proxy]:
    (tmp_path / "hosts").write_text(f"127.0.0.1 {NAME}\n")
    monkeypatch.setenv("MCPWRAP_TEST_HOSTS", str(tmp_path / "hosts"))
    with hello_server() as upstream:
        hosts = host_listeners()
        records: list[dict[str, Any]] = []
        port = upstream.port
        rules = [netpolicy.parse_entry(e) for e in (f"{NAME}:{port}", f"127.0.0.1:{port}")]
        proxy = egress.Egress(
            rules,
            [egress.Listener(kind, sock) for kind, sock in hosts.listeners],
            record=lambda event, **fields: records.append({"event": event, **fields}),
            in_flight=list,
            secret=hosts.secret if secret else None,
        )
        proxy.start()
        try:
            yield Proxy(upstream, hosts, records)
        finally:
            proxy.close()


@pytest.fixture
def proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Proxy]:
    yield from serve(tmp_path, monkeypatch, secret=True)


@pytest.fixture
def open_proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Proxy]:
    yield from serve(tmp_path, monkeypatch, secret=False)


def curl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = ["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}", *args]
    clean = {"PATH": "/usr/bin:/bin", **(env or {})}  # no proxy variables but these
    return subprocess.run(command, env=clean, capture_output=True, text=True, timeout=30)


def refusals(records: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(r["via"], r["rule"], r["reason"]) for r in records if r["decision"] == "refuse"]


# --- the interface -------------------------------------------------------------------


def test_host_listeners_are_loopback_listeners_named_in_the_environment() -> None:
    hosts = host_listeners()
    try:
        assert [kind for kind, _ in hosts.listeners] == ["http", "socks"]
        for (_, sock), port in zip(hosts.listeners, hosts.ports, strict=True):
            assert sock.getsockname() == ("127.0.0.1", port)
            assert not sock.get_inheritable()  # the server never holds a listener
        http, socks = (f"mcpwrap:{hosts.secret}@127.0.0.1:{p}" for p in hosts.ports)
        assert hosts.env["https_proxy"] == hosts.env["HTTP_PROXY"] == f"http://{http}"
        assert hosts.env["ALL_PROXY"] == f"http://{http}"  # httpx: see jail.py
        assert hosts.env["socks_proxy"] == hosts.env["SOCKS_PROXY"] == f"socks5h://{socks}"
        assert hosts.env["NO_PROXY"] == "localhost,127.0.0.1,::1"
        assert hosts.env["NODE_USE_ENV_PROXY"] == "1"
        assert hosts.env["GIT_HTTP_PROXY_AUTHMETHOD"] == "basic"
        assert len(hosts.secret) >= 32 and hosts.secret != host_listeners().secret
    finally:
        for _, sock in hosts.listeners:
            sock.close()


# --- real clients through the HTTP proxy ---------------------------------------------


@pytest.mark.parametrize("tunnel", [False, True], ids=["absolute-form", "CONNECT"])
def test_curl_with_the_proxy_variables_gets_through(proxy: Proxy, tunnel: bool) -> None:
    run = curl(*(["--proxytunnel"] if tunnel else []), f"{proxy.url}/ok", env=proxy.hosts.env)
    assert run.returncode == 0 and run.stdout == "hello /ok\n\n200", run
    (record,) = proxy.done()
    assert record["decision"] == "allow" and record["via"] == "http"


@pytest.mark.parametrize("tunnel", [False, True], ids=["absolute-form", "CONNECT"])
def test_curl_without_credentials_gets_407(proxy: Proxy, tunnel: bool) -> None:
    run = curl(*(["--proxytunnel"] if tunnel else []), "-x", proxy.bare("http"), f"{proxy.url}/no")
    if tunnel:  # curl reports the refused CONNECT itself
        assert run.returncode == 56 and "407" in run.stderr, run
    else:
        assert run.stdout.endswith("\n407") and "no proxy credentials" in run.stdout, run
    assert proxy.upstream.hits == []
    assert refusals(proxy.done()) == [("http", "egress.credentials", NO_CREDENTIALS)]


def test_the_407_challenges_for_basic_credentials(proxy: Proxy) -> None:
    request = f"GET {proxy.url}/no HTTP/1.1\r\nHost: {NAME}\r\n\r\n".encode()
    reply = exchange(proxy.hosts.ports[0], request)
    assert reply.startswith(b"HTTP/1.1 407 Proxy Authentication Required\r\n"), reply
    assert b'\r\nProxy-Authenticate: Basic realm="mcpwrap"\r\n' in reply


@pytest.mark.parametrize(
    "user", ["mcpwrap:not-the-secret", "someone:SECRET", "mcpwrap:SECRETx", "mcpwrap:"]
)
def test_curl_with_wrong_credentials_is_refused(proxy: Proxy, user: str) -> None:
    user = user.replace("SECRET", proxy.hosts.secret)
    run = curl("-x", f"http://{user}@{proxy.bare('http')}", f"{proxy.url}/wrong")
    assert run.stdout.endswith("\n407"), run
    assert proxy.upstream.hits == []
    records = proxy.done()
    assert refusals(records) == [("http", "egress.credentials", WRONG_CREDENTIALS)]
    assert proxy.hosts.secret not in repr(records)  # the audit log never holds it


def test_without_a_secret_the_same_request_gets_through(open_proxy: Proxy) -> None:
    """The control: the unauthenticated request that got 407 above, to a proxy whose
    secret is None (listeners only the jail can reach)."""
    run = curl("-x", open_proxy.bare("http"), f"{open_proxy.url}/open")
    assert run.stdout == "hello /open\n\n200", run
    run = curl("--socks5-hostname", open_proxy.bare("socks"), f"{open_proxy.url}/socks")
    assert run.stdout == "hello /socks\n\n200", run
    assert open_proxy.upstream.hits == ["/open", "/socks"]


def test_httpx_with_the_proxy_url_gets_through(proxy: Proxy) -> None:
    """httpx (and the MCP SDK's client on it) sends the URL's userinfo as Basic."""
    with httpx.Client(proxy=proxy.hosts.env["https_proxy"], trust_env=False) as client:
        assert client.get(f"{proxy.url}/httpx").text == "hello /httpx\n"
    with httpx.Client(proxy=f"http://{proxy.bare('http')}", trust_env=False) as client:
        assert client.get(f"{proxy.url}/bare").status_code == 407
    assert proxy.upstream.hits == ["/httpx"]


URLLIB = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())"


def test_python_urllib_and_git_send_the_credentials_at_once(proxy: Proxy) -> None:
    """Both read the proxy variables; git sends the credentials up front only because of
    GIT_HTTP_PROXY_AUTHMETHOD=basic (without it, each request is refused once first)."""
    env = {"PATH": "/usr/bin:/bin", **proxy.hosts.env}
    run = subprocess.run(
        [sys.executable, "-c", URLLIB, f"{proxy.url}/urllib"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.stdout == "hello /urllib\n\n", run
    run = subprocess.run(
        ["git", "ls-remote", f"{proxy.url}/repo"], env=env, capture_output=True, timeout=30
    )
    assert proxy.upstream.hits == ["/urllib", "/repo/info/refs?service=git-upload-pack"]
    assert refusals(proxy.done()) == []


UNDICI = """
const { fetch, EnvHttpProxyAgent } = require(process.argv[1]);
fetch(process.argv[2], { dispatcher: new EnvHttpProxyAgent() })
  .then(async (r) => console.log(r.status, await r.text()))
  .catch((e) => { console.log("failed", e.cause || e); process.exit(3); });
"""


def test_undici_env_proxy_agent_sends_the_urls_credentials(proxy: Proxy, node_exe: str) -> None:
    """What Node's fetch does with NODE_USE_ENV_PROXY=1 (Node >= 22.21 / 24.5: its bundled
    undici's EnvHttpProxyAgent). Node 20, on this machine, ignores the variable and the
    proxy entirely; undici from tests/node stands in for the agent those versions use."""
    env = {"PATH": "/usr/bin:/bin", **proxy.hosts.env}
    run = subprocess.run(
        [node_exe, "-e", UNDICI, str(NODE_MODULES / "undici"), f"{proxy.url}/node"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.stdout.strip() == "200 hello /node", run
    assert proxy.upstream.hits == ["/node"]


# --- real clients through the SOCKS5 proxy -------------------------------------------


def test_curl_socks5_with_credentials_gets_through(proxy: Proxy) -> None:
    socks = proxy.hosts.env["socks_proxy"].removeprefix("socks5h://")
    run = curl("--socks5-hostname", socks, f"{proxy.url}/socks")
    assert run.stdout == "hello /socks\n\n200", run
    assert [r["decision"] for r in proxy.done()] == ["allow"]


def test_curl_socks5_without_or_with_wrong_credentials_is_refused(proxy: Proxy) -> None:
    run = curl("--socks5-hostname", proxy.bare("socks"), f"{proxy.url}/none")
    assert run.returncode == 97, run  # "No authentication method was acceptable"
    run = curl("--socks5-hostname", f"mcpwrap:nope@{proxy.bare('socks')}", f"{proxy.url}/bad")
    assert run.returncode == 97, run  # "User was rejected by the SOCKS5 server"
    assert proxy.upstream.hits == []
    assert refusals(proxy.done()) == [
        ("socks", "egress.credentials", NO_CREDENTIALS),
        ("socks", "egress.credentials", WRONG_CREDENTIALS),
    ]


# --- hostile clients: a clear refusal, and the proxy goes on serving -----------------


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        return reply


def basic(value: str) -> bytes:
    return b"Basic " + base64.b64encode(value.encode())


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"Proxy-Authorization: Basic !!!not-base64!!!\r\n", WRONG_CREDENTIALS),
        (b"Proxy-Authorization: Basic " + b"A" * 60000 + b"\r\n", WRONG_CREDENTIALS),
        (b"Proxy-Authorization: Bearer SECRET\r\n", WRONG_CREDENTIALS),
        (b"Proxy-Authorization: \r\n", WRONG_CREDENTIALS),
        (b"Proxy-Authorization: BASIC_SECRET\r\nProxy-Authorization: Basic eA==\r\n", None),
        (b"X-Proxy-Authorization: BASIC_SECRET\r\n", NO_CREDENTIALS),
        (b"", NO_CREDENTIALS),
    ],
    ids=["bad-base64", "huge", "bearer", "empty", "two-headers", "other-header", "none"],
)
def test_hostile_proxy_authorization_is_refused_and_the_proxy_serves_on(
    proxy: Proxy, header: bytes, reason: str | None
) -> None:
    good = basic(f"mcpwrap:{proxy.hosts.secret}")
    header = header.replace(b"BASIC_SECRET", good).replace(b"SECRET", proxy.hosts.secret.encode())
    target = f"CONNECT {NAME}:{proxy.upstream.port} HTTP/1.1\r\n".encode()
    reply = exchange(proxy.hosts.ports[0], target + header + b"\r\n")
    assert reply.startswith(b"HTTP/1.1 407 "), reply[:200]
    (refusal,) = refusals(proxy.done())
    assert refusal == ("http", "egress.credentials", reason or WRONG_CREDENTIALS)
    run = curl(f"{proxy.url}/after", env=proxy.hosts.env)
    assert run.stdout == "hello /after\n\n200", run


@pytest.mark.parametrize(
    ("handshake", "reply"),
    [
        (b"\x05\x01\x00", b"\x05\xff"),  # no authentication only: refused, not chosen
        (b"\x05\x01\x02\x01", b"\x05\x02\x01\x01"),  # truncated: no username length
        (b"\x05\x01\x02\x01\x07mcp", b"\x05\x02\x01\x01"),  # truncated username
        (b"\x05\x01\x02\x01\x07mcpwrap\x20abc", b"\x05\x02\x01\x01"),  # truncated password
        (b"\x05\x01\x02\x05\x07mcpwrap\x01x", b"\x05\x02\x01\x01"),  # not RFC 1929's version
        (b"\x05\x01\x02\x01\x00\x00", b"\x05\x02\x01\x01"),  # empty: no credentials
        (b"\x05\x01\x02\x01\x07mcpwrap\x01x", b"\x05\x02\x01\x01"),  # wrong password
    ],
)
def test_hostile_socks_handshakes_are_refused_and_the_proxy_serves_on(
    proxy: Proxy, handshake: bytes, reply: bytes
) -> None:
    assert exchange(proxy.hosts.ports[1], handshake) == reply
    (refusal,) = [r for r in proxy.done() if r["decision"] == "refuse"]
    assert refusal["rule"] in ("egress.credentials", "egress.protocol"), refusal
    socks = proxy.hosts.env["socks_proxy"].removeprefix("socks5h://")
    run = curl("--socks5-hostname", socks, f"{proxy.url}/after")
    assert run.stdout == "hello /after\n\n200", run


def test_many_hostile_clients_at_once_leave_no_thread_behind(proxy: Proxy) -> None:
    """Truncated handshakes from clients that then hang up: each connection ends with a
    record, and the accept loops are still there."""
    junk = [b"\x05\x01\x02\x01\x07mc", b"\x05\x05\x00\x01\x02", b"\x05"]
    threads = [
        threading.Thread(target=exchange, args=(proxy.hosts.ports[1], junk[n % 3]))
        for n in range(30)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(proxy.done()) == 30
    names = [t.name for t in threading.enumerate()]
    assert "egress-http" in names and "egress-socks" in names
    assert "egress-conn" not in names


# --- the pure checks, as tables ------------------------------------------------------

SECRET = "s3cret-Token_value"


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ([basic(f"mcpwrap:{SECRET}")], None),
        ([b"  " + basic(f"mcpwrap:{SECRET}") + b" "], None),
        ([b"basic " + base64.b64encode(f"mcpwrap:{SECRET}".encode())], None),  # case
        ([], NO_CREDENTIALS),
        ([basic(f"mcpwrap:{SECRET}")] * 2, WRONG_CREDENTIALS),
        ([basic(f"mcpwrap:{SECRET}x")], WRONG_CREDENTIALS),
        ([basic(f"mcpwrap:{SECRET[:-1]}")], WRONG_CREDENTIALS),
        ([basic(f"root:{SECRET}")], WRONG_CREDENTIALS),
        ([basic(f"mcpwrap{SECRET}")], WRONG_CREDENTIALS),  # no colon
        ([basic(f":{SECRET}")], WRONG_CREDENTIALS),
        ([basic("")], WRONG_CREDENTIALS),
        ([b"Basic"], WRONG_CREDENTIALS),
        ([b""], WRONG_CREDENTIALS),
        ([b"Basic !!!"], WRONG_CREDENTIALS),
        ([b"Basic bWNwd3JhcDp4"[:-1]], WRONG_CREDENTIALS),  # bad padding
        ([b"Basic " + b"A" * 100_000], WRONG_CREDENTIALS),
        ([b"Digest " + base64.b64encode(f"mcpwrap:{SECRET}".encode())], WRONG_CREDENTIALS),
        ([b"Basic \xff\xfe"], WRONG_CREDENTIALS),
        ([b"Basic " + base64.b64encode(f"mcpwrap:{SECRET}\x00".encode())], WRONG_CREDENTIALS),
    ],
)
def test_check_basic(values: list[bytes], reason: str | None) -> None:
    assert proxyauth.check_basic(values, SECRET) == reason


@pytest.mark.parametrize(
    ("data", "parsed"),
    [
        (b"\x01\x07mcpwrap\x03abc", UserPass(b"mcpwrap", b"abc")),
        (b"\x01\x00\x00", UserPass(b"", b"")),
        (b"\x01\xff" + b"u" * 255 + b"\xff" + b"p" * 255, UserPass(b"u" * 255, b"p" * 255)),
        (b"", "not a SOCKS5"),
        (b"\x01", "not a SOCKS5"),
        (b"\x05\x00\x00", "not a SOCKS5"),
        (b"\x01\x07mcp", "truncated"),
        (b"\x01\x07mcpwrap", "truncated"),
        (b"\x01\x07mcpwrap\x03ab", "wrong length"),
        (b"\x01\x07mcpwrap\x03abcd", "wrong length"),
    ],
)
def test_parse_userpass(data: bytes, parsed: UserPass | str) -> None:
    if isinstance(parsed, UserPass):
        assert proxyauth.parse_userpass(data) == parsed
    else:
        with pytest.raises(ValueError, match=parsed):
            proxyauth.parse_userpass(data)


@pytest.mark.parametrize(
    ("user", "password", "reason"),
    [
        (b"mcpwrap", SECRET.encode(), None),
        (b"", b"", NO_CREDENTIALS),
        (b"mcpwrap", b"", WRONG_CREDENTIALS),
        (b"mcpwrap", SECRET.encode() + b"\x00", WRONG_CREDENTIALS),
        (b"MCPWRAP", SECRET.encode(), WRONG_CREDENTIALS),
        (b"", SECRET.encode(), WRONG_CREDENTIALS),
        (b"\xff" * 255, b"\xff" * 255, WRONG_CREDENTIALS),
    ],
)
def test_check_userpass(user: bytes, password: bytes, reason: str | None) -> None:
    assert proxyauth.check_userpass(UserPass(user, password), SECRET) == reason
