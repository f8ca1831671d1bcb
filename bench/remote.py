"""The benchmark of a remote server: mcpwrap in front of a Streamable HTTP server against
the MCP SDK's own HTTP client talking to it directly, in one run.

    python bench/remote.py [--calls 300] [--starts 9]

The server is the MCP SDK's MCPServer under uvicorn on 127.0.0.1 (bench/remote_server.py,
one `echo` tool), over plain http on loopback so that both paths pay the same transport.
Two clients, both the SDK's ClientSession, take turns:

- direct: ClientSession over the SDK's `streamable_http_client` to the server;
- mcpwrap: ClientSession over stdio to `mcpwrap run --profile bench/remote.toml -- URL`
  (audit on, every call checked), which speaks to the server with the same SDK transport.

Start to first reply: from the start of a connection (direct) or of the mcpwrap process to
the `initialize` result, medians of `--starts` rounds, one unmeasured round first. Then
each path's small-call round trip p50 and p99 over `--calls` calls of `echo`. The added
figures are mcpwrap's cost for a remote server: one more process and one stdio hop, and
the inspection.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from mcp.client import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

HERE = Path(__file__).resolve().parent
PROFILE = HERE / "remote.toml"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "remote_server.py"), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}/mcp"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("bench/remote_server.py did not listen within 20 s")


Body = Callable[[ClientSession], Awaitable[Any]]


async def direct(url: str, body: Body) -> Any:
    async with (
        streamable_http_client(url) as (read, write),
        ClientSession(read, write) as session,
    ):
        return await body(session)


async def wrapped(url: str, body: Body, state: str) -> Any:
    env = {**os.environ, "XDG_STATE_HOME": state}
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcpwrap", "run", "--profile", str(PROFILE), "--", url],
        env=env,
    )
    with open(os.devnull, "w") as err:
        async with (
            stdio_client(params, errlog=err) as (read, write),
            ClientSession(read, write) as session,
        ):
            return await body(session)


async def first_reply(session: ClientSession) -> None:
    await session.initialize()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--starts", type=int, default=9)
    args = parser.parse_args()
    server, url = start_server()
    state = str(Path(os.environ.get("TMPDIR", "/tmp")) / f"mcpwrap-bench-remote-{os.getpid()}")
    paths: dict[str, Callable[[Body], Awaitable[Any]]] = {
        "direct (SDK client)": lambda body: direct(url, body),
        "mcpwrap": lambda body: wrapped(url, body, state),
    }
    try:
        starts: dict[str, list[float]] = {name: [] for name in paths}
        for round_ in range(args.starts + 1):
            for name, path in paths.items():
                t0 = time.perf_counter()
                anyio.run(path, first_reply)
                if round_:  # the first round warms caches and is not counted
                    starts[name].append((time.perf_counter() - t0) * 1000)
        rtts: dict[str, list[float]] = {}
        for name, path in paths.items():

            async def calls(session: ClientSession) -> list[float]:
                await session.initialize()
                for _ in range(20):
                    await session.call_tool("echo", {"text": "warm"})
                out = []
                for i in range(args.calls):
                    t0 = time.perf_counter()
                    await session.call_tool("echo", {"text": f"call {i}"})
                    out.append((time.perf_counter() - t0) * 1e6)
                return sorted(out)

            rtts[name] = anyio.run(path, calls)
    finally:
        server.kill()
        server.wait()
    load = os.getloadavg()[0]
    print(
        f"remote benchmark: {args.calls} small calls, {args.starts} starts per path in turn "
        f"(medians); SDK Streamable HTTP server on loopback; load average {load:.1f}"
    )
    print("| measure | direct (SDK client) | mcpwrap | added |")
    print("|---|---|---|---|")
    d, m = (statistics.median(starts[n]) for n in paths)
    print(f"| start to first reply | {d:.1f} ms | {m:.1f} ms | {m - d:+.1f} ms |")
    for label, q in (("p50", 0.5), ("p99", 0.99)):
        d, m = (rtts[n][int(len(rtts[n]) * q)] for n in paths)
        print(f"| small call round trip {label} | {d:.0f} us | {m:.0f} us | {m - d:+.0f} us |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
