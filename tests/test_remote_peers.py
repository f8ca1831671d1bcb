"""Remote servers of other makes, and mTLS, end to end through `mcpwrap run -- URL`.

server-everything (npm, the MCP project's reference server) in its Streamable HTTP mode,
and the SDK's server requiring a client certificate (tests/remote_server.py with a client
CA), each driven over stdio by the SDK's own client."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client import ClientSession
from mcp.client.stdio import stdio_client
from test_remote import (
    _free_port,
    attempt,
    mcpwrap,
    records,
    refused,
    session_run,
    start_server,
    stop,
    text_of,
)
from test_tlsclient import CA
from wrapped import write_profile

REPO = Path(__file__).resolve().parent.parent
EVERYTHING = REPO / "tests" / "node" / "node_modules" / ".bin" / "mcp-server-everything"


@pytest.fixture
def everything(tmp_path: Path) -> Iterator[str]:
    """server-everything over Streamable HTTP on a free port."""
    assert EVERYTHING.exists(), "run scripts/test once: it installs tests/node"
    port = _free_port()
    log = (tmp_path / "everything.log").open("wb")
    env = {**os.environ, "PORT": str(port)}
    node = shutil.which("node")
    assert node is not None
    proc = subprocess.Popen(
        [node, str(EVERYTHING.resolve()), "streamableHttp"], stdout=log, stderr=log, env=env
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / "everything.log").read_text()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        pytest.fail("server-everything did not listen within 30 s")
    yield f"http://127.0.0.1:{port}/mcp"
    proc.kill()
    proc.wait()


ECHO_ONLY = """
[policy]
default = "deny"
timeout = "20s"

