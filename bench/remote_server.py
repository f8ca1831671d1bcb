"""bench/remote.py's server: the MCP SDK's MCPServer over Streamable HTTP under uvicorn on
127.0.0.1, with one `echo` tool.

    python bench/remote_server.py PORT
"""

from __future__ import annotations

import sys

import anyio
import uvicorn
from mcp.server import MCPServer

server = MCPServer("bench-remote")


@server.tool()
def echo(text: str) -> str:
    """Return the text."""
    return text


async def main() -> None:
    config = uvicorn.Config(
        server.streamable_http_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning"
    )
    await uvicorn.Server(config).serve()


anyio.run(main)
