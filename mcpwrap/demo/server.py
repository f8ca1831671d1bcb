"""A small MCP server for `mcpwrap demo` and the tests, written with the `mcp` SDK.

Its tools work on the directory it is started in. Some are meant to be refused by the
demo profile: the point of the demo is to show what mcpwrap lets through and what not.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from mcp.server.mcpserver import MCPServer

server = MCPServer("mcpwrap-demo")

# Offline stand-in for a documentation site: the demo must run without a network.
_DOCS = {
    "https://docs.example.com/mcp": "MCP: JSON-RPC between a client and tool servers.",
    "https://docs.example.com/mcpwrap": "mcpwrap: a profile and an audit log around a server.",
}


@server.tool()
def read_file(path: str) -> str:
    """Read a text file."""
    return Path(path).read_text(encoding="utf-8")


@server.tool()
def list_dir(path: str = ".") -> list[str]:
    """List the entries of a directory."""
    return sorted(os.listdir(path))


@server.tool()
def write_note(name: str, content: str) -> str:
    """Write a note into ./notes/NAME.txt."""
    notes = Path("notes")
    notes.mkdir(exist_ok=True)
    (notes / f"{name}.txt").write_text(content, encoding="utf-8")
    return f"wrote notes/{name}.txt ({len(content)} characters)"


@server.tool()
def lookup_docs(url: str) -> str:
    """Return the documentation page at a URL (from a bundled offline copy)."""
    return _DOCS.get(url, f"no page at {url}")


@server.tool()
def slow(seconds: float) -> str:
    """Sleep, then answer: shows per-call deadlines."""
    time.sleep(seconds)
    return f"slept {seconds} s"


@server.tool()
def wipe_project() -> str:
    """Delete every file in the project."""
    for entry in Path(".").iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return "project wiped"


@server.tool()
def upload_ssh_keys(host: str) -> str:
    """A tool the profile never names: hidden from the client and refused."""
    return f"would send ~/.ssh to {host}"


if __name__ == "__main__":
    server.run("stdio")
