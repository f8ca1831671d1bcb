"""MCP client config files: find them, read them as JSONC, and wrap or unwrap their stdio
server entries by editing the text in place.

`mcpwrap wrap` must not reformat a file a person (or an editor) wrote: comments, trailing
commas, key order and indentation all stay. So the file is never parsed and serialised
again. A small JSONC parser records the source span of every value, and only the spans of
an entry's "command" and "args" values change (plus, on request, the env members holding
secrets). `unwrap` puts the recorded original text of those two spans back, so a wrap and
an unwrap leave the file byte for byte as it was.

The records live in mcpwrap's state dir (`wrapped.json`, keyed by config file and entry);
a copy of the whole original file is written once beside it (`<file>.mcpwrap-backup`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

from mcpwrap.basics.errors import MCPWrapError

CLIENTS = ("claude-desktop", "claude-code", "cursor", "vscode")
BACKUP_SUFFIX = ".mcpwrap-backup"
RECORDS = "wrapped.json"


class ConfigError(MCPWrapError):
    """A client config that cannot be found, read, parsed or written."""


# ------------------------------------------------------------------ the JSONC parser


@dataclass
class Node:
    """A value and its source span: text[start:end] is exactly its source text."""

    start: int
    end: int


@dataclass
class Scalar(Node):
    value: str | int | float | bool | None


@dataclass
class Array(Node):
    items: list[Node]


@dataclass
class Member:
    key: str
    key_start: int
    value: Node


@dataclass
class Object(Node):
    members: list[Member]

    def member(self, key: str) -> Member | None:
        """The last member named `key`: what JSON.parse (and so every client) keeps."""
        found = None
        for member in self.members:
            if member.key == key:
                found = member
        return found

    def get(self, key: str) -> Node | None:
        member = self.member(key)
        return None if member is None else member.value


# Whitespace and comments, in one C-speed step: ~/.claude.json can be megabytes.
_SKIP = re.compile(r"(?:[ \t\r\n]+|//[^\n]*|/\*.*?\*/)*", re.DOTALL)
_STRING = re.compile(r'"[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*"')
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?(?![0-9A-Za-z_.])")
_LITERAL = re.compile(r"(true|false|null)(?![0-9A-Za-z_])")
_LITERALS: dict[str, bool | None] = {"true": True, "false": False, "null": None}
# Each level costs two Python frames; this stays well inside the recursion limit.
_MAX_DEPTH = 200


def parse(text: str, source: str) -> Node:
    """The JSONC document in `text` (JSON plus // and /* */ comments and trailing commas,
    as VS Code and Cursor read it). Raises ConfigError naming source:line:column."""
    return _Parser(text, source).document()


def position(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of a character offset."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.pos = 1 if text.startswith("\ufeff") else 0  # a BOM is not a value

    def document(self) -> Node:
        node = self.value(0)
        self.skip()
        if self.pos < len(self.text):
            self.fail(f"unexpected {self.found()} after the end of the top-level value")
        return node

    def fail(self, message: str, at: int | None = None) -> NoReturn:
        line, column = position(self.text, self.pos if at is None else at)
        raise ConfigError(
            f"{self.source}:{line}:{column}: {message}; the file is not valid JSON (with "
            "comments and trailing commas): fix it there and run again"
        )

    def found(self) -> str:
        if self.pos >= len(self.text):
            return "end of file"
        return json.dumps(self.text[self.pos])

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def skip(self) -> None:
        match = _SKIP.match(self.text, self.pos)
        self.pos = match.end() if match else self.pos
        if self.text.startswith("/*", self.pos):
            self.fail("a /* comment is never closed")

    def value(self, depth: int) -> Node:
        self.skip()
        if depth > _MAX_DEPTH:
            self.fail(f"values nested more than {_MAX_DEPTH} deep")
        char = self.peek()
        if char == "{":
            return self.object(depth)
        if char == "[":
            return self.array(depth)
        start = self.pos
        if char == '"':
            text = self.string()
            return Scalar(start, self.pos, text)
        for pattern in (_NUMBER, _LITERAL):
            match = pattern.match(self.text, start)
            if match:
                self.pos = match.end()
                token = match.group()
                scalar = _LITERALS[token] if pattern is _LITERAL else json.loads(token)
                return Scalar(start, self.pos, scalar)
        self.fail(f"expected a value, found {self.found()}")

    def string(self) -> str:
        match = _STRING.match(self.text, self.pos)
        if match is None:
            self.string_error()
        token = match.group()
        self.pos = match.end()
        return token[1:-1] if "\\" not in token else str(json.loads(token))

    def string_error(self) -> NoReturn:
        """Where and why a string does not scan (the fast pattern only says that)."""
        start, i = self.pos, self.pos + 1
        while i < len(self.text):
            char = self.text[i]
            if char == "\\":
                if not re.match(r'\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})', self.text[i : i + 6]):
                    self.fail("invalid escape in a string", i)
                i += 2
            elif char < " ":
                self.fail("a raw control character (a line break?) inside a string", i)
            else:
                i += 1
        self.fail("a string is never closed", start)

    def object(self, depth: int) -> Object:
        start = self.pos
        self.pos += 1
        members: list[Member] = []
        while True:
            self.skip()
            if self.peek() == "}":
                self.pos += 1
                return Object(start, self.pos, members)
            if self.peek() != '"':
                self.fail(f'expected a "quoted" key or "}}", found {self.found()}')
            key_start = self.pos
            key = self.string()
            self.skip()
            if self.peek() != ":":
                self.fail(f'expected ":" after the key, found {self.found()}')
            self.pos += 1
            members.append(Member(key, key_start, self.value(depth + 1)))
            self.after_item("}")

    def array(self, depth: int) -> Array:
        start = self.pos
        self.pos += 1
        items: list[Node] = []
        while True:
            self.skip()
            if self.peek() == "]":
                self.pos += 1
                return Array(start, self.pos, items)
            items.append(self.value(depth + 1))
            self.after_item("]")

    def after_item(self, close: str) -> None:
        """A comma, or the closing bracket (left for the caller's loop to take)."""
        self.skip()
        if self.peek() == ",":
            self.pos += 1
        elif self.peek() != close:
            self.fail(f'expected "," or "{close}", found {self.found()}')


def plain(node: Node) -> object:
    """The Python value of a node (what json.loads would give)."""
    if isinstance(node, Object):
        return {m.key: plain(m.value) for m in node.members}
    if isinstance(node, Array):
        return [plain(item) for item in node.items]
    assert isinstance(node, Scalar)
    return node.value


def _string(node: Node | None) -> str | None:
    if isinstance(node, Scalar) and isinstance(node.value, str):
        return node.value
    return None


# ------------------------------------------------------------------ where clients keep it


def servers_key(client: str) -> str:
    """VS Code names the servers object "servers"; the others "mcpServers"."""
    return "servers" if client == "vscode" else "mcpServers"


def candidates(client: str, project_dir: str) -> list[str]:
    """The files a client reads its servers from, the project's first."""
    home = os.path.expanduser("~")
    if client == "claude-desktop":
        return [os.path.join(_app_config_dir(home), "Claude", "claude_desktop_config.json")]
    if client == "claude-code":
        return [os.path.join(project_dir, ".mcp.json"), os.path.join(home, ".claude.json")]
    if client == "cursor":
        return [
            os.path.join(project_dir, ".cursor", "mcp.json"),
            os.path.join(home, ".cursor", "mcp.json"),
        ]
    if client == "vscode":
        return [
            os.path.join(project_dir, ".vscode", "mcp.json"),
            os.path.join(_app_config_dir(home), "Code", "User", "mcp.json"),
        ]
    raise ConfigError(f"unknown client {client!r}: use one of {', '.join(CLIENTS)}")


def _app_config_dir(home: str) -> str:
    """Where Electron apps (Claude Desktop, VS Code) keep their per-user files."""
    if sys.platform == "darwin":
        return os.path.join(home, "Library", "Application Support")
    if sys.platform == "win32":
        return os.environ.get("APPDATA") or os.path.join(home, "AppData", "Roaming")
    base = os.environ.get("XDG_CONFIG_HOME", "")
    return base if os.path.isabs(base) else os.path.join(home, ".config")


def find_config(client: str, config: str | None, project_dir: str) -> str:
    if config is not None:
        path = os.path.abspath(config)
        if not os.path.isfile(path):
            raise ConfigError(f"--config {config}: no such file")
        return path
    places = candidates(client, project_dir)
    for place in places:
        if os.path.isfile(place):
            return place
    looked = "".join(f"\n  {p}" for p in places)
    raise ConfigError(
        f"no {client} MCP config found; looked in:{looked}\nadd a server in the client "
        "first, or name the file with --config PATH"
    )


# ------------------------------------------------------------------ the file's entries


@dataclass(frozen=True)
class Entry:
    """One server entry: the keys leading to its servers object, and its name."""

    scope: tuple[str, ...]
    name: str

    @property
    def pointer(self) -> str:
        """A JSON Pointer (RFC 6901): the key of its record."""
        keys = (*self.scope, self.name)
        return "".join("/" + k.replace("~", "~0").replace("/", "~1") for k in keys)

    @property
    def label(self) -> str:
        if self.scope[0] == "projects":
            return f"server {self.name} (project {self.scope[1]})"
        return f"server {self.name}"


def walk(root: Node, keys: tuple[str, ...]) -> Node | None:
    node: Node | None = root
    for key in keys:
        node = node.get(key) if isinstance(node, Object) else None
    return node


def entries(client: str, root: Node, project_dir: str, source: str) -> list[Entry]:
    """Every server entry the client would read from this file, for this project."""
    key = servers_key(client)
    scopes: list[tuple[str, ...]] = [(key,)]
    projects = walk(root, ("projects",))
    if client == "claude-code" and isinstance(projects, Object):
        # ~/.claude.json keeps each project's "local" servers under its absolute path.
        for path in dict.fromkeys((os.path.abspath(project_dir), os.path.realpath(project_dir))):
            if isinstance(projects.get(path), Object):
                scopes.append(("projects", path, key))
                break
    found = [s for s in scopes if isinstance(walk(root, s), Object)]
    if not found:
        raise ConfigError(
            f'{source}: no "{key}" object, so no servers to wrap: is it a {client} config? '
            "(name another file with --config PATH)"
        )
    result = []
    for scope in found:
        servers = walk(root, scope)
        assert isinstance(servers, Object)
        names = dict.fromkeys(m.key for m in servers.members)  # a duplicate key: the last
        result += [Entry(scope, name) for name in names]
    return result


def not_stdio(node: Object) -> str | None:
    """Why an entry is not a stdio server (so it is left alone), or None."""
    for key in ("url", "serverUrl"):
        if node.member(key) is not None:
            return f'it has a "{key}"'
    kind = node.get("type")
    if isinstance(kind, Scalar) and kind.value not in (None, "stdio"):
        return f'"type" is {json.dumps(kind.value)}'
    if not _string(node.get("command")):
        return 'it has no "command" string'
    return None


def is_url_entry(node: Object) -> bool:
    """An entry the client connects to itself (a "url", no "command"): a remote server."""
    return node.member("url") is not None and node.member("command") is None


def wrapped_url(node: Object) -> bool:
    """A wrapped entry whose server is a URL (`mcpwrap run ... -- URL`)."""
    args = node.get("args")
    if not is_wrapped(node) or not isinstance(args, Array):
        return False
    words = [_string(item) for item in args.items]
    if "--" not in words:
        return False
    after = words[words.index("--") + 1 :]
    return len(after) == 1 and (after[0] or "").lower().startswith(("https://", "http://"))


def is_wrapped(node: Object) -> bool:
    """Starts mcpwrap already: command named mcpwrap (any directory), args "run", ..."""
    command = _string(node.get("command")) or ""
    base = re.split(r"[/\\]", command)[-1].removesuffix(".exe")
    args = node.get("args")
    return (
        base == "mcpwrap"
        and isinstance(args, Array)
        and bool(args.items)
        and _string(args.items[0]) == "run"
    )


# ------------------------------------------------------------------ text edits

Edit = tuple[int, int, str]


def apply(text: str, edits: list[Edit]) -> str:
    """Replace each text[start:end]; the spans must not overlap."""
    for start, end, new in sorted(edits, key=lambda e: e[0], reverse=True):
        text = text[:start] + new + text[end:]
    return text


def _line_start(text: str, offset: int) -> int | None:
    """The start of offset's line, if only blanks precede it there."""
    start = text.rfind("\n", 0, offset) + 1
    return start if start > 0 and not text[start:offset].strip(" \t") else None


def _newline(text: str, line_start: int) -> str:
    return "\r\n" if text[line_start - 2 : line_start] == "\r\n" else "\n"


@dataclass(frozen=True)
class Wrapping:
    """How to wrap one entry: "command" becomes `command`, and `head` (run --profile P
    [--project DIR] --) goes before the original command and args. `said` ends the line
    that reports it."""

    command: str
    head: tuple[str, ...]
    profile: str
    said: str = ""
    # A remote server: the words after `head` instead of the original command and args
    # (the URL), and the entry becomes a stdio one ("url", "headers" and "type" go).
    replace: tuple[str, ...] | None = None


class NotWrapped(MCPWrapError):
    """An entry left as it was; the message says why and what to run instead."""


# How to wrap an entry, from the config file, the entry and its values (command, args,
# env, ...); raises NotWrapped to leave it alone.
Prepare = Callable[[str, Entry, dict[str, object]], Wrapping]


def wrap_edits(
    text: str, node: Object, wrapping: Wrapping
) -> tuple[list[Edit], dict[str, str | None]]:
    """The edits that make an entry start `MCPWRAP run ... -- CMD ARGS...`, and the record
    that undoes them. The original command's and args' source text is reused as is
    (escapes, comments inside the list), in the list's own layout."""
    command = node.member("command")
    assert command is not None
    cmd = command.value
    head = [json.dumps(word, ensure_ascii=False) for word in wrapping.head]
    if wrapping.replace is None:
        head.append(text[cmd.start : cmd.end])
    else:  # mcp-remote's command and args give way to the URL
        head += [json.dumps(word, ensure_ascii=False) for word in wrapping.replace]
    new_command = json.dumps(wrapping.command, ensure_ascii=False)
    record: dict[str, str | None] = {
        "profile": wrapping.profile,
        "command": text[cmd.start : cmd.end],
        "wrapped_command": new_command,
    }
    args = node.get("args")
    if args is None:
        wrapped = "[" + ", ".join(head) + "]"
        inserted = f',{_member_gap(text, command)}"args": {wrapped}'
        record |= {"args": None, "inserted": inserted, "wrapped_args": wrapped}
        return [(cmd.start, cmd.end, new_command + inserted)], record
    if not isinstance(args, Array):
        raise _Skip('its "args" is not a list')
    replaced = wrapping.replace is not None
    wrapped = _array_like(text, args, head) if replaced else _prepend(text, args, head)
    record |= {"args": text[args.start : args.end], "inserted": None, "wrapped_args": wrapped}
    return [(cmd.start, cmd.end, new_command), (args.start, args.end, wrapped)], record


def _member_gap(text: str, member: Member) -> str:
    """What goes between a comma and a new member after `member`: a line break and its
    indentation when members sit on their own lines, else a space."""
    start = _line_start(text, member.key_start)
    if start is None:
        return " "
    return _newline(text, start) + text[start : member.key_start]


def _prepend(text: str, array: Array, items: list[str]) -> str:
    """The array's text with `items` put before its first item, one a line if its items
    are one a line."""
    if not array.items:
        return "[" + ", ".join(items) + "]"
    first = array.items[0].start
    lead = text[array.start + 1 : first]
    gap = " "
    if "\n" in lead and not lead.strip():
        indent = lead.rsplit("\n", 1)[1]
        gap = ("\r\n" if lead.endswith("\r\n" + indent) else "\n") + indent
    return (
        text[array.start : first] + "".join(f"{i},{gap}" for i in items) + text[first : array.end]
    )


def unwrap_edits(text: str, node: Object, record: dict[str, str | None]) -> list[Edit] | None:
    """The edits that put the recorded command and args back, or None when the entry's
    command or args no longer mean what `wrap` wrote (the user changed them)."""
    command = node.member("command")
    args = node.member("args")
    # Records older than the absolute command have none: they wrote a bare "mcpwrap".
    written = parse(str(record.get("wrapped_command") or '"mcpwrap"'), "<wrap record>")
    if command is None or args is None or plain(command.value) != plain(written):
        return None
    # Compared by meaning, not text: Claude Code rewrites ~/.claude.json in its own layout.
    if plain(args.value) != plain(parse(str(record["wrapped_args"]), "<wrap record>")):
        return None
    original, cmd = str(record["command"]), command.value
    if record["args"] is not None:
        old_args = str(record["args"])
        return [(cmd.start, cmd.end, original), (args.value.start, args.value.end, old_args)]
    inserted = str(record["inserted"])
    if text[cmd.end : cmd.end + len(inserted)] == inserted:
        return [(cmd.start, cmd.end + len(inserted), original)]
    return [(cmd.start, cmd.end, original), remove_member(text, node, node.members.index(args))]


def remote_entry_text(entry: str, wrapping: Wrapping) -> str:
    """The text of a "url" entry (`entry`, one object's source) rewritten to start
    `MCPWRAP run ... -- URL`: "url" becomes "command" and "args", "headers" go (the profile
    holds them) and "type" becomes "stdio". Every other member stays as it was."""
    assert wrapping.replace is not None
    node = parse(entry, "<entry>")
    assert isinstance(node, Object)
    words = [json.dumps(w, ensure_ascii=False) for w in (*wrapping.head, *wrapping.replace)]
    command = json.dumps(wrapping.command, ensure_ascii=False)
    edits: list[Edit] = []
    url = node.member("url")
    assert url is not None
    gap = _member_gap(entry, url)
    members = f'"command": {command},{gap}"args": [' + ", ".join(words) + "]"
    edits.append((url.key_start, url.value.end, members))
    kind = node.member("type")
    if kind is not None:
        edits.append((kind.value.start, kind.value.end, '"stdio"'))
    for index, member in enumerate(node.members):
        if member.key == "headers":
            edits.append(remove_member(entry, node, index))
    return apply(entry, edits)


def _array_like(text: str, array: Array, items: list[str]) -> str:
    """`items` in place of the array's items, in its layout (one a line if they were)."""
    if not array.items:
        return "[" + ", ".join(items) + "]"
    first, last = array.items[0], array.items[-1]
    lead = text[array.start + 1 : first.start]
    gap = " "
    if "\n" in lead and not lead.strip():
        indent = lead.rsplit("\n", 1)[1]
        gap = ("\r\n" if lead.endswith("\r\n" + indent) else "\n") + indent
    return text[array.start : first.start] + f",{gap}".join(items) + text[last.end : array.end]


def split_edits(text: str, node: Object) -> list[Edit]:
    """Unwrap an entry wrapped by hand: the server command is what follows "--"."""
    args = node.get("args")
    command = node.get("command")
    assert isinstance(args, Array) and command is not None
    values = [_string(item) for item in args.items]
    if "--" not in values:
        raise _Skip('its args have no "--", so the server command is unknown')
    cut = values.index("--")
    if cut + 1 >= len(values) or not values[cut + 1]:
        raise _Skip('nothing follows "--" in its args')
    if wrapped_url(node):
        raise _Skip(
            'a URL follows "--", and the entry it was (a "url" entry, or one running '
            "mcp-remote) is not known"
        )
    server = args.items[cut + 1]
    rest = args.items[cut + 2 :]
    new_args = "[]"
    if rest:  # keep the list's layout: cut from its first item to the first one kept
        new_args = text[args.start : args.items[0].start] + text[rest[0].start : args.end]
    return [
        (command.start, command.end, text[server.start : server.end]),
        (args.start, args.end, new_args),
    ]


def remove_member(text: str, obj: Object, index: int) -> Edit:
    """The edit that removes obj.members[index] and one comma next to it, keeping the
    rest of the layout (and a trailing comma, where the file had one)."""
    members = obj.members
    member = members[index]
    if len(members) == 1:
        return (obj.start + 1, obj.end - 1, "")
    if index + 1 < len(members):
        after = members[index + 1]
        own, next_own = _line_start(text, member.key_start), _line_start(text, after.key_start)
        if own is not None and next_own is not None:
            return (own, next_own, "")  # whole lines: with them a trailing // comment
        return (member.key_start, after.key_start, "")
    return (members[index - 1].value.end, member.value.end, "")


class _Skip(Exception):
    """An entry this command leaves alone; the message says why."""


# ------------------------------------------------------------------ secrets in env

# PAT only as a whole word: a substring match would take every PATH.
_SECRET_NAME = re.compile(
    r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL|(?:^|[^A-Z0-9])PAT(?:$|[^A-Z0-9])", re.I
)


def secret_names(node: Object) -> list[str]:
    """env names that look like secrets and hold a literal (not a ${...} reference)."""
    env = node.get("env")
    if not isinstance(env, Object):
        return []
    names = []
    for member in env.members:
        value = _string(member.value)
        if value and "${" not in value and _SECRET_NAME.search(member.key):
            names.append(member.key)
    return list(dict.fromkeys(names))


def secret_ref(server: str, name: str) -> str:
    return f"keyring:mcpwrap-{server}/{name}"


def profile_line(server: str, names: list[str]) -> str:
    """The [server] secrets line the profile needs once the values are in the keyring."""
    bare = re.compile(r"[A-Za-z0-9_-]+")

    def key(name: str) -> str:
        return name if bare.fullmatch(name) else json.dumps(name)

    pairs = ", ".join(f"{key(n)} = {json.dumps(secret_ref(server, n))}" for n in names)
    return f"[server] secrets = {{ {pairs} }}"


# ------------------------------------------------------------------ files and records


@dataclass
class Document:
    """A config file being edited: its original bytes and the current text."""

    path: str
    real: str
    original: bytes
    text: str
    mode: int
    _parsed: tuple[str, Node] | None = None

    @classmethod
    def load(cls, path: str) -> Document:
        real = os.path.realpath(path)  # a symlinked dotfile stays a symlink
        try:
            with open(real, "rb") as f:
                raw = f.read()
            mode = os.stat(real).st_mode & 0o7777
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from exc
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line, column = position(raw[: exc.start].decode("utf-8", "replace"), exc.start)
            raise ConfigError(
                f"{path}:{line}:{column}: not UTF-8 text; the client would not read it "
                "either: fix the file and run again"
            ) from exc
        doc = cls(path, real, raw, text, mode)
        doc.root()  # refuse a file that is not JSONC before anything else happens
        return doc

    def root(self) -> Node:
        if self._parsed is None or self._parsed[0] != self.text:
            self._parsed = (self.text, parse(self.text, self.path))
        return self._parsed[1]

    def node(self, entry: Entry) -> Node | None:
        return walk(self.root(), (*entry.scope, entry.name))

    def edit(self, edits: list[Edit]) -> None:
        self.text = apply(self.text, edits)
        self.root()  # an edit that broke the syntax is a bug: fail before writing

    @property
    def changed(self) -> bool:
        return self.text.encode("utf-8") != self.original

    @property
    def backup(self) -> str:
        return self.real + BACKUP_SUFFIX

    def save(self) -> bool:
        """Write the backup (once ever) and then the new text; True if a backup was made."""
        made = _write_once(self.backup, self.original)
        write_atomic(self.real, self.text.encode("utf-8"), self.mode)
        return made


def write_atomic(path: str, data: bytes, mode: int) -> None:
    """Replace path with data: a temp file in the same directory, fsync, rename. A crash
    leaves the old file or the new one, never half of one."""
    from mcpwrap.basics import atomicfile

    try:
        atomicfile.write(path, data, mode=mode)
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot write it ({exc.strerror}); it is unchanged: check the "
            "directory's permissions and free space"
        ) from exc


