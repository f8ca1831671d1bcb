"""Runtime tokens: permission containers, not identity markers.

A token says what its holder may do through a wrapper (a tenant, the tools by name or
glob, the classes read/write, optional rate and concurrency limits) and when (not before,
expires). It never reaches admin tools: `issue` refuses the admin class. Every token
expires; there is no "forever".

Format: "mcpwrap1.<payload>.<mac>", the payload base64url (no padding) of canonical JSON,
the mac base64url of HMAC-SHA256 over "mcpwrap1.<payload>" with a 32-byte random key kept
in the OS keyring. The HMAC is written out here over mcpwrap.basics.sha: the standard `hmac`
module imports `_hashlib` (OpenSSL) on import, which `mcpwrap run` must not pay for.

The registry (SQLite in the state dir) holds metadata only: never a token's text or the
key. Named tokens' text lives in the keyring, so a client configuration can name the
token instead of holding it. Revocation is a row in the registry, read by running
wrappers every second or so; a token the registry does not know counts as revoked, so a
lost or deleted registry cannot bring revoked tokens back.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from mcpwrap.basics.errors import MCPWrapError
from mcpwrap.basics.sqlitedb import open_wal

if TYPE_CHECKING:
    import sqlite3

PREFIX = "mcpwrap1"
CLASSES = frozenset({"read", "write"})
LONG_LIFE_SECONDS = 90 * 86400
KEY_SERVICE = "mcpwrap"
KEY_USER = "token-signing-key"
NAMED_SERVICE = "mcpwrap-token"
REGISTRY_FILE = "tokens.sqlite3"

_KEY_BYTES = 32
_MAC_BYTES = 32
_BLOCK = 64  # SHA-256's block size, for HMAC's key padding
_ID = re.compile(r"[0-9a-f]{32}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_EXPIRES_HINT = "a token without expiry is refused: give --expires (e.g. 30d, 12h)"


class TokenError(MCPWrapError):
    """A token that is malformed, forged, out of its time, revoked or cannot be issued.

    `rule` names the check for audit records and callers ("token.signature", ...).
    """

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class Scope(NamedTuple):
    tenant: str
    tools: tuple[str, ...]
    classes: frozenset[str]
    rate: str | None
    concurrency: int | None


class Token(NamedTuple):
    id: str
    scope: Scope
    not_before: int
    expires: int
    issued: int
    name: str | None
    predecessor: str | None


# ---------------------------------------------------------------------------- pure parts


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """RFC 2104 HMAC over mcpwrap.basics.sha's SHA-256 (a test holds it to the `hmac` module's)."""
    from mcpwrap.basics.sha import sha256

    if len(key) > _BLOCK:
        key = bytes(sha256(key).digest())
    key = key.ljust(_BLOCK, b"\0")
    inner = sha256(bytes(b ^ 0x36 for b in key) + message).digest()
    return bytes(sha256(bytes(b ^ 0x5C for b in key) + inner).digest())


def encode(token: Token, key: bytes) -> str:
    """The token's text: "mcpwrap1.<payload>.<mac>"."""
    payload = json.dumps(_to_json(token), sort_keys=True, separators=(",", ":"))
    signed = f"{PREFIX}.{_b64(payload.encode())}"
    return f"{signed}.{_b64(hmac_sha256(key, signed.encode()))}"


def decode(text: str, key: bytes) -> Token:
    """The token in `text`, once its MAC checks out under `key`.

    The MAC is checked before the payload is parsed: nothing an attacker wrote is read
    as JSON unless it was signed with our key.
    """
    from _operator import _compare_digest  # hmac.compare_digest without importing hmac

    if not text.strip():
        raise _format("the text is empty")
    parts = text.strip().split(".")
    if parts[0] != PREFIX:
        raise _format(f"it does not start with {PREFIX}. (not an mcpwrap token)")
    if len(parts) != 3:
        raise _format(f"it has {len(parts)} dot-separated parts, not 3 ({PREFIX}.PAYLOAD.MAC)")
    payload = _unb64(parts[1], "payload")
    mac = _unb64(parts[2], "MAC")
    if len(mac) != _MAC_BYTES:
        raise _format(f"the MAC is {len(mac)} bytes, not {_MAC_BYTES}")
    expected = hmac_sha256(key, f"{PREFIX}.{parts[1]}".encode())
    if not _compare_digest(mac, expected):
        raise TokenError(
            "token.signature",
            "token signature does not match: the token was altered, or signed with another "
            "signing key (another machine or user, or a key that was replaced); issue a new one",
        )
    return _from_json(payload)


