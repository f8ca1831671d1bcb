"""Has the profile changed since its last run, and did it widen what the server may do?

The text of the profile each run used is kept in the state dir (which no jail can write).
A run whose profile hashes differently from the last one's gets an audit record with the
capabilities that widened and narrowed, so that a quiet edit to a committed profile (a
new egress host, a write grant, a tool's class) shows up in the log, not just in git.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from mcpwrap.basics import sha
from mcpwrap.basics.errors import MCPWrapError
from mcpwrap.config.profile import Placeholders, Profile, parse_profile


def change(profile: Profile, state_dir: str) -> dict[str, Any] | None:
    """The record's fields if the profile changed since its last run, else None. Keeps
    this run's text for the next one."""
    if profile.source.startswith("<"):
        return None  # built-in: it changes with mcpwrap itself
    try:
        with open(profile.source, "rb") as f:
            text = f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None  # it loaded a moment ago; nothing to compare against
    kept = os.path.join(state_dir, "profiles", sha.hexdigest(profile.source.encode())[:32])
    old = _read(kept)
    if old != text:
        _write(kept, text)
    if old is None or old == text:
        return None
    return {
        "decision": "changed",
        "rule": "profile.changed",
        "profile": profile.source,
        "previous_digest": "sha256:" + sha.hexdigest(old.encode("utf-8")),
        "profile_digest": profile.digest,
        **_compare(old, profile, state_dir),
    }


def _compare(old_text: str, new: Profile, state_dir: str) -> dict[str, Any]:
    from mcpwrap.policy.profilediff import narrowed, widened

    places = Placeholders(
        project=new.project,
        home=os.path.expanduser("~"),
        cwd=os.getcwd(),
        state=os.path.abspath(state_dir),
    )
    try:
        old = parse_profile(old_text, source=new.source + " (last run)", places=places)
    except MCPWrapError as exc:
        return {"widened": [f"the last run's profile no longer loads: {exc}"], "narrowed": []}
    return {"widened": widened(old, new), "narrowed": narrowed(old, new)}


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def _write(path: str, text: str) -> None:
    """Atomically; a state dir that cannot be written costs the next comparison only.
    Imported here: most runs have nothing to write, and atomicfile's tempfile (with shutil
    and random) costs ~3 ms of a start."""
    from mcpwrap.basics import atomicfile

    with contextlib.suppress(OSError):
        atomicfile.write(path, text, mode=0o600)
