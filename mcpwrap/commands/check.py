"""`mcpwrap check`: what a profile leaves open, as findings a person or a CI job can act on.

`findings()` is a pure function of a loaded profile (plus the home directory and which
grant paths exist, passed in), so each rule is a row in a table-driven test. A finding
is an error when the profile weakens a protection mcpwrap would otherwise give; a note
says what the jail will do that the author may not expect. Errors make the exit status
1, fit for a repository's CI.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from mcpwrap.commands.maturity import Level
from mcpwrap.config import paths
from mcpwrap.config.profile import Access, Network, Profile, ToolClass
from mcpwrap.policy import network as netpolicy
from mcpwrap.sandbox import account

ERROR, NOTE = "error", "note"


class Finding(NamedTuple):
    severity: str  # ERROR or NOTE
    rule: str  # the profile key it is about, dotted
    message: str
    fix: str


def findings(profile: Profile, *, home: str, exists: Callable[[str], bool]) -> list[Finding]:
    """Every finding for this profile, most serious first."""
    if profile.server.remote is not None and profile.server.remote.url:
        remote = [*_remote(profile), *_exposed(profile), *_unauthenticated(profile)]
        return sorted([*remote, *_name(profile)], key=lambda f: f.severity != ERROR)
    found = [
        *_project(profile, home),
        *_sandbox_off(profile),
        *_reduced_jail(profile),
        *_network(profile),
        *_egress(profile),
        *_writes(profile, home, exists),
        *_exposed(profile),
        *_unauthenticated(profile),
        *_name(profile),
    ]
    return sorted(found, key=lambda f: f.severity != ERROR)


def _project(profile: Profile, home: str) -> list[Finding]:
    """A profile that gives the server its project, checked where that project is one no
    server may have (`run` refuses to start it)."""
    from mcpwrap.config.project import problem

    why = problem(profile.project, home=home) if profile.uses_project else None
    if why is None:
        return []
    return [
        Finding(
            ERROR,
            "project",
            f"the profile gives the server its project, and here that is {profile.project}: "
            f"{why}; `mcpwrap run` refuses to start it",
            'name the project: --project DIR (VS Code, Cursor: "${workspaceFolder}"), '
            "MCPWRAP_PROJECT, or run from the project's directory",
        )
    ]


def _name(profile: Profile) -> list[Finding]:
    """A `name` that is not what --profile takes: the audit log and the command line
    would call one server two things."""
    stem = paths.profile_arg(profile.source)
    if profile.name == stem:
        return []
    return [
        Finding(
            NOTE,
            "name",
            f'name = "{profile.name}" is not the file\'s name: the audit log says '
            f"{profile.name} where --profile takes {stem}",
            f"remove `name` (it defaults to {stem}), or rename the file to {profile.name}.toml",
        )
    ]


def _exposed(profile: Profile) -> list[Finding]:
    """Tools reachable without constraints: every tool (default allow), or write tools
    with no argument constraints."""
    out = []
    if profile.policy.default is Access.ALLOW:
        out.append(
            Finding(
                ERROR,
                "policy.default",
                'default = "allow": every tool the server offers, now or after an update, '
                "is callable as class write with no argument constraints",
                'name the tools under [tools] and set default = "deny" (`mcpwrap init` '
                "writes such a list)",
            )
        )
    for name, tool in sorted(profile.tools.items()):
        if tool.cls is ToolClass.WRITE and not tool.args:
            out.append(
                Finding(
                    NOTE,
                    f"tools.{name}.args",
                    f"write tool {name!r} has no argument constraints: it may change anything "
                    "its grants reach",
                    f"constrain its arguments ([tools.{name}.args]: within, hosts, pattern, ...)",
                )
            )
    return out


def _unauthenticated(profile: Profile) -> list[Finding]:
    """Tools that change things, callable by anyone who can start the wrapper. (Admin tools
    are never callable through `run`, token or not, so they are no finding.)"""
    if profile.auth.needs_token(ToolClass.WRITE):
        return []
    names = sorted(n for n, t in profile.tools.items() if t.cls is ToolClass.WRITE)
    if not names:
        return []
    return [
        Finding(
            NOTE,
            "auth.required",
            f"write tools callable without a token: {', '.join(names)}",
            '[auth] required = "write" keeps reads open and lets only a write-class token '
            "(`mcpwrap token issue --class write ...`) call them",
        )
    ]


def _remote(profile: Profile) -> list[Finding]:
    """A remote server: no local process, so no jail; [sandbox] says nothing for it."""
    remote = profile.server.remote
    assert remote is not None
    return [
        Finding(
            NOTE,
            "server.url",
            f"a remote server ({remote.url}): no local process, so no jail; [sandbox] does "
            "not apply. Listings, argument checks, sanitising, tokens and the audit log do",
            "nothing to fix; what the server does on its side is its operator's to limit",
        )
    ]


def _sandbox_off(profile: Profile) -> list[Finding]:
    if profile.sandbox.enforce:
        return []
    return [
        Finding(
            ERROR,
            "sandbox.enforce",
            "enforce = false: the server runs unsandboxed, with your full rights (every "
            "file you can read, every host you can reach)",
            "remove `enforce = false`; if a layer is missing on this machine, "
            "`mcpwrap doctor` says which and how to add it",
        )
    ]


_WEAKER = "no mount, network or pid namespace; " + account.weaker_summary()


def _reduced_jail(profile: Profile) -> list[Finding]:
    """A profile that accepts the jail without namespaces: not an error (the server is
    still jailed), but weaker, and the author should have chosen it knowingly."""
    jail = profile.sandbox.jail.value
    if not profile.sandbox.enforce or jail == "full":
        return []
    when = (
        "always, even where the full jail is available"
        if jail == "reduced"
        else "where user namespaces are blocked (Ubuntu 23.10+ without mcpwrap's AppArmor "
        "profile, user.max_user_namespaces=0)"
    )
    return [
        Finding(
            NOTE,
            "sandbox.jail",
            f'jail = "{jail}": the server runs in the reduced jail {when}; it is weaker: '
            + _WEAKER,
            'jail = "full" (the default) where the server handles secrets or writes under '
            "your home; on Ubuntu `sudo mcpwrap doctor --fix` makes the full jail available",
        )
    ]


def _network(profile: Profile) -> list[Finding]:
    if profile.sandbox.network is not Network.HOST:
        return []
    return [
        Finding(
            ERROR,
            "sandbox.network",
            'network = "host": the server can reach every host and every service on '
            "this machine's loopback",
            'use network = "none", or "allowlist" with the endpoints it needs in egress',
        )
    ]


def _egress(profile: Profile) -> list[Finding]:
    """What the allowlist opens beyond public hosts, and effects that cannot be used."""
    rules = netpolicy.entries(profile)
    network = profile.sandbox.network
    if network is not Network.ALLOWLIST:
        scoped = sorted({e.rule for e in rules if e.tool is not None})
        if not scoped or network is Network.HOST:
            return []
        return [
            Finding(
                NOTE,
                scoped[0],
                f"{', '.join(scoped)} declare network endpoints, and network is "
                f'"{network.value}": no call can reach them',
                'set network = "allowlist" in [sandbox], or remove the network effects',
            )
        ]
    if not rules:
        return [
            Finding(
                NOTE,
                "sandbox.egress",
                'network = "allowlist" with no endpoints, in egress or in any tool\'s '
                'effects: nothing is reachable, as with "none"',
                'list the endpoints the server needs, or set network = "none"',
            )
        ]
    return [f for e in rules if (f := _egress_entry(e)) is not None]


def _egress_entry(entry: netpolicy.Entry) -> Finding | None:
    shown = f"{'tcp:' if entry.tcp else ''}{entry.host}:{entry.port}"
    address = entry.literal
    why = netpolicy.refused_address(address) if address is not None else None
    if address is not None and address.is_link_local:
        return Finding(
            ERROR,
            entry.rule,
            f"{shown}: {why}. On a cloud machine this address hands out the machine's "
            "credentials to whoever asks",
            "remove the entry; no MCP server needs the metadata service",
        )
    if why:
        return Finding(
            NOTE,
            entry.rule,
            f"{shown}: {why}. The server reaches a service on this machine or its network, "
            "with whatever trust that service gives local clients",
            "keep it only for a service the server needs (a database, say), and prefer "
            "declaring it in the effects of the tools that use it",
        )
    if entry.host.startswith("*."):
        return Finding(
            NOTE,
            entry.rule,
            f"{shown} admits every name under {entry.host[2:]}, at any depth",
            "list the names the server uses, if they are few",
        )
    return None


_DANGEROUS = ("/", "/etc", "/usr", "/bin", "/sbin", "/lib", "/var", "/boot", "/root", "/home")


def _writes(profile: Profile, home: str, exists: Callable[[str], bool]) -> list[Finding]:
    out: list[Finding] = []
    for grant in profile.sandbox.write:
        where = grant.rstrip("/") or "/"
        if where in _DANGEROUS or where == home.rstrip("/"):
            out.append(
                Finding(
                    ERROR,
                    "sandbox.write",
                    f"write grant on {where}: the server may change anything there",
                    "grant the directories it works on, such as {project}/build",
                )
            )
        elif not exists(grant):
            out.append(
                Finding(
                    NOTE,
                    "sandbox.write",
                    f"write grant on {grant}, which does not exist: the jail leaves it out",
                    "create it before the run, or remove the grant",
                )
            )
        elif where == profile.project and (missing := _missing_protected(where, exists)):
            out.append(_sealed_root(where, missing))
    return out


def _sealed_root(root: str, missing: list[str]) -> Finding:
    text = (
        f"write grant on the project root {root}, where {', '.join(missing)} do not exist "
        "yet: no server may create them, so the jail seals the root (the server creates "
        "nothing there itself; mcpwrap makes its other new files there and refuses those)"
    )
    fix = "grant write on subdirectories, or create those paths yourself"
    if root.startswith("/tmp/"):  # noqa: S108 - the jail's own /tmp: a seal cannot hold there
        return Finding(ERROR, "sandbox.write", text + "; under /tmp the run stops instead", fix)
    return Finding(NOTE, "sandbox.write", text, fix)


def _missing_protected(project: str, exists: Callable[[str], bool]) -> list[str]:
    from mcpwrap.sandbox.spec import PROTECTED_IN_PROJECT

    return [p for p in PROTECTED_IN_PROJECT if not exists(os.path.join(project, p))]


def report_text(path: str, found: Sequence[Finding], level: Level | None = None) -> str:
    if not found:
        text = f"{path}: ok, no findings\n"
    else:
        text = "".join(
            f"{path}: {f.severity}: {f.rule}: {f.message}\n    to fix: {f.fix}\n" for f in found
        )
    return text + (_level_text(path, level) if level is not None else "")


def _level_text(path: str, level: Level) -> str:
    from mcpwrap.commands.maturity import NAMES

    head = f"{path}: level {level.value} of 4 ({NAMES[level.value]})"
    if not level.missing:
        return head + "\n"
    steps = "".join(f"\n    for {s.level}: {s.missing}" for s in level.missing)
    return head + "; missing:" + steps + "\n"


_LIMIT_KEYS = {
    "RLIMIT_DATA": "memory",
    "RLIMIT_FSIZE": "file_size",
    "RLIMIT_NPROC": "processes",
    "RLIMIT_NOFILE": "open_files",
    "RLIMIT_CPU": "cpu",
}


def limit_findings(profile: Profile, hard: Mapping[str, int]) -> list[Finding]:
    """[sandbox] limits above this user's hard limits here (`hard`: by RLIMIT_ name, the
    unlimited ones left out). No process in a new user namespace may raise a hard limit,
    root or not, so the jail cannot set them and `run` stops."""
    if not profile.sandbox.enforce:
        return []
    from mcpwrap.sandbox.spec import rlimits

    out = []
    for name, value in rlimits(profile).items():
        limit = hard.get(name)
        key = _LIMIT_KEYS.get(name)
        if limit is None or key is None or value <= limit:
            continue
        out.append(
            Finding(
                ERROR,
                f"sandbox.{key}",
                f"{key} asks for {value} ({name}), above this user's hard limit of {limit} "
                "here: the jail cannot raise a hard limit, so `mcpwrap run` stops",
                f"lower it to at most {limit}, or raise the hard limit (ulimit -H, "
                "/etc/security/limits.conf)",
            )
        )
    return out


def hard_limits() -> dict[str, int]:
    """This process's hard limits by RLIMIT_ name, the unlimited ones left out."""
    import resource

    found = {}
    for name in _LIMIT_KEYS:
        hard = resource.getrlimit(getattr(resource, name))[1]
        if hard != resource.RLIM_INFINITY:
            found[name] = hard
    return found


