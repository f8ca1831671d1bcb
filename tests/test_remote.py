"""A remote MCP server behind mcpwrap (`run -- http://127.0.0.1:PORT/mcp`), end to end with
real parts: the MCP SDK's own server under uvicorn on loopback (tests/remote_server.py)
and the SDK's own stdio client driving mcpwrap. The server writes down each call it runs,
so "refused before the server saw it" is checked against the server itself."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import pytest
from cryptography.hazmat.primitives import serialization
from mcp.client import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from wrapped import audit_records, write_profile

REPO = Path(__file__).resolve().parent.parent
SERVER = REPO / "tests" / "remote_server.py"

TOOLS = """
[policy]
default = "deny"
timeout = "20s"

[tools.echo]
class = "read"
[tools.echo.args]
text = { max_length = 20 }
[tools.steps]
class = "read"
"""


class Remote(NamedTuple):
    url: str
    calls: Path
    process: subprocess.Popen[bytes]

    def seen(self) -> list[str]:
        return self.calls.read_text().split() if self.calls.exists() else []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(tmp_path: Path, transport: str, tls: tuple[Path, ...] | None = None) -> Remote:
    port = _free_port()
    calls = tmp_path / f"calls-{port}.txt"
    log = (tmp_path / f"server-{port}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(SERVER), transport, str(port), str(calls), *map(str, tls or ())],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, (tmp_path / f"server-{port}.log").read_text()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        pytest.fail("the test server did not listen within 20 s")
    path = "/sse" if transport == "sse" else "/mcp"
    scheme = "https" if tls else "http"
    return Remote(f"{scheme}://127.0.0.1:{port}{path}", calls, process)


def stop(remote: Remote) -> None:
    if remote.process.poll() is None:
        remote.process.send_signal(signal.SIGKILL)
    remote.process.wait()


@pytest.fixture
def streamable(tmp_path: Path) -> Iterator[Remote]:
    remote = start_server(tmp_path, "streamable-http")
    yield remote
    stop(remote)


@pytest.fixture
def legacy_sse(tmp_path: Path) -> Iterator[Remote]:
    remote = start_server(tmp_path, "sse")
    yield remote
    stop(remote)


def mcpwrap(
    profile: Path, *target: str, extra: dict[str, str] | None = None
) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if k.startswith(("XDG_", "PATH", "HOME"))}
    env.update(extra or {})
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcpwrap", "run", "--profile", str(profile), "--", *target],
        env=env,
        cwd=str(profile.parent),
    )


async def session_run(params: StdioServerParameters, errlog: Path, body: Any) -> Any:
    with errlog.open("w") as err, anyio.fail_after(40):
        async with (
            stdio_client(params, errlog=err) as (read, write),
            ClientSession(read, write) as session,
        ):
            return await body(session)


async def attempt(call: Any) -> Any:
    """A call's result, or the MCPError a refusal raises (mcpwrap answers a tool the
    profile hides as an unknown tool, a JSON-RPC error)."""
    from mcp.shared.exceptions import MCPError

    try:
        return await call
    except MCPError as exc:
        return exc


def refused(outcome: Any) -> bool:
    return isinstance(outcome, Exception) or bool(outcome.is_error)


def text_of(result: Any) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


def records(tmp_path: Path) -> list[dict[str, Any]]:
    return audit_records(tmp_path / "audit.jsonl")


# --- the protections, each with its control -------------------------------------------------


@pytest.mark.anyio
async def test_listing_filtered_allowed_call_relayed_refused_call_never_sent(
    streamable: Remote, tmp_path: Path
) -> None:
    profile = write_profile(tmp_path, TOOLS)

    async def body(session: ClientSession) -> Any:
        await session.initialize()
        listed = await session.list_tools()
        allowed = await session.call_tool("echo", {"text": "hello"})
        wiped = await attempt(session.call_tool("wipe", {"target": "/"}))
        too_long = await attempt(session.call_tool("echo", {"text": "x" * 40}))
        return listed, allowed, wiped, too_long

    listed, allowed, wiped, too_long = await session_run(
        mcpwrap(profile, streamable.url), tmp_path / "err", body
    )
    assert sorted(t.name for t in listed.tools) == ["echo", "steps"]  # wipe filtered out
    assert text_of(allowed) == "hello" and not allowed.is_error
    assert refused(wiped) and refused(too_long)
    assert streamable.seen() == ["echo"]  # neither refused call reached the server
    calls = [r for r in records(tmp_path) if r["event"] == "call"]
    assert [(r["tool"], r["decision"]) for r in calls] == [
        ("echo", "allow"),
        ("wipe", "refuse"),
        ("echo", "refuse"),
    ]
    start = next(r for r in records(tmp_path) if r.get("decision") == "start")
    assert start["command"] == [streamable.url] and "remote" in start["sandbox"]


@pytest.mark.anyio
async def test_control_allow_all_reaches_the_server(streamable: Remote, tmp_path: Path) -> None:
    """Control for the test above: the same calls with a profile that allows them do
    reach the server, so "never sent" was the profile's doing."""
    profile = write_profile(tmp_path, '[policy]\ndefault = "allow"\n')

    async def body(session: ClientSession) -> Any:
        await session.initialize()
        listed = await session.list_tools()
        await session.call_tool("wipe", {"target": "/"})
        return listed

    listed = await session_run(mcpwrap(profile, streamable.url), tmp_path / "err", body)
    assert sorted(t.name for t in listed.tools) == ["echo", "steps", "wipe"]
    assert streamable.seen() == ["wipe"]


