"""Load and validate a capability profile (format 1, shared/design/PROFILE.md).

A profile is parsed once into frozen values. Every problem is a ProfileError of the shape
`FILE:LINE: key.path: what was expected, what was found`: a typo must never silently weaken
a profile, so unknown keys are errors too. tomllib keeps no positions, so `_KeyLines`, a
small scanner of already-valid TOML (tomlkeys.py), maps key paths to lines; it runs only
on an error. Finding the file is discovery.py's job.
"""

from __future__ import annotations

import enum
import fnmatch
import functools
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple, NoReturn, TypeVar

from mcpwrap.basics import hostnames, sha
from mcpwrap.basics.errors import ProfileError
from mcpwrap.basics.units import (
    DURATION_FORMS,
    RATE_FORMS,
    SIZE_FORMS,
    Rate,
    parse_duration,
    parse_rate,
    parse_size,
)
from mcpwrap.config import remote
from mcpwrap.config.discovery import is_directly_in, project_of

FORMAT_VERSION = 1

# Maximums of the values that reach a wait, a deadline or a kernel limit: each is one
# `mcpwrap run` can use (threading.TIMEOUT_MAX, ~292 years, is the hard ceiling of every
# wait; setrlimit takes at most 2**63 - 1), and each is far above any sensible setting.
MAX_TIMEOUT = 86_400.0  # a call's deadline: MCP clients give up on a call long before a day
MAX_IDLE = 86_400.0  # an egress connection with no byte either way for a day
MAX_CPU = 365 * 86_400.0  # a budget of CPU seconds, not a wait
MAX_SIZE = 1 << 50  # 1024 TiB: more memory or file than any machine has
MAX_PROCESSES = 1 << 22  # the kernel's PID_MAX_LIMIT; a pids cgroup refuses more
MAX_OPEN_FILES = 1 << 20  # fs.nr_open's default: RLIMIT_NOFILE cannot go above it
MAX_EXACT_INT = 1 << 53  # min/max are compared as floats, which hold integers up to here


