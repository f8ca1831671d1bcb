"""`mcpwrap run` over stdio stays lean: neither the MCP SDK nor an HTTP or TLS stack is
imported on its path, with or without the jail. Read from a real run with -X importtime,
which lists every module the process imported, lazy imports included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Top-level packages that `run` over stdio must never import: the SDK and what it brings,
# HTTP clients and servers, TLS. A future HTTP end imports these on its own path only.
HEAVY = {
    "mcp", "mcp_types", "pydantic", "pydantic_core", "anyio", "httpx", "httpcore", "httpx2",
    "httpcore2", "h11", "starlette", "uvicorn", "sse_starlette", "aiohttp", "requests",
    "urllib3", "ssl", "_ssl", "http", "asyncio", "cryptography", "keyring", "platformdirs",
}  # fmt: skip
# Modules a run does without when its profile is unchanged since the last run (the usual
# start): shutil (with zlib, bz2 and lzma), tempfile and random cost ~3-4 ms of each start,
# argparse and gettext ~3 ms. programs.py stands in for shutil; tempfile is for writing a
# changed profile's copy; argparse parses what cli._quick_run does not.
LAZY = {"shutil", "tempfile", "random", "bz2", "lzma", "argparse", "gettext"}


def imported(profile: Path, env: dict[str, str], repo: Path) -> set[str]:
    """The top-level names of every module a run imported: initialize, one call, EOF."""
    server = [sys.executable, str(repo / "bench" / "echo_server.py")]
    argv = [sys.executable, "-X", "importtime", "-m", "mcpwrap", "run", "--profile"]
    messages = [
        {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
         "params": {"name": "echo", "arguments": {"text": "hi"}}},
    ]  # fmt: skip
    done = subprocess.run(
        [*argv, str(profile), "--", *server],
        input="".join(json.dumps(m) + "\n" for m in messages),
        capture_output=True,
        text=True,
        env=env,
        cwd=repo,
        timeout=60,
        check=True,
    )
    assert '"id":1' in done.stdout.replace(" ", ""), done.stderr[-2000:]
    names = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                names.add(name.split(".")[0])
    assert "mcpwrap" in names  # the listing is real: mcpwrap's own modules are in it
    return names


@pytest.mark.parametrize("profile", ["allow_all.toml", "jailed.toml"])
def test_run_over_stdio_imports_no_sdk_no_http_stack_and_no_shutil(
    profile: str, repo_root: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    names = imported(repo_root / "bench" / profile, env, repo_root)
    assert not names & HEAVY, sorted(names & HEAVY)
    again = imported(repo_root / "bench" / profile, env, repo_root)  # the profile kept
    assert not again & (HEAVY | LAZY), sorted(again & (HEAVY | LAZY))


def test_a_remote_run_is_what_imports_the_sdk(repo_root: Path, tmp_path: Path) -> None:
    """Control for the test above: the same listing shows the SDK and its HTTP stack when
    the server is a URL (nothing listens on the port: the run ends either way)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    initialize = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mcpwrap", "run", "--profile",
         str(repo_root / "bench" / "allow_all.toml"), "--", f"http://127.0.0.1:{port}/mcp"],
        input=json.dumps(initialize) + "\n",
        capture_output=True,
        text=True,
        env=env,
        cwd=repo_root,
        timeout=60,
    )  # fmt: skip
    names = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert {"mcp", "httpx2", "anyio"} <= names, done.stderr[-2000:]
