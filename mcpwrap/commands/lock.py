"""`mcpwrap lock` and `mcpwrap approve`: pin a server, and accept a change to it.

`lock` resolves the command (for npx/uvx it fetches the exact version once, into
mcpwrap's store), hashes what will run, starts the server in its jail to read its
instructions and tools, and writes the lock where paths.lock_path says (beside the
profile). `approve` keeps the locked command and install (which must be in the store, as
the lock pins it: `mcpwrap sync`), and pins what the project holds and the server offers
now, and what this machine runs it with. Either way, when a lock exists the changes are
shown (artifacts, versions, a diff per tool) and written only once the user says yes
(`--yes` for scripts). Each write is an audit record, and a record of what this machine
verified (store.Synced), which `run` checks.

A remote server (`lock -- https://HOST/PATH`, or `[server] url`) has nothing to fetch,
hash or start: `lock` reads its server key's pin after a verified handshake
(tlsclient.fetch_pin), then its instructions and tools over the same transport `run`
uses, pinned to that key, and writes a lock with a [remote] table (pins.py). `approve`
does the same for the locked URL and shows a new key as a change.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from mcpwrap.audit import recorder
from mcpwrap.basics.errors import LockError
from mcpwrap.commands.sync import (
    Here,
    bytecode_for,
    collect,
    here_for,
    load,
    locked_command,
    machine_changes,
    remember,
    with_bytecode,
)
from mcpwrap.config import paths
from mcpwrap.config.profile import Profile
from mcpwrap.sandbox import launch
from mcpwrap.supply import artifacts, lockstate, pins, portable, store

if TYPE_CHECKING:
    from mcpwrap.config.remote import RemoteSpec


class LockOptions(NamedTuple):
    profile: str | None
    command: tuple[str, ...]
    approve: bool  # keep the locked command and install; pin what is there now
    yes: bool
    timeout: float = 120.0
    project: str | None = None  # --project: the directory {project} names


def lock(options: LockOptions, ask: Callable[[str], str] = input) -> int:
    profile = load(options.profile, options.command, options.project)
    name = options.profile or paths.profile_arg(profile.source)
    if options.approve:
        return _approve(options, profile, name, ask)
    path = paths.lock_path(profile.source, paths.served(profile))
    old = _old_lock(path, name)
    remote = _remote_target(profile, options.command, old)
    if remote is not None:
        new = _pin_remote(profile, path, remote, timeout=options.timeout)
        return _write(profile, old, new, None, yes=options.yes, ask=ask)
    given = _command(options, profile, old)
    from mcpwrap.supply import fetch

    resolved = fetch.resolve(given, store=store.root(), env=os.environ)
    found = collect(list(resolved.run), profile, path)
    here = Here(resolved.prefix, resolved.skip, resolved.directory, found)
    here = with_bytecode(resolved.install, here, list(resolved.run), profile, lock=path, name=name)
    home = os.path.expanduser("~")
    cwd = profile.working_dir()
    command = portable.normalize_command(given, cwd=cwd, project=profile.project, home=home)
    what = _Resolved(resolved.launcher, resolved.package, resolved.version, resolved.install)
    new = _pin(
        profile, path, here, list(resolved.run), command=command, what=what, timeout=options.timeout
    )
    _note_unpinned(here, profile)
    return _write(profile, old, new, here, yes=options.yes, ask=ask)


def _approve(options: LockOptions, profile: Profile, name: str, ask: Callable[[str], str]) -> int:
    path = paths.find_lock(profile.source, paths.served(profile))
    old = pins.load(path, name)
    if old is None:
        shown = list(options.command or profile.server.command or ("CMD", "..."))
        raise LockError(
            f"{path}: there is no lock to approve; lock it first: "
            f"{lockstate.lock_command(name, shown)}"
        )
    if old.remote is not None:
        spec = _locked_remote(profile, old, options.command, name)
        new = _pin_remote(profile, path, spec, timeout=options.timeout)
        return _write(profile, old, new, None, yes=options.yes, ask=ask)
    argv = locked_command(profile, old, options.command, path, name)
    here = here_for(old, argv, profile, path, name)
    in_store = lockstate.split(
        old.artifacts,
        lockstate.view(here.found, profile.project, here.install_dir),
        lockstate.symbolic_store,
    )[0]
    if in_store:
        raise LockError(
            f"{path}: the store's copy of {old.package} {old.version} differs from the lock "
            f"(approve accepts changes to the project and the server's tools, never to a "
            f"locked package):{lockstate.listed(in_store)}\nInstall it again from the lock: "
            f"{lockstate.sync_command(name)}"
        )
    run = [*here.prefix, *argv[here.skip :]]
    here = with_bytecode(old.install, here, run, profile, lock=path, name=name)
    what = _Resolved(old.launcher, old.package, old.version, old.install)
    new = _pin(profile, path, here, run, command=old.command, what=what, timeout=options.timeout)
    changed = machine_changes(old, here, profile.project)
    return _write(profile, old, new, here, yes=options.yes, ask=ask, machine=changed)


def _old_lock(path: str, name: str) -> pins.Lock | None:
    try:
        return pins.load(path, name)
    except pins.OldLockError:
        print(f"{path}: a version 1 lock; writing it again in version {pins.LOCK_VERSION}")
        return None


def _command(options: LockOptions, profile: Profile, old: pins.Lock | None) -> list[str]:
    """The command to lock: given, in the profile, or (to lock again) the locked one."""
    if options.command or profile.server.command or old is None:
        return launch.server_argv(profile, options.command)  # raises: no command anywhere
    home = os.path.expanduser("~")
    return portable.expand_command(old.command, project=profile.project, home=home)


def _remote_target(
    profile: Profile, given: tuple[str, ...], old: pins.Lock | None
) -> RemoteSpec | None:
    """The remote server to lock: a URL given, the profile's, or (to lock again, when
    neither names a server) the locked one; None for a local command."""
    from mcpwrap.config.remote import target

    server = profile.server
    named = given or server.command or (server.remote is not None and server.remote.url)
    if not named and old is not None and old.remote is not None:
        given = (old.remote.url,)
    return target(server.remote, server.command, given, profile.source)


def _locked_remote(
    profile: Profile, old: pins.Lock, given: tuple[str, ...], name: str
) -> RemoteSpec:
    """The remote server a remote lock names, with the profile's settings; a URL given
    on the command line or in the profile must be the locked one."""
    from mcpwrap.config.remote import RemoteSpec, is_url, target

    assert old.remote is not None
    url = old.remote.url
    server = profile.server
    if given and not is_url(given[0]):
        raise LockError(
            f"{old.path}: the lock is for the remote server {url}, not the command "
            f"`{shlex.join(given)}`; to lock this command instead: "
            f"{lockstate.lock_command(name, given)}"
        )
    spec = target(server.remote, server.command, given or (url,), profile.source)
    if spec is None:
        spec = RemoteSpec(url)
    if spec.url != url:
        raise LockError(
            f"{old.path}: the lock is for the remote server {url}, not {spec.url}; approve "
            "accepts changes to the locked server only. To lock the new URL instead: "
            f"{lockstate.lock_command(name, [spec.url])}"
        )
    return spec


def _pin_remote(profile: Profile, path: str, spec: RemoteSpec, *, timeout: float) -> pins.Lock:
    """The lock of a remote server: its key's pin, and its instructions and tools read
    over a connection pinned to that key (what is pinned is what that key served)."""
    from mcpwrap.commands.capture import capture_remote
    from mcpwrap.relay.remote import RemoteUpstream, request_headers

    seen = _server_pin(spec, profile.source)
    headers = request_headers(spec, profile.source)
    pinned = spec._replace(tls=spec.tls._replace(pins=seen)) if seen else spec
    upstream = RemoteUpstream(pinned, max_message=64 << 20, headers=headers, name=profile.name)
    defs = capture_remote(upstream, timeout)
    return pins.build_remote(
        path=path,
        url=spec.url,
        spki=seen,
        profile_digest=profile.digest,
        instructions=defs.instructions,
        tools=defs.tools,
    )


def _server_pin(spec: RemoteSpec, source: str) -> tuple[str, ...]:
    """The pin of the server's key after a verified handshake (CA, host name), whatever
    the lock said; () for plain http to loopback, which has no key. A profile that names
    pins ([server.tls] pins) must name this one: approve never overrides the profile."""
    if not spec.url.lower().startswith("https://"):
        return ()
    import anyio

    from mcpwrap.identity.tlsclient import TlsSettings, fetch_pin

    t = spec.tls
    settings = TlsSettings(t.ca, t.client_cert, t.client_key, pins=())
    seen = anyio.run(fetch_pin, spec.url, settings)
    if t.pins and seen not in t.pins:
        raise LockError(
            f"{source}: [server.tls] pins accepts {', '.join(t.pins)}, but the server at "
            f"{spec.url} presents the key {seen}; nothing was written. If the operator "
            "replaced the key, add its pin to [server.tls] pins"
        )
    return (seen,)


class _Resolved(NamedTuple):
    launcher: str
    package: str
    version: str
    install: store.Install | None


def _pin(
    profile: Profile,
    path: str,
    here: Here,
    run: list[str],
    *,
    command: tuple[str, ...],
    what: _Resolved,
    timeout: float,
) -> pins.Lock:
    """The lock for what runs here: its artifacts, and its tools read from it in its jail."""
    from mcpwrap.commands.capture import capture

    env = launch.child_env(profile, os.environ)
    pyc = bytecode_for(profile, what.install, here.install_dir)
    env.update(lockstate.jail_env(profile, pyc))
    defs = capture(profile, run, env, profile.working_dir(), timeout, bytecode=pyc)
    return pins.build(
        path=path,
        command=command,
        launcher=what.launcher,
        package=what.package,
        version=what.version,
        profile_digest=profile.digest,
        install=what.install,
        artifacts=lockstate.view(here.found, profile.project, here.install_dir),
        instructions=defs.instructions,
        tools=defs.tools,
    )


def _write(
    profile: Profile,
    old: pins.Lock | None,
    new: pins.Lock,
    here: Here | None,
    *,
    yes: bool,
    ask: Callable[[str], str],
    machine: list[str] | None = None,
) -> int:
    """Show what changed, write on yes; record what this machine verified either way
    (`here`: None for a remote server, which has nothing on this machine to verify)."""
    changes = describe(old, new)
    if old is not None and not changes and not machine:
        if here is not None:
            remember(old, here)
        print(f"{new.path}: up to date ({len(new.tools)} tools pinned{_key_note(new)})")
        return 0
    if old is not None:
        print(f"{new.path}: the server changed since it was locked:\n")
        print("\n".join([*changes, *(machine or [])]))
        if not _confirmed(yes, ask):
            print("nothing written")
            return 1
    saved = pins.save(new) if old is None or changes else old
    if here is not None:
        remember(saved, here)
    _record(profile, saved, [*changes, *(machine or [])], "approve" if old is not None else "lock")
    what = f"{new.package} {new.version}, " if new.package else ""
    print(f"{new.path}: {what}{len(new.tools)} tools pinned{_key_note(new)}")
    return 0


def _key_note(lock: pins.Lock) -> str:
    if lock.remote is None:
        return ""
    if not lock.remote.spki:
        return f" for {lock.remote.url} (plain http: no server key to pin)"
    return f" for {lock.remote.url}, and its server key {', '.join(lock.remote.spki)}"


def _note_unpinned(here: Here, profile: Profile) -> None:
    """Say which of what runs the lock cannot pin for other machines."""
    places = [portable.under(os.path.realpath(profile.project))]
    if here.install_dir:
        places.append(portable.under(os.path.realpath(here.install_dir)))
    outside = [f.path for f in here.found.files if not any(p(f.path) for p in places)]
    outside += [t.path for t in here.found.trees if not any(p(t.path) for p in places)]
    if outside:
        sys.stderr.write(
            f"mcpwrap: outside the project and the store, so verified on each machine "
            f"against what it recorded, not pinned in the lock: {', '.join(outside)}\n"
        )


def describe(old: pins.Lock | None, new: pins.Lock) -> list[str]:
    """What differs between two locks, for a person: one block per change."""
    if old is None:
        return []
    out: list[str] = []
    if old.remote is not None or new.remote is not None:
        out += _remote_changes(old, new)
    elif old.command != new.command or old.version != new.version:
        out.append(
            f"command: {shlex.join(old.command)} ({old.version or '-'}) -> "
            f"{shlex.join(new.command)} ({new.version or '-'})"
        )
    for field in ("runtime", "platform"):
        was, now = (getattr(i, field) if i else "-" for i in (old.install, new.install))
        if was != now:
            out.append(f"install {field}: {was} -> {now}")
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


def _remote_changes(old: pins.Lock, new: pins.Lock) -> list[str]:
    """The server's URL and key, as a lock of a remote server pins them."""
    out: list[str] = []
    was = old.remote.url if old.remote else f"{shlex.join(old.command)} ({old.version or '-'})"
    now = new.remote.url if new.remote else f"{shlex.join(new.command)} ({new.version or '-'})"
    if was != now:
        out.append(f"server: {was} -> {now}")
    keys = [", ".join(lock.remote.spki) if lock.remote else "" for lock in (old, new)]
    if keys[0] != keys[1]:
        out.append(
            f"server key (SPKI pin): {keys[0] or '-'} -> {keys[1] or '-'}\n"
            "  the server presents another public key than the one locked: expected when "
            "its operator replaced the key; if not, someone may be intercepting the connection"
        )
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
    recorder.lock_written(
        profile.audit.path,
        server=profile.name,
        decision=decision,
        lock=lock.path,
        version=lock.version or None,
        tools=sorted(lock.tools),
        changes=[c.splitlines()[0] for c in changes],
        remote={"url": lock.remote.url, "spki": list(lock.remote.spki)} if lock.remote else None,
    )
