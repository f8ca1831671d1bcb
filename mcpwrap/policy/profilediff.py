"""What a profile change widens and what it narrows, as sentences for the audit record.

`widened(old, new)` and `narrowed(old, new)` are pure functions of two loaded profiles.
Each item names a key as the profile writes it and its old and new values, in profile
order (server, sandbox, policy, tools by name, audit), e.g. `sandbox.network: "none" ->
"allowlist"` or `tools.fetch.effects: added "network:api.x.test:443"`.

Rules worth knowing:

* A grant, root, egress entry or host glob that an old one already covers (a subdirectory,
  a name under an old `*.` wildcard) widens nothing; a parent of an old grant does. Write
  grants cover read grants, as the jail lets a server read what it may write.
* None in a limit means unlimited, the widest; in a constraint kind, that kind is unset.
* A change that cannot be ordered (a new regex, a new command, a changed env value, a
  moved audit log) counts as widened: a reviewer must see it. So for these, `narrowed`
  is not `widened` with its arguments swapped.
* Tools compare by their effective spec (Profile.tool): with `policy.default = "allow"` an
  unlisted tool is class "write" without limits, so dropping a listed tool can widen it.
  A tool without a timeout inherits `policy.timeout`.
* Every field of every spec is either compared (COMPARED) or ignored for a stated reason
  (IGNORED); the tests fail on a field in neither. At run time such a field still reports
  `KEY: changed`, as widened, rather than being dropped.
* env values may be secrets: only their names are shown.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

from mcpwrap.basics.units import Rate
from mcpwrap.config.profile import (
    Access,
    AuditSpec,
    AuthSpec,
    Constraint,
    Descriptions,
    JailKind,
    Network,
    PolicySpec,
    Profile,
    SandboxSpec,
    Selection,
    ServerSpec,
    Syscalls,
    ToolClass,
    ToolSpec,
)
from mcpwrap.policy import network as netpolicy
from mcpwrap.policy.constraints import host_matches

T = TypeVar("T")


class Change(NamedTuple):
    wider: bool  # False: narrower
    text: str


# (key path, old value, new value) -> changes; most comparers look at one field's values.
ValueCompare = Callable[[str, Any, Any], Iterator[Change]]
# (key path, field name, old section, new section) -> changes; the tables hold these.
Compare = Callable[[str, str, Any, Any], Iterator[Change]]


def widened(old: Profile, new: Profile) -> list[str]:
    """What `new` allows that `old` did not, plus changes that cannot be ordered."""
    return [c.text for c in _changes(old, new) if c.wider]


def narrowed(old: Profile, new: Profile) -> list[str]:
    """What `old` allowed that `new` no longer does."""
    return [c.text for c in _changes(old, new) if not c.wider]


def _changes(old: Profile, new: Profile) -> Iterator[Change]:
    return _walk("", old, new)


def _walk(prefix: str, old: Any, new: Any) -> Iterator[Change]:
    """Compare two values of one NamedTuple type field by field, in declaration order."""
    kind = type(old)
    compared, ignored = COMPARED[kind], IGNORED.get(kind, {})
    for field in kind._fields:
        if field in ignored:
            continue
        key = _join(prefix, _TOML_NAMES.get(field, field))
        yield from compared.get(field, _unknown)(key, field, old, new)


_TOML_NAMES = {"cls": "class"}  # field names that differ from the profile's keys
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _join(prefix: str, key: str) -> str:
    key = key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)
    return f"{prefix}.{key}" if prefix else key


def _unknown(key: str, field: str, old: Any, new: Any) -> Iterator[Change]:
    # A field nobody taught this module about: say that it changed, never its values
    # (they could be secrets), and count it as widened so a reviewer looks.
    if getattr(old, field) != getattr(new, field):
        yield Change(True, f"{key}: changed")


def _value(compare: ValueCompare) -> Compare:
    """A table entry that compares the field's own values."""

    def entry(key: str, field: str, old: Any, new: Any) -> Iterator[Change]:
        return compare(key, getattr(old, field), getattr(new, field))

    return entry


def _section(key: str, field: str, old: Any, new: Any) -> Iterator[Change]:
    return _walk(key, getattr(old, field), getattr(new, field))


