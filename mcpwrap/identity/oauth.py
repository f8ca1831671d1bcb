"""OAuth 2.1 for a remote MCP server (`[server.oauth]`), as the MCP authorization spec says.

The protocol is the MCP SDK's own client (`mcp.client.auth.OAuthClientProvider`): protected
resource metadata (RFC 9728), authorization server metadata (RFC 8414), PKCE, resource
indicators (RFC 8707), client ID metadata documents or dynamic registration, refresh.
mcpwrap adds what is its own:

- **Storage.** Tokens and the registered client live in the OS keyring (identity/secrets.py),
  under a service named after the server's origin, one entry each per server URL; never in a
  file, a log or an error. `mcpwrap secret list` shows their names, `secret delete` signs out.
  A stored token carries the resource it was issued for and its absolute expiry: a token for
  another resource is not used, and an expired one is refreshed rather than sent.
- **The browser.** Opened only for an https URL (http only to a loopback authorization
  server) on the origin of the authorization server that discovery found, holding no
  character a shell would act on, and never through a shell: an argument list, with the
  MCP pipe (stdin, stdout) closed to it. An authorization endpoint crafted like
  CVE-2025-6514 is refused before anything runs. The URL also goes to stderr, for a user
  to open by hand: mcpwrap runs headless under desktop clients and never reads stdin.
- **The callback.** A one-shot HTTP listener on 127.0.0.1 takes `code` and `state` (the SDK
  checks the state and the issuer) and answers a short page.
- **The token's reach.** The provider attaches the token only to requests to the server's
  own origin.

Imported only for a remote server with [server.oauth]: `run` over stdio never loads it.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import os
import queue
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio.to_thread
import httpx2
from mcp.client.auth import OAuthClientProvider, OAuthFlowError
from mcp.client.auth.oauth2 import OAuthContext
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthMetadata,
    OAuthToken,
)
from mcp.shared.auth_utils import (
    calculate_token_expiry,
    check_resource_allowed,
    resource_url_from_server_url,
)
from pydantic import ConfigDict, PrivateAttr, ValidationError, model_validator

from mcpwrap.basics.errors import MCPWrapError
from mcpwrap.config.remote import OAuthSpec
from mcpwrap.identity import secrets

CALLBACK_PATH = "/callback"
SIGN_IN_WAIT = 300.0  # seconds the user has to sign in, once the browser is opened
_SERVICE = "mcpwrap-oauth"
# What an authorization URL may hold: RFC 3986's unreserved characters, percent escapes,
# and the delimiters an endpoint and its urlencoded query need. Not `$`, backticks, `;`,
# `|`, quotes, parentheses, spaces, `!`, `*`, braces: no authorization server needs them,
# and a shell would act on them (CVE-2025-6514).
_URL_CHARACTERS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%/:?&=+@[]#"
)
_DEFAULT_PORTS = {"https": 443, "http": 80}

Report = Callable[[str], None]


class OAuthRefused(MCPWrapError):
    """mcpwrap refused a step of the OAuth flow (the message says which and why)."""


# --- policy (pure) -------------------------------------------------------------------------


def origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL, with the default port filled in; None if it
    has none."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def authorization_url_problem(url: str, authorization_server: str) -> str | None:
    """Why the browser must not open `url` (None: it may): it must be https (http only to a
    loopback authorization server), on the origin of `authorization_server` (the one
    discovery found), without user information or characters a shell would act on."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "it is not a valid URL"
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        return f"its scheme is {scheme or 'missing'}, and only an https URL is opened"
    bad = sorted({c for c in url if c not in _URL_CHARACTERS})
    if bad:
        shown = " ".join(repr(c) for c in bad[:8])
        return (
            f"it holds characters an authorization URL has no need for ({shown}); a URL "
            "built like this is an attempt at command injection (CVE-2025-6514)"
        )
    if parts.username is not None or parts.password is not None:
        return "it holds a user name or password"
    where = origin(url)
    if where is None:
        return "it names no host"
    if scheme == "http" and not _loopback(where[1]):
        return f"it is plain http to {where[1]}, which is not this machine; only https is opened"
    expected = origin(authorization_server)
    if where != expected:
        return (
            f"it is on {_show(where)}, and the authorization server that discovery found is "
            f"{_show(expected) if expected else repr(authorization_server)}"
        )
    return None


