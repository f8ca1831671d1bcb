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

import pytest
from mcp.client import ClientSession
from test_remote import attempt, mcpwrap, records, refused, session_run, start_server, stop, text_of
from test_tlsclient import CA
from wrapped import write_profile

REPO = Path(__file__).resolve().parent.parent
EVERYTHING = REPO / "tests" / "node" / "node_modules" / ".bin" / "mcp-server-everything"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