def lock_findings(profile: Profile, lock: Any, lock_path: str) -> list[Finding]:
    """Findings about the profile's lock: pinned definitions that look poisoned (a lock
    that does not load is passed as its error message; no lock, no findings)."""
    name = paths.profile_arg(profile.source)
    if lock is None:
        return [
            Finding(
                NOTE,
                "lock",
                "no lock: a changed package or tool definition would pass unnoticed",
                f"run `mcpwrap lock --profile {name}` and commit {os.path.basename(lock_path)}",
            )
        ]
    if isinstance(lock, str):
        return [Finding(ERROR, "lock", lock, f"run `mcpwrap lock --profile {name}` again")]
    from mcpwrap.policy import poison

    found: list[Finding] = []
    names = sorted(lock.tools)
    for tool in names:
        definition = json.loads(lock.tools[tool].definition)
        found += [
            _poison_finding(f, f"lock.tools.{tool}", lock_path)
            for f in poison.tool_findings(definition)
        ]
    if lock.instructions is not None:
        found += [
            _poison_finding(f, "lock.instructions", lock_path)
            for f in poison.text_findings(
                lock.instructions.definition, "instructions", max_length=16_000
            )
        ]
    return found


def arg_findings(profile: Profile, lock: Any) -> list[Finding]:
    """Constraints on argument names that the tool's pinned inputSchema does not list: a
    typo (`pqth` for `path`) constrains nothing and leaves the real argument open. Without
    a lock, or a pin of the tool that lists properties, the names cannot be checked."""
    constrained = sorted(name for name, tool in profile.tools.items() if tool.args)
    if not constrained or isinstance(lock, str):  # a lock that does not load: its own error
        return []
    if lock is None:
        return [_unchecked(constrained, "no lock pins their definitions")]
    found, unpinned = [], []
    for name in constrained:
        known = _properties(lock.tools.get(name))
        if known is None:
            unpinned.append(name)
            continue
        found += [
            _unknown_arg(name, arg, known) for arg in profile.tools[name].args if arg not in known
        ]
    if unpinned:
        found.append(_unchecked(unpinned, "the lock pins no schema that lists their properties"))
    return found


