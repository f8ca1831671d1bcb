"""`mcpwrap run`: load the profile, start the server, then relay until one side ends.

The server is started as early as possible: the relay's own modules are imported while
the child boots, so their import time hides behind the server's start-up.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, NamedTuple, NoReturn

from mcpwrap.audit.writer import AuditWriter
from mcpwrap.basics.errors import LockError
from mcpwrap.config import paths
from mcpwrap.config.profile import Network, Profile
from mcpwrap.sandbox import launch


class RunOptions(NamedTuple):
    profile: str | None
    command: tuple[str, ...]
    max_message: int | None = None  # None: the relay's default (framing.py)
    token_name: str | None = None  # the token under this name in the keyring
    project: str | None = None  # --project: the directory {project} names


def run(options: RunOptions) -> int:
    token = _token(options)
    profile = _load(options, tenant=token.scope.tenant if token is not None else None)
    remote = _remote_target(profile, options.command)
    if remote is not None:
        return _run_remote(options, profile, remote, token)
    early: list[launch.Trampoline] = []  # the jail's trampoline, started early (see _run)
    try:
        return _run(options, profile, token, early)
    finally:
        for trampoline in early:
            if not trampoline.used:  # the run stopped before the jail started
                trampoline.discard()


def _run(options: RunOptions, profile: Profile, token: Any, early: list[launch.Trampoline]) -> int:
    if profile.sandbox.enforce:
        # The jail's interpreter starts now, while the lock is read and the spec built
        # (~15 ms of every jailed start). Only for a jail: an unjailed server starting up
        # would share the CPU with a trampoline it never needs.
        trampoline = launch.prespawn()
        early.extend([trampoline] if trampoline is not None else [])
    if token is not None:
        _check_tenant(profile, token)
    argv = launch.server_argv(profile, options.command)
    cwd = profile.working_dir()
    env = launch.child_env(profile, os.environ)
    # Opened before the server starts: a log that cannot be written stops the run first.
    # os.urandom, not uuid: uuid imports `platform`, ~3 ms on every start.
    audit = AuditWriter(profile.audit.path, session=os.urandom(16).hex())
    lock, argv, pyc, verify = _locked(profile, argv, env, cwd, audit, given=options.profile)
    sealed: dict[str, list[str]] = {}
    if profile.sandbox.enforce:
        if not sys.platform.startswith("linux"):
            raise launch.SandboxError(
                {
                    "message": "the jail needs Linux (namespaces, Landlock, seccomp); "
                    f"this is {sys.platform}",
                    "hint": "run the server on Linux, or set [sandbox] enforce = false in "
                    f"{profile.source} to run it unsandboxed",
                }
            )
        from mcpwrap.sandbox import spec

        jail_spec = spec.build(profile, argv, env, cwd, state_dir=paths.state_dir(), bytecode=pyc)
        child: launch.Child = _start_held(jail_spec, verify, early[0] if early else None)
    else:
        _warn_unsandboxed(profile)
        verify()
        child = launch.start(argv, env=env, cwd=cwd)
    # A note, not a gate: looked at while the server starts up, as the imports below are.
    changed = _profile_change(profile)
    from mcpwrap.relay.session import Session

    jail: dict[str, Any] | None = None
    if isinstance(child, launch.Jailed):
        child.wait_ready()  # a layer that failed stops the run here: fail closed
        sealed = child.sealed
        if sealed:
            sys.stderr.write(_sealed_note(sealed, reduced=child.kind == "reduced"))
        jail = _jail_record(child)
    sandbox = _layers(profile, sealed, child) if isinstance(child, launch.Jailed) else "off"
    from mcpwrap.supply.toolgate import Gate

    gate = Gate(lock, profile.policy.descriptions, approve=_approve(options, profile))
    redact: Callable[[str], str] = str  # nothing to mask without secrets
    if profile.server.secrets:
        from mcpwrap.identity.secrets import Redactor

        redact = Redactor({name: env[name] for name in profile.server.secrets})
    session = Session(
        profile,
        child,
        audit,
        max_message=_max_message(options),
        cwd=cwd,
        gate=gate,
        redact=redact,
    )
    egress = _serve_jail(profile, child, session) if isinstance(child, launch.Jailed) else None
    if token is not None:
        from mcpwrap.identity.auth import TokenState

        session.core.set_token(TokenState(token))
        session.watch_token(options.token_name, paths.state_dir())
    try:
        return session.run(argv, sandbox=sandbox, jail=jail, profile_change=changed)
    finally:
        if egress is not None:
            egress.close()


def _max_message(options: RunOptions) -> int:
    """The largest message relayed. framing.py is imported only after the server started,
    with the rest of the relay."""
    from mcpwrap.relay.framing import DEFAULT_MAX_MESSAGE

    return DEFAULT_MAX_MESSAGE if options.max_message is None else options.max_message


def _remote_target(profile: Profile, command: tuple[str, ...]) -> Any:
    """The remote server this run speaks to (config/remote.py), or None: a local command.
    Cheap for a command: the module is small and imports nothing heavy."""
    from mcpwrap.config.remote import target

    server = profile.server
    return target(server.remote, server.command, command, profile.source)


def _run_remote(options: RunOptions, profile: Profile, spec: Any, token: Any) -> int:
    """A remote MCP server: no process and no jail, the same core for everything else
    (filtered listings, argument checks, the tool gate, sanitising, tokens, audit)."""
    if token is not None:
        _check_tenant(profile, token)
    from mcpwrap.relay.remote import RemoteUpstream, request_headers
    from mcpwrap.relay.session import Session
    from mcpwrap.supply.toolgate import Gate

    headers = request_headers(spec, profile.source)
    audit = AuditWriter(profile.audit.path, session=os.urandom(16).hex())
    lock, spec, pinned = _remote_lock(profile, spec, audit, given=options.profile)
    changed = _profile_change(profile)
    gate = Gate(lock, profile.policy.descriptions, approve=_approve(options, profile))
    redact: Callable[[str], str] = str
    if spec.bearer is not None:
        from mcpwrap.identity.secrets import Redactor

        redact = Redactor({"bearer": headers["Authorization"].removeprefix("Bearer ")})
    max_message = _max_message(options)
    upstream = RemoteUpstream(spec, max_message=max_message, headers=headers, name=profile.name)
    session = Session(
        profile,
        None,
        audit,
        max_message=max_message,
        cwd=profile.working_dir(),
        gate=gate,
        redact=redact,
        upstream=upstream,
    )
    if token is not None:
        from mcpwrap.identity.auth import TokenState

        session.core.set_token(TokenState(token))
        session.watch_token(options.token_name, paths.state_dir())
    from mcpwrap.relay.remote import connection_record

    recorder = session.recorder
    upstream.on_connection = lambda c: recorder.event(c.event, **connection_record(c))
    return session.run([spec.url], sandbox="off", profile_change=changed, pinned=pinned)


def _remote_lock(
    profile: Profile, spec: Any, audit: AuditWriter, *, given: str | None
) -> tuple[Any, Any, dict[str, Any] | None]:
    """A remote server's lock (or None), the spec to connect with, and what the start
    record says of the lock. The URL must be the locked one. The server's key must match
    [server.tls] pins when the profile names some (the profile is the user's word, and
    may name a backup key), else the lock's pins: either way tlsclient refuses another
    key right after the handshake, before any request byte."""
    path = paths.find_lock(profile.source, paths.served(profile))
    if not os.path.exists(path):
        return None, spec, None
    from mcpwrap.supply import lockstate, pins

    name = given or paths.profile_arg(profile.source)
    stop = _Stop(profile, audit)
    lock = pins.load(path, name)
    assert lock is not None
    if lock.remote is None:
        stop(
            "pins.command",
            f"{path}: the lock is for the command `{' '.join(lock.command)}`, not the remote "
            f"server {spec.url}; to lock the remote server instead: "
            f"{lockstate.lock_command(name, [spec.url])}",
            path,
        )
    if lock.remote.url != spec.url:
        stop(
            "pins.url",
            f"{path}: the lock is for the remote server {lock.remote.url}, not {spec.url}; "
            "nothing was sent. If the server moved, lock the new URL: "
            f"{lockstate.lock_command(name, [spec.url])} (`mcpwrap approve --profile {name}` "
            "reviews a change at the locked URL)",
            path,
        )
    from_profile = bool(spec.tls.pins)
    checked = spec.tls.pins if from_profile else lock.remote.spki
    if checked and not from_profile:
        spec = spec._replace(tls=spec.tls._replace(pins=checked))
    record = {
        "lock": path,
        "lock_sha256": lock.sha256,
        "spki": list(checked),  # [] for plain http to loopback: no key to check
        "spki_from": "[server.tls] pins" if from_profile else "lock",
    }
    return lock, spec, record


def _start_held(
    jail_spec: dict[str, Any], verify: Callable[[], None], early: launch.Trampoline | None
) -> launch.Jailed:
    """Start the jail, verify the lock's files while it sets itself up, then let it exec
    the server. The trampoline's interpreter start and its layers (~35 ms) overlap the
    hashing (~20-40 ms) on another core; the server itself runs only after the files were
    verified, and a mismatch kills the trampoline before it exec'd anything."""
    child = launch.start_jailed(jail_spec, hold=True, trampoline=early)
    try:
        verify()
    except BaseException:
        child.abort()
        raise
    child.release()
    return child


