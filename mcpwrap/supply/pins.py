"""The lock file: what a server was when the user approved it.

`.mcpwrap/NAME.lock` sits beside the profile and is meant to be committed: it names no
directory of the machine that wrote it (portable.py), so it means the same in every
clone. It holds the server command (path arguments relative to {project}); for `npx` and
`uvx`, what the command resolved to (`[install]`: the package and every dependency at its
exact version, with the wheel's SHA-256 or npm's lock file and its integrity hashes, and
the runtime it needs); the hashes of every artifact that runs inside the project or the
install (see artifacts.py); and a pin for the server's instructions and for each tool
definition: a SHA-256 of its canonical JSON, with the definition itself so that a change
can be shown as a diff.

A remote server's lock (`mcpwrap lock -- https://HOST/PATH`) has no [server] table, no
install and no artifacts: a `[remote]` table names the URL and the SPKI pins of the server's
key as `lock` saw it (`spki`, empty for plain http to loopback), and the instructions and
tools are pinned as for a local server. It stays lock version 2: a local lock reads and
writes exactly as before.

Pure functions over parsed data; reading and writing the file are the only I/O here.
"""

from __future__ import annotations

import difflib
import enum
import json
import os
import shlex
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from mcpwrap.basics import sha
from mcpwrap.basics.errors import LockError
from mcpwrap.supply.artifacts import ArtifactError, Artifacts, from_data, to_data
from mcpwrap.supply.store import Install, Wheel

LOCK_VERSION = 2
_HEADER = (
    "# mcpwrap lock: what `mcpwrap run` verifies before it starts the server, and the tool\n"
    "# definitions it lets through. Commit it; on another machine `mcpwrap sync` installs\n"
    "# and verifies what it pins. Update it with `mcpwrap approve`; never by hand.\n"
)


class ToolPin(NamedTuple):
    sha256: str
    definition: str  # the definition as indented canonical JSON, for diffs


class RemoteLock(NamedTuple):
    """[remote]: the server's URL and the pins of its key (tlsclient.spki_pin)."""

    url: str
    spki: tuple[str, ...]


REMOTE_LAUNCHER = "url"  # Lock.launcher of a remote server's lock (not written to the file)


class Lock(NamedTuple):
    path: str
    command: tuple[str, ...]  # normalised: path arguments relative to {project} (portable.py)
    launcher: str  # "npx", "uvx" or "" when the command runs as given
    package: str
    version: str
    profile_digest: str
    install: Install | None  # npx/uvx: what the store must hold
    artifacts: Artifacts  # inside {project} or {install} only
    instructions: ToolPin | None
    tools: Mapping[str, ToolPin]
    sha256: str = ""  # hex digest of the file's bytes, as read or written
    # A remote server's lock: then command is (url,), launcher REMOTE_LAUNCHER, package,
    # version empty, install None and artifacts empty.
    remote: RemoteLock | None = None


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


def load(path: str, profile_arg: str | None = None) -> Lock | None:
    """The lock at `path`, or None if there is none. `profile_arg` (what --profile takes)
    goes into the message that tells how to write an old lock again."""
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
    return parse(doc, path, profile_arg)._replace(sha256=sha.hexdigest(data))


class OldLockError(LockError):
    """A lock written by an older mcpwrap: it must be written again."""


def parse(doc: Mapping[str, Any], path: str, profile_arg: str | None = None) -> Lock:
    _check_version(doc, path, profile_arg)
    if "remote" in doc:
        return _parse_remote(doc, path)
    _keys(
        doc,
        path,
        "",
        {"version", "profile_digest", "server", "artifacts"},
        {"install", "instructions", "tools"},
    )
    server = _table(doc, "server", path)
    _keys(server, path, "server.", {"command", "launcher", "package", "version"}, set())
    try:
        artifacts = from_data(doc["artifacts"], source=path, symbolic=True)
    except ArtifactError as exc:
        raise LockError(str(exc)) from exc
    return Lock(
        path=path,
        command=_words(server, "command", path),
        launcher=_text(server, "launcher", path, "server."),
        package=_text(server, "package", path, "server."),
        version=_text(server, "version", path, "server."),
        profile_digest=_text(doc, "profile_digest", path),
        install=_install(_table(doc, "install", path), path) if "install" in doc else None,
        artifacts=artifacts,
        instructions=_instructions(doc, path),
        tools=_tool_pins(doc, path),
    )


