"""The server side over HTTP (ends.Upstream): a remote MCP server, through the MCP SDK's
own client transports (Streamable HTTP, both protocol generations, and the 2024-11-05
HTTP+SSE transport). mcpwrap writes no HTTP or MCP transport of its own.

The SDK's transports are async (anyio); the relay is threads. One background thread runs
an event loop (an anyio blocking portal): the transport lives there, `send` hands each
message to it from whichever relay thread calls, and `run` (the session's server thread)
takes each message read back out and delivers it there, off the loop, because delivering
may send again (the core lists tools while it holds a call).

Transport choice (`[server] transport`), as the MCP specification's backwards
compatibility section says: "auto" POSTs the first message as Streamable HTTP; when the
server answers that POST with 400, 404 or 405 and no JSON-RPC body, it opens the HTTP+SSE
transport instead and sends the same messages again there. "streamable-http" and "sse"
force one.

Every way the connection ends is told: `error` says why (None: it was closed from our
side), and the session answers every pending request with it. A message the SDK rejects
from the server is reported on stderr (it has no id to answer); one it rejects from the
client is answered with a JSON-RPC error for its id.

Imported only for a URL: `run` over stdio never loads the SDK, anyio or httpx2.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import anyio
import anyio.from_thread
import httpx2
from mcp.shared.inbound import (
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    NAME_BEARING_METHODS,
    encode_header_value,
)
from mcp.shared.message import ClientMessageMetadata, SessionMessage
from mcp_types import PROTOCOL_VERSION_META_KEY, JSONRPCRequest, jsonrpc_message_adapter

from mcpwrap.basics import jsontext
from mcpwrap.basics.errors import MCPWrapError
from mcpwrap.config.remote import RemoteSpec
from mcpwrap.relay.ends import Deliver, Usage
from mcpwrap.relay.framing import PEEK_BYTES, Oversize

CONNECT_TIMEOUT = 30.0  # seconds to connect, send a request or write a message
READ_TIMEOUT = 300.0  # seconds a response stream may stay silent (SSE keeps it open)
CLOSE_GRACE = 5.0  # seconds closing may take (the Streamable HTTP session's DELETE)
INBOX = 16  # messages read ahead of the relay
_FALLBACK_STATUS = (400, 404, 405)  # the spec's "POST failed": try HTTP+SSE
# JSON-RPC "internal error": the message could not be sent, so no reply will come.
_SEND_FAILED = -32603


def _http_client(
    spec: RemoteSpec,
    headers: Mapping[str, str],
    watch: Callable[[Any], None] | None = None,
    auth: httpx2.Auth | None = None,
) -> httpx2.AsyncClient:
    """The HTTP client of one connection (identity/tlsclient.py: verified TLS, nothing from
    the environment, no redirects: the SDK follows only those within the server's origin),
    with the extra headers, the MCP timeouts (a response stream may stay silent long) and
    the OAuth provider of [server.oauth] (identity/oauth.py), whose own requests
    (discovery, registration, tokens) go through the same verified client. It connects to
    the server's origin and, with OAuth, to its authorization server's only; `watch` is
    told of every connection."""
    from mcpwrap.identity.tlsclient import TlsSettings, http_client

    t = spec.tls
    server = httpx2.URL(spec.url)
    tls = TlsSettings(
        ca_file=t.ca,
        client_cert=t.client_cert,
        client_key=t.client_key,
        pins=t.pins,
        # The pins are the MCP server's key: an authorization server elsewhere has its own.
        pinned=(server.host, server.port or (443 if server.scheme == "https" else 80)),
    )
    client = http_client(
        tls,
        headers=dict(headers),
        timeout=CONNECT_TIMEOUT,
        admit=egress_rule(spec.url, auth),
        watch=watch,
    )
    client.timeout = httpx2.Timeout(CONNECT_TIMEOUT, read=READ_TIMEOUT)
    if auth is not None:
        client.auth = auth
    return client


def _host_port(url: str) -> tuple[str, int]:
    parsed = httpx2.URL(url)
    return parsed.host.lower(), parsed.port or (443 if parsed.scheme == "https" else 80)


def egress_rule(url: str, auth: object = None) -> Callable[[str, int], str | None]:
    """An egress rule: connections to `url`'s host and port (the SDK keeps MCP requests and
    their redirects on the origin) and, when `auth` is the OAuth provider, to the
    authorization server it discovered and that server's token and registration
    endpoints; anything else is a bug or an attack, and is refused."""
    host, port = _host_port(url)
    endpoints = getattr(auth, "endpoints", None)

    def admit(to_host: str, to_port: int) -> str | None:
        to = (to_host.lower(), to_port)
        if to == (host, port):
            return None
        known = [_host_port(u) for u in endpoints()] if callable(endpoints) else []
        if to in known:
            return None
        also = " or its authorization server's" if callable(endpoints) else ""
        return f"{to_host}:{to_port} is not the server's origin {host}:{port}{also}"

    return admit


def origin_only(url: str) -> Callable[[str, int], str | None]:
    """egress_rule without OAuth: the server's origin only."""
    return egress_rule(url)


