"""A client's entry for a remote MCP server, read as the client (or mcp-remote) would use
it, so that `mcpwrap wrap` can make it `mcpwrap run --profile P -- URL`.

Two shapes (checked December 2026):
- an entry with a "url": VS Code's `"type": "http" | "sse"` (code.visualstudio.com/docs/
  copilot/customization/mcp-servers), Claude Code's `.mcp.json` `"type": "http" | "sse"`
  (code.claude.com/docs/en/mcp), Cursor's `"url"` without a type (cursor.com/docs, MCP);
  each may have "headers";
- a stdio entry running mcp-remote (`npx [-y] mcp-remote URL [--header "Name: value"]
  [--transport http-first|sse-first|http-only|sse-only] [--allow-http] ...`, also through
  bunx, `pnpm dlx` and `npm exec`), the bridge desktop clients use for a remote server
  (github.com/geelen/mcp-remote, README). mcp-remote replaces `${NAME}` in a header's value
  from its own environment: the entry's env over the client's.

Pure: the values in, a RemoteEntry or a Refused saying what mcpwrap cannot carry over.
Nothing is dropped silently: an option mcpwrap has no counterpart for refuses the entry.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import NamedTuple

from mcpwrap.config.discovery import profile_name_for_command
from mcpwrap.config.remote import url_problem

# Headers that carry a credential: never written into a profile (config/remote.py agrees).
SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
# VS Code / Claude Code "type" of a remote entry -> [server] transport. "http" is tried as
# Streamable HTTP first; mcpwrap's "auto" falls back to HTTP+SSE only when that is refused.
URL_TYPES = {"http": "auto", "streamable-http": "auto", "streamableHttp": "auto", "sse": "sse"}
# mcp-remote's --transport -> [server] transport ("sse-first": both are tried, as "auto").
_TRANSPORTS = {
    "http-first": "auto",
    "sse-first": "auto",
    "http-only": "streamable-http",
    "sse-only": "sse",
}
# mcp-remote's options that change nothing mcpwrap does: said, not dropped silently.
_NO_EFFECT = {
    "--allow-http": "mcpwrap allows plain http to loopback only, and checks the URL itself",
    "--debug": "mcpwrap keeps its own audit log",
    "--silent": "mcpwrap writes only its errors",
}
# mcp-remote's options that take a value, which mcpwrap does not support (named in the refusal).
_VALUED = frozenset(
    {
        "--resource",
        "--ignore-tool",
        "--auth-timeout",
        "--static-oauth-client-metadata",
        "--static-oauth-client-info",
        "--host",
    }
)
# Keys of a url entry that mcpwrap cannot carry over (OAuth client settings).
_URL_REFUSED = ("auth", "oauth")
_VARIABLE = re.compile(r"\$\{([^}]+)\}")
_PACKAGE = re.compile(r"mcp-remote(?:@[^\s/]+)?")


class Refused(Exception):
    """An entry for a remote server that mcpwrap cannot wrap as it is; says why."""


class RemoteEntry(NamedTuple):
    url: str
    transport: str  # a config.remote.TRANSPORTS value
    headers: Mapping[str, str]  # those without a credential, values as sent
    secret: str | None  # the name of a credential header ("Authorization"), if one is sent
    how: str  # "mcp-remote" or "url"
    notes: tuple[str, ...] = ()  # options with no effect under mcpwrap, said on the line


def is_url_entry(values: Mapping[str, object]) -> bool:
    """An entry the client connects to itself: a "url" and no "command"."""
    return "url" in values and "command" not in values


def runs_mcp_remote(argv: Sequence[str]) -> bool:
    try:
        return bool(argv) and profile_name_for_command(argv) == "mcp-remote"
    except Exception:
        return False


def from_url_entry(values: Mapping[str, object], substitute: Callable[[str], str]) -> RemoteEntry:
    """A "url" entry; `substitute` replaces the client's own ${...} in a value."""
    refused = [key for key in _URL_REFUSED if key in values]
    if refused:
        raise Refused(
            f'its "{refused[0]}" (OAuth client settings) has no counterpart in mcpwrap yet; '
            "wrap it by hand once mcpwrap's OAuth support is in place"
        )
    url, kind = values.get("url"), values.get("type")
    if not isinstance(url, str) or not url:
        raise Refused('its "url" is not a string')
    if kind is not None and kind not in URL_TYPES:
        raise Refused(f'its "type" {kind!r} is not one mcpwrap knows ({", ".join(URL_TYPES)})')
    transport = URL_TYPES[kind] if isinstance(kind, str) else "auto"
    raw = values.get("headers") or {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise Refused('its "headers" is not an object of strings')
    headers, secret = _split_headers(
        [(str(name), value) for name, value in raw.items()], substitute
    )
    return RemoteEntry(_checked(substitute(url)), transport, headers, secret, "url")


def from_mcp_remote(argv: Sequence[str], env: Mapping[str, str]) -> RemoteEntry:
    """A stdio entry running mcp-remote: `argv` as the client runs it (its variables
    replaced); `env` the environment mcp-remote would see (for ${NAME} in headers)."""
    at = next((i for i, w in enumerate(argv) if i and _PACKAGE.fullmatch(w)), None)
    if at is None:
        raise Refused("it runs mcp-remote, but its package argument was not found")
    read = _McpRemoteArgs()
    words = iter(argv[at + 1 :])
    for word in words:
        read.take(word, words)
    if read.unsupported:
        raise Refused(
            "mcp-remote options mcpwrap does not support: "
            + ", ".join(read.unsupported)
            + "; remove them from the entry to wrap it (mcpwrap applies its own profile to "
            "the tools instead), or leave the entry as it is"
        )
    if read.url is None:
        raise Refused("it runs mcp-remote without a server URL")

    def expand(text: str) -> str:
        return _VARIABLE.sub(lambda m: env.get(m.group(1), ""), text)

    headers, secret = _split_headers(read.pairs, expand)
    url = _checked(read.url)
    return RemoteEntry(url, read.transport, headers, secret, "mcp-remote", tuple(read.notes))


class _McpRemoteArgs:
    """mcp-remote's arguments after its package, one word at a time."""

    def __init__(self) -> None:
        self.url: str | None = None
        self.transport = "auto"
        self.pairs: list[tuple[str, str]] = []
        self.notes: list[str] = []
        self.unsupported: list[str] = []

    def take(self, word: str, rest: Iterator[str]) -> None:
        option, eq, inline = word.partition("=") if word.startswith("--") else (word, "", "")
        if option in ("--header", "--transport"):
            value = inline if eq else next(rest, None)
            if value is None:
                raise Refused(f"mcp-remote's {option} has no value")
            self._valued(option, value)
        elif option in _NO_EFFECT:
            self.notes.append(f"{option}: {_NO_EFFECT[option]}")
        elif option in _VALUED:
            self.unsupported.append(option)
            if not eq:
                next(rest, None)
        elif word.startswith("-"):
            self.unsupported.append(option)
        elif self.url is None:
            self.url = word
        elif word.isdigit():
            self.unsupported.append(f"the OAuth callback port {word}")
        else:
            self.unsupported.append(repr(word))

    def _valued(self, option: str, value: str) -> None:
        if option == "--header":
            name, colon, text = value.partition(":")
            if not colon or not name.strip():
                raise Refused(f'its --header {value!r} is not "Name: value"')
            self.pairs.append((name.strip(), text.strip()))
        elif value in _TRANSPORTS:
            self.transport = _TRANSPORTS[value]
        else:
            raise Refused(f"its --transport {value!r} is not one of {', '.join(_TRANSPORTS)}")


def _split_headers(
    pairs: list[tuple[str, str]], expand: Callable[[str], str]
) -> tuple[dict[str, str], str | None]:
    """(the headers for [server] headers, the credential header's name or None). A
    credential is never expanded here: only its form is looked at."""
    headers: dict[str, str] = {}
    secret: str | None = None
    for name, raw in pairs:
        if name.lower() not in SECRET_HEADERS:
            _not_a_credential(name, raw)
            headers[name] = expand(raw)
            continue
        if name.lower() != "authorization":
            raise Refused(
                f"it sends a {name} header, a credential mcpwrap can send only as "
                '"Authorization: Bearer TOKEN" with the token from the keyring'
            )
        if not _is_bearer(raw, expand):
            raise Refused(
                "its Authorization header is not a bearer token; mcpwrap sends a credential "
                'only as "Authorization: Bearer TOKEN", with the token from the keyring'
            )
        secret = name
    return headers, secret


# Header names that carry credentials whatever they are called (X-API-Key, X-Auth-Token,
# api-key, ...): their values must not be written into a profile, which is committed.
_CREDENTIAL_WORDS = (
    "key", "token", "secret", "auth", "session", "passw", "signature", "credential", "cookie"
)  # fmt: skip


def _not_a_credential(name: str, raw: str) -> None:
    """Refuse a header that [server] headers would write into the profile's text although
    it looks like a credential, or takes its value from the environment (where the
    client's secrets live): mcpwrap sends a credential only as a bearer from the keyring."""
    lowered = name.lower()
    word = next((w for w in _CREDENTIAL_WORDS if w in lowered), None)
    if word is not None:
        raise Refused(
            f"it sends a {name} header, which looks like a credential ({word!r} in its "
            "name); a profile's [server] headers are plain text, committed with the "
            'project. mcpwrap sends a credential only as "Authorization: Bearer TOKEN", '
            "with the token from the keyring"
        )
    if "${" in raw:
        raise Refused(
            f"its {name} header takes its value from the environment ({raw!r}), where a "
            "client keeps secrets; a profile's [server] headers are plain text, committed "
            "with the project. If the value is no secret, write it in the profile's "
            '[server] headers yourself; a credential goes only as "Authorization: Bearer '
            'TOKEN", with the token from the keyring'
        )


def _is_bearer(raw: str, expand: Callable[[str], str]) -> bool:
    if raw.lower().startswith("bearer "):
        return True
    try:
        value = expand(raw)  # "${AUTH_HEADER}" holding "Bearer ..." (mcp-remote's workaround)
    except Exception:
        return False
    return value.lower().startswith("bearer ")


def _checked(url: str) -> str:
    problem = url_problem(url)
    if problem is not None:
        raise Refused(f"its server URL is refused: {problem}")
    return url


def host_name(url: str) -> str:
    """A profile name from a URL's host: "https://mcp.example.com/x" -> "mcp.example.com"."""
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or "remote"
    return re.sub(r"[^A-Za-z0-9._-]", "-", host)