def _serve_jail(profile: Profile, child: launch.Jailed, session: Any) -> Any:
    """mcpwrap's side of the jail: the seal broker's refusals join the audit log, and the
    egress proxy (returned) serves the listeners the jail bound."""
    if child.broker is not None:
        recorder = session.recorder
        child.broker.attach(lambda record: recorder.event("seal", **record))
    return _start_egress(profile, child, session)


def _start_egress(profile: Profile, child: launch.Jailed, session: Any) -> Any:
    """network = "allowlist": serve the listeners the jail bound, under the profile's rules."""
    listeners = child.egress_listeners()
    if not listeners:
        return None
    from mcpwrap.policy import network as netpolicy
    from mcpwrap.sandbox import egress

    core, recorder = session.core, session.recorder
    box = profile.sandbox
    proxy = egress.Egress(
        netpolicy.entries(profile),
        [egress.Listener(kind, sock, target) for kind, sock, target in listeners],
        record=recorder.event,
        in_flight=core.calls_in_flight,
        limits=egress.Limits(box.egress_connections, box.egress_idle, box.egress_bytes),
        broken=lambda: recorder.audit_broken,
        # On the host's loopback (the reduced jail) only the server knows the secret.
        secret=child.egress_secret if child.kind == "reduced" else None,
    )
    core.on_call_end = proxy.call_ended
    proxy.start()
    return proxy


