"""Argument constraints of `[tools.NAME.args]`: pure checks, value in, failure reason out.

Each check returns None when the value passes, or a short sentence saying why not; the
caller adds the rule's name. Paths are resolved through an injected `resolve` function
(os.path.realpath in production) so every rule is a table-driven test.

A constraint on an array argument applies to each element: `paths = ["a", "b"]` with
`within` passes only if both are within the roots.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from mcpwrap.basics import hostnames

if TYPE_CHECKING:
    from mcpwrap.config.profile import Constraint

Resolver = Callable[[str], str]

_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_URL_SCHEMES = frozenset({"http", "https", "ws", "wss"})
# Characters that different URL parsers treat differently (WHATWG turns "\" into "/" and
# strips tabs and newlines): refusing them removes parser-differential host tricks.
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\\]")


def check_value(value: object, c: Constraint, *, cwd: str, resolve: Resolver) -> str | None:
    """The first reason `value` breaks constraint `c`, or None."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            reason = check_value(item, c, cwd=cwd, resolve=resolve)
            if reason is not None:
                return f"item {i}: {reason}"
        return None
    for check in _CHECKS:
        reason = check(value, c, cwd, resolve)
        if reason is not None:
            return reason
    return None


def _check_within(value: object, c: Constraint, cwd: str, resolve: Resolver) -> str | None:
    if c.within is None:
        return None
    if not isinstance(value, str):
        return f"expected a path string, got {_kind(value)}"
    return path_within(value, c.within, cwd=cwd, resolve=resolve)


def _check_one_of(value: object, c: Constraint, cwd: str, resolve: Resolver) -> str | None:
    if c.one_of is None:
        return None
    # Type-strict: JSON true is not 1, and 1 is not "1".
    if any(type(value) is type(allowed) and value == allowed for allowed in c.one_of):
        return None
    return f"{_show(value)} is not one of {list(c.one_of)!r}"


def _check_pattern(value: object, c: Constraint, cwd: str, resolve: Resolver) -> str | None:
    if c.pattern is None:
        return None
    if not isinstance(value, str):
        return f"expected a string, got {_kind(value)}"
    if c.pattern.fullmatch(value) is None:
        return f"{_show(value)} does not match the pattern {c.pattern.pattern!r}"
    return None


def _check_length(value: object, c: Constraint, cwd: str, resolve: Resolver) -> str | None:
    if c.max_length is None:
        return None
    if not isinstance(value, str):
        return f"expected a string, got {_kind(value)}"
    if len(value) > c.max_length:
        return f"length {len(value)} is over the limit of {c.max_length}"
    return None


def _check_range(value: object, c: Constraint, cwd: str, resolve: Resolver) -> str | None:
    if c.min is None and c.max is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"expected a finite number, got {_kind(value)}"
    # Ints are exact at any size (math.isfinite would overflow on a 400-digit one).
    if isinstance(value, float) and not math.isfinite(value):
        return f"expected a finite number, got {value}"
    if c.min is not None and value < c.min:
        return f"{value} is below the minimum {_num(c.min)}"
    if c.max is not None and value > c.max:
        return f"{value} is above the maximum {_num(c.max)}"
    return None


def _check_hosts(value: object, c: Constraint, cwd: str, resolve: Resolver) -> str | None:
    if c.hosts is None:
        return None
    if not isinstance(value, str):
        return f"expected a URL string, got {_kind(value)}"
    return url_host_allowed(value, c.hosts)


def _check_sql(value: object, c: Constraint, cwd: str, resolve: Resolver) -> str | None:
    if c.sql is None:
        return None
    if not isinstance(value, str):
        return f"expected SQL text, got {_kind(value)}"
    from mcpwrap.policy.sql import read_only_problem  # PostgreSQL's parser: only when used

    problem = read_only_problem(value)
    return None if problem is None else f"not a read-only statement: {problem}"


_CHECKS = (
    _check_within,
    _check_one_of,
    _check_pattern,
    _check_length,
    _check_range,
    _check_hosts,
    _check_sql,
)


def path_within(value: str, roots: Sequence[str], *, cwd: str, resolve: Resolver) -> str | None:
    """None if every way a server may read `value` lands inside one of `roots`.

    Servers differ: Node's path.resolve() folds ".." lexically before following symlinks,
    the kernel follows symlinks first, many servers expand "~", some take file: URIs. A
    path passes only if all of these interpretations are inside a root.
    """
    if not value:
        return "path is empty"
    path = _uri_to_path(value)
    if path is None:
        return f"{_show(value)} is a URI, not a path"
    if "\x00" in path:  # checked after decoding: file:///a%00b holds one too
        return "path contains a NUL byte"
    real_roots = [resolve(root) for root in roots]
    for candidate in _interpretations(path, cwd):
        if not any(_inside(resolve(candidate), root) for root in real_roots):
            return f"{_show(value)} resolves outside {list(roots)!r}"
    return None


def _uri_to_path(value: str) -> str | None:
    if not _URI_SCHEME.match(value):
        return value
    parts = urlsplit(value)
    if parts.scheme.lower() != "file" or parts.netloc not in ("", "localhost"):
        return None
    return unquote(parts.path)


def _interpretations(path: str, cwd: str) -> list[str]:
    joined = os.path.join(cwd, path)
    found = [joined, os.path.normpath(joined)]
    if path.startswith("~"):
        home = os.path.expanduser(path)
        if home != path:
            found += [home, os.path.normpath(home)]
    return found


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def url_host_allowed(value: str, hosts: Sequence[str]) -> str | None:
    """None if `value` is an http(s)/ws(s) URL whose host matches one of `hosts`."""
    if _URL_FORBIDDEN.search(value):
        return f"{_show(value)} contains whitespace, control characters or a backslash"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"{_show(value)} is not a valid URL ({exc})"
    if parts.scheme.lower() not in _URL_SCHEMES:
        return f"{_show(value)} is not an http, https, ws or wss URL"
    host = normalise_host(parts.hostname or "")
    if host is None:
        return f"{_show(value)} has no valid host"
    if any(host_matches(host, pattern) for pattern in hosts):
        return None
    return f"host {host!r} is not in {list(hosts)!r}"


def normalise_host(host: str) -> str | None:
    """Lower-case, IDNA-encoded, without a trailing dot; None if it cannot be a host."""
    host = host.rstrip(".").lower()
    if not host or "%" in host:
        # Percent-encoded hosts are decoded by some parsers and not others.
        return None
    if host.startswith("[") or ":" in host:
        return host
    return hostnames.to_ascii(host)


def host_matches(host: str, pattern: str) -> bool:
    """`*.example.com` matches any name below example.com, never example.com itself."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def _kind(value: object) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return names.get(type(value), type(value).__name__)


def _show(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _num(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)