@pytest.mark.anyio
async def test_progress_and_log_notifications_flow_through(
    streamable: Remote, tmp_path: Path
) -> None:
    profile = write_profile(tmp_path, TOOLS)
    progress: list[float] = []
    logs: list[Any] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async def body(session: ClientSession) -> Any:
        await session.initialize()
        return await session.call_tool("steps", {"count": 3}, progress_callback=on_progress)

    params = mcpwrap(profile, streamable.url)
    with (tmp_path / "err").open("w") as err, anyio.fail_after(40):

        async def on_log(params: Any) -> None:
            logs.append(params.data)

        async with (
            stdio_client(params, errlog=err) as (read, write),
            ClientSession(read, write, logging_callback=on_log) as session,
        ):
            result = await body(session)
    assert text_of(result) == "3 steps"
    assert progress == [1, 2, 3]
    assert "steps started" in logs


@pytest.mark.anyio
async def test_modern_protocol_generation_through_the_relay(
    streamable: Remote, tmp_path: Path
) -> None:
    """The 2026 generation (server/discover, a per-request envelope, no session): the
    headers each request needs are set from the message itself."""
    profile = write_profile(tmp_path, TOOLS)

    async def body(session: ClientSession) -> Any:
        discovered = await session.discover()
        listed = await session.list_tools()
        allowed = await session.call_tool("echo", {"text": "modern"})
        wiped = await attempt(session.call_tool("wipe", {"target": "/"}))
        return discovered, listed, allowed, wiped

    discovered, listed, allowed, wiped = await session_run(
        mcpwrap(profile, streamable.url), tmp_path / "err", body
    )
    assert discovered.supported_versions
    assert sorted(t.name for t in listed.tools) == ["echo", "steps"]
    assert text_of(allowed) == "modern"
    assert refused(wiped)
    assert streamable.seen() == ["echo"]


@pytest.mark.anyio
async def test_legacy_sse_server_through_auto_fallback(legacy_sse: Remote, tmp_path: Path) -> None:
    profile = write_profile(tmp_path, TOOLS)

    async def body(session: ClientSession) -> Any:
        await session.initialize()
        listed = await session.list_tools()
        allowed = await session.call_tool("echo", {"text": "old"})
        wiped = await attempt(session.call_tool("wipe", {"target": "/"}))
        return listed, allowed, wiped

    listed, allowed, wiped = await session_run(
        mcpwrap(profile, legacy_sse.url), tmp_path / "err", body
    )
    assert sorted(t.name for t in listed.tools) == ["echo", "steps"]
    assert text_of(allowed) == "old" and refused(wiped)
    assert legacy_sse.seen() == ["echo"]
    stop_record = next(r for r in records(tmp_path) if r.get("decision") == "stop")
    assert stop_record["transport"] == "sse"


@pytest.mark.anyio
async def test_forced_streamable_http_does_not_fall_back(
    legacy_sse: Remote, tmp_path: Path
) -> None:
    """Control for the fallback: with transport = "streamable-http" the same server is
    not reached over HTTP+SSE, and the client gets an error, not a hang."""
    profile = write_profile(tmp_path, '[server]\ntransport = "streamable-http"\n' + TOOLS)

    async def body(session: ClientSession) -> Any:
        return await session.initialize()

    with pytest.raises(Exception):  # noqa: B017 (the SDK's error for a refused handshake)
        await session_run(mcpwrap(profile, legacy_sse.url), tmp_path / "err", body)