def _locked(
    profile: Profile,
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    audit: AuditWriter,
    *,
    given: str | None,
) -> tuple[Any, list[str], str | None, Callable[[], None]]:
    """The lock (or None), the command to run, the byte code the jail reads (or None),
    and the check of the lock's files (hashing; a no-op without a lock) that must pass
    before the server may start: with a lock, what this machine recorded for it
    (npx/uvx: the locked version, from the store, offline)."""
    verified = _verified_lock(profile, argv, env, cwd, _Stop(profile, audit), given=given)
    if verified is None:
        _refuse_unlocked_download(profile, argv, audit, given)
        return None, argv, None, _nothing
    from mcpwrap.supply.lockstate import jail_env

    lock, run, install_dir, verify = verified
    pyc = None
    if profile.sandbox.enforce and lock.install is not None and lock.install.kind == "uv":
        from mcpwrap.supply import bytecode

        pyc = bytecode.cache_dir(install_dir)  # verified with the venv's tree
    env.update(jail_env(profile, pyc))
    return lock, run, pyc, verify


def _nothing() -> None:
    """Nothing to verify: the run has no lock."""


class _Stop(NamedTuple):
    """Stops a run before anything of the server started: an audit record, then the
    error with its advice."""

    profile: Profile
    audit: AuditWriter

    def __call__(self, rule: str, message: str, path: str) -> NoReturn:
        reason = " ".join(message.split())
        _refuse_start(self.profile, self.audit, rule, reason, lock=path)
        raise LockError(message)


