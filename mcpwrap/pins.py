"""The lock file: what a server was when the user approved it.

`.mcpwrap/NAME.lock` sits beside the profile and is meant to be committed. It holds the
server command and what it resolved to (for `npx`/`uvx`, the exact package version that
`mcpwrap lock` fetched), hashes of every artifact that runs (see artifacts.py), and a pin
for the server's instructions and for each tool definition: a SHA-256 of its canonical
JSON, with the definition itself so that a change can be shown as a diff.

Pure functions over parsed data; reading and writing the file are the only I/O here.
"""

from __future__ import annotations

import difflib
import enum
import json
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from mcpwrap import sha
from mcpwrap.artifacts import ArtifactError, Artifacts, from_data, to_data
from mcpwrap.errors import LockError

LOCK_VERSION = 1
_HEADER = (
    "# mcpwrap lock: what `mcpwrap run` verifies before it starts the server, and the tool\n"
    "# definitions it lets through. Commit it. Update it with `mcpwrap approve`; never by hand.\n"
)


class ToolPin(NamedTuple):
    sha256: str
    definition: str  # the definition as indented canonical JSON, for diffs


class Lock(NamedTuple):
    path: str
    command: tuple[str, ...]  # as the profile or the command line gives it
    run: tuple[str, ...]  # what is executed: for npx/uvx, the installed entry point
    launcher: str  # "npx", "uvx" or "" when the command runs as given
    package: str
    version: str
    profile_digest: str
    artifacts: Artifacts
    instructions: ToolPin | None
    tools: Mapping[str, ToolPin]


class Drift(enum.Enum):
    SAME = "same"
    NEW = "new"  # a tool the lock does not name
    CHANGED = "changed"  # a tool whose definition differs from its pin


# --- hashing ---------------------------------------------------------------------------------


def canonical(value: object) -> bytes:
    """Canonical JSON: sorted keys, no spaces, UTF-8 (the same value always hashes alike)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(value: object) -> str:
    return "sha256:" + sha.hexdigest(canonical(value))


def pin_of(value: object) -> ToolPin:
    """The pin of a tool definition (the whole object, every field the client sees) or of
    the instructions text."""
    shown = json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False)
    return ToolPin(digest(value), shown)


def pin_text(text: str) -> ToolPin:
    """The pin of the server's instructions."""
    return ToolPin(digest(text), text)


def judge(pins: Mapping[str, ToolPin], tool: Mapping[str, Any]) -> Drift:
    """How a tool the server lists compares with the lock."""
    pin = pins.get(str(tool.get("name")))
    if pin is None:
        return Drift.NEW
    return Drift.SAME if digest(tool) == pin.sha256 else Drift.CHANGED


def diff(old: ToolPin | None, new: ToolPin | None, name: str) -> str:
    """A unified diff of two pinned definitions, for a person."""
    a = old.definition.splitlines(keepends=True) if old else []
    b = new.definition.splitlines(keepends=True) if new else []
    lines = difflib.unified_diff(a, b, f"{name} (locked)", f"{name} (now)", n=3)
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


# --- reading -----------------------------------------------------------------------------------