class Access(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"


class ToolClass(enum.Enum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


CLASS_RANK = {ToolClass.READ: 0, ToolClass.WRITE: 1, ToolClass.ADMIN: 2}


class Network(enum.Enum):
    NONE = "none"
    ALLOWLIST = "allowlist"
    HOST = "host"


class Syscalls(enum.Enum):
    DEFAULT = "default"
    STRICT = "strict"


class JailKind(enum.Enum):
    """[sandbox] jail: which jail the server may run in. "full" needs user namespaces;
    "reduced" needs none (Landlock, seccomp, rlimits; sandbox/reduced.py); "any" takes the
    full one where user namespaces work and the reduced one where they cannot be had."""

    FULL = "full"
    ANY = "any"
    REDUCED = "reduced"


class Descriptions(enum.Enum):
    """What a poisoning finding in a tool's definition does: warn, or hide and refuse it."""

    WARN = "warn"
    BLOCK = "block"


class ArgumentsMode(enum.Enum):
    DIGEST = "digest"
    FULL = "full"
    NONE = "none"


class Selection(NamedTuple):
    """[policy] resources / prompts: everything, or the names matching some glob."""

    allow_all: bool
    patterns: tuple[str, ...] = ()

    def allows(self, name: str) -> bool:
        return self.allow_all or any(fnmatch.fnmatchcase(name, p) for p in self.patterns)


class Constraint(NamedTuple):
    """One entry of [tools.X.args]; a field is None when its kind is not given."""

    within: tuple[str, ...] | None = None
    one_of: tuple[object, ...] | None = None
    pattern: re.Pattern[str] | None = None
    max_length: int | None = None
    min: float | None = None
    max: float | None = None
    hosts: tuple[str, ...] | None = None
    sql: str | None = None  # "read-only": one statement that only reads (policy/sql.py)


class ToolSpec(NamedTuple):
    name: str
    cls: ToolClass
    timeout: float | None
    rate: Rate | None
    concurrency: int | None
    effects: tuple[str, ...]
    args: Mapping[str, Constraint]


class ServerSpec(NamedTuple):
    command: tuple[str, ...] | None
    cwd: str | None
    env: Mapping[str, str]
    passthrough: tuple[str, ...]
    secrets: Mapping[str, str]
    remote: remote.RemoteSpec | None = None  # url, transport, headers, bearer (config/remote.py)


class SandboxSpec(NamedTuple):
    enforce: bool = True
    network: Network = Network.NONE
    egress: tuple[str, ...] = ()
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    memory: int | None = None
    cpu: float | None = None
    processes: int | None = None
    open_files: int | None = None
    file_size: int | None = None
    syscalls: Syscalls = Syscalls.DEFAULT
    jail: JailKind = JailKind.FULL
    # network = "allowlist" only: the egress proxy's limits
    egress_connections: int = 64  # open at once
    egress_idle: float = 300.0  # seconds with no byte either way end a connection
    egress_bytes: int = 1 << 30  # per connection, both directions together


class PolicySpec(NamedTuple):
    default: Access = Access.DENY
    timeout: float = 60.0
    sampling: Access = Access.DENY
    elicitation: Access = Access.ALLOW
    roots: Access = Access.ALLOW
    resources: Selection = Selection(False)
    prompts: Selection = Selection(True)
    descriptions: Descriptions = Descriptions.WARN


class AuditSpec(NamedTuple):
    path: str
    arguments: ArgumentsMode = ArgumentsMode.DIGEST


class AuthSpec(NamedTuple):
    """[auth]: which calls need a token, and which tenants' tokens this profile serves."""

    required: ToolClass | None = None  # calls of this class and above need a token

    def needs_token(self, cls: ToolClass) -> bool:
        return self.required is not None and CLASS_RANK[cls] >= CLASS_RANK[self.required]

    tenants: tuple[str, ...] = ()  # empty: any tenant


class Placeholders(NamedTuple):
    project: str
    home: str
    cwd: str
    state: str
    tenant: str | None = None


_NO_ARGS: Mapping[str, Constraint] = MappingProxyType({})


class Profile(NamedTuple):
    version: int
    name: str
    source: str
    digest: str
    project: str
    server: ServerSpec
    sandbox: SandboxSpec
    policy: PolicySpec
    tools: Mapping[str, ToolSpec]
    audit: AuditSpec
    auth: AuthSpec = AuthSpec()
    # {project}, or a relative path resolved against it, occurs somewhere: the server is
    # given the project, so it must be one (mcpwrap.config.project says what may not be).
    uses_project: bool = False

    def working_dir(self) -> str:
        """Where the server starts: [server] cwd, else the project (so that a command's
        `.` means what {project} means); run, lock, sync and wrap all start it here."""
        return self.server.cwd or self.project

    def tool(self, name: str) -> ToolSpec | None:
        """The spec governing `name`; None when it is hidden and refused."""
        spec = self.tools.get(name)
        if spec is not None or self.policy.default is Access.DENY:
            return spec
        return ToolSpec(
            name=name,
            cls=ToolClass.WRITE,
            timeout=None,
            rate=None,
            concurrency=None,
            effects=(),
            args=_NO_ARGS,
        )


# --- loading -------------------------------------------------------------------------------


def load_profile(
    path: str | os.PathLike[str],
    *,
    cwd: str | None = None,
    state_dir: str,
    tenant: str | None = None,
    builtin_dir: str | None = None,
    project: str | None = None,
) -> Profile:
    """Read and validate the profile at `path`.

    {project} is `project` when given; else the nearest parent of the file holding `.git`,
    else the file's directory; for a file directly in `builtin_dir` (a built-in profile) it
    is the current directory.
    """
    file = os.fspath(path)
    text = _read_text(file)
    here = os.path.abspath(cwd if cwd is not None else os.getcwd())
    builtin = builtin_dir is not None and is_directly_in(file, builtin_dir)
    if project is None:
        project = here if builtin else project_of(file)
    places = Placeholders(
        project=os.path.abspath(project),
        home=os.path.expanduser("~"),
        cwd=here,
        state=os.path.abspath(state_dir),
        tenant=tenant,
    )
    source = f"<builtin:{_stem(file)}>" if builtin else file
    return parse_profile(text, source=source, places=places)


def parse_profile(text: str, *, source: str, places: Placeholders) -> Profile:
    """Validate profile `text`; `source` names it in errors and in Profile.source."""
    doc = _parse_toml(text, source)
    ctx = _Ctx(text, source, places)
    version = _version(ctx, doc)
    top = _Table.of(ctx, (), doc, _TOP_KEYS)
    profile = Profile(
        version=version,
        name=top.get("name", _profile_name, _default_name(source)),
        source=source,
        digest="sha256:" + sha.hexdigest(text.encode("utf-8")),
        project=places.project,
        server=_server(_Table.of(ctx, ("server",), doc.get("server"), _SERVER_KEYS)),
        sandbox=_sandbox(_Table.of(ctx, ("sandbox",), doc.get("sandbox"), _SANDBOX_KEYS)),
        policy=_policy(_Table.of(ctx, ("policy",), doc.get("policy"), _POLICY_KEYS)),
        tools=_tools(_Table.of(ctx, ("tools",), doc.get("tools"), None)),
        audit=_audit(_Table.of(ctx, ("audit",), doc.get("audit"), _AUDIT_KEYS)),
        auth=_auth(_Table.of(ctx, ("auth",), doc.get("auth"), _AUTH_KEYS)),
    )
    return profile._replace(uses_project=ctx.used_project)


def _read_text(file: str) -> str:
    try:
        with open(file, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ProfileError(f"{file}: cannot read the profile: {exc.strerror or exc}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ProfileError(
            f"{file}:{line}: not valid UTF-8 (byte {exc.start}); save the profile as UTF-8"
        ) from exc


_TOP_KEYS = ("version", "name", "server", "sandbox", "policy", "tools", "audit", "auth")
# Patterns of the error path and of keys few profiles have stay text: re compiles each at
# its first use (and caches it), not on every start (~0.1 ms each).
_TOML_AT = r"\s*\(at line (\d+), column (\d+)\)$"


def _parse_toml(text: str, source: str) -> dict[str, object]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        at = re.search(_TOML_AT, message)
        if at is None:  # "(at end of document)"
            where = f"{source}:{text.count(chr(10)) + 1}"
        else:
            where, message = f"{source}:{at[1]}:{at[2]}", message[: at.start()]
        raise ProfileError(f"{where}: invalid TOML: {message}") from exc


def _version(ctx: _Ctx, doc: Mapping[str, object]) -> int:
    # Checked before unknown keys: a newer format's keys are better explained by its version.
    path = ("version",)
    value = doc.get("version")
    if value is None:
        ctx.fail(path, f"missing; add `version = {FORMAT_VERSION}` at the top of the profile")
    if not isinstance(value, int) or isinstance(value, bool):
        _expect(ctx, path, str(FORMAT_VERSION), value)
    if value != FORMAT_VERSION:
        ctx.fail(
            path,
            f"this mcpwrap reads profile format version {FORMAT_VERSION} only, got {value}; "
            "use an mcpwrap that reads it, or rewrite the profile for version 1",
        )
    return value


def _default_name(source: str) -> str:
    builtin = re.fullmatch(r"<builtin:(.+)>", source)
    if builtin:
        return builtin[1]
    return "profile" if source.startswith("<") else _stem(source)


def _stem(file: str) -> str:
    # os.path, not pathlib: pathlib costs ~5 ms of imports on the way to the server's start.
    return os.path.splitext(os.path.basename(file))[0]


def _profile_name(ctx: _Ctx, path: _Path, value: object) -> str:
    name = _string(ctx, path, value)
    if not name or not name.isprintable() or "/" in name:
        _expect(ctx, path, 'a non-empty printable name without "/"', value)
    return name


# --- errors and their positions ------------------------------------------------------------

_Path = tuple[str | int, ...]
T = TypeVar("T")
D = TypeVar("D")
E = TypeVar("E", bound=enum.Enum)
_Convert = Callable[["_Ctx", _Path, object], T]

_BARE_KEY = r"[A-Za-z0-9_-]+"


class _Ctx:
    """What every check needs: the text (for line numbers), the source and placeholders."""

    def __init__(self, text: str, source: str, places: Placeholders) -> None:
        self.text = text
        self.source = source
        self.places = places
        self.used_project = False

    @functools.cached_property
    def _lines(self) -> dict[_Path, int]:
        from mcpwrap.basics.tomlkeys import key_lines  # errors only: not on every start

        return key_lines(self.text)

    def line(self, path: _Path) -> int:
        """The line of `path`, else of its nearest enclosing key, else 1."""
        for end in range(len(path), 0, -1):
            line = self._lines.get(path[:end])
            if line is not None:
                return line
        return 1

    def fail(self, path: _Path, message: str) -> NoReturn:
        key = f"{_dotted(path)}: " if path else ""
        raise ProfileError(f"{self.source}:{self.line(path)}: {key}{message}")


def _dotted(path: _Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = part if re.fullmatch(_BARE_KEY, part) else _quoted(part)
            out += f".{key}" if out else key
    return out


def _quoted(text: str) -> str:
    """`text` in quotes; escaped where it holds what a terminal would not show as itself
    (a bidi override would turn the rest of the error message around)."""
    return json.dumps(text, ensure_ascii=not text.isprintable())


def _show(value: object) -> str:
    """A found value as the error shows it: TOML-like scalars, a word for the rest."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = _quoted(value)
        return text if len(text) <= 80 else text[:76] + '..."'
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"  # dates and times


def _expect(ctx: _Ctx, path: _Path, what: str, value: object) -> NoReturn:
    ctx.fail(path, f"expected {what}, got {_show(value)}")


def _check_keys(ctx: _Ctx, path: _Path, table: Mapping[str, object], known: Sequence[str]) -> None:
    for key in table:
        if key in known:
            continue
        import difflib  # only on the error path

        close = difflib.get_close_matches(key, known, n=1)
        hint = f'did you mean "{close[0]}"? ' if close else ""
        where = f"in [{_dotted(path)}]" if path else "at the top level"
        ctx.fail((*path, key), f"unknown key; {hint}known keys {where}: {', '.join(known)}")


class _Table(NamedTuple):
    """A checked TOML table and where it is; `get` converts one optional key."""

    ctx: _Ctx
    path: _Path
    data: Mapping[str, object]

    @classmethod
    def of(cls, ctx: _Ctx, path: _Path, value: object, known: Sequence[str] | None) -> _Table:
        """`value` as a table (None: an absent, empty one), unknown keys refused if `known`."""
        if value is None:
            return cls(ctx, path, {})
        if not isinstance(value, dict):
            _expect(ctx, path, "a table", value)
        if known is not None:
            _check_keys(ctx, path, value, known)
        return cls(ctx, path, value)

    def get(self, key: str, convert: _Convert[T], default: D) -> T | D:
        value = self.data.get(key)
        return default if value is None else convert(self.ctx, (*self.path, key), value)

    def need(self, key: str, convert: _Convert[T], hint: str) -> T:
        if key not in self.data:
            self.ctx.fail(self.path, f"missing {key}; {hint}")
        return convert(self.ctx, (*self.path, key), self.data[key])

    def items(self) -> Iterator[tuple[_Path, str, object]]:
        for key, value in self.data.items():
            yield (*self.path, key), key, value


# --- value converters: (ctx, path, value) -> checked value -----------------------------------


def _string(ctx: _Ctx, path: _Path, value: object) -> str:
    if not isinstance(value, str):
        _expect(ctx, path, "a string", value)
    return value


def _word(ctx: _Ctx, path: _Path, value: object) -> str:
    if not isinstance(value, str) or not value:
        _expect(ctx, path, "a non-empty string", value)
    return value


_TAGS = range(0xE0000, 0xE0080)  # tag characters: an invisible copy of ASCII


def _visible(ctx: _Ctx, path: _Path, text: str) -> str:
    """`text`, refused if it holds a character that shows as nothing (zero-width, bidi
    controls, tags: Unicode's format characters). In a name, a path, a pattern or a value
    of a rule, one makes the rule look like it says something it does not: `pa\u200bth`
    reads as `path` and constrains another argument."""
    if text.isascii():
        return text
    import unicodedata  # only for text that is not ASCII

    for at, char in enumerate(text):
        if ord(char) in _TAGS or unicodedata.category(char) == "Cf":
            name = unicodedata.name(char, "a tag or format character")
            ctx.fail(
                path,
                f"holds the invisible character U+{ord(char):04X} ({name}) at position {at}: "
                "it makes the rule read as something it is not; remove it",
            )
    return text


def _boolean(ctx: _Ctx, path: _Path, value: object) -> bool:
    if not isinstance(value, bool):
        _expect(ctx, path, "true or false", value)
    return value


def _at_least(minimum: int) -> _Convert[int]:
    def convert(ctx: _Ctx, path: _Path, value: object) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            _expect(ctx, path, f"an integer >= {minimum}", value)
        return value

    return convert


def _between(minimum: int, maximum: int) -> _Convert[int]:
    def convert(ctx: _Ctx, path: _Path, value: object) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            _expect(ctx, path, f"an integer >= {minimum}", value)
        if value > maximum:
            _expect(ctx, path, f"an integer of at most {maximum:,}", value)
        return value

    return convert


def _number(ctx: _Ctx, path: _Path, value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        _expect(ctx, path, "a number", value)
    if isinstance(value, int) and abs(value) > MAX_EXACT_INT:
        _expect(ctx, path, "an integer from -2**53 to 2**53 (compared exactly)", value)
    if not math.isfinite(value):
        _expect(ctx, path, "a finite number", value)
    return float(value)


def _enum_of(kind: type[E]) -> _Convert[E]:
    def convert(ctx: _Ctx, path: _Path, value: object) -> E:
        for member in kind:
            if member.value == value:
                return member
        _expect(ctx, path, "one of " + ", ".join(f'"{m.value}"' for m in kind), value)

    return convert


def _array_of(
    convert: _Convert[T], what: str, *, non_empty: bool = False
) -> _Convert[tuple[T, ...]]:
    def convert_all(ctx: _Ctx, path: _Path, value: object) -> tuple[T, ...]:
        if not isinstance(value, list) or (non_empty and not value):
            _expect(ctx, path, what, value)
        return tuple(convert(ctx, (*path, i), item) for i, item in enumerate(value))

    return convert_all


def _duration_up_to(maximum: float, shown: str) -> _Convert[float]:
    def convert(ctx: _Ctx, path: _Path, value: object) -> float:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            _expect(ctx, path, DURATION_FORMS, value)
        seconds = _parsed(ctx, path, parse_duration, value)
        if seconds <= 0:
            _expect(ctx, path, "a duration greater than zero", value)
        if seconds > maximum:
            _expect(ctx, path, f"a duration of at most {shown}", value)
        return seconds

    return convert


_timeout = _duration_up_to(MAX_TIMEOUT, '"24h"')
_idle = _duration_up_to(MAX_IDLE, '"24h"')
_cpu = _duration_up_to(MAX_CPU, '"365d"')


def _size(ctx: _Ctx, path: _Path, value: object) -> int:
    if not isinstance(value, str | int) or isinstance(value, bool):
        _expect(ctx, path, SIZE_FORMS, value)
    size = _parsed(ctx, path, parse_size, value)
    if size <= 0:
        _expect(ctx, path, "a size greater than zero", value)
    if size > MAX_SIZE:
        _expect(ctx, path, 'a size of at most "1024TiB"', value)
    return size


def _rate(ctx: _Ctx, path: _Path, value: object) -> Rate:
    if not isinstance(value, str):
        _expect(ctx, path, RATE_FORMS, value)
    return _parsed(ctx, path, parse_rate, value)


def _parsed(ctx: _Ctx, path: _Path, parse: Callable[[D], T], value: D) -> T:
    try:
        return parse(value)
    except ValueError as exc:
        ctx.fail(path, str(exc))


# --- placeholders and paths ----------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_PLACEHOLDER_NAMES = ("project", "home", "cwd", "state", "tenant")


def _expanded(ctx: _Ctx, path: _Path, value: object) -> str:
    """A string with {project}, {home}, {cwd}, {state}, {tenant} replaced; {{ }} are braces."""
    text = _string(ctx, path, value)
    return _PLACEHOLDER.sub(lambda match: _placeholder(ctx, path, match), text)


def _placeholder(ctx: _Ctx, path: _Path, match: re.Match[str]) -> str:
    token = match[0]
    if token in ("{{", "}}"):
        return token[0]
    if token in ("{", "}"):
        ctx.fail(path, f'unmatched "{token}"; write "{token * 2}" for a literal brace')
    name = match[1]
    if name not in _PLACEHOLDER_NAMES:
        known = ", ".join(f"{{{n}}}" for n in _PLACEHOLDER_NAMES)
        ctx.fail(path, f"unknown placeholder {token}; known placeholders: {known}")
    value: str | None = getattr(ctx.places, name)
    ctx.used_project |= name == "project"
    if value is None:
        ctx.fail(
            path,
            "{tenant} needs a tenant, and none is known: run with a token that carries "
            "a tenant, or remove {tenant} from the profile",
        )
    return value


def _fs_path(ctx: _Ctx, path: _Path, value: object) -> str:
    """An expanded path, made absolute against {project} and normalised."""
    text = _expanded(ctx, path, _visible(ctx, path, _string(ctx, path, value)))
    if not text:
        _expect(ctx, path, "a path", value)
    ctx.used_project |= not os.path.isabs(text)
    return os.path.normpath(os.path.join(ctx.places.project, text))


_fs_paths = _array_of(_fs_path, "an array of paths")
_roots = _array_of(_fs_path, "a non-empty array of paths", non_empty=True)


# --- [server] ------------------------------------------------------------------------------

_SERVER_KEYS = ("command", "cwd", "env", "passthrough", "secrets", *remote.KEYS)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET_REF = re.compile(r"keyring:[^/]+/.+")


def _server(t: _Table) -> ServerSpec:
    env = t.get("env", _env, _NO_STRINGS)
    passthrough = t.get("passthrough", _env_names, ())
    secrets = t.get("secrets", _secrets, _NO_STRINGS)
    _check_env_sources(
        t, {"env": tuple(env), "passthrough": passthrough, "secrets": tuple(secrets)}
    )
    return ServerSpec(
        command=t.get("command", _command, None),
        cwd=t.get("cwd", _fs_path, None),
        env=env,
        passthrough=passthrough,
        secrets=secrets,
        remote=remote.parse(
            t.data, lambda key, why: t.ctx.fail((*t.path, *key), why), _server_tls(t)
        ),
    )


def _server_tls(server: _Table) -> remote.TlsSpec:
    """[server.tls]: a CA file, a client certificate and key, SPKI pins."""
    t = _Table.of(server.ctx, (*server.path, "tls"), server.data.get("tls"), remote.TLS_KEYS)
    return remote.TlsSpec(
        ca=t.get("ca", _fs_path, None),
        client_cert=t.get("client_cert", _fs_path, None),
        client_key=t.get("client_key", _client_key, None),
        pins=t.get("pins", _pins, ()),
    )


def _client_key(ctx: _Ctx, path: _Path, value: object) -> str:
    """A keyring reference, or a key file's path."""
    if isinstance(value, str) and value.startswith("keyring:"):
        if not _SECRET_REF.fullmatch(value):
            _expect(ctx, path, 'a keyring reference "keyring:SERVICE/USER"', value)
        return value
    return _fs_path(ctx, path, value)


def _pins(ctx: _Ctx, path: _Path, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        _expect(ctx, path, 'a non-empty array of pins "sha256/..."', value)
    for i, pin in enumerate(value):
        if (problem := remote.pin_problem(pin)) is not None:
            ctx.fail((*path, i), problem)
    return tuple(value)


_NO_STRINGS: Mapping[str, str] = MappingProxyType({})


def _command(ctx: _Ctx, path: _Path, value: object) -> tuple[str, ...]:
    command = _expanded_strings(ctx, path, value)
    if not command[0]:
        _expect(ctx, (*path, 0), "a program name", command[0])
    return command


def _env_name(ctx: _Ctx, path: _Path, value: object) -> str:
    if not isinstance(value, str) or not _ENV_NAME.fullmatch(value):
        _expect(ctx, path, "an environment variable name ([A-Za-z_][A-Za-z0-9_]*)", value)
    return value


_env_names = _array_of(_env_name, "an array of environment variable names")
_expanded_strings = _array_of(_expanded, "a non-empty array of strings", non_empty=True)


def _env(ctx: _Ctx, path: _Path, value: object) -> Mapping[str, str]:
    table = _Table.of(ctx, path, value, None)
    env = {_env_name(ctx, p, k): _expanded(ctx, p, v) for p, k, v in table.items()}
    return MappingProxyType(env)


def _secrets(ctx: _Ctx, path: _Path, value: object) -> Mapping[str, str]:
    table = _Table.of(ctx, path, value, None)
    return MappingProxyType(
        {_env_name(ctx, p, k): _secret_ref(ctx, p, v) for p, k, v in table.items()}
    )


def _secret_ref(ctx: _Ctx, path: _Path, value: object) -> str:
    if not isinstance(value, str) or not _SECRET_REF.fullmatch(value):
        _expect(ctx, path, 'a keyring reference "keyring:SERVICE/USER"', value)
    return value


def _check_env_sources(t: _Table, sources: Mapping[str, tuple[str, ...]]) -> None:
    # One variable, one source: otherwise which value the child sees is a guess.
    seen: dict[str, str] = {}
    for kind, names in sources.items():
        for index, name in enumerate(names):
            if name == "MCPWRAP_TOKEN":
                t.ctx.fail(
                    (*t.path, kind, index if kind == "passthrough" else name),
                    "MCPWRAP_TOKEN is mcpwrap's own token and never reaches the server: remove it",
                )
            other = seen.setdefault(name, kind)
            if other != kind:
                where = index if kind == "passthrough" else name
                t.ctx.fail(
                    (*t.path, kind, where),
                    f"{name} is also in server.{other}; each variable comes from one of "
                    "env, passthrough and secrets: remove one",
                )


# --- [sandbox] -----------------------------------------------------------------------------

_SANDBOX_KEYS = (
    "enforce",
    "network",
    "egress",
    "read",
    "write",
    "memory",
    "cpu",
    "processes",
    "open_files",
    "file_size",
    "syscalls",
    "jail",
    "egress_connections",
    "egress_idle",
    "egress_bytes",
)
_EGRESS_LIMITS = ("egress_connections", "egress_idle", "egress_bytes")
_EGRESS_FORMS = 'HOST:PORT (e.g. "api.github.com:443", "*.example.com:443") or tcp:ADDR:PORT'


def _sandbox(t: _Table) -> SandboxSpec:
    network = t.get("network", _enum_of(Network), Network.NONE)
    egress = t.get("egress", _egress, ())
    # An empty egress list says nothing; any other egress key needs the proxy.
    given = [k for k in _EGRESS_LIMITS if k in t.data] + (["egress"] if egress else [])
    for key in given:
        if network is not Network.ALLOWLIST:
            t.ctx.fail(
                (*t.path, key),
                f'{key} applies only with network = "allowlist", and network is '
                f'"{network.value}": set network = "allowlist" or remove {key}',
            )
    base = SandboxSpec()
    return SandboxSpec(
        enforce=t.get("enforce", _boolean, True),
        network=network,
        egress=egress,
        read=t.get("read", _fs_paths, ()),
        write=t.get("write", _fs_paths, ()),
        memory=t.get("memory", _size, None),
        cpu=t.get("cpu", _cpu, None),
        processes=t.get("processes", _between(1, MAX_PROCESSES), None),
        open_files=t.get("open_files", _between(1, MAX_OPEN_FILES), None),
        file_size=t.get("file_size", _size, None),
        syscalls=t.get("syscalls", _enum_of(Syscalls), Syscalls.DEFAULT),
        jail=t.get("jail", _enum_of(JailKind), JailKind.FULL),
        egress_connections=t.get("egress_connections", _at_least(1), base.egress_connections),
        egress_idle=t.get("egress_idle", _idle, base.egress_idle),
        egress_bytes=t.get("egress_bytes", _size, base.egress_bytes),
    )


def _egress_entry(ctx: _Ctx, path: _Path, value: object) -> str:
    text = _expanded(ctx, path, _visible(ctx, path, _string(ctx, path, value)))
    try:
        return _normal_egress(text)
    except ValueError as exc:
        ctx.fail(path, f"{exc}; expected {_EGRESS_FORMS}")


_egress = _array_of(_egress_entry, f"an array of {_EGRESS_FORMS}")


def _normal_egress(text: str) -> str:
    """The canonical form of "HOST:PORT" or "tcp:ADDR:PORT"; ValueError names the fault."""
    tcp = text.startswith("tcp:")
    host, colon, port = text.removeprefix("tcp:").rpartition(":")
    if not colon or not re.fullmatch(r"[0-9]{1,5}", port) or not 1 <= int(port) <= 65535:
        raise ValueError(f"{_show(text)} has no port from 1 to 65535")
    if tcp or host.startswith("["):
        return f"{'tcp:' if tcp else ''}{_ip(text, host)}:{int(port)}"
    return f"{_normal_host(host)}:{int(port)}"


def _ip(text: str, host: str) -> str:
    """An IPv4 address, or an IPv6 one in brackets, in its canonical form."""
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        import ipaddress  # only for tcp: egress entries

        ip = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        ip = None
    if ip is None or bracketed != (ip.version == 6):
        raise ValueError(
            f"{_show(text)} does not hold an IPv4 address or an IPv6 address in brackets"
        )
    return f"[{ip}]" if bracketed else str(ip)


# --- [policy] ------------------------------------------------------------------------------

_POLICY_KEYS = (
    "default",
    "timeout",
    "sampling",
    "elicitation",
    "roots",
    "resources",
    "prompts",
    "descriptions",
)
_access = _enum_of(Access)


def _policy(t: _Table) -> PolicySpec:
    return PolicySpec(
        default=t.get("default", _access, Access.DENY),
        timeout=t.get("timeout", _timeout, 60.0),
        sampling=t.get("sampling", _access, Access.DENY),
        elicitation=t.get("elicitation", _access, Access.ALLOW),
        roots=t.get("roots", _access, Access.ALLOW),
        resources=t.get("resources", _selection, Selection(False)),
        prompts=t.get("prompts", _selection, Selection(True)),
        descriptions=t.get("descriptions", _enum_of(Descriptions), Descriptions.WARN),
    )


def _selection(ctx: _Ctx, path: _Path, value: object) -> Selection:
    if value in ("allow", "deny"):
        return Selection(value == "allow")
    if not isinstance(value, list):
        _expect(ctx, path, '"allow", "deny" or an array of names and globs', value)
    return Selection(False, _words(ctx, path, value))


_words = _array_of(_word, "an array of non-empty strings")


# --- [tools] -------------------------------------------------------------------------------

_TOOL_KEYS = ("class", "timeout", "rate", "concurrency", "effects", "args")
_CONSTRAINT_KEYS = ("within", "one_of", "pattern", "max_length", "min", "max", "hosts", "sql")
# Kinds that need a string argument, and kinds that need a number: never both at once.
_STRING_KINDS = ("within", "pattern", "max_length", "hosts", "sql")
_NUMBER_KINDS = ("min", "max")


def _tools(t: _Table) -> Mapping[str, ToolSpec]:
    return MappingProxyType({name: _tool(t.ctx, path, value) for path, name, value in t.items()})


def _tool(ctx: _Ctx, path: _Path, value: object) -> ToolSpec:
    name = _visible(ctx, path, _word(ctx, path, path[-1]))
    t = _Table.of(ctx, path, value, _TOOL_KEYS)
    return ToolSpec(
        name=name,
        cls=t.need("class", _enum_of(ToolClass), 'add class = "read", "write" or "admin"'),
        timeout=t.get("timeout", _timeout, None),
        rate=t.get("rate", _rate, None),
        concurrency=t.get("concurrency", _at_least(1), None),
        effects=t.get("effects", _effects, ()),
        args=t.get("args", _args, _NO_ARGS),
    )


def _effect(ctx: _Ctx, path: _Path, value: object) -> str:
    """A declared side effect; "network:HOST:PORT" (or network:tcp:ADDR:PORT) is checked
    like an egress entry, as the egress proxy admits it while a call of the tool runs."""
    text = _word(ctx, path, value)
    if not text.startswith("network:"):
        return text
    _visible(ctx, path, text)
    try:
        return "network:" + _normal_egress(text.removeprefix("network:"))
    except ValueError as exc:
        ctx.fail(path, f"{exc}; expected network:{_EGRESS_FORMS}")


_effects = _array_of(_effect, "an array of non-empty strings")


def _args(ctx: _Ctx, path: _Path, value: object) -> Mapping[str, Constraint]:
    table = _Table.of(ctx, path, value, None)
    return MappingProxyType(
        {_visible(ctx, p, _word(ctx, p, k)): _constraint(ctx, p, v) for p, k, v in table.items()}
    )


def _constraint(ctx: _Ctx, path: _Path, value: object) -> Constraint:
    t = _Table.of(ctx, path, value, _CONSTRAINT_KEYS)
    if not t.data:
        ctx.fail(path, f"no constraint given; use one or more of {', '.join(_CONSTRAINT_KEYS)}")
    _check_kinds(t)
    low, high = t.get("min", _number, None), t.get("max", _number, None)
    if low is not None and high is not None and low > high:
        ctx.fail((*path, "min"), f"min ({t.data['min']}) is greater than max ({t.data['max']})")
    return Constraint(
        within=t.get("within", _roots, None),
        one_of=t.get("one_of", _choices, None),
        pattern=t.get("pattern", _regex, None),
        max_length=t.get("max_length", _at_least(0), None),
        min=low,
        max=high,
        hosts=t.get("hosts", _host_globs, None),
        sql=t.get("sql", _sql_mode, None),
    )


def _sql_mode(ctx: _Ctx, path: _Path, value: object) -> str:
    if value != "read-only":
        _expect(ctx, path, '"read-only" (the only SQL constraint)', value)
    return "read-only"


def _check_kinds(t: _Table) -> None:
    """Refuse kinds that no single value can pass, as a string kind with a number kind."""
    strings = [k for k in _STRING_KINDS if k in t.data]
    numbers = [k for k in _NUMBER_KINDS if k in t.data]
    if strings and numbers:
        t.ctx.fail(
            (*t.path, numbers[0]),
            f"{numbers[0]} needs a number and {strings[0]} a string: no value passes both; "
            "remove one",
        )
    items = t.data.get("one_of")
    if not (strings or numbers) or not isinstance(items, list):
        return
    kind, needs = (strings[0], "a string") if strings else (numbers[0], "a number")
    for index, item in enumerate(items):
        if _scalar_kind(item) != needs:
            t.ctx.fail(
                (*t.path, "one_of", index),
                f"{_show(item)} can never pass {kind}, which needs {needs}",
            )


def _scalar_kind(value: object) -> str:
    if isinstance(value, str):
        return "a string"
    return "a number" if isinstance(value, int | float) and not isinstance(value, bool) else ""


def _json_scalar(ctx: _Ctx, path: _Path, value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        _expect(ctx, path, "a finite number", value)
    if not isinstance(value, str | int | float | bool):
        _expect(ctx, path, "a string, number or boolean", value)
    return _visible(ctx, path, value) if isinstance(value, str) else value


_choices = _array_of(_json_scalar, "a non-empty array", non_empty=True)


def _regex(ctx: _Ctx, path: _Path, value: object) -> re.Pattern[str]:
    text = _visible(ctx, path, _string(ctx, path, value))
    try:
        return re.compile(text)
    except re.error as exc:
        ctx.fail(path, f"not a valid regular expression: {exc}")


def _host_glob(ctx: _Ctx, path: _Path, value: object) -> str:
    text = _visible(ctx, path, _string(ctx, path, value))
    try:
        return _normal_host(text)
    except ValueError as exc:
        ctx.fail(path, str(exc))


_host_globs = _array_of(_host_glob, "a non-empty array of host names", non_empty=True)
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"  # compiled at its first use, as _TOML_AT


def _normal_host(text: str) -> str:
    """Lower-case IDNA form of a host name, `*.` allowed in front; ValueError names the fault."""
    host = text.lower().removesuffix(".")
    wildcard = "*." if host.startswith("*.") else ""
    host = host.removeprefix(wildcard)
    if "*" in host:
        raise ValueError(
            f'{_show(text)}: "*" may only be the whole left-most label, as in "*.example.com"'
        )
    host = hostnames.to_ascii(host) or ""
    if not all(re.fullmatch(_LABEL, label) for label in host.split(".")):
        raise ValueError(f'{_show(text)} is not a host name like "example.com" or "*.example.com"')
    return wildcard + host


# --- [audit] -------------------------------------------------------------------------------

_AUDIT_KEYS = ("path", "arguments")


_AUTH_KEYS = ("required", "tenants")


_REQUIRED_FORMS = 'true, false, "read" or "write"'


def _required(ctx: _Ctx, path: _Path, value: object) -> ToolClass | None:
    """[auth] required: the lowest class whose calls need a token (true: "read", every
    call; "write": write and admin calls; false: none)."""
    if isinstance(value, bool):
        return ToolClass.READ if value else None
    if value == ToolClass.ADMIN.value:
        ctx.fail(
            path,
            '"admin" changes nothing: admin tools are never reachable through mcpwrap run, '
            'token or not; use "write" (or true)',
        )
    if value not in (ToolClass.READ.value, ToolClass.WRITE.value):
        _expect(ctx, path, _REQUIRED_FORMS, value)
    return ToolClass(value)


def _auth(t: _Table) -> AuthSpec:
    return AuthSpec(
        required=t.get("required", _required, None),
        tenants=tuple(t.get("tenants", _words, [])),
    )


def _audit(t: _Table) -> AuditSpec:
    path = t.get("path", _fs_path, None)
    if path is None:
        path = _fs_path(t.ctx, (*t.path, "path"), "{state}/audit.jsonl")
    return AuditSpec(path, t.get("arguments", _enum_of(ArgumentsMode), ArgumentsMode.DIGEST))
