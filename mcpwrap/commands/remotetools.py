"""The tools a remote MCP server lists, read through the same connection `run` makes
(relay/remote.py: verified TLS, the profile's headers, the bearer from the keyring, the
fallback to HTTP+SSE): initialize, initialized, then tools/list page by page.

For `init`, which writes a first profile from them. Imported only for a URL.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any

from mcpwrap import __version__
from mcpwrap.basics.errors import MCPWrapError
from mcpwrap.config.remote import RemoteSpec

PROTOCOL_VERSION = "2025-06-18"
_PAGES = 1000
_MAX_MESSAGE = 64 * 1024 * 1024


class RemoteListError(MCPWrapError):
    """The remote server could not be reached, or did not list its tools."""


def list_tools(spec: RemoteSpec, source: str, timeout: float) -> list[dict[str, Any]]:
    """Every tool definition the server at spec.url lists; `source` names the profile (or
    the command line) in errors."""
    from mcpwrap.relay.remote import RemoteUpstream, request_headers

    headers = request_headers(spec, source)
    upstream = RemoteUpstream(spec, max_message=_MAX_MESSAGE, headers=headers, name="init")
    inbox: queue.Queue[bytes | None] = queue.Queue()

    def reader() -> None:
        try:
            upstream.run(lambda message: inbox.put(message if isinstance(message, bytes) else b""))
        finally:
            inbox.put(None)  # the connection ended

    thread = threading.Thread(target=reader, name="init-remote", daemon=True)
    thread.start()
    talk = _Talk(upstream, inbox, time.monotonic() + timeout, timeout, spec.url)
    try:
        talk.request(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "mcpwrap-init", "version": __version__},
            },
        )
        upstream.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
        tools: list[dict[str, Any]] = []
        cursor = None
        for _ in range(_PAGES):
            page = talk.request("tools/list", {"cursor": cursor} if cursor else {})
            items = page.get("tools")
            if not isinstance(items, list):
                raise RemoteListError(f"{spec.url}: its tools/list result has no tools array")
            tools += [tool for tool in items if isinstance(tool, dict)]
            cursor = page.get("nextCursor")
            if not isinstance(cursor, str) or not cursor:
                break
        return tools
    finally:
        upstream.close()
        thread.join(10)


class _Talk:
    def __init__(
        self,
        upstream: Any,
        inbox: queue.Queue[bytes | None],
        deadline: float,
        timeout: float,
        url: str,
    ) -> None:
        self.upstream, self.inbox, self.deadline = upstream, inbox, deadline
        self.timeout, self.url, self.ids = timeout, url, 0

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.ids += 1
        sent = {"jsonrpc": "2.0", "id": self.ids, "method": method, "params": params}
        if not self.upstream.send(json.dumps(sent).encode()):
            raise self.ended(method)
        while True:
            left = self.deadline - time.monotonic()
            try:
                line = self.inbox.get(timeout=max(left, 0.0))
            except queue.Empty:
                raise RemoteListError(
                    f"{self.url}: no answer to {method} within {self.timeout:g} s"
                ) from None
            if line is None:
                raise self.ended(method)
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if not isinstance(msg, dict):
                continue
            if "method" in msg:
                if "id" in msg:  # a request of the server's own: init serves none
                    error = {"code": -32601, "message": "mcpwrap init answers no requests"}
                    reply = {"jsonrpc": "2.0", "id": msg["id"], "error": error}
                    self.upstream.send(json.dumps(reply).encode())
                continue
            if msg.get("id") != self.ids:
                continue
            if "error" in msg:
                error = msg["error"]
                said = error.get("message") if isinstance(error, dict) else error
                raise RemoteListError(f"{self.url}: it answered {method} with an error: {said}")
            result = msg.get("result")
            if not isinstance(result, dict):
                raise RemoteListError(f"{self.url}: its {method} result is not an object")
            return result

    def ended(self, method: str) -> RemoteListError:
        why = self.upstream.error or "the connection ended"
        return RemoteListError(f"before it answered {method}: {why}")