def _properties(pin: Any) -> list[str] | None:
    """The argument names a pinned definition's inputSchema lists; None if it lists none."""
    if pin is None:
        return None
    definition = json.loads(pin.definition)
    schema = definition.get("inputSchema") if isinstance(definition, dict) else None
    props = schema.get("properties") if isinstance(schema, dict) else None
    return list(props) if isinstance(props, dict) else None


def _unknown_arg(tool: str, arg: str, known: list[str]) -> Finding:
    import difflib

    close = difflib.get_close_matches(arg, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return Finding(
        ERROR,
        f"tools.{tool}.args.{arg}",
        f"tool {tool!r} has no argument {arg!r} in its pinned schema (it has: "
        f"{', '.join(known) or 'none'}): this constraint never applies{hint}",
        f"constrain the argument by its name in the schema{f' ({close[0]})' if close else ''}",
    )


def _unchecked(tools: list[str], why: str) -> Finding:
    return Finding(
        NOTE,
        f"tools.{tools[0]}.args",
        f"the argument names constrained for {', '.join(tools)} could not be checked "
        f"against the tools' schemas: {why}",
        "lock the server (`mcpwrap lock`) so that a misspelt argument name is an error",
    )


def _poison_finding(f: Any, where: str, lock_path: str) -> Finding:
    severity = NOTE if f.rule == "descriptions.length" else ERROR
    return Finding(
        severity,
        f"{where}.{f.where}",
        f"the pinned definition looks poisoned ({f.rule}): {f.detail}",
        f"read it in {lock_path}; if the server cannot be trusted, remove it from the "
        'profile; [policy] descriptions = "block" hides such tools at run time',
    )


def token_findings(issued: Sequence[Any], now: float) -> list[Finding]:
    """Tokens still in force whose whole life is long: a leaked one stays useful."""
    from mcpwrap.identity.tokens import LONG_LIFE_SECONDS

    found = []
    for token in issued:
        life = token.expires - token.not_before
        if token.expires > now and life > LONG_LIFE_SECONDS:
            found.append(
                Finding(
                    NOTE,
                    f"token.{token.id}",
                    f"token {token.id} (tenant {token.scope.tenant}"
                    + (f", name {token.name}" if token.name else "")
                    + f") lives {life / 86400:.0f} days",
                    "issue shorter-lived tokens and let named ones rotate; "
                    f"`mcpwrap token revoke {token.id}` ends this one",
                )
            )
    return found


def report_json(
    results: dict[str, Sequence[Finding] | str], levels: dict[str, Level] | None = None
) -> str:
    """{"profiles": [{"path", "valid", "error"?, "findings": [...], "level"?: {"value",
    "missing": [{"level", "missing"}]}}]}."""
    profiles: list[dict[str, Any]] = []
    for path, result in results.items():
        if isinstance(result, str):
            profiles.append({"path": path, "valid": False, "error": result, "findings": []})
            continue
        items = [f._asdict() for f in result]
        entry: dict[str, Any] = {"path": path, "valid": True, "findings": items}
        level = (levels or {}).get(path)
        if level is not None:
            missing = [{"level": s.level, "missing": s.missing} for s in level.missing]
            entry["level"] = {"value": level.value, "missing": missing}
        profiles.append(entry)
    return json.dumps({"profiles": profiles}, indent=2) + "\n"


def exit_status(results: dict[str, Sequence[Finding] | str]) -> int:
    """2 when a profile does not load, 1 when one has an error finding, else 0."""
    if any(isinstance(r, str) for r in results.values()):
        return 2
    lists = [r for r in results.values() if not isinstance(r, str)]
    return 1 if any(f.severity == ERROR for found in lists for f in found) else 0


def _lock(profile: Profile) -> tuple[Any, str]:
    """The profile's lock (None if there is none, the error text if it does not load)."""
    from mcpwrap.basics.errors import LockError
    from mcpwrap.supply import pins

    path = paths.find_lock(profile.source, paths.served(profile))
    try:
        return pins.load(path, paths.profile_arg(profile.source)), path
    except LockError as exc:
        return str(exc), path


def _issued_tokens(state_dir: str) -> list[Any]:
    """The tokens issued on this machine and not revoked (no registry: none)."""
    path = os.path.join(state_dir, "tokens.sqlite3")
    if not os.path.exists(path):
        return []
    from mcpwrap.identity.tokens import Registry

    registry = Registry(path)
    return [t for t in registry.all() if not registry.revoked(t.id)]


def check_paths(
    paths: Sequence[str], *, as_json: bool, project: str | None = None
) -> tuple[str, int]:
    """Load each profile and collect its findings: (the report, the exit status)."""
    from mcpwrap.basics.errors import MCPWrapError
    from mcpwrap.commands.maturity import assess
    from mcpwrap.config import paths as places

    results: dict[str, Sequence[Finding] | str] = {}
    levels: dict[str, Level] = {}
    for name in paths:
        try:
            # Unguarded: a project no server may have is a finding here, not a stop.
            profile = places.load(name, project=project, guard=False)
            path = profile.source
        except MCPWrapError as exc:
            results[name] = str(exc)
            continue
        found = findings(profile, home=os.path.expanduser("~"), exists=os.path.exists)
        found += limit_findings(profile, hard_limits())
        lock, lock_path = _lock(profile)
        found += lock_findings(profile, lock, lock_path) + arg_findings(profile, lock)
        found = sorted(found, key=lambda f: f.severity != ERROR)
        results[path] = found
        errors = any(f.severity == ERROR for f in found)
        levels[path] = assess(
            profile, locked=lock is not None and not isinstance(lock, str), errors=errors
        )
    issued = _issued_tokens(places.state_dir())
    if issued:
        import time

        found = token_findings(issued, time.time())
        if found:
            results["issued tokens"] = found
    if as_json:
        return report_json(results, levels), exit_status(results)
    text = "".join(
        f"{p}: invalid: {r}\n" if isinstance(r, str) else report_text(p, r, levels.get(p))
        for p, r in results.items()
    )
    return text, exit_status(results)