def time_verdict(token: Token, now: float) -> tuple[str, str] | None:
    """(rule, reason) when `now` is outside [not_before, expires); None inside."""
    if now < token.not_before:
        return (
            "token.not_yet_valid",
            f"token {token.id} is not valid before {iso(token.not_before)} "
            f"(in {_span(token.not_before - now)})",
        )
    if now >= token.expires:
        return (
            "token.expired",
            f"token {token.id} expired at {iso(token.expires)} ({_span(now - token.expires)} "
            "ago); rotate it or issue a new one with `mcpwrap token issue`",
        )
    return None


def allows_tool(scope: Scope, name: str) -> bool:
    """Whether a tool name matches one of the scope's names or globs (case-sensitive)."""
    from fnmatch import fnmatchcase

    return any(fnmatchcase(name, pattern) for pattern in scope.tools)


def needs_rotation(token: Token, now: float, fraction: float = 0.8) -> bool:
    """Whether `now` is in the last (1 - fraction) of the token's life, or past it."""
    life = token.expires - token.not_before
    return now >= token.not_before + fraction * life


def check_scope(scope: Scope) -> None:
    """Refuse a scope `issue` must not sign (admin class, empty tools, bad limits)."""
    from mcpwrap.basics.units import parse_rate

    if not scope.tenant or not scope.tenant.isprintable():
        raise TokenError("token.scope", "the tenant is empty or holds control characters")
    if "admin" in scope.classes:
        raise TokenError(
            "token.admin",
            "the admin class is refused: admin tools are never reachable with a runtime "
            "token; give --class read and/or --class write",
        )
    unknown = sorted(scope.classes - CLASSES)
    if unknown or not scope.classes:
        raise TokenError(
            "token.scope",
            f"token classes must be read and/or write, got {sorted(scope.classes) or 'none'}",
        )
    if not scope.tools or any(not t or not t.isprintable() for t in scope.tools):
        raise TokenError("token.scope", "give at least one tool name or glob (--tool), none empty")
    if scope.rate is not None:
        try:
            parse_rate(scope.rate)
        except ValueError as exc:
            raise TokenError("token.scope", f"rate: {exc}") from exc
    if scope.concurrency is not None and scope.concurrency < 1:
        raise TokenError("token.scope", f"concurrency must be 1 or more, got {scope.concurrency}")


def check_name(name: str) -> None:
    if not _NAME.fullmatch(name) or _ID.fullmatch(name):
        raise TokenError(
            "token.name",
            f"token name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with "
            "a letter or digit, and not 32 hex digits (that reads as a token id)",
        )


