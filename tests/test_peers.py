"""Smoke tests: the real MCP peers run here, directly, with no mcpwrap in between.

If these fail, every relay test that uses the peers will fail too: fix the test bed first
(scripts/test installs it).
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any

import anyio
import pytest
from mcp.client import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

# Tools that server-everything always lists, whatever the client's capabilities.
EVERYTHING_BASE_TOOLS = {
    "echo",
    "get-annotated-message",
    "get-env",
    "get-resource-links",
    "get-resource-reference",
    "get-structured-content",
    "get-sum",
    "get-tiny-image",
    "gzip-file-as-resource",
    "simulate-research-query",
    "toggle-simulated-logging",
    "toggle-subscriber-updates",
    "trigger-long-running-operation",
}


def _run_inspector(argv: list[str], cwd: Path) -> Any:
    proc = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )
    assert proc.returncode == 0, f"inspector failed ({proc.returncode}):\n{proc.stderr}"
    return json.loads(proc.stdout)


@pytest.mark.timeout(120)
def test_everything_via_inspector_cli(
    inspector_cli: list[str], everything_cmd: list[str], tmp_path: Path
) -> None:
    listed = _run_inspector([*inspector_cli, *everything_cmd, "--method", "tools/list"], tmp_path)
    names = {tool["name"] for tool in listed["tools"]}
    assert names >= EVERYTHING_BASE_TOOLS, sorted(EVERYTHING_BASE_TOOLS - names)

    called = _run_inspector(
        [
            *inspector_cli,
            *everything_cmd,
            "--method",
            "tools/call",
            "--tool-name",
            "echo",
            "--tool-arg",
            "message=hi",
        ],
        tmp_path,
    )
    assert called["content"] == [{"type": "text", "text": "Echo: hi"}]


class _LineReader:
    """Newline-delimited JSON-RPC from a pipe, read on a thread, with timeouts."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._lines: queue.Queue[bytes] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[bytes]) -> None:
        for line in iter(stream.readline, b""):
            self._lines.put(line)
        self._lines.put(b"")  # EOF

    def response(self, msg_id: int, timeout: float = 20.0) -> dict[str, Any]:
        """The response to `msg_id`; notifications and server requests are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no response to id {msg_id} within {timeout}s")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if not line:
                raise EOFError(f"server closed stdout before answering id {msg_id}")
            msg = json.loads(line)
            if msg.get("id") == msg_id and "method" not in msg:
                return dict(msg)


@pytest.mark.timeout(60)
def test_time_server_raw_jsonrpc(time_server_cmd: list[str], tmp_path: Path) -> None:
    stderr_log = tmp_path / "server.stderr"
    with stderr_log.open("wb") as err:
        proc = subprocess.Popen(
            time_server_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd=tmp_path
        )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        reader = _LineReader(proc.stdout)

        def send(msg: dict[str, Any]) -> None:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(msg).encode() + b"\n")
            proc.stdin.flush()

        send(
            {
                "jsonrpc": "2.0",
                "id": 0,  # a valid id, falsy on purpose
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "mcpwrap-tests", "version": "0"},
                },
            }
        )
        init = reader.response(0)
        assert init["result"]["protocolVersion"] == "2025-11-25", init
        assert "tools" in init["result"]["capabilities"]

        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        send({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        listed = reader.response(1)
        names = {tool["name"] for tool in listed["result"]["tools"]}
        assert names == {"get_current_time", "convert_time"}

        proc.stdin.close()
        assert proc.wait(timeout=10) == 0, stderr_log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_sdk_client_session_lists_everything_tools(
    everything_cmd: list[str], tmp_path: Path
) -> None:
    params = StdioServerParameters(command=everything_cmd[0], args=everything_cmd[1:], cwd=tmp_path)
    with (tmp_path / "server.stderr").open("w") as errlog:
        with anyio.fail_after(30):
            async with (
                stdio_client(params, errlog=errlog) as (read, write),
                ClientSession(read, write) as session,
            ):
                init = await session.initialize()
                assert init.server_info.name == "mcp-servers/everything"
                assert init.capabilities.tools is not None
                listed = await session.list_tools()
    names = {tool.name for tool in listed.tools}
    assert names >= EVERYTHING_BASE_TOOLS, sorted(EVERYTHING_BASE_TOOLS - names)
