"""Ask a server for its instructions and tool definitions, to pin them in a lock.

The server runs in the same jail as under `mcpwrap run` (it is untrusted code; locking it
must not run it with the user's full rights), with its egress listeners closed: listing
tools needs no network. mcpwrap speaks the few JSON-RPC messages this takes itself
(initialize, initialized, tools/list page by page); the SDK is not needed for that.

A remote server (`capture_remote`) is asked the same messages over the upstream `run`
uses (relay/remote.py: the same transports, TLS settings, pins and headers).
"""

from __future__ import annotations

import json
import os
import queue
import selectors
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from mcpwrap import __version__
from mcpwrap.basics.errors import LockError
from mcpwrap.config import paths
from mcpwrap.config.profile import Profile
from mcpwrap.policy.sanitize import clean_line
from mcpwrap.relay.framing import LineReader, Oversize, write_line
from mcpwrap.sandbox import launch

PROTOCOL_VERSION = "2025-06-18"
_PAGES = 1000


class Definitions(NamedTuple):
    instructions: str | None
    tools: list[dict[str, Any]]


def capture(
    profile: Profile,
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: str,
    timeout: float,
    *,
    bytecode: str | None = None,
) -> Definitions:
    """`bytecode`: a uv install's compiled byte code, for the jail (spec.build)."""
    child = _start(profile, argv, env, cwd, bytecode)
    stderr: list[str] = []
    threading.Thread(target=_drain, args=(child.fds()[2], stderr), daemon=True).start()
    try:
        return _Session(child, timeout, stderr).definitions()
    finally:
        if child.process.stdin is not None:
            child.process.stdin.close()
        child.stop(eof_grace=1.0, term_grace=1.0)


def _start(
    profile: Profile, argv: Sequence[str], env: Mapping[str, str], cwd: str, bytecode: str | None
) -> Any:
    if not profile.sandbox.enforce:
        sys.stderr.write(
            f"mcpwrap: warning: {profile.source} sets [sandbox] enforce = false: the server "
            "runs outside the jail while it is asked for its tools\n"
        )
        return launch.start(argv, env=env, cwd=cwd)
    from mcpwrap.sandbox import spec

    jail = spec.build(profile, argv, env, cwd, state_dir=paths.state_dir(), bytecode=bytecode)
    child = launch.start_jailed(jail)
    child.wait_ready()
    for _, sock, _ in child.egress_listeners():
        sock.close()  # listing tools needs no network: a connection is refused, not held
    return child


def _drain(fd: int, lines: list[str]) -> None:
    """Keep the server's last stderr lines, to show if it fails."""
    reader = LineReader(fd, 64 * 1024)
    while (item := reader.read()) is not None:
        raw = item.head if isinstance(item, Oversize) else item
        lines.append(clean_line(raw[:500]))
        del lines[:-20]


def capture_remote(upstream: Any, timeout: float) -> Definitions:
    """The definitions of the remote server behind `upstream` (a relay.remote
    RemoteUpstream, closed here)."""
    session = _RemoteSession(upstream, timeout)
    try:
        return session.definitions()
    finally:
        session.close()