def browser_command(url: str, environ: Mapping[str, str], platform: str) -> list[str] | None:
    """The argument list that opens `url` in the user's browser: $BROWSER (its first entry;
    `%s` stands for the URL, or the URL is appended), else the desktop's opener. None: no
    command (Windows opens it through the shell's URL association, os.startfile)."""
    for entry in environ.get("BROWSER", "").split(os.pathsep):
        if not entry.strip():
            continue
        argv = shlex.split(entry)  # words, as a user wrote them; never run by a shell
        if any("%s" in arg for arg in argv):
            return [arg.replace("%s", url) for arg in argv]
        return [*argv, url]
    if platform.startswith("linux") or "bsd" in platform:
        return ["xdg-open", url]
    if platform == "darwin":
        return ["open", url]
    return None


def storage_refs(server_url: str) -> tuple[str, str]:
    """The keyring references of a server's tokens and of its registered client: the
    service is named after the server's origin, the entry after the URL's path."""
    where = origin(server_url)
    if where is None:
        raise OAuthRefused(f"{server_url!r} is not an http(s) URL with a host")
    service = f"{_SERVICE}:{where[0]}:{where[1]}:{where[2]}"
    path = urlsplit(server_url).path or "/"
    return f"keyring:{service}/token:{path}", f"keyring:{service}/client:{path}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _show(where: tuple[str, str, int]) -> str:
    host = f"[{where[1]}]" if ":" in where[1] else where[1]
    return f"{where[0]}://{host}:{where[2]}"


# --- storage -------------------------------------------------------------------------------


class KeyringStorage:
    """The SDK's TokenStorage over the OS keyring. Read once when the run starts (before
    the event loop: a keyring that cannot be read stops the run there); written from a
    worker thread, so the D-Bus round trip does not hold the loop."""

    def __init__(self, server_url: str, state_dir: str, report: Report) -> None:
        self.resource = resource_url_from_server_url(server_url)
        self.context: OAuthContext | None = None  # the provider's, once it is made
        self.expires_at: float | None = None
        self.authorization_server: OAuthMetadata | None = None  # the token's issuer's metadata
        self._state_dir = state_dir
        self._report = report
        self._token_ref, self._client_ref = storage_refs(server_url)
        self._tokens = self._load_tokens()
        self.client = self._load_client()

    def _load_tokens(self) -> OAuthToken | None:
        record = _loaded(self._token_ref)
        if record is None:
            return None
        granted = record.get("resource")
        if not isinstance(granted, str) or not check_resource_allowed(
            requested_resource=self.resource, configured_resource=granted
        ):
            # RFC 8707: a token is for the resource it was issued for, and no other.
            self._report(
                f"mcpwrap: the stored OAuth token ({self._token_ref}) was issued for "
                f"{granted!r}, not {self.resource}: it is not used; signing in again"
            )
            return None
        try:
            tokens = OAuthToken.model_validate(record.get("token"))
        except ValidationError:
            return None
        expires = record.get("expires_at")
        self.expires_at = float(expires) if isinstance(expires, int | float) else None
        with contextlib.suppress(ValidationError):
            self.authorization_server = OAuthMetadata.model_validate(record.get("issuer_metadata"))
        return tokens

    def _load_client(self) -> OAuthClientInformationFull | None:
        record = _loaded(self._client_ref)
        if record is None:
            return None
        try:
            return OAuthClientInformationFull.model_validate(record)
        except ValidationError:
            return None

    async def get_tokens(self) -> OAuthToken | None:
        return self._tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self._tokens = tokens
        self.expires_at = calculate_token_expiry(tokens.expires_in) if tokens.expires_in else None
        context = self.context
        metadata = context.oauth_metadata if context is not None else None
        record = {
            "resource": context.get_resource_url() if context is not None else self.resource,
            "expires_at": self.expires_at,
            "token": tokens.model_dump(mode="json", exclude_none=True),
            # Where to refresh it: the SDK knows the token endpoint only after discovery,
            # and would otherwise send the refresh token to the MCP server's own origin.
            "issuer_metadata": metadata.model_dump(mode="json", exclude_none=True)
            if metadata is not None
            else None,
        }
        await anyio.to_thread.run_sync(self._store, self._token_ref, record)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info
        record = client_info.model_dump(mode="json", exclude_none=True)
        await anyio.to_thread.run_sync(self._store, self._client_ref, record)

    def _store(self, ref: str, record: object) -> None:
        secrets.store(ref, json.dumps(record, separators=(",", ":")), self._state_dir)