def iso(seconds: float) -> str:
    """UTC time as 2026-05-09T07:35:25Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def state(token: Token, now: float, revoked: bool) -> str:
    """valid / not yet valid / expired / revoked, for people."""
    if revoked:
        return "revoked"
    verdict = time_verdict(token, now)
    if verdict is None:
        return "valid"
    return "not yet valid" if verdict[0] == "token.not_yet_valid" else "expired"


def _span(seconds: float) -> str:
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}{_span(seconds % size) if seconds % size else ''}"
    return f"{seconds}s"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    # urlsafe_b64decode silently drops stray characters: check the alphabet first.
    if not text or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise _format(f"the {what} is not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise _format(f"the {what} is not base64url ({exc})") from exc
    if _b64(data) != text:  # stray low bits: one token, one text
        raise _format(f"the {what} is not canonical base64url")
    return data


def _format(what: str) -> TokenError:
    return TokenError("token.format", f"not a valid mcpwrap token: {what}")


def _to_json(token: Token) -> dict[str, Any]:
    scope = token.scope
    return {
        "id": token.id,
        "tenant": scope.tenant,
        "tools": list(scope.tools),
        "classes": sorted(scope.classes),
        "rate": scope.rate,
        "concurrency": scope.concurrency,
        "not_before": token.not_before,
        "expires": token.expires,
        "issued": token.issued,
        "name": token.name,
        "predecessor": token.predecessor,
    }


_FIELDS = frozenset(
    _to_json(Token("", Scope("", (), frozenset(), None, None), 0, 0, 0, None, None))
)


def _from_json(payload: bytes) -> Token:
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _format(f"the payload is not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise _format(f"the payload is a JSON {type(data).__name__}, not an object")
    missing = sorted(_FIELDS - data.keys())
    extra = sorted(data.keys() - _FIELDS)
    if missing:
        raise _format(f"the payload lacks the field(s) {', '.join(missing)}")
    if extra:
        raise _format(f"the payload has unknown field(s) {', '.join(extra)}")
    token_id = _field(data, "id", str)
    if not _ID.fullmatch(token_id):
        raise _format("field id is not 32 lowercase hex digits")
    tools = _field(data, "tools", list)
    classes = _field(data, "classes", list)
    if not tools or not all(isinstance(t, str) and t for t in tools):
        raise _format("field tools is not a non-empty list of non-empty strings")
    if not classes or not all(isinstance(c, str) and c in CLASSES for c in classes):
        raise _format('field classes is not a non-empty list of "read"/"write"')
    scope = Scope(
        tenant=_field(data, "tenant", str),
        tools=tuple(tools),
        classes=frozenset(classes),
        rate=_field(data, "rate", str, optional=True),
        concurrency=_field(data, "concurrency", int, optional=True),
    )
    not_before, expires = _field(data, "not_before", int), _field(data, "expires", int)
    if expires <= not_before:
        raise _format("field expires is not after not_before")
    return Token(
        id=token_id,
        scope=scope,
        not_before=not_before,
        expires=expires,
        issued=_field(data, "issued", int),
        name=_field(data, "name", str, optional=True),
        predecessor=_field(data, "predecessor", str, optional=True),
    )


def _field(data: dict[str, Any], name: str, kind: type, *, optional: bool = False) -> Any:
    value = data[name]
    if value is None and optional:
        return None
    # bool is an int to Python, never to us.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        want = {str: "a string", int: "an integer", list: "a list"}[kind]
        raise _format(f"field {name} is {json.dumps(value)[:40]}, not {want}")
    return value


# ---------------------------------------------------------------------------- the keyring


def signing_key(*, create: bool) -> bytes:
    """The 32-byte signing key from the keyring; made and stored on first use if `create`."""
    backend = _keyring()
    stored = _keyring_call(lambda: backend.get_password(KEY_SERVICE, KEY_USER), "read")
    if stored is None:
        if not create:
            raise TokenError(
                "token.key",
                f"no token signing key in the keyring ({KEY_SERVICE}/{KEY_USER}): no token "
                "was issued by this user here; issue one with `mcpwrap token issue`",
            )
        fresh = base64.b64encode(os.urandom(_KEY_BYTES)).decode("ascii")
        _keyring_call(lambda: backend.set_password(KEY_SERVICE, KEY_USER, fresh), "write")
        # Read back: if another process created one at the same moment, both use the winner.
        stored = _keyring_call(lambda: backend.get_password(KEY_SERVICE, KEY_USER), "read")
    try:
        key = base64.b64decode(str(stored), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != _KEY_BYTES:
        raise TokenError(
            "token.key",
            f"the token signing key in the keyring ({KEY_SERVICE}/{KEY_USER}) is not "
            f"{_KEY_BYTES} bytes of base64; delete that entry to make a new key (every "
            "token issued so far stops verifying)",
        )
    return key


def store_named(name: str, text: str) -> None:
    """Keep a token's text in the keyring under `name`."""
    check_name(name)
    backend = _keyring()
    _keyring_call(lambda: backend.set_password(NAMED_SERVICE, name, text), "write")


def load_named(name: str) -> str:
    """The text of the token stored under `name`."""
    backend = _keyring()
    text = _keyring_call(lambda: backend.get_password(NAMED_SERVICE, name), "read")
    if text is None:
        raise TokenError(
            "token.unknown_name",
            f"no token named {name!r} in the keyring ({NAMED_SERVICE}/{name}); see "
            "`mcpwrap token list`, or issue one with `mcpwrap token issue --name NAME`",
        )
    return str(text)


def _keyring() -> Any:
    from mcpwrap.identity import secrets as secretstore

    try:
        return secretstore._backend()
    except secretstore.SecretError as exc:
        raise TokenError("token.keyring", str(exc)) from exc