# --- showing values as the profile writes them ----------------------------------------------

_SIZE_UNITS = sorted(
    [(f"{p}iB", 1024 ** (i + 1)) for i, p in enumerate("KMGT")]
    + [(f"{p}B", 1000 ** (i + 1)) for i, p in enumerate("kMGT")],
    key=lambda unit: -unit[1],
)
_DURATION_UNITS = (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 0.001))
_RATE_UNITS = {1.0: "s", 60.0: "min", 3600.0: "hour", 86400.0: "day"}


def _toml(value: object) -> str:
    """A value as TOML writes it; None (an absent optional key) is `unset`."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return json.dumps(value.value)
    if isinstance(value, re.Pattern):
        return json.dumps(value.pattern, ensure_ascii=False)
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def _size(value: int) -> str:
    # The largest unit that divides exactly: the text parses back to the same size.
    for unit, factor in _SIZE_UNITS:
        if value % factor == 0:
            return f'"{value // factor}{unit}"'
    return f'"{value}B"'


def _duration(value: float) -> str:
    for unit, factor in _DURATION_UNITS:
        count = value / factor
        if math.isclose(count, round(count), rel_tol=1e-12) and round(count) >= 1:
            return f'"{round(count)}{unit}"'
    return f'"{_number(value)}s"'


class _Inherited(float):
    """A tool timeout taken from policy.timeout because the tool sets none."""


def _timeout(value: float) -> str:
    text = _duration(value)
    return f"{text} (policy.timeout)" if isinstance(value, _Inherited) else text


def _rate(value: Rate) -> str:
    unit = _RATE_UNITS.get(value.per_seconds)
    per = unit if unit is not None else _duration(value.per_seconds).strip('"')
    return f'"{value.count}/{per}"'


def _selection(value: Selection) -> str:
    if value.allow_all:
        return '"allow"'
    return _toml(value.patterns) if value.patterns else '"deny"'


# --- comparers of one field -----------------------------------------------------------------


def _ranked(*order: object) -> ValueCompare:
    """Values in `order` from narrowest to widest."""

    def compare(key: str, old: object, new: object) -> Iterator[Change]:
        if old != new:
            yield Change(
                order.index(new) > order.index(old), f"{key}: {_toml(old)} -> {_toml(new)}"
            )

    return compare


def _token_floor(key: str, old: ToolClass | None, new: ToolClass | None) -> Iterator[Change]:
    """[auth] required: fewer classes needing a token widens."""
    order = (ToolClass.READ, ToolClass.WRITE, None)
    if old != new:
        yield Change(
            order.index(new) > order.index(old),
            f"{key}: {_token_floor_shown(old)} -> {_token_floor_shown(new)}",
        )


def _token_floor_shown(required: ToolClass | None) -> str:
    """As written: true for every call, false for none."""
    if required is ToolClass.WRITE:
        return '"write"'
    return _toml(required is ToolClass.READ)


def _limit(show: Callable[[Any], str], unset: str = "unlimited") -> ValueCompare:
    """A maximum: higher is wider, None (no maximum) widest."""

    def compare(key: str, old: float | None, new: float | None) -> Iterator[Change]:
        if old == new:
            return
        wider = new is None or (old is not None and new > old)
        yield Change(wider, f"{key}: {_or(show, old, unset)} -> {_or(show, new, unset)}")

    return compare


def _floor(key: str, old: float | None, new: float | None) -> Iterator[Change]:
    """A minimum: lower is wider, None (no minimum) widest."""
    if old == new:
        return
    wider = new is None or (old is not None and new < old)
    yield Change(wider, f"{key}: {_toml(old)} -> {_toml(new)}")


def _or(show: Callable[[Any], str], value: object, unset: str) -> str:
    return unset if value is None else show(value)


def _changed(key: str, old: object, new: object) -> Iterator[Change]:
    """Values with no order (a command, a path, a regex): any change counts as widened."""
    if old != new:
        yield Change(True, f"{key}: changed from {_toml(old)} to {_toml(new)}")


def _rate_limit(key: str, old: Rate | None, new: Rate | None) -> Iterator[Change]:
    if old == new:
        return
    yield Change(
        _rate_wider(old, new),
        f"{key}: {_or(_rate, old, 'unlimited')} -> {_or(_rate, new, 'unlimited')}",
    )


def _rate_wider(old: Rate | None, new: Rate | None) -> bool:
    # A rate is a token bucket: a bigger burst (count) or a faster refill is wider. One up
    # and the other down cannot be ordered, so it counts as widened too.
    if old is None or new is None:
        return new is None
    burst = new.count > old.count
    return burst or new.count * old.per_seconds > old.count * new.per_seconds


def _members(covered: Callable[[Any, Sequence[Any]], bool]) -> ValueCompare:
    """Collections: an item no old item covers is added (wider), and the reverse removed."""

    def compare(key: str, old: Sequence[Any], new: Sequence[Any]) -> Iterator[Change]:
        yield from _member_changes(key, old, new, covered, old_cover=old, new_cover=new)

    return compare


def _member_changes(
    key: str,
    old: Sequence[T],
    new: Sequence[T],
    covered: Callable[[T, Sequence[T]], bool],
    *,
    old_cover: Sequence[T],
    new_cover: Sequence[T],
) -> Iterator[Change]:
    for item in _distinct(new):
        if not covered(item, old_cover):
            yield Change(True, f"{key}: added {_toml(item)}")
    for item in _distinct(old):
        if not covered(item, new_cover):
            yield Change(False, f"{key}: removed {_toml(item)}")


def _distinct(items: Sequence[T]) -> list[T]:
    found: list[T] = []
    for item in items:
        if not _equal(item, found):
            found.append(item)
    return found


def _optional(compare: ValueCompare) -> ValueCompare:
    """A constraint kind: unset allows anything, so removing it widens, adding it narrows."""

    def optional(key: str, old: object, new: object) -> Iterator[Change]:
        if old is None and new is None:
            return
        if old is None or new is None:
            yield Change(new is None, f"{key}: {_toml(old)} -> {_toml(new)}")
        else:
            yield from compare(key, old, new)

    return optional


# --- what covers what ------------------------------------------------------------------------


def _equal(item: object, items: Sequence[object]) -> bool:
    # Type-strict, as the constraint check is: JSON true is not 1, and 1 is not 1.0.
    return any(type(item) is type(other) and item == other for other in items)


def _under(path: str, roots: Sequence[str]) -> bool:
    """`path` is one of `roots` or inside one (all are absolute and normalised)."""
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def _host_covered(glob: str, globs: Sequence[str]) -> bool:
    # host_matches treats the glob's own "*." as a label: "*.a.x.test" is under "*.x.test".
    return any(glob == other or host_matches(glob, other) for other in globs)


def _endpoint_covered(text: str, entries: Sequence[str]) -> bool:
    """An egress entry that some entry of `entries` already admits."""
    entry = netpolicy.parse_entry(text)
    for other_text in entries:
        other = netpolicy.parse_entry(other_text)
        if (entry.tcp, entry.port) != (other.tcp, other.port):
            continue
        if entry.host == other.host:
            return True
        # An address literal is admitted only by itself (netpolicy does the same).
        if entry.literal is None and other.literal is None and host_matches(entry.host, other.host):
            return True
    return False


def _effect_covered(effect: str, effects: Sequence[str]) -> bool:
    if not effect.startswith("network:"):
        return effect in effects
    endpoints = [e.removeprefix("network:") for e in effects if e.startswith("network:")]
    return _endpoint_covered(effect.removeprefix("network:"), endpoints)


# --- comparers that need more than one field, or keyed collections ------------------------


def _read_grants(key: str, field: str, old: SandboxSpec, new: SandboxSpec) -> Iterator[Change]:
    # A server may read what it may write: a read grant under a write grant adds nothing.
    yield from _member_changes(
        key,
        old.read,
        new.read,
        _under,
        old_cover=(*old.read, *old.write),
        new_cover=(*new.read, *new.write),
    )


def _named(show_changed: Callable[[str, str, str], str]) -> ValueCompare:
    """A table of NAME = value: added and changed names widen, removed ones narrow."""

    def compare(key: str, old: Mapping[str, str], new: Mapping[str, str]) -> Iterator[Change]:
        for name, value in new.items():
            if name not in old:
                yield Change(True, f"{key}: added {name}")
            elif old[name] != value:
                yield Change(True, f"{key}: changed {show_changed(name, old[name], value)}")
        for name in old:
            if name not in new:
                yield Change(False, f"{key}: removed {name}")

    return compare


def _name_only(name: str, old: str, new: str) -> str:
    return name  # env values may be secrets


def _reference(name: str, old: str, new: str) -> str:
    return f"{name} ({_toml(old)} -> {_toml(new)})"  # "keyring:SERVICE/USER" names, no secret


def _remote(key: str, old: Any, new: Any) -> Iterator[Change]:
    """[server] url and its keys (config/remote.py RemoteSpec). Another server, another
    credential, another trust root or fewer pins widen (the first two cannot be ordered);
    headers, the transport and our own client certificate are noted, not grants."""
    if old == new:
        return
    if old is None or new is None:
        now = "a remote server" if new is not None else "a local command"
        yield Change(
            True, f"{key}.url: {_toml(old and old.url)} -> {_toml(new and new.url)} ({now})"
        )
        return
    yield from _changed(f"{key}.url", old.url, new.url)
    if old.transport != new.transport:
        yield Change(False, f"{key}.transport: {old.transport} -> {new.transport}")
    yield from (
        c._replace(wider=False)
        for c in _named(_reference)(f"{key}.headers", old.headers, new.headers)
    )
    yield from _changed(f"{key}.bearer", old.bearer, new.bearer)
    yield from _changed(f"{key}.oauth", old.oauth, new.oauth)
    tls = f"{key}.tls"
    yield from _changed(f"{tls}.ca", old.tls.ca, new.tls.ca)
    for field in ("client_cert", "client_key"):
        before, after = getattr(old.tls, field), getattr(new.tls, field)
        if before != after:
            yield Change(False, f"{tls}.{field}: {_toml(before)} -> {_toml(after)}")
    if old.tls.pins and not new.tls.pins:
        yield Change(True, f"{tls}.pins: removed: any key the CA vouches for is accepted")
    elif old.tls.pins or new.tls.pins:
        yield from _members(_equal)(f"{tls}.pins", old.tls.pins, new.tls.pins)


def _tenants(key: str, old: tuple[str, ...], new: tuple[str, ...]) -> Iterator[Change]:
    """An empty list serves every tenant: the widest."""
    if old and not new:
        yield Change(True, f"{key}: {_toml(list(old))} -> any tenant")
    elif new and not old:
        yield Change(False, f"{key}: any tenant -> {_toml(list(new))}")
    else:
        yield from _members(_equal)(key, old, new)


def _selection_change(key: str, old: Selection, new: Selection) -> Iterator[Change]:
    # Narrowest to widest: "deny", a list of globs, "allow". Two lists compare glob by glob,
    # by equality: glob containment is easy to get wrong ("a*" as a name matches "a?").
    ranks = (_selection_rank(old), _selection_rank(new))
    if ranks == (1, 1):
        yield from _members(_equal)(key, old.patterns, new.patterns)
    elif ranks[0] != ranks[1]:
        yield Change(ranks[1] > ranks[0], f"{key}: {_selection(old)} -> {_selection(new)}")


def _selection_rank(value: Selection) -> int:
    return 2 if value.allow_all else 1 if value.patterns else 0


def _args(
    key: str, old: Mapping[str, Constraint], new: Mapping[str, Constraint]
) -> Iterator[Change]:
    for arg in sorted(old.keys() | new.keys()):
        arg_key = _join(key, arg)
        if arg not in new:
            yield Change(True, f"{arg_key}: constraint removed")
        elif arg not in old:
            yield Change(False, f"{arg_key}: constraint added")
        else:
            yield from _walk(arg_key, old[arg], new[arg])


def _tools(key: str, field: str, old: Profile, new: Profile) -> Iterator[Change]:
    for name in sorted(old.tools.keys() | new.tools.keys()):
        tool_key = _join(key, name)
        before, after = old.tool(name), new.tool(name)
        if before is None and after is not None:
            yield Change(True, f"{tool_key}: added (class {after.cls.value})")
        elif after is None and before is not None:
            yield Change(False, f"{tool_key}: removed (class {before.cls.value})")
        elif before is not None and after is not None:
            before, after = _inherit_timeouts(before, after, old.policy, new.policy)
            yield from _walk(tool_key, before, after)


def _inherit_timeouts(
    old: ToolSpec, new: ToolSpec, old_policy: PolicySpec, new_policy: PolicySpec
) -> tuple[ToolSpec, ToolSpec]:
    # Only when one side sets a timeout: if neither does, policy.timeout speaks for both.
    if (old.timeout is None) == (new.timeout is None):
        return old, new
    if old.timeout is None:
        return old._replace(timeout=_Inherited(old_policy.timeout)), new
    return old, new._replace(timeout=_Inherited(new_policy.timeout))


# --- the tables: every field of every spec, compared or ignored ----------------------------

_access = _value(_ranked(Access.DENY, Access.ALLOW))

COMPARED: Mapping[type, Mapping[str, Compare]] = {
    Profile: {
        "server": _section,
        "sandbox": _section,
        "policy": _section,
        "tools": _tools,
        "audit": _section,
        "auth": _section,
    },
    ServerSpec: {
        "command": _value(_changed),
        "cwd": _value(_changed),
        "env": _value(_named(_name_only)),
        "passthrough": _value(_members(_equal)),
        "secrets": _value(_named(_reference)),
        "remote": _value(lambda key, old, new: _remote(key.rsplit(".", 1)[0], old, new)),
    },
    SandboxSpec: {
        "enforce": _value(_ranked(True, False)),
        "network": _value(_ranked(Network.NONE, Network.ALLOWLIST, Network.HOST)),
        "egress": _value(_members(_endpoint_covered)),
        "read": _read_grants,
        "write": _value(_members(_under)),
        "memory": _value(_limit(_size)),
        "cpu": _value(_limit(_duration)),
        "processes": _value(_limit(str)),
        "open_files": _value(_limit(str)),
        "file_size": _value(_limit(_size)),
        "syscalls": _value(_ranked(Syscalls.STRICT, Syscalls.DEFAULT)),
        # Accepting the reduced jail (no namespaces) where the full one was required widens.
        "jail": _value(_ranked(JailKind.FULL, JailKind.ANY, JailKind.REDUCED)),
        "egress_connections": _value(_limit(str)),
        "egress_idle": _value(_limit(_duration)),
        "egress_bytes": _value(_limit(_size)),
    },
    AuthSpec: {
        "required": _value(_token_floor),
        "tenants": _value(_tenants),
    },
    PolicySpec: {
        "default": _access,
        "timeout": _value(_limit(_duration)),
        "sampling": _access,
        "elicitation": _access,
        "roots": _access,
        "resources": _value(_selection_change),
        "prompts": _value(_selection_change),
        "descriptions": _value(_ranked(Descriptions.BLOCK, Descriptions.WARN)),
    },
    ToolSpec: {
        "cls": _value(_ranked(ToolClass.READ, ToolClass.WRITE, ToolClass.ADMIN)),
        "timeout": _value(_limit(_timeout)),
        "rate": _value(_rate_limit),
        "concurrency": _value(_limit(str)),
        "effects": _value(_members(_effect_covered)),
        "args": _value(_args),
    },
    Constraint: {
        "within": _value(_optional(_members(_under))),
        "one_of": _value(_optional(_members(_equal))),
        "pattern": _value(_optional(_changed)),
        "max_length": _value(_limit(str, unset="unset")),
        "min": _value(_floor),
        "max": _value(_limit(_toml, unset="unset")),
        "hosts": _value(_optional(_members(_host_covered))),
        "sql": _value(_optional(_changed)),
    },
    AuditSpec: {
        # Not a capability, but a moved log can hide records from whoever reads the old one.
        "path": _value(_changed),
    },
}

IGNORED: Mapping[type, Mapping[str, str]] = {
    Profile: {
        "version": "the format version: this mcpwrap loads version 1 only",
        "name": "a label for audit records, not something the server may do",
        "source": "where the profile was read from, not what it allows",
        "digest": "changes with every edit, comments included",
        "project": "already expanded into every path compared here",
        "uses_project": "follows from the paths compared here",
    },
    ToolSpec: {"name": "the key under [tools], compared as such"},
    AuditSpec: {"arguments": "how much of each call is recorded, not what the server may do"},
}