def _loaded(ref: str) -> dict[str, Any] | None:
    text = secrets.find(ref, "[server.oauth]")
    if text is None:
        return None
    with contextlib.suppress(ValueError):
        record = json.loads(text)
        if isinstance(record, dict):
            return record
    return None  # not ours, or damaged: as if absent; the next sign-in overwrites it


# --- the browser and the callback ----------------------------------------------------------


class _Callback:
    """A one-shot HTTP listener on 127.0.0.1 for the authorization response. Only a
    response that carries the `state` of the authorization URL counts: any process on this
    machine, or a page the browser loads, can reach the port, and a response with another
    state (a code of the attacker's account, or a forged error) is answered and ignored
    while the real one is awaited."""

    def __init__(self, port: int, state: str | None = None) -> None:
        results: queue.Queue[dict[str, str]] = queue.Queue(1)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path != CALLBACK_PATH:
                    self._answer(404, "Not found.")
                    return
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                if state is not None and not hmac.compare_digest(
                    query.get("state", "").encode(), state.encode()
                ):
                    self._answer(400, "This is not the sign-in mcpwrap started.")
                    return
                if "error" in query:
                    self._answer(400, "Sign-in failed. You can close this tab.")
                elif "code" in query:
                    self._answer(200, "Signed in to the MCP server. You can close this tab.")
                else:
                    self._answer(400, "No authorization code. You can close this tab.")
                    return
                with contextlib.suppress(queue.Full):
                    results.put_nowait(query)

            def _answer(self, status: int, text: str) -> None:
                body = f"<!doctype html><title>mcpwrap</title><p>mcpwrap: {text}</p>\n".encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the request line holds the code: never logged

        try:
            self._server = HTTPServer(("127.0.0.1", port), Handler)
        except OSError as exc:
            raise OAuthRefused(
                f"cannot listen for the sign-in's callback on 127.0.0.1:{port} ({exc}); set "
                "[server.oauth] redirect_port to a free port"
            ) from exc
        self._server.timeout = 0.2
        self._results = results
        self._stop = threading.Event()

    def wait(self, seconds: float) -> dict[str, str]:
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline and not self._stop.is_set():
                self._server.handle_request()
                with contextlib.suppress(queue.Empty):
                    return self._results.get_nowait()
        finally:
            self._server.server_close()
        raise OAuthRefused(
            f"no sign-in arrived within {int(seconds)} seconds; open the URL mcpwrap printed "
            "on stderr, sign in, and start the client again"
        )

    def stop(self) -> None:
        """Stop waiting (the run is ending): the listener closes within its timeout."""
        self._stop.set()