def _keyring_call(call: Any, verb: str) -> Any:
    try:
        return call()
    except Exception as exc:  # any backend failure: its type and text, never a value
        raise TokenError(
            "token.keyring",
            f"the keyring could not {verb} a token entry ({type(exc).__name__}: {exc}); "
            "check that the Secret Service is running and unlocked",
        ) from exc


# ---------------------------------------------------------------------------- the registry

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY, name TEXT, tenant TEXT NOT NULL, tools TEXT NOT NULL,
    classes TEXT NOT NULL, rate TEXT, concurrency INTEGER, not_before INTEGER NOT NULL,
    expires INTEGER NOT NULL, issued INTEGER NOT NULL, predecessor TEXT, revoked REAL
);
CREATE INDEX IF NOT EXISTS tokens_by_name ON tokens (name, issued);
CREATE INDEX IF NOT EXISTS tokens_by_predecessor ON tokens (predecessor);
"""
# The columns in _row_token's order; written out in each query (a literal, not formatted).
_SELECT = (
    "SELECT id, name, tenant, tools, classes, rate, concurrency, not_before, expires, issued, "
    "predecessor FROM tokens "
)


class Registry:
    """Token metadata and revocations in SQLite; the connection opens on first use."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def add(self, token: Token) -> None:
        s = token.scope
        row = (
            *(token.id, token.name, s.tenant, json.dumps(list(s.tools))),
            *(json.dumps(sorted(s.classes)), s.rate, s.concurrency, token.not_before),
            *(token.expires, token.issued, token.predecessor),
        )
        self._execute(
            "INSERT INTO tokens (id, name, tenant, tools, classes, rate, concurrency, "
            "not_before, expires, issued, predecessor) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            row,
        )

    def get(self, ref: str) -> Token | None:
        """By id, or by name (the newest token issued under it)."""
        rows = self._run(_SELECT + "WHERE id = ?", (ref,))
        if not rows:
            rows = self._run(
                _SELECT + "WHERE name = ? ORDER BY issued DESC, rowid DESC LIMIT 1",
                (ref,),
            )
        return _row_token(rows[0]) if rows else None

    def all(self) -> list[Token]:
        rows = self._run(_SELECT + "ORDER BY issued, rowid", ())
        return [_row_token(row) for row in rows]

    def revoke(self, token_id: str, now: float) -> bool:
        """Mark revoked; False if unknown or already revoked."""
        sql = "UPDATE tokens SET revoked = ? WHERE id = ? AND revoked IS NULL"
        return self._execute(sql, (now, token_id)).rowcount > 0

    def revoked_at(self, token_id: str) -> float | None:
        rows = self._run("SELECT revoked FROM tokens WHERE id = ?", (token_id,))
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    def revoked(self, token_id: str) -> bool:
        """True when revoked, or not in this registry at all (fail closed: a registry
        that lost rows must not bring revoked tokens back). One indexed lookup."""
        rows = self._run("SELECT revoked IS NOT NULL FROM tokens WHERE id = ?", (token_id,))
        return not rows or bool(rows[0][0])

    def successor(self, token_id: str) -> str | None:
        rows = self._run(
            "SELECT id FROM tokens WHERE predecessor = ? ORDER BY issued DESC, rowid DESC LIMIT 1",
            (token_id,),
        )
        return str(rows[0][0]) if rows else None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _run(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        return self._execute(sql, params).fetchall()

    def _execute(self, sql: str, params: tuple[Any, ...]) -> sqlite3.Cursor:
        import sqlite3

        try:
            # One statement in autocommit mode: each is its own short transaction.
            return self._connect().execute(sql, params)
        except sqlite3.IntegrityError as exc:
            raise TokenError("token.registry", f"token registry {self.path}: {exc}") from exc
        except (sqlite3.Error, OSError) as exc:
            raise TokenError(
                "token.registry",
                f"token registry {self.path}: {exc}; check that the state directory is "
                "writable (removing the file makes every issued token fail to verify)",
            ) from exc

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
            self._db = open_wal(self.path, _SCHEMA)
        return self._db


def _row_token(row: tuple[Any, ...]) -> Token:
    token_id, name, tenant, tools, classes, rate, concurrency, nbf, exp, issued, prev = row
    scope = Scope(
        tenant, tuple(json.loads(tools)), frozenset(json.loads(classes)), rate, concurrency
    )
    return Token(token_id, scope, nbf, exp, issued, name, prev)


def registry(state_dir: str) -> Registry:
    return Registry(os.path.join(state_dir, REGISTRY_FILE))


# ---------------------------------------------------------------------------- operations


def issue(
    scope: Scope,
    *,
    lifetime: float,
    not_before: float | None,
    name: str | None,
    state_dir: str,
    now: float | None = None,
) -> tuple[Token, str]:
    """Sign, register and (with a name) store a new token; (token, text).

    `lifetime` is counted from `not_before` (unix seconds; None: now). A name already
    held by a live token is refused: rotate it, or revoke it first.
    """
    now = time.time() if now is None else now
    if not math.isfinite(lifetime) or lifetime <= 0:
        raise TokenError("token.lifetime", _EXPIRES_HINT)
    check_scope(scope)
    start = int(now if not_before is None else not_before)
    expires = start + math.ceil(lifetime)
    if expires <= now:
        raise TokenError("token.lifetime", f"the token would have expired at {iso(expires)}")
    reg = registry(state_dir)
    try:
        if name is not None:
            check_name(name)
            _refuse_live_name(reg, name, now)
        key = signing_key(create=True)
        token = Token(os.urandom(16).hex(), scope, start, expires, int(now), name, None)
        return token, _register(reg, token, key, now)
    finally:
        reg.close()


def rotate(ref: str, *, state_dir: str, now: float | None = None) -> tuple[Token, str]:
    """The successor of token `ref` (id or name): same scope and lifetime length, valid
    from now, stored under the same name. The predecessor stays valid until it expires
    or is revoked, so holders can switch over."""
    now = time.time() if now is None else now
    reg = registry(state_dir)
    try:
        old = lookup(reg, ref)
        if reg.revoked(old.id):
            raise TokenError("token.revoked", f"token {old.id} is revoked: issue a new one")
        newer = reg.successor(old.id)
        if newer is not None:
            raise TokenError(
                "token.rotated", f"token {old.id} was already rotated to {newer}; rotate that one"
            )
        key = signing_key(create=False)
        start = int(now)
        token = Token(
            os.urandom(16).hex(),
            old.scope,
            start,
            start + (old.expires - old.not_before),
            start,
            old.name,
            old.id,
        )
        return token, _register(reg, token, key, now)
    finally:
        reg.close()


def verify(text: str, *, state_dir: str, now: float | None = None) -> Token:
    """The token in `text` if it is ours, untampered, within its time and not revoked."""
    now = time.time() if now is None else now
    token = decode(text, signing_key(create=False))
    verdict = time_verdict(token, now)
    if verdict is not None:
        raise TokenError(*verdict)
    reg = registry(state_dir)
    try:
        if reg.revoked(token.id):
            raise TokenError("token.revoked", _revoked_reason(reg, token))
    finally:
        reg.close()
    return token


def revoke(ref: str, *, state_dir: str, now: float | None = None) -> tuple[Token, bool]:
    """Revoke token `ref` (id, or the newest under a name); (token, whether it was live)."""
    now = time.time() if now is None else now
    reg = registry(state_dir)
    try:
        token = lookup(reg, ref)
        return token, reg.revoke(token.id, now)
    finally:
        reg.close()


def _register(reg: Registry, token: Token, key: bytes, now: float) -> str:
    text = encode(token, key)
    reg.add(token)
    if token.name is not None:
        try:
            store_named(token.name, text)
        except TokenError:
            reg.revoke(token.id, now)  # registered but unreachable: never leave it live
            raise
    return text


def lookup(reg: Registry, ref: str) -> Token:
    token = reg.get(ref)
    if token is None:
        raise TokenError(
            "token.unknown",
            f"no token {ref!r} (by id or name) in {reg.path}; see `mcpwrap token list`",
        )
    return token


def _refuse_live_name(reg: Registry, name: str, now: float) -> None:
    held = reg.get(name)
    if held is not None and held.expires > now and not reg.revoked(held.id):
        raise TokenError(
            "token.name",
            f"the name {name!r} holds live token {held.id}: rotate it "
            f"(`mcpwrap token rotate {name}`) or revoke it first",
        )


def _revoked_reason(reg: Registry, token: Token) -> str:
    at = reg.revoked_at(token.id)
    if at is None:
        return f"token {token.id} is not in the token registry {reg.path}: refused"
    return f"token {token.id} was revoked at {iso(at)}"
