"""`mcpwrap lock` and `mcpwrap approve`: pin a server, and accept a change to it.

`lock` resolves the command (for npx/uvx it fetches the exact version once, into
mcpwrap's store), hashes what will run, starts the server in its jail to read its
instructions and tools, and writes `.mcpwrap/NAME.lock`. `approve` keeps the locked
command and version, and pins what is installed and offered now. Either way, when a lock
exists the changes are shown (artifacts, versions, a diff per tool) and written only once
the user says yes (`--yes` for scripts). Each write is an audit record.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import NamedTuple

from mcpwrap import artifacts, launch, paths, pins
from mcpwrap.audit import AuditWriter
from mcpwrap.errors import LockError
from mcpwrap.profile import Profile
from mcpwrap.records import Agent


class LockOptions(NamedTuple):
    profile: str | None
    command: tuple[str, ...]
    approve: bool  # keep the locked command; pin what is there now
    yes: bool
    timeout: float = 120.0
    project: str | None = None  # --project: the directory {project} names


def lock(options: LockOptions, ask: Callable[[str], str] = input) -> int:
    profile = _load(options)
    path = paths.lock_path(profile.source, profile.name)
    old = pins.load(path)
    env = launch.child_env(profile, os.environ)
    env.update(jail_env(profile))
    cwd = profile.server.cwd or profile.project
    resolved = _resolve(options, profile, old, path)
    # The run's stat cache: the first run after locking starts warm.
    cache = artifacts.StatCache(paths.artifact_cache())
    found = artifacts.collect(resolved.run, cwd=cwd, path_env=env.get("PATH", ""), cache=cache)
    cache.save()
    from mcpwrap.capture import capture

    defs = capture(profile, resolved.run, env, cwd, options.timeout)
    new = pins.build(
        path=path,
        command=resolved.command,
        run=resolved.run,
        launcher=resolved.launcher,
        package=resolved.package,
        version=resolved.version,
        profile_digest=profile.digest,
        artifacts=found,
        instructions=defs.instructions,
        tools=defs.tools,
    )
    changes = describe(old, new)
    if old is not None and not changes:
        print(f"{path}: up to date ({len(new.tools)} tools pinned)")
        return 0
    if old is not None:
        print(f"{path}: the server changed since it was locked:\n")
        print("\n".join(changes))
        if not _confirmed(options.yes, ask):
            print("nothing written")
            return 1
    pins.save(new)
    _record(profile, new, changes, "approve" if old is not None else "lock")
    what = f"{resolved.package} {resolved.version}, " if resolved.package else ""
    print(f"{path}: {what}{len(new.tools)} tools pinned")
    return 0


class _Command(NamedTuple):
    command: tuple[str, ...]
    run: tuple[str, ...]
    launcher: str
    package: str
    version: str


def _resolve(options: LockOptions, profile: Profile, old: pins.Lock | None, path: str) -> _Command:
    given = (
        launch.server_argv(profile, options.command)
        if options.command or (profile.server.command)
        else None
    )
    if options.approve:
        if old is None:
            raise LockError(
                f"{path}: there is no lock to approve; run `mcpwrap lock --profile "
                f"{options.profile or paths.profile_arg(profile.source)}` first"
            )
        if given is not None and tuple(given) != old.command:
            raise LockError(
                f"{path}: locked for {list(old.command)!r}, not {given!r}; run `mcpwrap lock` "
                "to lock the new command"
            )
        return _Command(old.command, old.run, old.launcher, old.package, old.version)
    if given is None:
        given = launch.server_argv(profile, ())  # raises: no command anywhere
    from mcpwrap import fetch

    r = fetch.resolve(given, store=fetch.store_dir(), env=os.environ)
    return _Command(tuple(given), r.run, r.launcher, r.package, r.version)


def jail_env(profile: Profile) -> dict[str, str]:
    """What mcpwrap adds to a locked server's environment: Python byte code goes to a
    private directory, so a .pyc planted in the server's __pycache__ (which the lock does
    not hash) is never read."""
    if profile.sandbox.enforce:
        # The jail's /tmp is its own tmpfs, not the host's shared one.
        return {"PYTHONPYCACHEPREFIX": "/tmp/.mcpwrap-pycache"}  # noqa: S108
    return {"PYTHONPYCACHEPREFIX": os.path.join(paths.state_dir(), "pycache")}


def describe(old: pins.Lock | None, new: pins.Lock) -> list[str]:
    """What differs between two locks, for a person: one block per change."""
    if old is None:
        return []
    out: list[str] = []
    if old.run != new.run or old.version != new.version:
        out.append(
            f"command: {list(old.run)!r} ({old.version or '-'}) -> {list(new.run)!r} "
            f"({new.version or '-'})"
        )
    out += [f"artifact: {c}" for c in artifacts.compare(old.artifacts, new.artifacts)]
    if old.instructions != new.instructions:
        out.append(pins.diff(old.instructions, new.instructions, "instructions"))
    for name in sorted(old.tools.keys() | new.tools.keys()):
        before, after = old.tools.get(name), new.tools.get(name)
        if before == after:
            continue
        label = "added" if before is None else "removed" if after is None else "changed"
        out.append(f"tool {name}: {label}\n{pins.diff(before, after, name)}")
    return out


def _confirmed(yes: bool, ask: Callable[[str], str]) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        raise LockError(
            "the lock would change and stdin is not a terminal: review the changes "
            "above and run again with --yes to accept them"
        )
    return ask("accept these changes and update the lock? [y/N] ").strip().lower() in ("y", "yes")


def _record(profile: Profile, lock: pins.Lock, changes: list[str], decision: str) -> None:
    with AuditWriter(profile.audit.path, session=os.urandom(16).hex()) as audit:
        audit.write(
            {
                "event": "pins",
                "server": profile.name,
                "agent": Agent.of_parent().as_record(),
                "token": None,
                "decision": decision,
                "rule": f"pins.{decision}",
                "lock": lock.path,
                "version": lock.version or None,
                "tools": sorted(lock.tools),
                "changes": [c.splitlines()[0] for c in changes],
            }
        )


def _load(options: LockOptions) -> Profile:
    return paths.load(options.profile, options.command, project=options.project)
