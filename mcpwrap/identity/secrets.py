"""Secrets from the OS keyring, for the server's environment.

A profile names a secret by reference (`[server] secrets = { API_TOKEN =
"keyring:SERVICE/USER" }`); the value lives in the OS keyring (the Secret Service on
Linux) and goes only into the child's environment at launch. It is never written to the
audit log, an error message, `doctor` or `check`, and text mcpwrap relays from the server
to a terminal (its stderr, dropped garbage) has it masked.

There is no fallback: where no real keyring backend exists, every command that needs one
stops and says how to get one. `keyring` is imported only when a secret is needed: it
costs tens of milliseconds, which a run without secrets does not pay.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

from mcpwrap.basics.errors import MCPWrapError

_REF = re.compile(r"keyring:([^/]+)/(.+)")
# Backends that store nothing, or store in plain text: refused, never used quietly.
_REFUSED = ("keyring.backends.fail", "keyring.backends.null", "keyrings.alt")
_WAYS_OUT = (
    "start a Secret Service (a desktop session has one; on a headless machine run "
    "gnome-keyring-daemon --unlock --components=secrets inside a D-Bus session, or use "
    "KeePassXC's Secret Service), check that DBUS_SESSION_BUS_ADDRESS reaches it, or "
    "pass the value from the client's environment with [server] passthrough instead"
)


class SecretError(MCPWrapError):
    """A secret that cannot be read or stored (the message never holds a value)."""


def parse_ref(ref: str) -> tuple[str, str]:
    """("SERVICE", "USER") of "keyring:SERVICE/USER"."""
    match = _REF.fullmatch(ref)
    if match is None:
        raise SecretError(f"{ref!r} is not a keyring reference: write keyring:SERVICE/USER")
    return match.group(1), match.group(2)


def _backend() -> Any:
    try:
        import keyring
    except ImportError as exc:  # a broken install: keyring is a dependency
        raise SecretError(f"the keyring package cannot be imported ({exc})") from exc
    chosen = keyring.get_keyring()
    backends = getattr(chosen, "backends", None) or [chosen]  # a chainer holds several
    usable = [b for b in backends if not type(b).__module__.startswith(_REFUSED)]
    if not usable:
        names = ", ".join(f"{type(b).__module__}.{type(b).__name__}" for b in backends)
        raise SecretError(f"no usable keyring backend (found: {names}): {_WAYS_OUT}")
    return chosen


def read(secrets: Mapping[str, str], source: str) -> dict[str, str]:
    """The value of each NAME = "keyring:SERVICE/USER", for the child's environment."""
    if not secrets:
        return {}
    backend = _backend()
    return {
        name: _get(backend, ref, f"{source}: [server] secrets.{name}")
        for name, ref in sorted(secrets.items())
    }


def read_one(ref: str, where: str) -> str:
    """The value of one "keyring:SERVICE/USER"; `where` names the setting in errors."""
    return _get(_backend(), ref, where)


def find(ref: str, where: str) -> str | None:
    """The value of one "keyring:SERVICE/USER", or None if the keyring does not have it."""
    service, user = parse_ref(ref)
    try:
        value = _backend().get_password(service, user)
    except SecretError:
        raise
    except Exception as exc:  # any backend failure: its type and text, never a value
        raise SecretError(
            f"{where}: the keyring could not be read ({type(exc).__name__}: {exc}); {_WAYS_OUT}"
        ) from exc
    return None if value is None else str(value)


def _get(backend: Any, ref: str, where: str) -> str:
    service, user = parse_ref(ref)
    try:
        value = backend.get_password(service, user)
    except Exception as exc:  # any backend failure: its type and text, never a value
        raise SecretError(
            f"{where}: the keyring could not be read ({type(exc).__name__}: {exc}); {_WAYS_OUT}"
        ) from exc
    if value is None:
        raise SecretError(
            f"{where}: {ref} is not in the keyring; store it "
            f"with `mcpwrap secret set {ref}` (the value is read from stdin)"
        )
    return str(value)


def store(ref: str, value: str, state_dir: str) -> None:
    service, user = parse_ref(ref)
    if not value:
        raise SecretError(f"{ref}: the value is empty; nothing stored")
    try:
        _backend().set_password(service, user, value)
    except SecretError:
        raise
    except Exception as exc:
        raise SecretError(f"{ref}: the keyring refused it ({type(exc).__name__}: {exc})") from exc
    _index(state_dir, add=ref)


def delete(ref: str, state_dir: str) -> bool:
    """Remove the secret; False if the keyring did not have it."""
    service, user = parse_ref(ref)
    backend = _backend()
    try:
        import keyring.errors

        backend.delete_password(service, user)
        found = True
    except keyring.errors.PasswordDeleteError:
        found = False
    _index(state_dir, remove=ref)
    return found


def listing(state_dir: str) -> list[tuple[str, bool]]:
    """(reference, still in the keyring) for each secret `mcpwrap secret set` stored: the
    Secret Service API cannot list by application, so mcpwrap keeps the names (never the
    values) in its state dir."""
    refs = _index(state_dir)
    if not refs:
        return []
    backend = _backend()
    return [(ref, backend.get_password(*parse_ref(ref)) is not None) for ref in refs]


def _index(state_dir: str, *, add: str | None = None, remove: str | None = None) -> list[str]:
    path = os.path.join(state_dir, "secrets.json")
    try:
        with open(path, encoding="utf-8") as f:
            loaded = json.load(f)
        refs = [r for r in loaded if isinstance(r, str)] if isinstance(loaded, list) else []
    except (OSError, ValueError):
        refs = []
    if add is None and remove is None:
        return refs
    refs = sorted({*refs, *([add] if add else [])} - {remove})
    from mcpwrap.basics import atomicfile

    atomicfile.write(path, json.dumps(refs), mode=0o600)
    return refs


class Redactor:
    """Masks secret values in text mcpwrap shows (the server's stderr, garbage it drops)."""

    def __init__(self, values: Mapping[str, str]) -> None:
        # Longest first, so a value containing another is masked whole. Very short values
        # would mask ordinary text and hide little; they are not masked.
        pairs = sorted(((v, n) for n, v in values.items() if len(v) >= 4), key=lambda p: -len(p[0]))
        self._pairs = pairs
        self._pattern = re.compile("|".join(re.escape(v) for v, _ in pairs)) if pairs else None
        self._names = dict(pairs)

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: f"[secret {self._names[m.group(0)]}]", text)
