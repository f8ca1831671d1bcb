"""A real authorization server and a real MCP server that requires its tokens, for
tests/test_oauth.py, both on 127.0.0.1 in one process under uvicorn:

- the authorization server: the MCP SDK's own components (`mcp.server.auth.routes`:
  metadata, authorize, token, registration, revocation) over an in-memory provider that
  approves every request at once (the test's user always says yes);
- the resource: the SDK's MCPServer with `AuthSettings` (protected resource metadata,
  bearer tokens checked by the provider, bound to the resource they were issued for).

    python oauth_server.py AS_PORT MCP_PORT LOG MODE

MODE: `normal`; `short` (tokens expire after 2 s); `no-refresh` (as short, and every
refresh is refused with a 400 that is not JSON); `crafted` (the metadata's
authorization endpoint is a CVE-2025-6514 style command injection on the server's own
origin); `elsewhere` (the authorization endpoint is on another origin); `other-resource`
(the protected resource metadata names another resource). LOG gets one line per event:
`register`, `authorize RESOURCE`, `token RESOURCE`, `refresh`, `seen DIGEST` (a digest of
each Authorization header the MCP server received), `call echo`.
"""

from __future__ import annotations

import hashlib
import secrets
import sys
import time
from typing import Any

import anyio
import uvicorn
from mcp.server import MCPServer
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    ProviderTokenVerifier,
    RefreshToken,
    construct_redirect_uri,
)
from mcp.server.auth.routes import build_metadata, create_auth_routes
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import AnyHttpUrl
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

as_port, mcp_port, log_file, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
ISSUER = f"http://127.0.0.1:{as_port}"
RESOURCE = f"http://127.0.0.1:{mcp_port}/mcp"
LIFETIME = 2 if mode in ("short", "no-refresh") else 3600


def note(line: str) -> None:
    with open(log_file, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class AutoApprove:
    """OAuthAuthorizationServerProvider, in memory: every authorization is approved."""

    def __init__(self) -> None:
        self.clients: dict[str, OAuthClientInformationFull] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self.refresh: dict[str, RefreshToken] = {}
        self.access: dict[str, AccessToken] = {}

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        return self.clients.get(client_id)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        note("register")
        assert client_info.client_id is not None
        self.clients[client_info.client_id] = client_info

    async def authorize(
        self, client: OAuthClientInformationFull, params: AuthorizationParams
    ) -> str:
        note(f"authorize {params.resource}")
        code = secrets.token_urlsafe(24)
        self.codes[code] = AuthorizationCode(
            code=code,
            scopes=params.scopes or ["mcp"],
            expires_at=time.time() + 300,
            client_id=str(client.client_id),
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource,
        )
        return construct_redirect_uri(str(params.redirect_uri), code=code, state=params.state)

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> AuthorizationCode | None:
        return self.codes.get(authorization_code)

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: AuthorizationCode
    ) -> OAuthToken:
        self.codes.pop(authorization_code.code, None)
        note(f"token {authorization_code.resource}")
        return self._issue(
            str(client.client_id), authorization_code.scopes, authorization_code.resource
        )

    async def load_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: str
    ) -> RefreshToken | None:
        return self.refresh.get(refresh_token)

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: RefreshToken, scopes: list[str]
    ) -> OAuthToken:
        self.refresh.pop(refresh_token.token, None)
        note("refresh")
        return self._issue(
            str(client.client_id), scopes or refresh_token.scopes, refresh_token.resource
        )

    async def load_access_token(self, token: str) -> AccessToken | None:
        found = self.access.get(token)
        if found is None or (found.expires_at is not None and found.expires_at < time.time()):
            return None
        return found

    async def revoke_token(self, token: Any) -> None:
        self.access.pop(token.token, None)

    def _issue(self, client_id: str, scopes: list[str], resource: str | None) -> OAuthToken:
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        expires = int(time.time()) + LIFETIME
        self.access[access] = AccessToken(
            token=access, client_id=client_id, scopes=scopes, expires_at=expires, resource=resource
        )
        self.refresh[refresh] = RefreshToken(
            token=refresh, client_id=client_id, scopes=scopes, resource=resource
        )
        return OAuthToken(
            access_token=access,
            token_type="Bearer",
            expires_in=LIFETIME,
            refresh_token=refresh,
            scope=" ".join(scopes),
        )


provider = AutoApprove()
registration = ClientRegistrationOptions(enabled=True, valid_scopes=["mcp"], default_scopes=["mcp"])
revocation = RevocationOptions(enabled=True)
auth_routes = create_auth_routes(
    provider,
    AnyHttpUrl(ISSUER),
    client_registration_options=registration,
    revocation_options=revocation,
)
metadata = build_metadata(AnyHttpUrl(ISSUER), None, registration, revocation)
if mode == "crafted":
    # CVE-2025-6514: mcp-remote passed such an endpoint to a shell.
    canary = log_file + ".pwned"
    metadata.authorization_endpoint = AnyHttpUrl(f"{ISSUER}/authorize/$(touch {canary})")
elif mode == "elsewhere":
    metadata.authorization_endpoint = AnyHttpUrl(f"http://localhost:{as_port}/authorize")


async def served_metadata(request: Request) -> JSONResponse:
    return JSONResponse(metadata.model_dump(mode="json", exclude_none=True))


as_inner = Starlette(
    routes=[Route("/.well-known/oauth-authorization-server", served_metadata), *auth_routes]
)


async def as_app(scope: Any, receive: Any, send: Any) -> None:
    """In `no-refresh` mode, a refresh is refused as a proxy in front of an authorization
    server might refuse it: 400 with a body that is not JSON."""
    if mode != "no-refresh" or scope["type"] != "http" or scope["path"] != "/token":
        await as_inner(scope, receive, send)
        return
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    if b"grant_type=refresh_token" in body:
        note("refresh refused")
        await PlainTextResponse("refresh refused", status_code=400)(scope, receive, send)
        return
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    await as_inner(scope, replay, send)


resource = RESOURCE if mode != "other-resource" else f"http://127.0.0.1:{mcp_port}/other"
server = MCPServer(
    "oauth-test",
    token_verifier=ProviderTokenVerifier(provider),
    auth=AuthSettings(
        issuer_url=AnyHttpUrl(ISSUER),
        resource_server_url=AnyHttpUrl(resource),
        required_scopes=["mcp"],
        validate_token_resource=True,
    ),
)


@server.tool()
def echo(text: str) -> str:
    """Return the text."""
    note("call echo")
    return text


mcp_inner = server.streamable_http_app()


async def mcp_app(scope: Any, receive: Any, send: Any) -> None:
    """Writes down a digest of every Authorization header, before the SDK checks it."""
    if scope["type"] == "http":
        for name, value in scope["headers"]:
            if name == b"authorization":
                note(f"seen {digest(value.decode())}")
    await mcp_inner(scope, receive, send)


async def main() -> None:
    servers = [
        uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        for app, port in ((as_app, as_port), (mcp_app, mcp_port))
    ]
    async with anyio.create_task_group() as group:
        for each in servers:
            group.start_soon(each.serve)


anyio.run(main)