def _write_once(path: str, data: bytes) -> bool:
    """Create path with data unless it exists; never overwrite (the first original is the
    one worth keeping). Mode 0600: the original may hold secrets."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot write the backup ({exc.strerror}); nothing changed"
        ) from exc
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return True


Records = dict[str, dict[str, dict[str, str | None]]]


def load_records(state_dir: str) -> Records:
    path = os.path.join(state_dir, RECORDS)
    try:
        with open(path, encoding="utf-8") as f:
            loaded = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{path}: cannot read mcpwrap's wrap records ({exc}); move it aside to go on "
            f'(unwrap then works from the part after "--", or from the {BACKUP_SUFFIX} files)'
        ) from exc
    files = loaded.get("files") if isinstance(loaded, dict) else None
    return files if isinstance(files, dict) else {}


def save_records(state_dir: str, records: Records) -> None:
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    kept = {path: entries for path, entries in records.items() if entries}
    data = json.dumps({"version": 1, "files": kept}, indent=2, sort_keys=True) + "\n"
    write_atomic(os.path.join(state_dir, RECORDS), data.encode("utf-8"), 0o600)


# ------------------------------------------------------------------ wrap and unwrap


@dataclass(frozen=True)
class Options:
    """What `mcpwrap wrap` / `unwrap` were asked to do."""

    client: str
    config: str | None = None
    server: str | None = None
    dry_run: bool = False
    move_secrets: bool = False
    project_dir: str = field(default_factory=os.getcwd)
    # Asked once per entry holding secrets when --move-secrets was not given (a terminal).
    ask: Callable[[str], bool] | None = None
    # wrap: how each entry is wrapped (mcpwrap.commands.wrapplan decides).
    prepare: Prepare | None = None
    # Each line as it is said (wrap can take a while: locks install packages).
    echo: Callable[[str], None] | None = None


@dataclass
class Outcome:
    """One line per entry (and per secret action), the file, and the exit status."""

    path: str = ""
    lines: list[str] = field(default_factory=list)
    status: int = 0
    written: bool = False
    # wrap: the stdio entries that start mcpwrap now, with their values as written.
    wrapped: list[tuple[Entry, dict[str, object]]] = field(default_factory=list)
    echo: Callable[[str], None] | None = None

    def say(self, line: str) -> None:
        self.lines.append(line)
        if self.echo is not None:
            self.echo(line)


def wrap(options: Options, state_dir: str) -> Outcome:
    doc, selected = _open(options)
    records = load_records(state_dir)
    mine = records.setdefault(doc.real, {})
    out = Outcome(doc.path, echo=options.echo)
    moved = False
    wrapped = []
    for entry in selected:
        if _wrap_one(doc, entry, options, mine, out):
            wrapped.append(entry)
            moved |= _secrets(doc, entry, options, out, state_dir)
    if doc.changed and not options.dry_run:
        save_records(state_dir, records)
        _save(doc, out)
        if moved:
            out.say(
                f"{doc.path}: its backup {doc.backup} still holds the secrets' values: "
                "delete it once the wrapped servers work"
            )
    for entry in wrapped:
        node = doc.node(entry)
        values = plain(node) if node is not None else None
        assert isinstance(values, dict)
        out.wrapped.append((entry, values))
    return out


def unwrap(options: Options, state_dir: str) -> Outcome:
    doc, selected = _open(options)
    records = load_records(state_dir)
    mine = records.setdefault(doc.real, {})
    out = Outcome(doc.path, echo=options.echo)
    for entry in selected:
        _unwrap_one(doc, entry, options, mine, out)
    if doc.changed and not options.dry_run:
        save_records(state_dir, records)
        _save(doc, out)
    return out


def _open(options: Options) -> tuple[Document, list[Entry]]:
    if options.client not in CLIENTS:
        raise ConfigError(f"unknown client {options.client!r}: use one of {', '.join(CLIENTS)}")
    doc = Document.load(find_config(options.client, options.config, options.project_dir))
    found = entries(options.client, doc.root(), options.project_dir, doc.path)
    if options.server is None:
        return doc, found
    chosen = [e for e in found if e.name == options.server]
    if not chosen:
        names = ", ".join(dict.fromkeys(e.name for e in found)) or "none"
        raise ConfigError(f"{doc.path}: no server named {options.server!r}; its servers: {names}")
    return doc, chosen


def _save(doc: Document, out: Outcome) -> None:
    if doc.save():
        out.say(f"{doc.path}: the original is kept in {doc.backup}")
    out.written = True


def _wrap_one(
    doc: Document,
    entry: Entry,
    options: Options,
    mine: dict[str, dict[str, str | None]],
    out: Outcome,
) -> bool:
    """Wrap one entry; True if it is a stdio entry that starts mcpwrap (now or before)."""
    where = f"{doc.path}: {entry.label}"
    node = doc.node(entry)
    if not isinstance(node, Object):
        out.say(f"{where}: skipped (not an object)")
        return False
    url_entry = is_url_entry(node)
    reason = None if url_entry else not_stdio(node)
    if reason is not None:
        out.say(f"{where}: skipped (not stdio: {reason})")
        return False
    if is_wrapped(node):
        out.say(f"{where}: already wrapped")
        return True
    if node.get("args") is not None and not isinstance(node.get("args"), Array):
        out.say(f'{where}: skipped (its "args" is not a list)')
        return False
    assert options.prepare is not None, "wrap needs Options.prepare"
    values = plain(node)
    assert isinstance(values, dict)
    try:
        wrapping = options.prepare(doc.path, entry, values)
    except NotWrapped as why:
        out.status = 1
        out.say(f"{where}: not wrapped: {why}")
        return False
    if url_entry and wrapping.replace is None:  # a Prepare that wraps stdio entries only
        out.say(f'{where}: skipped (not stdio: it has a "url")')
        return False
    if url_entry:
        # A "url" entry: the whole entry is recorded, since more than command and args
        # change ("url", "type", "headers").
        before = doc.text[node.start : node.end]
        after = remote_entry_text(before, wrapping)
        doc.edit([(node.start, node.end, after)])
        record: dict[str, str | None] = {
            "profile": wrapping.profile,
            "entry": before,
            "wrapped_entry": after,
        }
    else:
        edits, record = wrap_edits(doc.text, node, wrapping)
        doc.edit(edits)
    mine[entry.pointer] = record
    verb = "would wrap" if options.dry_run else "wrapped"
    out.say(f"{where}: {verb} (profile {wrapping.profile}{wrapping.said})")
    return True


def _unwrap_one(
    doc: Document,
    entry: Entry,
    options: Options,
    mine: dict[str, dict[str, str | None]],
    out: Outcome,
) -> None:
    where = f"{doc.path}: {entry.label}"
    node = doc.node(entry)
    if not isinstance(node, Object):
        out.say(f"{where}: skipped (not an object)")
        return
    reason = not_stdio(node)
    if reason is not None:
        out.say(f"{where}: skipped (not stdio: {reason})")
        return
    record = mine.get(entry.pointer)
    if not is_wrapped(node):
        note = "; it changed since `mcpwrap wrap`, left alone" if record else ""
        out.say(f"{where}: not wrapped{note}")
        return
    verb = "would unwrap" if options.dry_run else "unwrapped"
    if record is not None and record.get("entry") is not None:
        # A remote server's entry: put back whole, if it still means what wrap wrote.
        written = parse(str(record["wrapped_entry"]), "<wrap record>")
        if plain(node) != plain(written):
            out.status = 1
            out.say(
                f"{where}: not unwrapped: it changed since `mcpwrap wrap`, so the original "
                f"cannot be put back safely; left alone: edit it by hand (the original file "
                f"is in {doc.backup})"
            )
            return
        doc.edit([(node.start, node.end, str(record["entry"]))])
        del mine[entry.pointer]
        out.say(f"{where}: {verb}")
        return
    if record is None:
        try:
            doc.edit(split_edits(doc.text, node))
        except _Skip as why:
            out.status = 1
            out.say(f"{where}: not unwrapped: no record of its wrap and {why}")
            return
        out.say(
            f'{where}: {verb} from the part after "--" in its args (no record of a wrap: '
            "check the entry)"
        )
        return
    edits = unwrap_edits(doc.text, node, record)
    if edits is None:
        out.status = 1
        out.say(
            f"{where}: not unwrapped: its command or args changed since `mcpwrap wrap`, so "
            f"the original cannot be put back safely; left alone: edit it by hand (the "
            f"original file is in {doc.backup})"
        )
        return
    doc.edit(edits)
    del mine[entry.pointer]
    out.say(f"{where}: {verb}")


def _secrets(doc: Document, entry: Entry, options: Options, out: Outcome, state: str) -> bool:
    """Offer to move an entry's literal secrets into the keyring; True if any moved."""
    node = doc.node(entry)
    names = secret_names(node) if isinstance(node, Object) else []
    if not names:
        return False
    if isinstance(node, Object) and wrapped_url(node):
        # mcpwrap never reads a remote entry's env: its credential comes from the keyring.
        out.say(
            f"{doc.path}: {entry.label}: its env still holds {', '.join(names)} in plain "
            "text, which the wrapped entry does not use: delete it from the entry once the "
            "wrapped server works (an unwrapped mcp-remote would need it again)"
        )
        return False
    where = f"{doc.path}: {entry.label}"
    listed = ", ".join(names)
    if options.dry_run:
        out.say(f"{where}: env holds secrets in plain text: {listed}")
        return False
    question = f"{where}: move {listed} from its env into the keyring? [y/N] "
    if not (options.move_secrets or (options.ask is not None and options.ask(question))):
        config = f" --config {shlex.quote(options.config)}" if options.config else ""
        out.say(
            f"{where}: env holds secrets in plain text: {listed} (values not shown); move "
            f"them into the keyring with `mcpwrap wrap {options.client}{config} --server "
            f"{shlex.quote(entry.name)} --move-secrets`"
        )
        return False
    for name in names:
        _move_secret(doc, entry, name, state)
    out.say(f"{where}: moved {listed} from its env into the keyring")
    out.say(f"{where}: add to its profile: {profile_line(entry.name, names)}")
    return True


def _move_secret(doc: Document, entry: Entry, name: str, state: str) -> None:
    from mcpwrap.identity import secrets as secretstore

    env = _env(doc, entry)
    value = _string(env.get(name)) if env is not None else None
    assert value  # secret_names found it a moment ago
    # Into the keyring first: if that fails, the value is still in the file, not lost.
    secretstore.store(secret_ref(entry.name, name), value, state)
    # Every member of that name goes: a duplicate key would leave a copy of the value.
    while (env := _env(doc, entry)) is not None and env.member(name) is not None:
        index = next(i for i, m in enumerate(env.members) if m.key == name)
        doc.edit([remove_member(doc.text, env, index)])


def _env(doc: Document, entry: Entry) -> Object | None:
    env = walk(doc.root(), (*entry.scope, entry.name, "env"))
    return env if isinstance(env, Object) else None