def _verified_lock(
    profile: Profile,
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    stop: _Stop,
    *,
    given: str | None,
) -> tuple[Any, list[str], str, Callable[[], None]] | None:
    """The profile's lock, the command to run, the install's directory in the store (or
    "") and the hash check of the files it runs, to call before the server may exec;
    None when there is no lock. A mismatch stops the run before anything of the server
    starts, with one piece of advice (lockstate.py)."""
    path = paths.find_lock(profile.source, paths.served(profile))
    if not os.path.exists(path):
        return None
    from mcpwrap.supply import lockstate, pins, portable, store

    name = given or paths.profile_arg(profile.source)
    lock = pins.load(path, name)
    assert lock is not None
    home = os.path.expanduser("~")
    normalized = portable.normalize_command(argv, cwd=cwd, project=profile.project, home=home)
    if normalized != lock.command:
        stop("pins.command", lockstate.other_command(path, lock.command, argv, name), path)
    record = store.load_synced(store.root(), path)
    if record is None or record.lock_sha256 != lock.sha256:
        why = (
            "this machine has not verified this lock yet"
            if record is None
            else "the lock changed since this machine verified it"
        )
        stop("pins.sync", lockstate.not_synced(path, why, name), path)
    if record.install_dir and not os.path.isdir(record.install_dir):
        why = f"the store has lost {lock.package} {lock.version} ({record.install_dir})"
        stop("pins.sync", lockstate.not_synced(path, why, name), path)
    _check_bytecode(lock, record.install_dir, stop, path=path, name=name)
    run = [*record.prefix, *argv[record.skip :]]

    def verify() -> None:
        _check_artifacts(record, run, env=env, cwd=cwd, stop=stop, name=name)

    return lock, run, record.install_dir, verify


def _check_bytecode(lock: Any, install_dir: str, stop: _Stop, *, path: str, name: str) -> None:
    """A uv install has the byte code `sync` compiles for it (bytecode.py); `run` never
    compiles it (that would put seconds before the first reply). Whether it is intact is
    the tree check's part (_check_artifacts)."""
    if lock.install is None or lock.install.kind != "uv" or not install_dir:
        return
    from mcpwrap.supply import bytecode, lockstate

    if not bytecode.present(install_dir):
        why = (
            f"the store has no compiled byte code for {lock.package} {lock.version} "
            f"({bytecode.cache_dir(install_dir)})"
        )
        stop("pins.sync", lockstate.not_synced(path, why, name), path)


def _check_artifacts(
    record: Any, run: list[str], *, env: dict[str, str], cwd: str, stop: _Stop, name: str
) -> None:
    """What `run` executes hashes as it did when this machine verified the lock."""
    from mcpwrap.supply import artifacts, lockstate, portable, store

    path = record.lock
    cache = artifacts.StatCache(paths.artifact_cache(path))
    try:
        known = artifacts.from_data(record.artifacts, source=store.synced_path(store.root(), path))
        found = artifacts.collect(
            run, cwd=cwd, path_env=env.get("PATH", ""), cache=cache, known=known
        )
    except artifacts.ArtifactError as exc:
        advice = lockstate.sync_command(name)
        stop("pins.artifacts", f"{path}: {exc}; nothing was started. Verify again: {advice}", path)
    cache.save()
    top = os.path.realpath(record.install_dir) if record.install_dir else "\0"
    in_store, other = lockstate.split(known, found, portable.under(top))
    if in_store:
        stop(
            "pins.artifacts",
            f"{path}: the store's copy of the server was changed after it was verified "
            f"against the lock, so it was not started:{lockstate.listed(in_store)}\n"
            f"Install it again from the lock: {lockstate.sync_command(name)}",
            path,
        )
    if other:
        stop(
            "pins.artifacts",
            f"{path}: the server does not match its lock, so it was not started:"
            f"{lockstate.listed(other)}\nIf you made this change, review and accept it with "
            f"{lockstate.approve_command(name)}.",
            path,
        )