def _parse_remote(doc: Mapping[str, Any], path: str) -> Lock:
    """A remote server's lock: [remote] instead of [server], [install] and [artifacts]."""
    _keys(doc, path, "", {"version", "profile_digest", "remote"}, {"instructions", "tools"})
    table = _table(doc, "remote", path)
    _keys(table, path, "remote.", {"url", "spki"}, set())
    url = _text(table, "url", path, "remote.")
    if not url.lower().startswith(("https://", "http://")):
        raise LockError(f"{path}: remote.url: expected an https:// URL, got {url!r}")
    spki = table.get("spki")
    if not isinstance(spki, list) or not all(isinstance(p, str) for p in spki):
        raise LockError(f'{path}: remote.spki: expected an array of pins "sha256/..."')
    from mcpwrap.config.remote import pin_problem

    for pin in spki:
        if (problem := pin_problem(pin)) is not None:
            raise LockError(f"{path}: remote.spki: {pin!r}: {problem}")
    return Lock(
        path=path,
        command=(url,),
        launcher=REMOTE_LAUNCHER,
        package="",
        version="",
        profile_digest=_text(doc, "profile_digest", path),
        install=None,
        artifacts=Artifacts((), ()),
        instructions=_instructions(doc, path),
        tools=_tool_pins(doc, path),
        remote=RemoteLock(url, tuple(spki)),
    )


def _instructions(doc: Mapping[str, Any], path: str) -> ToolPin | None:
    if "instructions" not in doc:
        return None
    return _pin(_table(doc, "instructions", path), "instructions", path, text=True)


def _tool_pins(doc: Mapping[str, Any], path: str) -> dict[str, ToolPin]:
    """[tools.NAME]: the pin of each tool definition (local and remote locks alike)."""
    tools = _table(doc, "tools", path) if "tools" in doc else {}
    return {
        name: _pin(_table(tools, name, path, "tools."), f"tools.{name}", path) for name in tools
    }


def _check_version(doc: Mapping[str, Any], path: str, profile_arg: str | None) -> None:
    version = doc.get("version")
    if version == LOCK_VERSION:
        return
    if version == 1:
        server = doc.get("server")
        words = server.get("command") if isinstance(server, dict) else None
        command = (
            " -- " + shlex.join(words)
            if isinstance(words, list) and all(isinstance(w, str) for w in words)
            else ""
        )
        name = profile_arg or os.path.splitext(os.path.basename(path))[0]
        raise OldLockError(
            f"{path} is a version 1 lock: it holds this machine's paths (the store, the "
            f"interpreter), so it works nowhere else, and this mcpwrap reads version "
            f"{LOCK_VERSION} only. Write it again with `mcpwrap lock --profile {name}"
            f"{command}` and commit the new {os.path.basename(path)}"
        )
    raise LockError(
        f"{path}: version: this mcpwrap reads lock version {LOCK_VERSION}, the file says "
        f"{version!r}; a newer mcpwrap wrote it? Upgrade mcpwrap, or write the lock again "
        "with `mcpwrap lock`"
    )


def _install(table: Mapping[str, Any], path: str) -> Install:
    where = "install."
    _keys(
        table,
        path,
        where,
        {"kind", "package", "version", "runtime", "platform", "entry"},
        {"wheels", "lockfile"},
    )
    kind = _text(table, "kind", path, where)
    if kind not in ("uv", "npm"):
        raise LockError(f"{path}: install.kind: expected uv or npm, got {kind!r}")
    wheels = table.get("wheels", [])
    if not isinstance(wheels, list):
        raise LockError(f"{path}: install.wheels: expected an array of tables")
    entry = _text(table, "entry", path, where)
    if not entry or entry.startswith("/") or ".." in entry.split("/"):
        raise LockError(f"{path}: install.entry: expected a path inside the install")
    return Install(
        kind=kind,
        package=_text(table, "package", path, where),
        version=_text(table, "version", path, where),
        runtime=_text(table, "runtime", path, where),
        platform=_text(table, "platform", path, where),
        entry=entry,
        wheels=tuple(_wheel(w, path, f"install.wheels[{i}]") for i, w in enumerate(wheels)),
        lockfile=_text(table, "lockfile", path, where) if "lockfile" in table else "",
    )


