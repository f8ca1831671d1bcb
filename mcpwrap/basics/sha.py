"""SHA-256 without OpenSSL.

`hashlib` maps OpenSSL's libcrypto (about 4 MB of resident memory and 4 ms of start-up)
to give a SHA-256 that CPython also ships on its own: the module hashlib itself falls back
to. `mcpwrap run` stays small by using that one; the digests are the same (a test checks).
"""

from __future__ import annotations

# No typing or collections at run time: the jail trampoline imports this module (its
# seccomp cache key), and those with re and enum cost it ~8 ms on every jailed start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    sha256: Callable[..., Any]
try:  # CPython 3.12+
    from _sha2 import sha256  # type: ignore[import-not-found, no-redef, unused-ignore]
except ImportError:
    try:  # CPython 3.11
        from _sha256 import sha256  # type: ignore[import-not-found, no-redef, unused-ignore]
    except ImportError:  # other interpreters: the standard way
        from hashlib import sha256  # type: ignore[no-redef, unused-ignore]


def hexdigest(data: bytes) -> str:
    return str(sha256(data).hexdigest())
