"""Egress end to end: a real MCP client, `mcpwrap run`, the jail, and an SDK server whose
tools reach the network.

Attribution here comes from the relay's real in-flight calls, not from a list the test
hands the proxy: an endpoint declared by a tool's effects is reachable during that tool's
call only, and a connection opened during the call is closed when the call ends.
Upstreams are the test's own listeners on the host's loopback; the name upstream.test is
mapped to 127.0.0.1 through MCPWRAP_TEST_HOSTS.

The refusals run in both jail kinds: in the reduced one (`jail = "any"`, mcpwrap started
through tests/nouserns.py so that user namespaces are really blocked) the proxies listen
on the host's loopback and Landlock's TCP rules are all that keep the server to them, a
different mechanism from the full jail's network namespace.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from egress_harness import EchoServer, hello_server
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from wrapped import MCPWRAP, REPO, audit_records

SERVER = [sys.executable, str(REPO / "tests" / "fixtures" / "net_server.py")]
NOUSERNS = [sys.executable, str(REPO / "tests" / "nouserns.py")]


@pytest.fixture
def servers() -> Iterator[tuple[int, int, list[str]]]:
    """(HTTP port, TCP echo port, paths the HTTP server was asked for)."""
    echo = EchoServer()
    try:
        with hello_server() as http:
            yield http.port, echo.port, http.hits
    finally:
        echo.close()


def text(result: types.CallToolResult) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


def wrap(
    tmp_path: Path, http_port: int, echo_port: int, sandbox: str = "", kind: str = "full"
) -> StdioServerParameters:
    """kind "reduced": the profile accepts it and user namespaces are blocked for mcpwrap."""
    if kind == "reduced":
        sandbox = f'jail = "any"\n{sandbox}'
    start = [*NOUSERNS, *MCPWRAP] if kind == "reduced" else MCPWRAP
    profile = tmp_path / "net.toml"
    profile.write_text(
        f"""version = 1
[sandbox]
network = "allowlist"
read = ["{{project}}"]
{sandbox}
[policy]
default = "deny"
[tools.fetch]
class = "read"
effects = ["network:upstream.test:{http_port}", "network:127.0.0.1:{http_port}"]
[tools.other]
class = "read"
[tools.hold]
class = "read"
effects = ["network:127.0.0.1:{echo_port}"]
[tools.held]
class = "read"
[tools.proxy]
class = "read"
[audit]
path = "{tmp_path}/audit.jsonl"
"""
    )
    (tmp_path / "hosts").write_text("127.0.0.1 upstream.test\n")
    return StdioServerParameters(
        command=start[0],
        args=[*start[1:], "run", "--profile", str(profile), "--", *SERVER],
        cwd=str(tmp_path),
        env={"PATH": os.environ["PATH"], "MCPWRAP_TEST_HOSTS": str(tmp_path / "hosts")},
    )


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["full", "reduced"])
async def test_tool_effects_follow_the_relays_calls(
    tmp_path: Path, servers: tuple[int, int, list[str]], kind: str
) -> None:
    """The same in both jails: in the reduced one the proxies listen on the host's
    loopback and the server's proxy URLs carry the run's secret."""
    http_port, echo_port, hits = servers
    params = wrap(tmp_path, http_port, echo_port, kind=kind)
    url = f"http://upstream.test:{http_port}"
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        given = urlsplit(text(await session.call_tool("proxy", {})))
        assert (given.username is not None) == (kind == "reduced"), given
        assert text(await session.call_tool("fetch", {"url": f"{url}/in-call"})) == (
            "hello /in-call\n"
        )
        refused = text(await session.call_tool("other", {"url": f"{url}/other"}))
        assert refused.startswith("failed:") and "403" in refused, refused
        assert text(await session.call_tool("hold", {"host": "127.0.0.1", "port": echo_port})) == (
            "held ping"
        )
        # hold's call has ended: the tunnel it opened must be gone.
        assert text(await session.call_tool("held", {})).startswith("closed"), "outlived its call"
    assert hits == ["/in-call"]

    records = audit_records(tmp_path / "audit.jsonl")
    assert records[0]["jail"] == kind, records[0]
    call_ids = {r["tool"]: r["request_id"] for r in records if r.get("event") == "call"}
    egress: list[dict[str, Any]] = [r for r in records if r.get("event") == "egress"]
    by_rule = {r["rule"]: r for r in egress}
    fetched = by_rule["tools.fetch.effects"]
    assert fetched["decision"] == "allow" and fetched["calls"] == [call_ids["fetch"]]
    assert fetched["endpoint"] == f"upstream.test:{http_port}" and fetched["bytes_in"] > 0
    assert by_rule["egress.not_in_flight"]["endpoint"] == f"upstream.test:{http_port}"
    tunnel = by_rule["tools.hold.effects"]
    assert tunnel["ended"] == "call ended" and tunnel["calls"] == [call_ids["hold"]]
    assert len(egress) == 3, egress


@pytest.mark.anyio
async def test_the_profiles_egress_limits_reach_the_proxy(
    tmp_path: Path, servers: tuple[int, int, list[str]]
) -> None:
    """egress_bytes = "6B": the tunnel's 4 bytes out pass, the 4 coming back are over.
    With the echo endpoint listed profile-wide the connection is not tied to the call, so
    the limit, not the call's end, is what closes it."""
    http_port, echo_port, _ = servers
    params = wrap(
        tmp_path,
        http_port,
        echo_port,
        f'egress = ["127.0.0.1:{echo_port}"]\negress_bytes = "6B"',
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        held = text(await session.call_tool("hold", {"host": "127.0.0.1", "port": echo_port}))
        assert held == "held ", held  # the echo never came back
    (record,) = [r for r in audit_records(tmp_path / "audit.jsonl") if r.get("event") == "egress"]
    assert record["rule"] == "sandbox.egress" and record["ended"] == "bytes limit", record


@pytest.mark.anyio
async def test_the_reduced_jails_proxies_refuse_other_local_processes(
    tmp_path: Path, servers: tuple[int, int, list[str]]
) -> None:
    """Without a network namespace the proxies listen on the host's loopback, where any
    local process could borrow the server's allowlist: they ask for the run's secret,
    which only the server was given. Control: with it, the same request passes."""
    import base64
    import socket

    http_port, echo_port, _ = servers
    params = wrap(tmp_path, http_port, echo_port, f'egress = ["127.0.0.1:{echo_port}"]', "reduced")
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        proxy = urlsplit(text(await session.call_tool("proxy", {})))
        assert proxy.hostname == "127.0.0.1" and proxy.password, proxy

        def connect(credentials: str | None) -> bytes:
            auth = ""
            if credentials is not None:
                auth = f"Proxy-Authorization: Basic {base64.b64encode(credentials.encode()).decode()}\r\n"
            target = f"127.0.0.1:{echo_port}"
            with socket.create_connection(("127.0.0.1", proxy.port or 0), timeout=10) as sock:
                sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n".encode())
                return sock.recv(1024).split(b"\r\n")[0]

        assert b" 407 " in connect(None)
        assert b" 407 " in connect("mcpwrap:guessed")
        assert b" 200 " in connect(f"mcpwrap:{proxy.password}")  # control
    refused = [
        r for r in audit_records(tmp_path / "audit.jsonl") if r.get("rule") == "egress.credentials"
    ]
    assert [r["reason"] for r in refused] == ["no proxy credentials", "wrong proxy credentials"]
    assert all(str(proxy.password) not in str(r) for r in audit_records(tmp_path / "audit.jsonl"))
