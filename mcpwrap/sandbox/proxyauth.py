"""Per-run proxy credentials: how the egress listeners tell the jail's connections apart.

In the reduced jail (no network namespace) mcpwrap binds the egress listeners on the
host's loopback, where any local process could connect and borrow the server's allowlist.
So each run has a secret, given to the server only in its proxy URLs
(http://mcpwrap:SECRET@127.0.0.1:PORT), and the listeners admit only connections that
present it: HTTP as Proxy-Authorization: Basic (RFC 7617), SOCKS5 as username/password
(RFC 1929). SO_PEERCRED would not tell them apart: the server runs as the user, like
every other process of the user's.

Pure functions; egress.py does the I/O. Each check returns None (admitted) or a reason for
the audit record, which never holds the secret or what the client sent.
"""

from __future__ import annotations

import binascii
import os
from typing import NamedTuple

USER = "mcpwrap"
NO_CREDENTIALS = "no proxy credentials"
WRONG_CREDENTIALS = "wrong proxy credentials"
_HEADER_LIMIT = 1024  # a Proxy-Authorization value longer than this is refused unread
_URLSAFE = str.maketrans("+/", "-_")


def new_secret() -> str:
    """URL-safe, so it goes into a proxy URL's userinfo without escaping. What
    secrets.token_urlsafe(24) makes, without importing random (~1.5 ms) on run's path."""
    return binascii.b2a_base64(os.urandom(24), newline=False).decode().translate(_URLSAFE)


def _matches(user: bytes, password: bytes, secret: str) -> bool:
    # Both compared, each in constant time, and both always: no early exit on the user.
    # hmac here, not at the top: it brings hashlib (~4 ms) that run's path does without.
    import hmac

    ok_user = hmac.compare_digest(user, USER.encode())
    ok_password = hmac.compare_digest(password, secret.encode())
    return ok_user and ok_password


def check_basic(values: list[bytes], secret: str) -> str | None:
    """The Proxy-Authorization header values of one request against the secret."""
    if not values:
        return NO_CREDENTIALS
    if len(values) > 1:  # which one a proxy or an upstream honours is not ours to guess
        return WRONG_CREDENTIALS
    value = values[0].strip()
    if len(value) > _HEADER_LIMIT:
        return WRONG_CREDENTIALS
    scheme, _, token = value.partition(b" ")
    if scheme.lower() != b"basic":
        return WRONG_CREDENTIALS
    try:
        decoded = binascii.a2b_base64(token.strip(), strict_mode=True)
    except binascii.Error:
        return WRONG_CREDENTIALS
    user, colon, password = decoded.partition(b":")
    if not colon or not _matches(user, password, secret):
        return WRONG_CREDENTIALS
    return None


class UserPass(NamedTuple):
    user: bytes
    password: bytes


def parse_userpass(data: bytes) -> UserPass:
    """An RFC 1929 request, whole: VER=1, ULEN, UNAME, PLEN, PASSWD. ValueError if it is
    not exactly that (truncated, trailing bytes, another version)."""
    if len(data) < 2 or data[0] != 1:
        raise ValueError("not a SOCKS5 username/password request (RFC 1929)")
    ulen = data[1]
    if len(data) < 2 + ulen + 1:
        raise ValueError("a truncated SOCKS5 username/password request")
    plen = data[2 + ulen]
    if len(data) != 3 + ulen + plen:
        raise ValueError("a SOCKS5 username/password request of the wrong length")
    return UserPass(data[2 : 2 + ulen], data[3 + ulen :])


def check_userpass(request: UserPass, secret: str) -> str | None:
    """A SOCKS5 username/password request against the secret."""
    if not request.user and not request.password:
        return NO_CREDENTIALS
    return None if _matches(request.user, request.password, secret) else WRONG_CREDENTIALS