def _approve(options: RunOptions, profile: Profile) -> str:
    """The command that accepts a change to this run's server, as the user would type it."""
    return f"mcpwrap approve --profile {options.profile or paths.profile_arg(profile.source)}"


def _refuse_start(
    profile: Profile, audit: AuditWriter, rule: str, reason: str, **extra: str
) -> None:
    """The pins record of a run stopped before anything of the server started."""
    from mcpwrap.audit import recorder

    recorder.refuse_start(audit, server=profile.name, rule=rule, reason=reason, **extra)


def _refuse_unlocked_download(
    profile: Profile, argv: list[str], audit: AuditWriter, given: str | None
) -> None:
    """npx/uvx fetch their package as they start. A jail without the host's network cannot
    reach a registry (and what would run is whatever is newest): say how to lock it."""
    from mcpwrap.config.discovery import downloader

    kind = downloader(argv)
    if not kind or not profile.sandbox.enforce or profile.sandbox.network is Network.HOST:
        return
    shown = " ".join(argv)
    reason = f"{kind} downloads its package at start and there is no lock"
    _refuse_start(profile, audit, "pins.unlocked", reason)
    raise LockError(
        f"`{shown}` downloads its package each time it starts, and the jail has no way to a "
        "package registry (nor should it: what ran would be whatever is newest). Lock it "
        f"once: `mcpwrap lock --profile {given or paths.profile_arg(profile.source)} -- "
        f"{shown}` fetches the exact version and pins it; this command then starts that "
        "version, offline."
    )


def _profile_change(profile: Profile) -> dict[str, Any] | None:
    from mcpwrap.audit import profilelog

    found = profilelog.change(profile, paths.state_dir())
    if found and found["widened"]:
        sys.stderr.write(
            f"mcpwrap: {profile.source} changed since its last run and widens what the server "
            f"may do: {'; '.join(found['widened'])}\n"
        )
    return found


def _jail_record(child: launch.Jailed) -> dict[str, Any]:
    """The start record's account of the jail: its kind, and the reduced jail's layers
    applied and missing (the missing ones on stderr too: never silently skipped)."""
    note = child.note
    record: dict[str, Any] = {"jail": child.kind}
    if child.kind == "reduced":
        record["jail_layers"] = list(note.get("applied", []))
        record["jail_missing"] = list(note.get("missing", []))
        sys.stderr.write(
            "mcpwrap: the server runs in the reduced jail (no namespaces); missing: "
            + "; ".join(record["jail_missing"])
            + "\n"
        )
    return record


def _layers(profile: Profile, sealed: dict[str, list[str]], child: launch.Jailed) -> str:
    """What the jail applied (it fails closed, so what it was asked for), for the record."""
    from mcpwrap.sandbox import landlock

    if child.kind == "reduced":
        return _reduced_layers(profile, sealed, child.note)
    network = "own network namespace" if profile.sandbox.network.value == "none" else "host network"
    seal = (
        f" (sealed: {', '.join(sealed)}; new names there made by mcpwrap's broker, "
        "protected ones refused)"
        if sealed
        else ""
    )
    return (
        f"jail: user, mount, pid, ipc, uts namespaces; {network}; new root; rlimits; "
        f"no capabilities; no_new_privs; {landlock.describe_abi()}{seal}; "
        f"seccomp {profile.sandbox.syscalls.value}"
    )