def run_mcpwrap(
    profile: Path, *target: str, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcpwrap", "run", "--profile", str(profile), "--", *target],
        input="",
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=profile.parent,
    )


def test_plain_http_to_another_host_is_refused_before_connecting(tmp_path: Path) -> None:
    """192.0.2.1 is a documentation address: nothing answers there, so a refusal that
    comes at once and says why was made before any connection was tried."""
    profile = write_profile(tmp_path, TOOLS)
    started = time.monotonic()
    done = run_mcpwrap(profile, "http://192.0.2.1:8080/mcp")
    assert done.returncode != 0
    assert "plain http" in done.stderr and "https://" in done.stderr, done.stderr
    assert time.monotonic() - started < 10


def test_plain_http_in_the_profile_is_refused(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, '[server]\nurl = "http://192.0.2.1/mcp"\n' + TOOLS)
    done = run_mcpwrap(profile)
    assert done.returncode != 0 and "server.url" in done.stderr and "loopback" in done.stderr


def test_https_to_another_host_passes_the_url_check(tmp_path: Path) -> None:
    """Control: https to the same address is not refused by the URL check (it then fails
    to connect, saying so, within the connect timeout; nothing listens there)."""
    from mcpwrap.config.remote import url_problem

    assert url_problem("https://192.0.2.1:8080/mcp") is None
    assert url_problem("http://127.0.0.1:8080/mcp") is None
    assert url_problem("http://[::1]:8080/mcp") is None
    assert url_problem("http://localhost:8080/mcp") is None
    assert url_problem("http://192.0.2.1:8080/mcp") is not None
    assert url_problem("http://127.0.0.1.example.com/mcp") is not None
    assert url_problem("https://user:pw@example.com/mcp") is not None


@pytest.mark.anyio
async def test_server_going_away_mid_session_is_an_error_not_a_hang(
    streamable: Remote, tmp_path: Path
) -> None:
    profile = write_profile(tmp_path, TOOLS)

    async def body(session: ClientSession) -> Any:
        await session.initialize()
        first = await session.call_tool("echo", {"text": "before"})
        stop(streamable)
        with anyio.fail_after(30):
            try:
                after = await session.call_tool("echo", {"text": "after"})
            except Exception as exc:  # the connection ended: the SDK raises
                return first, exc
        return first, after

    first, after = await session_run(mcpwrap(profile, streamable.url), tmp_path / "err", body)
    assert text_of(first) == "before"
    if isinstance(after, Exception):
        assert "remote MCP server" in str(after) or "Connection closed" in str(after), after
    else:
        assert after.is_error or getattr(after, "content", None) is None
    err = (tmp_path / "err").read_text()
    assert "remote MCP server" in err, err
    stop_record = next(r for r in records(tmp_path) if r.get("decision") == "stop")
    assert stop_record["exit_code"] == 1 and "remote MCP server" in stop_record["reason"]


@pytest.mark.anyio
async def test_profile_headers_reach_the_server(streamable: Remote, tmp_path: Path) -> None:
    profile = write_profile(tmp_path, '[server]\nheaders = { X-Team = "blue" }\n' + TOOLS)

    async def body(session: ClientSession) -> Any:
        await session.initialize()
        return await session.call_tool("echo", {"text": "hi"})

    result = await session_run(mcpwrap(profile, streamable.url), tmp_path / "err", body)
    assert text_of(result) == "hi (x-team=blue)"


@pytest.mark.anyio
async def test_bearer_from_the_keyring_reaches_the_server_and_nothing_else(
    streamable: Remote, tmp_path: Path, bus: dict[str, str]
) -> None:
    import hashlib

    value = "tok-" + hashlib.sha256(b"remote bearer test").hexdigest()[:24]
    ref = "keyring:mcpwrap-test/remote-bearer"
    stored = subprocess.run(
        [sys.executable, "-m", "mcpwrap", "secret", "set", ref],
        input=value + "\n",
        capture_output=True,
        text=True,
        env={**os.environ, **bus},
        timeout=60,
    )
    assert stored.returncode == 0, stored.stderr
    profile = write_profile(tmp_path, f'[server]\nbearer = "{ref}"\n' + TOOLS)

    async def body(session: ClientSession) -> Any:
        await session.initialize()
        return await session.call_tool("echo", {"text": "hi"})

    result = await session_run(mcpwrap(profile, streamable.url, extra=bus), tmp_path / "err", body)
    digest = hashlib.sha256(f"Bearer {value}".encode()).hexdigest()
    assert text_of(result) == f"hi (authorization={digest})"
    written = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert value.encode() not in written  # not in the audit log, the profile or stderr


