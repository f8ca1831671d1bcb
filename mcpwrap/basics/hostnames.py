"""Host names in one canonical ASCII form, for profiles and URL arguments alike.

Python's "idna" codec implements IDNA 2003, which maps four characters differently from
the UTS 46 rules that browsers, Node and the `idna` package apply: it folds U+00DF (sharp
s) to "ss" and U+03C2 (final sigma) to U+03C3, and drops ZWJ/ZWNJ. A name holding one of
them would pass an allowlist as one host and be resolved by the server as another, so it
is refused outright.
"""

from __future__ import annotations

_DEVIATIONS = frozenset("\u00df\u03c2\u200c\u200d")


def to_ascii(host: str) -> str | None:
    """Lower-case ASCII (punycode) form of `host`, or None if it cannot be one safely."""
    host = host.lower()
    if not host or any(c in _DEVIATIONS for c in host):
        return None
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return None
