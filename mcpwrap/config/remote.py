"""A remote MCP server: `[server] url`, `transport`, `headers`, `bearer`, or one URL after
`--` on the command line (`mcpwrap run --profile P -- https://host/path`).

Checked before anything connects: the scheme is https, or http to a loopback address only
(plain http anywhere else is readable and writable by every hop on the way); no user
information in the URL (a password on a command line is in `ps` and shell history);
headers that carry credentials come from the keyring, never from the profile's text.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple, NoReturn

from mcpwrap.basics import hostnames
from mcpwrap.basics.errors import UsageError

TRANSPORTS = ("auto", "streamable-http", "sse")
KEYS = ("url", "transport", "headers", "bearer", "tls", "oauth")
TLS_KEYS = ("ca", "client_cert", "client_key", "pins")
OAUTH_KEYS = ("scopes", "client_id", "client_metadata_url", "redirect_port")
# Headers that carry credentials: from the keyring (`bearer`), never in a profile's text.
_SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
_KEYRING_REF = "keyring:SERVICE/USER"

Fail = Callable[[tuple[str, ...], str], NoReturn]


class TlsSpec(NamedTuple):
    """[server.tls]: how the server is verified and how mcpwrap proves who it is (paths
    are absolute, expanded by the profile's parser)."""

    ca: str | None = None  # PEM bundle; None: the system trust store
    client_cert: str | None = None  # PEM certificate (chain) for mTLS
    client_key: str | None = None  # "keyring:SERVICE/USER" or a 0600 file
    pins: tuple[str, ...] = ()  # accepted "sha256/<base64>" SPKI pins; (): no pinning


NO_TLS = TlsSpec()


class OAuthSpec(NamedTuple):
    """[server.oauth]: OAuth 2.1 as the MCP authorization spec says (identity/oauth.py)."""

    scopes: tuple[str, ...] = ()  # (): the scopes the server asks for
    client_id: str | None = None  # a pre-registered public client; None: CIMD or registration
    client_metadata_url: str | None = None  # an https client ID metadata document
    redirect_port: int = 0  # the loopback callback's port; 0: any free one


class RemoteSpec(NamedTuple):
    url: str  # "" in a profile that leaves the URL to the command line
    transport: str = "auto"
    headers: Mapping[str, str] = MappingProxyType({})
    bearer: str | None = None  # "keyring:SERVICE/USER": sent as `Authorization: Bearer`
    tls: TlsSpec = NO_TLS
    oauth: OAuthSpec | None = None  # None: no OAuth


def is_url(text: str) -> bool:
    """Whether a command line's server is a URL rather than a program."""
    return text[:8].lower().startswith(("https://", "http://"))


def url_problem(url: str) -> str | None:
    """What is wrong with `url` as a remote server's address, or None."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises on a port that is not a number in range
    except ValueError as exc:
        return f"{url!r} is not a valid URL ({exc})"
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        return f"{url!r} is not an http(s) URL; give https://HOST/PATH"
    if parts.username is not None or parts.password is not None:
        return (
            "the URL holds a user name or password; remove it (a credential in a URL ends "
            "up in process listings and logs): put a token in the keyring and name it as "
            f'[server] bearer = "{_KEYRING_REF}"'
        )
    if not host or hostnames.to_ascii(host) is None:
        return f"{url!r} names no valid host"
    if scheme == "http" and not _loopback(host):
        return (
            f"{url!r} is plain http to {host}, which is not this machine: anyone on the way "
            "could read and change every message. Use https://, or plain http only to a "
            "server on loopback (127.0.0.0/8, ::1, localhost)"
        )
    return None


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it could resolve anywhere


def parse(data: Mapping[str, object], fail: Fail, tls: TlsSpec = NO_TLS) -> RemoteSpec | None:
    """The remote keys of a [server] table (None: none given). `fail(key_path, message)`
    raises the profile's error for the key; `command` and `url` exclude each other. `tls`
    is [server.tls] as the profile's parser read it (its paths expand placeholders)."""
    given = [key for key in KEYS if key in data]
    if not given:
        return None
    if "command" in data:
        if "url" in data:
            fail(("url",), "server.command and server.url are both given: a server is a "
                 "local command or a remote URL; remove one of them")  # fmt: skip
        fail((given[0],), f"server.{given[0]} is for a remote server (server.url), and this "
             "profile runs server.command; remove it")  # fmt: skip
    url = data.get("url", "")  # absent: the command line gives it
    if not isinstance(url, str) or ("url" in data and not url):
        fail(("url",), 'expected a URL "https://HOST/PATH"')
    if url and (problem := url_problem(url)) is not None:
        fail(("url",), problem)
    transport = data.get("transport", "auto")
    if transport not in TRANSPORTS:
        fail(("transport",), "expected one of " + ", ".join(f'"{t}"' for t in TRANSPORTS))
    return RemoteSpec(
        url=url,
        transport=str(transport),
        headers=_headers(data.get("headers", {}), fail),
        bearer=_bearer(data.get("bearer"), fail),
        tls=tls,
        oauth=_oauth(data, fail),
    )


_PIN = re.compile(r"sha256/[A-Za-z0-9+/]{43}=")


def pin_problem(pin: object) -> str | None:
    """What is wrong with an SPKI pin as written in a profile or a lock, or None."""
    if not isinstance(pin, str) or _PIN.fullmatch(pin) is None:
        return (
            'expected "sha256/" and the base64 of a SHA-256 (44 characters), as `openssl '
            "x509 -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 "
            "-binary | base64` prints it"
        )
    return None


def _headers(value: object, fail: Fail) -> Mapping[str, str]:
    if not isinstance(value, dict):
        fail(("headers",), 'expected a table of header names and values, e.g. { "X-Team" = "a" }')
    out: dict[str, str] = {}
    for name, text in value.items():
        if not _token(name):
            fail(("headers", name), "is not an HTTP header name (letters, digits, -_ and the like)")
        if name.lower() in _SECRET_HEADERS:
            fail(
                ("headers", name),
                f"{name} carries a credential and must not be written in a profile: store "
                f'it in the keyring and name it as [server] bearer = "{_KEYRING_REF}"',
            )
        if not isinstance(text, str) or any(c in text for c in "\r\n\0"):
            fail(("headers", name), "expected a string on one line")
        out[name] = text
    return MappingProxyType(out)


def _token(name: str) -> bool:
    # RFC 9110 token characters
    extra = "!#$%&'*+-.^_`|~"
    return bool(name) and all(c.isascii() and (c.isalnum() or c in extra) for c in name)


def _bearer(value: object, fail: Fail) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("keyring:") or "/" not in value[8:]:
        fail(("bearer",), f'expected a keyring reference "{_KEYRING_REF}" (never the token itself)')
    service, _, user = value[8:].partition("/")
    if not service or not user:
        fail(("bearer",), f'expected a keyring reference "{_KEYRING_REF}"')
    return value


def _oauth(data: Mapping[str, object], fail: Fail) -> OAuthSpec | None:
    if "oauth" not in data:
        return None
    table = data["oauth"]
    if not isinstance(table, dict):
        fail(("oauth",), "expected a table [server.oauth]")
    if "bearer" in data:
        fail(("oauth",), "server.bearer and [server.oauth] are both given: the server's token "
             "comes from the keyring or from OAuth, not both; remove one of them")  # fmt: skip
    for key in table:
        if key not in OAUTH_KEYS:
            fail(("oauth", key), "unknown key; expected one of " + ", ".join(OAUTH_KEYS))
    scopes = table.get("scopes", [])
    if not isinstance(scopes, list) or not all(_scope(s) for s in scopes):
        fail(("oauth", "scopes"), 'expected an array of scope names, e.g. ["read", "write"]')
    client_id = table.get("client_id")
    if client_id is not None and (not isinstance(client_id, str) or not client_id.isprintable()
                                  or not client_id.strip()):  # fmt: skip
        fail(("oauth", "client_id"), "expected the client ID the authorization server issued")
    document = table.get("client_metadata_url")
    if document is not None and (problem := _metadata_url_problem(document)) is not None:
        fail(("oauth", "client_metadata_url"), problem)
    port = table.get("redirect_port", 0)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        fail(("oauth", "redirect_port"), "expected a port number 1-65535, or 0 for any free one")
    return OAuthSpec(tuple(scopes), client_id, document, port)


def _scope(name: object) -> bool:
    # RFC 6749 3.3: printable ASCII but space, double quote and backslash
    return (
        isinstance(name, str)
        and bool(name)
        and all("!" <= c <= "~" and c not in '"\\' for c in name)
    )


def _metadata_url_problem(url: object) -> str | None:
    """A client ID metadata document's URL: https with a path (the MCP spec's rule)."""
    from urllib.parse import urlsplit

    if not isinstance(url, str) or not url.lower().startswith("https://"):
        return (
            "expected the https URL of a client ID metadata document, e.g. "
            '"https://example.com/mcpwrap.json"'
        )
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"{url!r} is not a valid URL ({exc})"
    if not parts.hostname or parts.path in ("", "/") or parts.username or parts.fragment:
        return (
            f"{url!r}: a client ID metadata document's URL has a host and a path, and no "
            "user or fragment"
        )
    return None


def target(
    spec: RemoteSpec | None, command: Sequence[str] | None, given: Sequence[str], source: str
) -> RemoteSpec | None:
    """The remote server a run speaks to (from the command line, the profile, or both when
    they agree), or None for a local command."""
    url_given = bool(given) and is_url(given[0])
    if url_given and len(given) > 1:
        raise UsageError(
            f"after `--` comes one URL for a remote server, got {list(given)!r}; "
            "give the URL alone (headers and transport go in [server] of the profile)"
        )
    if not url_given:
        if spec is None:
            return None
        if given and spec.url:
            raise UsageError(
                f"{source}: [server] url is {spec.url!r} but the command line gives "
                f"{list(given)!r}; remove one of them"
            )
        if not spec.url:
            if given:
                raise UsageError(
                    f"{source}: [server] transport/headers/bearer are for a remote server, "
                    f"but the command line gives the command {list(given)!r}; remove them or "
                    "give a URL"
                )
            return None  # no server at all: the caller says what to give
        return spec
    url = given[0]
    if command:
        raise UsageError(
            f"{source}: [server] command is {list(command)!r} but the command line gives the "
            f"URL {url!r}; remove one of them"
        )
    if spec is not None and spec.url and spec.url != url:
        raise UsageError(
            f"{source}: [server] url is {spec.url!r} but the command line gives {url!r}; "
            "remove one of them"
        )
    problem = url_problem(url)
    if problem is not None:
        raise UsageError(f"the server URL is refused: {problem}")
    return (spec or RemoteSpec(url))._replace(url=url)