# --- RemoteUpstream keeps ends.py's contract (in process, against the real server) ----------

INITIALIZE = (
    b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18",'
    b'"capabilities":{},"clientInfo":{"name":"t","version":"1"}}}'
)


def _wait_for(got: list[Any], count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(got) >= count, got


def test_remote_upstream_keeps_the_end_contract(streamable: Remote) -> None:
    import json
    import threading

    from mcpwrap.config.remote import RemoteSpec
    from mcpwrap.relay.ends import Upstream
    from mcpwrap.relay.framing import Oversize
    from mcpwrap.relay.remote import RemoteUpstream

    end = RemoteUpstream(RemoteSpec(streamable.url), max_message=600, name="r")
    assert isinstance(end, Upstream) and end.usage() is None and end.name == "r"
    end.reset_peaks()
    got: list[Any] = []
    reader = threading.Thread(target=end.run, args=(got.append,))
    reader.start()
    assert end.send(INITIALIZE)
    _wait_for(got, 1)
    assert json.loads(got[0])["id"] == 0
    assert end.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
    # Sends from many threads at once: each whole, each answered.
    senders = [
        threading.Thread(
            target=end.send, args=(f'{{"jsonrpc":"2.0","id":{i},"method":"ping"}}'.encode(),)
        )
        for i in range(1, 9)
    ]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join()
    _wait_for(got, 9)
    assert sorted(json.loads(m)["id"] for m in got[1:9]) == list(range(1, 9))
    # Over max_message: an Oversize, as from a pipe (the listing is ~1 KB).
    assert end.send(b'{"jsonrpc":"2.0","id":20,"method":"tools/list"}')
    _wait_for(got, 10)
    assert isinstance(got[9], Oversize) and got[9].size > 600
    # A request the SDK will not carry is answered for its id, not dropped.
    assert end.send(b'{"jsonrpc":"2.0","id":21,"method":7}')
    _wait_for(got, 11)
    assert json.loads(got[10])["id"] == 21 and "could not send" in got[10].decode()
    end.close()
    end.close()  # idempotent
    reader.join(15)
    assert not reader.is_alive()
    assert end.send(b'{"jsonrpc":"2.0","id":30,"method":"ping"}') is False
    assert end.error is None  # closed from our side


def test_remote_upstream_run_ends_with_the_reason_when_the_server_is_gone(
    streamable: Remote,
) -> None:
    import threading

    from mcpwrap.config.remote import RemoteSpec
    from mcpwrap.relay.remote import RemoteUpstream

    end = RemoteUpstream(RemoteSpec(streamable.url), max_message=1 << 20)
    got: list[Any] = []
    reader = threading.Thread(target=end.run, args=(got.append,))
    reader.start()
    assert end.send(INITIALIZE)
    _wait_for(got, 1)
    stop(streamable)
    end.send(b'{"jsonrpc":"2.0","id":1,"method":"ping"}')
    reader.join(40)
    assert not reader.is_alive()
    assert end.error is not None and streamable.url in end.error
    assert end.send(b'{"jsonrpc":"2.0","id":2,"method":"ping"}') is False


@pytest.mark.anyio
@pytest.mark.parametrize("trusted", [True, False])
async def test_https_is_verified_an_untrusted_server_never_gets_a_call(
    tmp_path: Path, trusted: bool
) -> None:
    """https through identity/tlsclient: a certificate the trust store does not vouch for
    ends the run before any request (the client gets an error, the server no call); the
    control trusts the test CA (SSL_CERT_FILE feeds the default store) and the call goes."""
    from test_tlsclient import CA

    ca = CA(tmp_path, "remote-ca")
    issued = ca.issue("server")
    remote = start_server(tmp_path, "streamable-http", (issued.cert, issued.key))
    try:
        profile = write_profile(tmp_path, TOOLS)
        extra = {"SSL_CERT_FILE": str(ca.pem)} if trusted else {}

        async def body(session: ClientSession) -> Any:
            await session.initialize()
            return await session.call_tool("echo", {"text": "tls"})

        params = mcpwrap(profile, remote.url, extra=extra)
        if trusted:
            assert text_of(await session_run(params, tmp_path / "err", body)) == "tls"
            assert remote.seen() == ["echo"]
        else:
            with pytest.raises(Exception):  # noqa: B017 (the SDK's error for the failed handshake)
                await session_run(params, tmp_path / "err", body)
            assert remote.seen() == []
            err = (tmp_path / "err").read_text()
            assert "127.0.0.1" in err and "certificate" in err.lower(), err
    finally:
        stop(remote)


@pytest.mark.anyio
@pytest.mark.parametrize("pinned", ["right", "wrong", "none"])
async def test_the_profiles_ca_and_pins_decide_who_gets_the_calls(
    tmp_path: Path, pinned: str
) -> None:
    """[server.tls] ca trusts the test CA without touching the system store; [server.tls]
    pins must name the server's key: another pin ends the run before any request, and
    the server sees no call. Controls: the right pin, and no pin (the CA alone)."""
    from test_tlsclient import CA

    from mcpwrap.identity.tlsclient import spki_pin

    ca = CA(tmp_path, "remote-ca")
    issued = ca.issue("server")
    other = ca.issue("other")
    remote = start_server(tmp_path, "streamable-http", (issued.cert, issued.key))
    try:
        pin_of = {"right": issued.cert, "wrong": other.cert}
        pins = f'pins = ["{spki_pin(_der(pin_of[pinned]))}"]\n' if pinned in pin_of else ""
        tls = f'\n[server.tls]\nca = "{ca.pem}"\n{pins}'
        profile = write_profile(tmp_path, TOOLS + tls)

        async def body(session: ClientSession) -> Any:
            await session.initialize()
            return await session.call_tool("echo", {"text": "tls"})

        params = mcpwrap(profile, remote.url)
        endpoint = remote.url.split("/")[2]
        if pinned != "wrong":
            assert text_of(await session_run(params, tmp_path / "err", body)) == "tls"
            assert remote.seen() == ["echo"]
        else:
            with pytest.raises(Exception):  # noqa: B017 (the SDK's error for the refused connection)
                await session_run(params, tmp_path / "err", body)
            assert remote.seen() == []
            err = (tmp_path / "err").read_text()
            assert "pin" in err and "mcpwrap approve" in err, err
        # Each connection and each handshake is an audit record, as the jail's egress is.
        egress = [r for r in records(tmp_path) if r["event"] == "egress"]
        tls = [r for r in records(tmp_path) if r["event"] == "tls"]
        assert egress and all(
            r["decision"] == "allow" and r["endpoint"] == endpoint and r["address"] == "127.0.0.1"
            for r in egress
        )
        assert tls and {r["pin"] for r in tls} == {spki_pin(_der(issued.cert))}
        decisions = {r["decision"] for r in tls}
        assert decisions == ({"refuse"} if pinned == "wrong" else {"allow"})
    finally:
        stop(remote)


def _der(pem: Path) -> bytes:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    ("to", "why"),
    [
        (("127.0.0.1", 8443), None),
        (("LOCALHOST", 8443), "is not the server's origin"),  # another name: another origin
        (("127.0.0.1", 8444), "is not the server's origin"),
        (("auth.example.com", 443), "is not the server's origin"),
    ],
)
def test_a_remote_run_connects_to_the_servers_origin_only(
    to: tuple[str, int], why: str | None
) -> None:
    from mcpwrap.relay.remote import origin_only

    verdict = origin_only("https://127.0.0.1:8443/mcp")(*to)
    assert verdict is None if why is None else why in (verdict or "")


def test_with_oauth_the_egress_rule_admits_the_discovered_authorization_server() -> None:
    from mcpwrap.relay.remote import egress_rule

    class Provider:
        def __init__(self) -> None:
            self.found: list[str] = []

        def endpoints(self) -> list[str]:
            return self.found

    provider = Provider()
    admit = egress_rule("https://mcp.example.com/mcp", provider)
    assert admit("mcp.example.com", 443) is None
    assert admit("auth.example.com", 443) is not None  # not discovered yet
    provider.found = ["https://auth.example.com/", "https://auth.example.com:8443/token"]
    assert admit("auth.example.com", 443) is None and admit("auth.example.com", 8443) is None
    assert "authorization server" in (admit("evil.example", 443) or "")
