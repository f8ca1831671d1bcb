"""A real remote MCP server for tests/test_remote.py: the MCP SDK's MCPServer under
uvicorn on 127.0.0.1, over Streamable HTTP (both protocol generations) or the 2024-11-05
HTTP+SSE transport.

    python remote_server.py {streamable-http|sse} PORT CALLS_FILE [CERT KEY [CLIENT_CA]]

With CERT and KEY (PEM files) it serves https; with CLIENT_CA too, only to clients that
present a certificate that CA issued (mTLS).

For tests/test_remote_lock.py: REMOTE_ECHO_DESCRIPTION replaces `echo`'s description (a
rug pull on restart), and REMOTE_REQUESTS_FILE gets one line per HTTP request the server
receives, so a test sees that none reached it.

Tools: `echo` (returns its text), `wipe` (a tool a profile refuses), `steps` (reports
progress and logs a message before it answers). Each call the server runs is one line
in CALLS_FILE, so a test sees which calls reached it. Each request's headers that the
`echo` appends the X-Team header it got, and a digest of the Authorization header.
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import Any

import anyio
import uvicorn
from mcp.server import MCPServer
from mcp.server.mcpserver import Context

transport, port, calls_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
server = MCPServer("remote-test")


def _count(name: str) -> None:
    with open(calls_file, "a", encoding="utf-8") as f:
        f.write(name + "\n")


@server.tool(description=os.environ.get("REMOTE_ECHO_DESCRIPTION") or "Return the text.")
def echo(text: str, ctx: Context) -> str:
    """Return the text."""
    _count("echo")
    headers = ctx.headers or {}
    for name in ("x-team", "authorization"):
        if name in headers:  # a digest: the test's secret never shows in the reply
            value = headers[name] if name == "x-team" else _digest(headers[name])
            text += f" ({name}={value})"
    return text


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@server.tool()
def wipe(target: str) -> str:
    """Remove everything under target."""
    _count("wipe")
    return f"wiped {target}"


@server.tool()
async def steps(count: int, ctx: Context) -> str:
    """Report progress `count` times, then answer."""
    _count("steps")
    await ctx.info("steps started")
    for step in range(count):
        await ctx.report_progress(step + 1, count, f"step {step + 1}")
    return f"{count} steps"


mcp_app = server.sse_app() if transport == "sse" else server.streamable_http_app()
requests_file = os.environ.get("REMOTE_REQUESTS_FILE")


async def app(scope: Any, receive: Any, send: Any) -> None:
    if requests_file and scope["type"] == "http":
        with open(requests_file, "a", encoding="utf-8") as f:
            f.write(f"{scope['method']} {scope['path']}\n")
    await mcp_app(scope, receive, send)


async def main() -> None:
    tls: dict[str, object] = {}
    if len(sys.argv) > 5:
        tls = {"ssl_certfile": sys.argv[4], "ssl_keyfile": sys.argv[5]}
    if len(sys.argv) > 6:  # a CA file: mTLS, every client must present a certificate from it
        import ssl

        tls |= {"ssl_ca_certs": sys.argv[6], "ssl_cert_reqs": ssl.CERT_REQUIRED}
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **tls)
    await uvicorn.Server(config).serve()


anyio.run(main)