def connection_record(connection: Any) -> dict[str, Any]:
    """The audit fields of one connection or handshake (tlsclient.Connection)."""
    fields: dict[str, Any] = {
        "decision": "allow" if connection.refused is None else "refuse",
        "rule": f"{connection.event}.remote",
        "endpoint": f"{connection.host}:{connection.port}",
        "address": connection.address,
    }
    if connection.pin is not None:
        fields["pin"] = connection.pin
    if connection.refused is not None:
        fields["reason"] = connection.refused
    return fields


def request_headers(spec: RemoteSpec, source: str) -> dict[str, str]:
    """The headers every request carries: the profile's, and the bearer token read from
    the keyring (never from the profile's text)."""
    headers = dict(spec.headers)
    if spec.bearer is not None:
        from mcpwrap.identity import secrets

        token = secrets.read_one(spec.bearer, f"{source}: [server] bearer")
        headers["Authorization"] = f"Bearer {token}"
    return headers


class RemoteUpstream:
    """One remote MCP server over HTTP. `error` says why the connection ended (None while
    it runs, and when it was closed from our side)."""

    def __init__(
        self,
        spec: RemoteSpec,
        *,
        max_message: int,
        headers: Mapping[str, str] | None = None,
        name: str = "server",
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        # Told of every connection and handshake (tlsclient.Connection): the run records
        # each, as the jail's egress proxy records the server's own connections.
        self.on_connection: Callable[[Any], None] | None = None
        self.error: str | None = None
        self.transport: str | None = None  # the one in use once connected
        self._spec = spec
        self._headers = dict(spec.headers if headers is None else headers)
        self._max = max_message
        self._report = report or _to_stderr
        self._auth: httpx2.Auth | None = None
        if spec.oauth is not None:  # reads the keyring now: a keyring that fails stops here
            from mcpwrap.config import paths
            from mcpwrap.identity import oauth

            self._auth = oauth.provider(
                spec.url, spec.oauth, state_dir=paths.state_dir(), name=name, report=self._report
            )
        self._inbox_in, self._inbox = anyio.create_memory_object_stream[bytes | Oversize](INBOX)
        # Until the transport is chosen ("auto"), every message sent, to send again over
        # HTTP+SSE if Streamable HTTP is refused.
        self._decided = spec.transport != "auto"
        self._fallback = False
        self._replay: list[SessionMessage] = []
        # The handshake generation's version, from the reply to `initialize`: each later
        # message carries it as MCP-Protocol-Version.
        self._initialize_id: object = None
        self._negotiated: str | None = None
        self._write: Any = None  # the transport's write stream while connected
        self._connected = threading.Event()  # set once a transport is up, or it failed
        self._closing = False
        self._scope: anyio.CancelScope | None = None  # the whole connection
        self._reading: anyio.CancelScope | None = None  # reading one transport
        self._state = threading.Lock()
        self._portal_cm = anyio.from_thread.start_blocking_portal(name=f"mcpwrap-http-{name}")
        self._portal: anyio.from_thread.BlockingPortal | None = self._portal_cm.__enter__()
        self._main = self._portal.start_task_soon(self._connection)

    # --- ends.Upstream ---------------------------------------------------------------------

    def run(self, deliver: Deliver) -> None:
        try:
            while (portal := self._portal) is not None:
                try:
                    item = portal.call(self._inbox.receive)
                except (anyio.EndOfStream, anyio.ClosedResourceError, RuntimeError):
                    break  # the connection ended (RuntimeError: the loop already stopped)
                deliver(item)
        finally:
            self._stop_loop()

    def send(self, line: bytes) -> bool:
        try:
            parsed = jsonrpc_message_adapter.validate_json(line, by_name=False)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            self._refuse(line, f"the MCP SDK cannot send it to {self._spec.url}: {_short(exc)}")
            return True
        message = SessionMessage(parsed, metadata=self._stamp(parsed))
        self._connected.wait()
        portal = self._portal
        if portal is None or self._closing:
            return False
        try:
            return portal.call(self._send, message)
        except Exception:  # the loop stopped: the connection is gone
            return False

    def _stamp(self, message: Any) -> ClientMessageMetadata | None:
        """The per-message HTTP headers the SDK's client session would set: the protocol
        version (the 2026 generation's from the request's own `_meta`, the handshake
        generation's as `initialize` negotiated it), and Mcp-Method/Mcp-Name."""
        method = getattr(message, "method", None)
        if method is None:  # a reply to the server: the transport's cached version serves
            return None
        params = getattr(message, "params", None) or {}
        meta = params.get("_meta") if isinstance(params, dict) else None
        version = meta.get(PROTOCOL_VERSION_META_KEY) if isinstance(meta, dict) else None
        if method == "initialize" and isinstance(message, JSONRPCRequest):
            self._initialize_id = message.id
        if not isinstance(version, str):
            version = self._negotiated
            if version is None or method == "initialize":
                return None
            return ClientMessageMetadata(headers={MCP_PROTOCOL_VERSION_HEADER: version})
        headers = {MCP_PROTOCOL_VERSION_HEADER: version, MCP_METHOD_HEADER: method}
        name_key = NAME_BEARING_METHODS.get(method)
        name = params.get(name_key) if name_key is not None else None
        if isinstance(name, str):
            headers[MCP_NAME_HEADER] = encode_header_value(name)
        return ClientMessageMetadata(headers=headers)

    def close(self) -> None:
        with self._state:
            if self._closing:
                return
            self._closing = True
        portal = self._portal
        if portal is not None:
            with contextlib.suppress(Exception):
                portal.call(self._shut)
        self._connected.set()

    def usage(self, *, full: bool = True) -> Usage | None:
        return None  # no local process: nothing to measure

    def reset_peaks(self) -> None:
        pass

    # --- the loop's side -------------------------------------------------------------------

    async def _connection(self) -> None:
        """Connect, relay until the connection ends, and say why it ended."""
        kind = "sse" if self._spec.transport == "sse" else "streamable-http"
        try:
            with anyio.CancelScope() as self._scope:
                if self._closing:
                    self._scope.cancel()
                while kind:
                    kind = await self._session(kind)
                if not self._closing:
                    self.error = f"the remote MCP server {self._spec.url} closed the connection"
        except BaseException as exc:  # every failure is told; none ends a thread unseen
            if not self._closing or self.error is None:
                self.error = _describe(exc, self._spec.url, self.transport)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._write = None
            self._connected.set()
            await self._inbox_in.aclose()

    async def _session(self, kind: str) -> str:
        """One transport's connection: "" when it ends, "sse" to fall back to HTTP+SSE."""
        self.transport = kind
        async with self._open(kind) as (read, write):
            self._write = write
            if kind == "sse" and self._replay:
                for message in self._replay:  # grows while it is sent: every message, in order
                    await write.send(message)
                self._replay.clear()
            if kind == "sse":
                self._decided, self._fallback = True, False
            self._connected.set()
            with anyio.CancelScope() as self._reading:
                if self._closing or self._fallback:
                    self._reading.cancel()
                async for item in read:
                    if isinstance(item, Exception):
                        self._report(
                            f"mcpwrap: {self.name}: the remote server sent a message the MCP "
                            f"SDK rejects: {_short(item)}"
                        )
                        continue
                    self._note(item.message)
                    text = item.message.model_dump_json(by_alias=True, exclude_unset=True)
                    await self._deliver(text)
            self._write = None
        # Leaving the transport's block ends its session (a Streamable HTTP DELETE).
        return "sse" if self._fallback and not self._decided and not self._closing else ""

    def _note(self, message: Any) -> None:
        """The protocol version `initialize` negotiated, from its reply."""
        if self._initialize_id is None or getattr(message, "id", None) != self._initialize_id:
            return
        result = getattr(message, "result", None)
        version = result.get("protocolVersion") if isinstance(result, dict) else None
        self._negotiated = version if isinstance(version, str) else None

    def _open(self, kind: str) -> contextlib.AbstractAsyncContextManager[Any]:
        if kind == "sse":
            from mcp.client.sse import sse_client

            def factory(
                headers: dict[str, str] | None = None, timeout: Any = None, auth: Any = None
            ) -> httpx2.AsyncClient:
                return _http_client(self._spec, self._headers, self._watch, self._auth)

            return sse_client(
                self._spec.url,
                timeout=CONNECT_TIMEOUT,
                sse_read_timeout=READ_TIMEOUT,
                httpx_client_factory=factory,
            )
        return self._streamable()

    def _watch(self, connection: Any) -> None:
        told = self.on_connection
        if told is not None:
            try:
                told(connection)
            except Exception as exc:  # a record that cannot be written must not kill the loop
                self._report(f"mcpwrap: could not record a connection: {exc}")

    @contextlib.asynccontextmanager
    async def _streamable(self) -> AsyncIterator[Any]:
        from mcp.client.streamable_http import streamable_http_client

        async with _http_client(self._spec, self._headers, self._watch, self._auth) as client:
            if not self._decided:
                client.event_hooks["response"] = [*client.event_hooks["response"], self._seen]
            async with streamable_http_client(
                self._spec.url, http_client=client, max_sse_event_size=self._max + PEEK_BYTES
            ) as streams:
                yield streams

    async def _seen(self, response: httpx2.Response) -> None:
        """Each Streamable HTTP response until the transport is chosen: a POST refused
        without a JSON-RPC body means the server speaks only HTTP+SSE."""
        if self._decided or response.request.method != "POST":
            return
        if "text/event-stream" not in response.request.headers.get("accept", ""):
            return  # not an MCP message: OAuth's own requests (registration, tokens)
        if response.status_code in _FALLBACK_STATUS:
            kind = response.headers.get("content-type", "").lower()
            if not kind.startswith("application/json"):
                # The SDK's error for this POST never reaches the client: stop reading,
                # and the same messages go again over HTTP+SSE.
                self._fallback = True
                if self._reading is not None:
                    self._reading.cancel()
                return
        if response.status_code < 400:
            self._decided = True
            self._replay.clear()

    async def _send(self, message: SessionMessage) -> bool:
        if not self._decided:
            self._replay.append(message)
            if self._fallback:
                return True  # sent again once HTTP+SSE is up
        write = self._write
        if write is None:
            return not self._decided and not self._closing
        try:
            await write.send(message)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return not self._decided  # a fallback closed it: the replay sends this one
        return True

    async def _deliver(self, text: str) -> None:
        data = text.encode("utf-8")
        item: bytes | Oversize = data
        if len(data) > self._max:
            item = Oversize(len(data), data[:PEEK_BYTES])
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            await self._inbox_in.send(item)

    async def _shut(self) -> None:
        """Stop reading and leave the transport (which ends its session), within a grace."""
        if self._reading is not None:
            self._reading.cancel()
        if self._scope is not None:
            self._scope.deadline = anyio.current_time() + CLOSE_GRACE
        self._write = None

    def _refuse(self, line: bytes, why: str) -> None:
        """A client's request the SDK will not carry: its error, for its id (a
        notification: stderr)."""
        try:
            message = jsontext.decode(line)
        except ValueError:
            message = None
        request_id = message.get("id") if isinstance(message, dict) else None
        if not isinstance(message, dict) or "method" not in message or request_id is None:
            self._report(f"mcpwrap: {self.name}: a message was not sent: {why}")
            return
        error = {"code": _SEND_FAILED, "message": f"mcpwrap could not send the request: {why}"}
        reply = jsontext.encode({"jsonrpc": "2.0", "id": request_id, "error": error})
        portal = self._portal
        if portal is not None:
            with contextlib.suppress(Exception):
                portal.call(self._deliver, reply.decode("utf-8"))

    def _stop_loop(self) -> None:
        with self._state:
            portal, self._portal = self._portal, None
            self._closing = True
        self._connected.set()
        if portal is None:
            return
        with contextlib.suppress(Exception):
            portal.call(portal.stop, True)
        with contextlib.suppress(Exception):
            self._portal_cm.__exit__(None, None, None)


def _to_stderr(text: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


def _short(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(exc: BaseException, url: str, transport: str | None) -> str:
    """One line on why the connection to `url` ended, from the innermost error."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    over = f" over {transport}" if transport else ""
    if isinstance(exc, MCPWrapError):  # mcpwrap's own refusal (TLS): its message says it all
        return f"the connection to the remote MCP server {url} was refused: {exc}"
    if isinstance(exc, httpx2.HTTPStatusError):
        return (
            f"the remote MCP server {url} answered{over} with HTTP "
            f"{exc.response.status_code}: check the URL and the transport ([server] transport)"
        )
    if isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout):
        return f"cannot connect to the remote MCP server {url}{over}: {exc or type(exc).__name__}"
    if isinstance(exc, httpx2.TransportError):
        return f"the connection to the remote MCP server {url}{over} failed: {_short(exc)}"
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        return f"the connection to the remote MCP server {url} was cut off while closing"
    return f"the connection to the remote MCP server {url}{over} failed: {_short(exc)}"
