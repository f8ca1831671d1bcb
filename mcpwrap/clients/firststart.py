"""Start a client config's entry once, as the client would, and ask what a client asks
first: initialize, then tools/list. `mcpwrap wrap` says `ready` only once both were
answered; otherwise it says why, in the words of whoever failed: mcpwrap's own error
(`mcpwrap: error: ...` on stderr), or the server's last stderr lines.

The few JSON-RPC messages are spoken here directly (as mcpwrap.commands.capture does for locks):
the SDK is not needed for them, and this way a server that exits, hangs or writes
garbage is reported as exactly that.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from mcpwrap import __version__
from mcpwrap.policy.sanitize import clean_line

PROTOCOL_VERSION = "2025-06-18"
_PAGES = 100
_STDERR_KEPT = 40


class Started(NamedTuple):
    """How the start went: `tools` when it answered both requests, else `why`, with
    what it wrote on stderr."""

    tools: int | None
    why: str = ""
    stderr: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        return self.tools is not None

    def explained(self) -> list[str]:
        """The reason, then mcpwrap's error (from its first line) or the stderr tail."""
        lines = list(self.stderr)
        mine = [i for i, line in enumerate(lines) if line.startswith("mcpwrap: error:")]
        shown = lines[mine[0] :][:12] if mine else lines[-8:]
        return [self.why, *shown]


class _Failed(Exception):
    pass


def start_once(argv: Sequence[str], *, cwd: str, env: Mapping[str, str], timeout: float) -> Started:
    """Start `argv` in `cwd` with exactly `env`, send initialize and tools/list, and stop
    it again. The program is looked up on env's PATH, as a client's spawn does."""
    program = argv[0]
    if "/" not in program:
        path = env.get("PATH", os.defpath)
        found = shutil.which(program, path=path)
        if found is None:
            return Started(
                None,
                f"{program!r} is not found on the PATH the client gives it ({path}), so the "
                "client cannot start it (spawn ENOENT): write its absolute path",
            )
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its whole group can be stopped afterwards
        )
    except OSError as exc:
        return Started(None, f"cannot start {program} in {cwd}: {exc.strerror or exc}")
    talk = _Talk(proc, timeout)
    try:
        return Started(talk.tools(), stderr=tuple(talk.stderr))
    except _Failed as failed:
        talk.drain_stderr()  # its last words, often the reason
        return Started(None, str(failed), tuple(talk.stderr))
    finally:
        talk.stop()


class _Talk:
    def __init__(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        assert proc.stdin and proc.stdout and proc.stderr
        self.proc = proc
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.stderr: list[str] = []
        self._out = b""
        self._err = b""
        self._ids = 0
        self._sel = selectors.DefaultSelector()
        self._sel.register(proc.stdout, selectors.EVENT_READ, "out")
        self._sel.register(proc.stderr, selectors.EVENT_READ, "err")

    def tools(self) -> int:
        self.request(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "mcpwrap-wrap", "version": __version__},
            },
        )
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        count, cursor = 0, None
        for _ in range(_PAGES):
            page = self.request("tools/list", {"cursor": cursor} if cursor else {})
            items = page.get("tools")
            if not isinstance(items, list):
                raise _Failed(f"its tools/list result has no tools array: {page!r:.200}")
            count += len(items)
            cursor = page.get("nextCursor")
            if not isinstance(cursor, str) or not cursor:
                break
        return count

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._ids += 1
        msg_id = self._ids
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        while True:
            msg = self.message(method)
            if "method" in msg:
                if "id" in msg:  # a request of its own: a first start serves none
                    error = {"code": -32601, "message": "mcpwrap wrap answers no requests"}
                    self.send({"jsonrpc": "2.0", "id": msg["id"], "error": error})
                continue
            if msg.get("id") != msg_id:
                continue
            if "error" in msg:
                error = msg["error"]
                said = error.get("message") if isinstance(error, dict) else error
                raise _Failed(f"it answered {method} with an error: {said}")
            result = msg.get("result")
            if not isinstance(result, dict):
                raise _Failed(f"its {method} result is not an object")
            return result

    def send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise self.exited(str(msg.get("method", "a message"))) from None

    def message(self, waiting_for: str) -> dict[str, Any]:
        while b"\n" not in self._out:
            left = self.deadline - time.monotonic()
            events = self._sel.select(left) if left > 0 else []
            if not events:
                raise _Failed(f"no answer to {waiting_for} within {self.timeout:g} s")
            for key, _ in events:
                chunk = os.read(key.fd, 1 << 16)
                if key.data == "err":
                    self._stderr(chunk)
                elif not chunk:
                    raise self.exited(waiting_for)
                else:
                    self._out += chunk
        line, self._out = self._out.split(b"\n", 1)
        try:
            msg = json.loads(line)
        except ValueError:
            return {}  # not JSON-RPC (a log line on stdout): skipped, as the relay does
        return msg if isinstance(msg, dict) else {}

    def _stderr(self, chunk: bytes) -> None:
        if not chunk:
            self._sel.unregister(self.proc.stderr)  # type: ignore[arg-type]
            chunk = b"\n" if self._err else b""
        self._err += chunk
        *lines, self._err = self._err.split(b"\n")
        self.stderr += [clean_line(line[:500]) for line in lines if line.strip()]
        del self.stderr[:-_STDERR_KEPT]

    def exited(self, waiting_for: str) -> _Failed:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return _Failed(f"it closed its output before answering {waiting_for}")
        return _Failed(f"it exited (status {code}) before answering {waiting_for}")

    def drain_stderr(self) -> None:
        """Read stderr until it closes, or nothing more comes for a second."""
        err = self.proc.stderr
        assert err is not None
        with selectors.DefaultSelector() as sel:
            sel.register(err, selectors.EVENT_READ)
            while self._reading_stderr() and sel.select(1.0):
                self._stderr(os.read(err.fileno(), 1 << 16))

    def _reading_stderr(self) -> bool:
        return any(key.data == "err" for key in self._sel.get_map().values())

    def stop(self) -> None:
        """Close its input (a server's cue to end), then stop its group if it lingers."""
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        for sig, grace in ((None, 5.0), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            if sig is not None:
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
            try:
                self.proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        self._sel.close()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