def open_browser(url: str, report: Report) -> None:
    """Open `url` (already checked) without a shell, with the MCP pipe closed to it."""
    argv = browser_command(url, os.environ, sys.platform)
    try:
        if argv is None:
            os.startfile(url)  # type: ignore[attr-defined]  # noqa: S606 (Windows: its URL handler)
            return
        subprocess.Popen(  # an argument list: no shell
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # stdout is the client's MCP pipe
            stderr=subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,
        )
    except (OSError, ValueError) as exc:
        report(f"mcpwrap: could not start a browser ({exc}); open the URL above by hand")


class _SignIn:
    """The provider's redirect and callback handlers."""

    def __init__(self, name: str, port: int, report: Report) -> None:
        self.provider: Provider | None = None
        self._name, self._port, self._report = name, port, report
        self._callback: _Callback | None = None

    async def redirect(self, url: str) -> None:
        assert self.provider is not None
        context = self.provider.context
        server = context.auth_server_url or self.provider.server_origin
        problem = authorization_url_problem(url, server)
        if problem is not None:
            raise OAuthRefused(
                f"the authorization URL {url!r} that the authorization server's metadata "
                f"gave is refused: {problem}. Nothing was opened or run; the server "
                f"{context.server_url} or its authorization server may be hostile"
            )
        state = parse_qs(urlsplit(url).query).get("state", [None])[0]
        self._callback = await anyio.to_thread.run_sync(_Callback, self._port, state)
        self._report(
            f"mcpwrap: {self._name}: sign in to {context.server_url} in the browser; if none "
            f"opens, open this URL by hand:\n{url}"
        )
        open_browser(url, self._report)

    async def callback(self) -> AuthorizationCodeResult:
        callback, self._callback = self._callback, None
        if callback is None:
            raise OAuthRefused("the sign-in's callback listener is not running")
        try:
            query = await anyio.to_thread.run_sync(
                callback.wait, SIGN_IN_WAIT, abandon_on_cancel=True
            )
        finally:
            callback.stop()  # cancelled: the port is not held for the rest of the wait
        if "error" in query:
            why = query.get("error_description") or query["error"]
            raise OAuthRefused(f"the authorization server refused the sign-in: {why[:200]!r}")
        return AuthorizationCodeResult(
            code=query["code"], state=query.get("state"), iss=query.get("iss")
        )


# --- the provider --------------------------------------------------------------------------


class _ClientMetadata(OAuthClientMetadata):
    """Client metadata whose scope stays what the profile names, when it names one: the
    SDK replaces the scope with the server's suggestion on each sign-in."""

    model_config = ConfigDict(validate_assignment=True)
    _pinned: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _keep_pinned(self) -> _ClientMetadata:
        if self._pinned is not None and self.scope != self._pinned:
            self.__dict__["scope"] = self._pinned  # not setattr: that validates again
        return self


class Provider(OAuthClientProvider):
    """The SDK's provider, with the keyring's expiry restored on start (an expired token is
    refreshed, not sent) and the token kept to the server's own origin."""

    def __init__(
        self,
        server_url: str,
        client_metadata: OAuthClientMetadata,
        storage: KeyringStorage,
        **kwargs: Any,
    ) -> None:
        super().__init__(server_url, client_metadata, storage, **kwargs)
        self._keyring = storage
        storage.context = self.context
        where = origin(self.context.server_url)
        assert where is not None  # config/remote.py checked the URL
        self.server_origin = _show(where)

    def endpoints(self) -> list[str]:
        """The URLs besides the MCP server's that this provider may reach: the authorization
        server discovery found, and its token and registration endpoints (the
        authorization endpoint is the browser's). For the run's egress rule."""
        context = self.context
        urls = [context.auth_server_url] if context.auth_server_url else []
        metadata = context.oauth_metadata
        if metadata is not None:
            urls += [str(metadata.issuer), str(metadata.token_endpoint)]
            if metadata.registration_endpoint is not None:
                urls.append(str(metadata.registration_endpoint))
        return urls

    async def _initialize(self) -> None:
        await super()._initialize()
        context, stored = self.context, self._keyring
        context.token_expiry_time = stored.expires_at
        if context.oauth_metadata is None and stored.authorization_server is not None:
            context.oauth_metadata = stored.authorization_server
        tokens = context.current_tokens
        if tokens is not None and tokens.refresh_token and context.oauth_metadata is None:
            # No known token endpoint: the SDK would send the refresh token to
            # {server origin}/token. Sign in again instead, after discovery.
            context.current_tokens = tokens.model_copy(update={"refresh_token": None})

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        if origin(str(request.url)) != origin(self.context.server_url):
            raise OAuthRefused(
                f"a request to {request.url.scheme}://{request.url.netloc.decode()} would carry "
                f"the OAuth token of {self.context.server_url}; not sent"
            )
        flow = super().async_auth_flow(request)
        try:  # each response goes back into the SDK's flow (`async for` would send None)
            outgoing = await flow.__anext__()
            while True:
                response = yield outgoing
                outgoing = await flow.asend(response)
        except StopAsyncIteration:
            return
        finally:
            await flow.aclose()