def load(path: str) -> Lock | None:
    """The lock at `path`, or None if there is none."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LockError(f"{path}: cannot read the lock: {exc.strerror}") from exc
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise LockError(f"{path}: not a valid TOML lock file: {exc}") from exc
    return parse(doc, path)


def parse(doc: Mapping[str, Any], path: str) -> Lock:
    _keys(
        doc,
        path,
        "",
        {"version", "profile_digest", "server", "artifacts"},
        {
            "instructions",
            "tools",
        },
    )
    if doc["version"] != LOCK_VERSION:
        raise LockError(
            f"{path}: version: this mcpwrap reads lock version {LOCK_VERSION}, the file says "
            f"{doc['version']!r}; run `mcpwrap lock` to write it again"
        )
    server = _table(doc, "server", path)
    _keys(server, path, "server.", {"command", "run", "launcher", "package", "version"}, set())
    try:
        artifacts = from_data(doc["artifacts"], source=path)
    except ArtifactError as exc:
        raise LockError(str(exc)) from exc
    tools = _table(doc, "tools", path) if "tools" in doc else {}
    return Lock(
        path=path,
        command=_words(server, "command", path),
        run=_words(server, "run", path),
        launcher=_text(server, "launcher", path, "server."),
        package=_text(server, "package", path, "server."),
        version=_text(server, "version", path, "server."),
        profile_digest=_text(doc, "profile_digest", path),
        artifacts=artifacts,
        instructions=(
            _pin(_table(doc, "instructions", path), "instructions", path, text=True)
            if "instructions" in doc
            else None
        ),
        tools={
            name: _pin(_table(tools, name, path, "tools."), f"tools.{name}", path) for name in tools
        },
    )


def _keys(
    table: Mapping[str, Any], path: str, where: str, required: set[str], optional: set[str]
) -> None:
    for key in sorted(required - table.keys()):
        raise LockError(f"{path}: {where}{key}: missing; run `mcpwrap lock` to write it again")
    for key in sorted(table.keys() - required - optional):
        raise LockError(f"{path}: {where}{key}: unknown key (was the lock edited by hand?)")


def _table(doc: Mapping[str, Any], key: str, path: str, where: str = "") -> Mapping[str, Any]:
    value = doc.get(key)
    if not isinstance(value, dict):
        raise LockError(f"{path}: {where}{key}: expected a table, got {type(value).__name__}")
    return value


def _text(table: Mapping[str, Any], key: str, path: str, where: str = "") -> str:
    value = table.get(key)
    if not isinstance(value, str):
        raise LockError(f"{path}: {where}{key}: expected a string, got {type(value).__name__}")
    return value


def _words(table: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
    value = table.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(w, str) for w in value):
        raise LockError(f"{path}: server.{key}: expected a non-empty array of strings")
    return tuple(value)


def _pin(table: Mapping[str, Any], where: str, path: str, *, text: bool = False) -> ToolPin:
    field = "text" if text else "definition"
    _keys(table, path, where + ".", {"sha256", field}, set())
    shown = _text(table, field, path, where + ".")
    pin = ToolPin(_text(table, "sha256", path, where + "."), shown)
    try:
        value = shown if text else json.loads(shown)
    except ValueError as exc:
        raise LockError(f"{path}: {where}.definition: not JSON ({exc})") from exc
    if digest(value) != pin.sha256:
        raise LockError(
            f"{path}: {where}: the {field} does not match its sha256 (was the lock edited by "
            "hand?); run `mcpwrap approve` to pin what the server offers now"
        )
    return pin


# --- writing -----------------------------------------------------------------------------------


def build(
    *,
    path: str,
    command: Sequence[str],
    run: Sequence[str],
    launcher: str,
    package: str,
    version: str,
    profile_digest: str,
    artifacts: Artifacts,
    instructions: str | None,
    tools: Sequence[Mapping[str, Any]],
) -> Lock:
    return Lock(
        path=path,
        command=tuple(command),
        run=tuple(run),
        launcher=launcher,
        package=package,
        version=version,
        profile_digest=profile_digest,
        artifacts=artifacts,
        instructions=pin_text(instructions) if instructions else None,
        tools={str(t.get("name")): pin_of(dict(t)) for t in tools},
    )


def dumps(lock: Lock) -> str:
    import tomli_w

    doc: dict[str, Any] = {
        "version": LOCK_VERSION,
        "profile_digest": lock.profile_digest,
        "server": {
            "command": list(lock.command),
            "run": list(lock.run),
            "launcher": lock.launcher,
            "package": lock.package,
            "version": lock.version,
        },
        "artifacts": to_data(lock.artifacts),
    }
    if lock.instructions is not None:
        doc["instructions"] = {
            "sha256": lock.instructions.sha256,
            "text": lock.instructions.definition,
        }
    doc["tools"] = {
        name: {"sha256": pin.sha256, "definition": pin.definition}
        for name, pin in sorted(lock.tools.items())
    }
    return _HEADER + tomli_w.dumps(doc, multiline_strings=True)


def save(lock: Lock) -> None:
    """Write atomically: a reader sees the old lock or the new one, never half of one."""
    from mcpwrap import atomicfile

    try:
        atomicfile.write(lock.path, dumps(lock))
    except OSError as exc:
        raise LockError(
            f"{lock.path}: cannot write the lock ({exc.strerror}); check the directory's "
            "permissions"
        ) from exc
