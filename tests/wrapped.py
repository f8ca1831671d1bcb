"""Drive `mcpwrap run` over raw pipes: send lines, read replies with deadlines.

Used by the relay's integration tests; waits on events (readable pipes), never on sleeps.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RAW_SERVER = [sys.executable, str(REPO / "tests" / "fixtures" / "raw_server.py")]
MCPWRAP = [sys.executable, "-m", "mcpwrap"]


def py_peer(name: str) -> Path:
    """The console script NAME of the Python peer venv .cache/peers/NAME: scripts/test
    builds it from tests/py_peers.json as uvx would, with its own venv and MCP SDK."""
    exe = REPO / ".cache" / "peers" / name / "bin" / name
    if not os.access(exe, os.X_OK):
        import pytest

        pytest.fail(f"{exe} is missing: scripts/test builds it from tests/py_peers.json")
    return exe


def write_profile(directory: Path, body: str, name: str = "test") -> Path:
    """A profile file with `version = 1`, an audit log in the directory, and (unless the
    body has its own [sandbox]) a jail that may read the directory and write only `out/`,
    where the raw server writes its log."""
    path = directory / f"{name}.toml"
    (directory / "out").mkdir(exist_ok=True)
    audit = f'\n[audit]\npath = "{directory}/audit.jsonl"\narguments = "full"\n'
    sandbox = '\n[sandbox]\nread = ["{project}"]\nwrite = ["{project}/out"]\n'
    text = "version = 1\n" + body + ("" if "[audit]" in body else audit)
    text += "" if "[sandbox]" in body else sandbox
    path.write_text(text)
    return path


class Wrapped:
    """`mcpwrap run` with a profile and a server command, over pipes."""

    def __init__(
        self,
        profile: Path,
        server: list[str],
        *,
        extra: list[str] | None = None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        mcpwrap: list[str] | None = None,
    ) -> None:
        """`mcpwrap` replaces how mcpwrap itself is started (e.g. as another user)."""
        start = mcpwrap or MCPWRAP
        argv = [*start, "run", "--profile", str(profile), *(extra or []), "--", *server]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd or profile.parent,
            env={**os.environ, **(env or {})},
            bufsize=0,
        )
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        self._buf = b""
        self._next = 100

    def send(self, msg: object) -> None:
        self.send_raw(json.dumps(msg).encode() + b"\n")

    def send_raw(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)

    def request(
        self, method: str, params: dict[str, Any] | None = None, msg_id: object = None
    ) -> object:
        if msg_id is None:
            self._next += 1
            msg_id = self._next
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        return msg_id

    def call(
        self, name: str, arguments: dict[str, Any] | None = None, msg_id: object = None
    ) -> dict[str, Any]:
        sent = self.request("tools/call", {"name": name, "arguments": arguments or {}}, msg_id)
        return self.recv_id(sent)

    def initialize(self, capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
        self.request(
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": capabilities or {},
                "clientInfo": {"name": "pytest", "version": "1.0"},
            },
            msg_id=0,
        )
        reply = self.recv_id(0)
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return reply

    def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        line = self.recv_line(timeout)
        msg = json.loads(line)
        assert isinstance(msg, dict)
        return msg

    def recv_line(self, timeout: float = 10.0) -> bytes:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise TimeoutError(f"no message within {timeout} s; stderr: {self.stderr_now()}")
            chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
            if not chunk:
                raise EOFError(f"mcpwrap closed its stdout; stderr: {self.stderr_now()}")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def recv_id(self, msg_id: object, timeout: float = 10.0) -> dict[str, Any]:
        """The reply to `msg_id`; other messages that arrive first are kept in `self.others`."""
        self.others: list[dict[str, Any]] = getattr(self, "others", [])
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv(max(0.01, deadline - time.monotonic()))
            if (
                msg.get("id") == msg_id
                and type(msg.get("id")) is type(msg_id)
                and "method" not in msg
            ):
                return msg
            self.others.append(msg)

    def no_message(self, within: float = 0.5) -> bool:
        """True if nothing arrives for `within` seconds (for things that must NOT be sent)."""
        assert self.proc.stdout is not None
        return b"\n" not in self._buf and not select.select([self.proc.stdout], [], [], within)[0]

    def close(self, timeout: float = 15.0) -> int:
        assert self.proc.stdin is not None
        if not self.proc.stdin.closed:
            self.proc.stdin.close()
        return self.proc.wait(timeout)

    def stderr_now(self) -> str:
        assert self.proc.stderr is not None
        out = b""
        while select.select([self.proc.stderr], [], [], 0)[0]:
            chunk = os.read(self.proc.stderr.fileno(), 65536)
            if not chunk:
                break
            out += chunk
        return out.decode(errors="replace")

    def __enter__(self) -> Wrapped:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def audit_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def server_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def processes_with(marker: str) -> list[int]:
    """Pids whose command line holds `marker`: how a test finds the processes a jailed
    server started, whose pids inside the jail mean nothing outside."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            continue
    return found