def provider(
    server_url: str, spec: OAuthSpec, *, state_dir: str, name: str, report: Report
) -> Provider:
    """The OAuth provider of one remote server (reads the keyring now)."""
    _quiet_sdk_logs(report)
    storage = KeyringStorage(server_url, state_dir, report)
    port = spec.redirect_port or _registered_port(storage.client) or _free_port()
    redirect = f"http://127.0.0.1:{port}{CALLBACK_PATH}"
    client = storage.client
    if client is not None and redirect not in [str(u) for u in client.redirect_uris or []]:
        storage.client = None  # registered for another callback: register again
    if storage.client is None and spec.client_id is not None:
        storage.client = OAuthClientInformationFull(
            client_id=spec.client_id,
            redirect_uris=[redirect],  # type: ignore[list-item]  # pydantic converts
            token_endpoint_auth_method="none",  # noqa: S106 (a method's name)
            grant_types=["authorization_code", "refresh_token"],
        )
    metadata = _ClientMetadata(
        client_name="mcpwrap",
        redirect_uris=[redirect],  # type: ignore[list-item]
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        # a public client: PKCE, no secret to keep
        token_endpoint_auth_method="none",  # noqa: S106 (a method's name)
    )
    if spec.scopes:
        metadata._pinned = " ".join(spec.scopes)
        metadata.scope = metadata._pinned
    sign_in = _SignIn(name, port, report)
    made = Provider(
        server_url,
        metadata,
        storage=storage,
        redirect_handler=sign_in.redirect,
        callback_handler=sign_in.callback,
        client_metadata_url=spec.client_metadata_url,
    )
    sign_in.provider = made
    return made


def _registered_port(client: OAuthClientInformationFull | None) -> int | None:
    """The loopback port a stored registration's callback uses, to keep using it."""
    for uri in (client.redirect_uris or []) if client is not None else []:
        parts = urlsplit(str(uri))
        if parts.hostname == "127.0.0.1" and parts.path == CALLBACK_PATH and parts.port:
            return parts.port
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _OneLine(logging.Handler):
    """The SDK's OAuth log records, one line each on stderr (no tracebacks; they hold no
    tokens, and mcpwrap says why a connection ended itself)."""

    def __init__(self, report: Report) -> None:
        super().__init__(logging.WARNING)
        self._report = report

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self._report(f"mcpwrap: oauth: {record.getMessage()}")


_quieted = threading.Lock()


def _quiet_sdk_logs(report: Report) -> None:
    with _quieted:
        logger = logging.getLogger("mcp.client.auth")
        if not any(isinstance(h, _OneLine) for h in logger.handlers):
            logger.addHandler(_OneLine(report))
            logger.propagate = False


__all__ = [
    "OAuthFlowError",
    "OAuthRefused",
    "Provider",
    "authorization_url_problem",
    "browser_command",
    "provider",
    "storage_refs",
]