def _reduced_layers(profile: Profile, sealed: dict[str, list[str]], note: dict[str, Any]) -> str:
    box = profile.sandbox
    sockets = {"none": "no sockets", "allowlist": "TCP to mcpwrap's proxies only"}
    seal = (
        f"; sealed (read-only, names made, renamed and removed by mcpwrap's broker): "
        f"{', '.join(sealed)}"
        if sealed
        else ""
    )
    landlock = ", ".join(note.get("applied", []))
    return (
        "jail: reduced (no namespaces); subreaper teardown; private HOME and TMPDIR; "
        f"rlimits; no capabilities; no_new_privs; {landlock}{seal}; seccomp "
        f"{box.syscalls.value} ({sockets.get(box.network.value, 'host network')}); "
        f"missing: {'; '.join(note.get('missing', []))}"
    )


def _sealed_note(sealed: dict[str, list[str]], *, reduced: bool = False) -> str:
    missing = [p for paths in sealed.values() for p in paths]
    if reduced:
        return (
            f"mcpwrap: the reduced jail cannot pin or bind {', '.join(missing)} read-only "
            f"(no mounts), so {', '.join(sealed)} "
            f"{'is' if len(sealed) == 1 else 'are'} sealed: read-only to the server; mcpwrap "
            "makes, renames and removes the other names there for it and refuses the "
            "protected ones (each refusal is recorded)\n"
        )
    return (
        f"mcpwrap: {', '.join(missing)} do not exist yet and no server may create them, so "
        f"{', '.join(sealed)} {'is' if len(sealed) == 1 else 'are'} sealed: the server "
        "itself creates nothing there, mcpwrap creates its new files and directories for "
        "it and refuses those names (each refusal is recorded). Create those paths "
        "yourself to lift the seal, or grant write on subdirectories only\n"
    )


def _load(options: RunOptions, tenant: str | None = None, guard: bool = True) -> Profile:
    return paths.load(
        options.profile, options.command, project=options.project, tenant=tenant, guard=guard
    )


def _token(options: RunOptions) -> Any:
    """The run's token, verified (signature, time, revocation), or None when none is
    given. Never from the command line: from the keyring by name, or MCPWRAP_TOKEN."""
    text = os.environ.get("MCPWRAP_TOKEN", "").strip()
    if options.token_name is None and not text:
        return None  # no keyring, no tokens module: a run without tokens pays nothing
    from mcpwrap.basics.errors import UsageError
    from mcpwrap.identity import tokens

    if options.token_name is not None and text:
        raise UsageError("a token from --token-name and from MCPWRAP_TOKEN: give one of them")
    try:
        if options.token_name is not None:
            text = tokens.load_named(options.token_name)
        return tokens.verify(text, state_dir=paths.state_dir())
    except tokens.TokenError as exc:
        _refused_at_start(options, exc.rule, str(exc))
        raise tokens.TokenError(exc.rule, f"the token is refused ({exc.rule}): {exc}") from exc


def _check_tenant(profile: Profile, token: Any) -> None:
    from mcpwrap.identity import auth, tokens

    problem = auth.tenant_problem(profile.auth, token)
    if problem is not None:
        _refused_at_start(None, *problem, profile=profile, token_id=token.id)
        rule, reason = problem
        raise tokens.TokenError(rule, f"the token is refused ({rule}): {reason}")


def _refused_at_start(
    options: RunOptions | None,
    rule: str,
    reason: str,
    profile: Profile | None = None,
    token_id: str | None = None,
) -> None:
    """The audit record of a token refused before anything started (best effort: a
    profile that needs the token's tenant to load has no log to write to)."""
    from mcpwrap.audit import recorder
    from mcpwrap.basics.errors import MCPWrapError

    try:
        if profile is None:
            assert options is not None
            profile = _load(options, guard=False)
        recorder.refuse_token(
            profile.audit.path, server=profile.name, token=token_id, rule=rule, reason=reason
        )
    except MCPWrapError:
        pass


def _warn_unsandboxed(profile: Profile) -> None:
    sys.stderr.write(
        f"mcpwrap: warning: {profile.source} sets [sandbox] enforce = false: the server "
        "runs with your full rights, outside the jail\n"
    )