def _wheel(table: object, path: str, where: str) -> Wheel:
    if not isinstance(table, dict):
        raise LockError(f"{path}: {where}: expected a table")
    _keys(table, path, where + ".", {"name", "version", "file", "sha256"}, set())
    wheel = Wheel(*(_text(table, k, path, where + ".") for k in Wheel._fields))
    if len(wheel.sha256) != 64 or not all(c in "0123456789abcdef" for c in wheel.sha256):
        raise LockError(f"{path}: {where}.sha256: expected 64 lowercase hex digits")
    return wheel


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
    launcher: str,
    package: str,
    version: str,
    profile_digest: str,
    install: Install | None,
    artifacts: Artifacts,
    instructions: str | None,
    tools: Sequence[Mapping[str, Any]],
    remote: RemoteLock | None = None,
) -> Lock:
    return Lock(
        path=path,
        command=tuple(command),
        launcher=launcher,
        package=package,
        version=version,
        profile_digest=profile_digest,
        install=install,
        artifacts=artifacts,
        instructions=pin_text(instructions) if instructions else None,
        tools={str(t.get("name")): pin_of(dict(t)) for t in tools},
        remote=remote,
    )


def build_remote(
    *,
    path: str,
    url: str,
    spki: Sequence[str],
    profile_digest: str,
    instructions: str | None,
    tools: Sequence[Mapping[str, Any]],
) -> Lock:
    """A remote server's lock (see the module's doc)."""
    return build(
        path=path,
        command=(url,),
        launcher=REMOTE_LAUNCHER,
        package="",
        version="",
        profile_digest=profile_digest,
        install=None,
        artifacts=Artifacts((), ()),
        instructions=instructions,
        tools=tools,
        remote=RemoteLock(url, tuple(spki)),
    )


def dumps(lock: Lock) -> str:
    import tomli_w

    doc: dict[str, Any] = {"version": LOCK_VERSION, "profile_digest": lock.profile_digest}
    if lock.remote is not None:
        doc["remote"] = {"url": lock.remote.url, "spki": list(lock.remote.spki)}
    else:
        doc["server"] = {
            "command": list(lock.command),
            "launcher": lock.launcher,
            "package": lock.package,
            "version": lock.version,
        }
        if lock.install is not None:
            doc["install"] = _install_data(lock.install)
        doc["artifacts"] = to_data(lock.artifacts)
    if lock.instructions is not None:
        doc["instructions"] = {
            "sha256": lock.instructions.sha256,
            "text": lock.instructions.definition,
        }
    doc["tools"] = {
        name: {"sha256": pin.sha256, "definition": pin.definition}
        for name, pin in sorted(lock.tools.items())
    }
    text = tomli_w.dumps(doc, multiline_strings=True)
    lockfile = lock.install.lockfile if lock.install else ""
    if lockfile and "'''" not in lockfile:
        # A literal string: npm's JSON without a backslash before every quote, and
        # tomllib reads it at once (`run` parses the whole lock on every start).
        shown = tomli_w.dumps({"lockfile": lockfile}, multiline_strings=True)
        text = text.replace(shown, f"lockfile = '''\n{lockfile}'''\n", 1)
    return _HEADER + text


def _install_data(install: Install) -> dict[str, Any]:
    data: dict[str, Any] = {
        key: getattr(install, key)
        for key in ("kind", "package", "version", "runtime", "platform", "entry")
    }
    if install.wheels:
        data["wheels"] = [w._asdict() for w in install.wheels]
    if install.lockfile:
        data["lockfile"] = install.lockfile
    return data


def save(lock: Lock) -> Lock:
    """Write atomically: a reader sees the old lock or the new one, never half of one.
    The lock as written (with the digest of its bytes)."""
    from mcpwrap.basics import atomicfile

    text = dumps(lock)
    try:
        atomicfile.write(lock.path, text)
    except OSError as exc:
        raise LockError(
            f"{lock.path}: cannot write the lock ({exc.strerror}); check the directory's "
            "permissions"
        ) from exc
    return lock._replace(sha256=sha.hexdigest(text.encode("utf-8")))