class _Exchange(ABC):
    """The requests a lock needs, over some way to send and read a message."""

    def __init__(self, timeout: float) -> None:
        self._deadline = time.monotonic() + timeout
        self._timeout = timeout
        self._ids = 0

    def definitions(self) -> Definitions:
        init = self._request(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "mcpwrap-lock", "version": __version__},
            },
        )
        self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        instructions = init.get("instructions")
        tools: list[dict[str, Any]] = []
        cursor: object = None
        for _ in range(_PAGES):
            page = self._request("tools/list", {"cursor": cursor} if cursor else {})
            items = page.get("tools")
            if not isinstance(items, list):
                raise self._fail(
                    f"the server's tools/list result has no tools array: {page!r:.200}"
                )
            tools += [t for t in items if isinstance(t, dict)]
            cursor = page.get("nextCursor")
            if not isinstance(cursor, str) or not cursor:
                break
        return Definitions(instructions if isinstance(instructions, str) else None, tools)

    def _request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._ids += 1
        msg_id = self._ids
        self._send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        while True:
            msg = self._read()
            if msg.get("id") == msg_id and "method" not in msg:
                if "error" in msg:
                    raise self._fail(f"the server answered {method} with an error: {msg['error']}")
                result = msg.get("result")
                if not isinstance(result, dict):
                    raise self._fail(f"the server's {method} result is not an object")
                return result
            if "method" in msg and "id" in msg:  # a request of its own: we serve none
                error = {"code": -32601, "message": "mcpwrap lock answers no requests"}
                self._send({"jsonrpc": "2.0", "id": msg["id"], "error": error})

    @abstractmethod
    def _send(self, msg: dict[str, Any]) -> None:
        """Send one message to the server."""

    @abstractmethod
    def _read(self) -> dict[str, Any]:
        """The next message from the server (an object; {} for one that is not)."""

    @abstractmethod
    def _fail(self, what: str) -> LockError:
        """The error to raise for `what`, in this end's words."""


class _Session(_Exchange):
    """A local server, over its pipes."""

    def __init__(self, child: Any, timeout: float, stderr: list[str]) -> None:
        super().__init__(timeout)
        self._in, self._out, _ = child.fds()
        self._stderr = stderr
        self._buffer = b""

    def _send(self, msg: dict[str, Any]) -> None:
        try:
            write_line(self._in, json.dumps(msg).encode())
        except BrokenPipeError as exc:
            raise self._fail("the server exited") from exc

    def _read(self) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            left = self._deadline - time.monotonic()
            with selectors.DefaultSelector() as sel:
                sel.register(self._out, selectors.EVENT_READ)
                if left <= 0 or not sel.select(left):
                    raise self._fail(f"the server did not answer within {self._timeout:g} s")
            chunk = os.read(self._out, 1 << 16)
            if not chunk:
                raise self._fail("the server exited")
            self._buffer += chunk
            if len(self._buffer) > 64 << 20:
                raise self._fail("the server sent a line over 64 MiB")
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            msg = json.loads(line)
        except ValueError:
            return {}  # not JSON-RPC (a log line on stdout): skipped, as the relay drops it
        return msg if isinstance(msg, dict) else {}

    def _fail(self, what: str) -> LockError:
        time.sleep(0.1)  # let the stderr reader catch the server's last words
        tail = "".join(f"\n  {line}" for line in self._stderr[-10:])
        return LockError(
            f"cannot read the server's tool definitions: {what}"
            + (f"; its stderr ended with:{tail}" if tail else "")
        )


class _RemoteSession(_Exchange):
    """A remote server, over a RemoteUpstream whose reader runs in a thread of its own."""

    _END = object()

    def __init__(self, upstream: Any, timeout: float) -> None:
        super().__init__(timeout)
        self._upstream = upstream
        self._inbox: queue.Queue[object] = queue.Queue()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        try:
            self._upstream.run(self._inbox.put)
        finally:
            self._inbox.put(self._END)

    def _send(self, msg: dict[str, Any]) -> None:
        if not self._upstream.send(json.dumps(msg).encode()):
            raise self._fail("the connection ended")

    def _read(self) -> dict[str, Any]:
        try:
            item = self._inbox.get(timeout=max(0.0, self._deadline - time.monotonic()))
        except queue.Empty:
            raise self._fail(f"the server did not answer within {self._timeout:g} s") from None
        if item is self._END:
            self._inbox.put(item)  # every later read ends alike
            raise self._fail("the connection ended")
        if isinstance(item, Oversize):
            raise self._fail(f"the server sent a message of {item.size} bytes, over the limit")
        try:
            msg = json.loads(item)  # type: ignore[arg-type]
        except ValueError:
            return {}
        return msg if isinstance(msg, dict) else {}

    def _fail(self, what: str) -> LockError:
        why = getattr(self._upstream, "error", None)
        return LockError(
            "cannot read the remote server's tool definitions: "
            + (why if why and what == "the connection ended" else what)
        )

    def close(self) -> None:
        self._upstream.close()
        self._reader.join(10)