[tools.echo]
class = "read"
"""


@pytest.mark.anyio
@pytest.mark.parametrize("profile_text", [ECHO_ONLY, '[policy]\ndefault = "allow"\n'])
async def test_server_everything_over_http_through_the_profile(
    everything: str, tmp_path: Path, profile_text: str
) -> None:
    """The reference server's own HTTP mode: its listing filtered to `echo` and a call to
    `get-env` (which would show the server's environment) refused by mcpwrap; the
    control (every tool allowed) lists and runs it."""
    profile = write_profile(tmp_path, profile_text)

    async def body(session: ClientSession) -> Any:
        await session.initialize()
        listed = await session.list_tools()
        echoed = await session.call_tool("echo", {"message": "hi"})
        env = await attempt(session.call_tool("get-env", {}))
        return listed, echoed, env

    listed, echoed, env = await session_run(mcpwrap(profile, everything), tmp_path / "err", body)
    names = {t.name for t in listed.tools}
    assert "hi" in text_of(echoed)
    if profile_text is ECHO_ONLY:
        assert names == {"echo"}
        assert refused(env)
        calls = [(r["tool"], r["decision"]) for r in records(tmp_path) if r["event"] == "call"]
        assert calls == [("echo", "allow"), ("get-env", "refuse")]
    else:
        assert {"echo", "get-env"} <= names and not refused(env)


@pytest.mark.anyio
@pytest.mark.parametrize("identity", ["file", "none", "other-ca"])
async def test_mtls_the_profiles_client_certificate_opens_the_door(
    tmp_path: Path, identity: str
) -> None:
    """A server that requires a client certificate from its CA: the profile's
    [server.tls] client_cert and client_key (a 0600 file) get the call through; without
    them, or with a certificate from another CA, the run ends before any call and the
    server sees none."""
    ca = CA(tmp_path, "server-ca")
    clients = CA(tmp_path, "client-ca")
    stranger = CA(tmp_path, "stranger-ca")
    issued = ca.issue("server")
    mine = (clients if identity == "file" else stranger).issue("me", client=True, ip=False)
    remote = start_server(tmp_path, "streamable-http", (issued.cert, issued.key, clients.pem))
    try:
        tls = f'\n[server.tls]\nca = "{ca.pem}"\n'
        if identity != "none":
            tls += f'client_cert = "{mine.cert}"\nclient_key = "{mine.key}"\n'
        profile = write_profile(tmp_path, ECHO_ONLY + tls)

        async def body(session: ClientSession) -> Any:
            await session.initialize()
            return await session.call_tool("echo", {"text": "mtls"})

        params = mcpwrap(profile, remote.url)
        if identity == "file":
            assert text_of(await session_run(params, tmp_path / "err", body)) == "mtls"
            assert remote.seen() == ["echo"]
        else:
            with pytest.raises(Exception):  # noqa: B017 (the SDK's error for the refused connection)
                await session_run(params, tmp_path / "err", body)
            assert remote.seen() == []
            err = (tmp_path / "err").read_text()
            assert "certificate" in err.lower(), err
    finally:
        stop(remote)


@pytest.mark.anyio
@pytest.mark.parametrize("elicitation", ["deny", "allow"])
async def test_a_remote_servers_requests_to_the_client_follow_the_profile(
    everything: str, tmp_path: Path, elicitation: str
) -> None:
    """Server-to-client requests of a remote server go through the same policy as a local
    one's: with elicitation denied the client's capability is withheld, so the server
    offers no tool that asks the user; the control allows it and the server's request
    reaches the client's callback."""
    import mcp_types as types

    profile = write_profile(
        tmp_path, f'[policy]\ndefault = "allow"\nelicitation = "{elicitation}"\ntimeout = "20s"\n'
    )
    asked: list[str] = []

    async def on_elicit(context: Any, params: Any) -> Any:
        asked.append(params.message)
        return types.ElicitResult(action="decline")

    params = mcpwrap(profile, everything)
    with (tmp_path / "err").open("w") as err, anyio.fail_after(40):
        async with (
            stdio_client(params, errlog=err) as (read, write),
            ClientSession(read, write, elicitation_callback=on_elicit) as session,
        ):
            await session.initialize()
            names = {t.name for t in (await session.list_tools()).tools}
            if elicitation == "allow":
                assert "trigger-elicitation-request" in names
                await session.call_tool("trigger-elicitation-request", {})
    if elicitation == "deny":
        assert "trigger-elicitation-request" not in names and asked == []
    else:
        assert len(asked) == 1


@pytest.mark.anyio
async def test_a_redirect_to_another_origin_is_not_followed(tmp_path: Path) -> None:
    """A server that answers with a redirect to another origin (here another port: a
    different origin, as another host would be): mcpwrap does not follow it, the client
    gets an error, and the other origin is never connected to. The control reaches that
    other server directly, so the refusal is the redirect's, not a dead target."""
    import http.server
    import threading

    target = start_server(tmp_path, "streamable-http")

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(307)
            self.send_header("Location", target.url)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST

        def log_message(self, format: str, *args: Any) -> None:
            pass

    redirector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=redirector.serve_forever, daemon=True).start()
    here = f"http://127.0.0.1:{redirector.server_address[1]}/mcp"
    try:
        profile = write_profile(tmp_path, ECHO_ONLY)

        async def body(session: ClientSession) -> Any:
            await session.initialize()
            return await session.call_tool("echo", {"text": "moved"})

        with pytest.raises(Exception):  # noqa: B017 (the SDK's error for the refused redirect)
            await session_run(mcpwrap(profile, here), tmp_path / "err", body)
        assert target.seen() == []
        egress = [r["endpoint"] for r in records(tmp_path) if r["event"] == "egress"]
        assert egress and set(egress) == {here.split("/")[2]}  # never the other origin
        # Control: the target itself answers.
        (tmp_path / "audit.jsonl").unlink()
        reply = await session_run(mcpwrap(profile, target.url), tmp_path / "err2", body)
        assert text_of(reply) == "moved" and target.seen() == ["echo"]
    finally:
        redirector.shutdown()
        stop(target)
