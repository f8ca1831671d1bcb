"""`mcpwrap run`: load the profile, start the server, then relay until one side ends.

The server is started as early as possible: the relay's own modules are imported while
the child boots, so their import time hides behind the server's start-up.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NamedTuple

from mcpwrap import launch, paths
from mcpwrap.audit import AuditWriter
from mcpwrap.framing import DEFAULT_MAX_MESSAGE
from mcpwrap.profile import Profile, load_profile


class RunOptions(NamedTuple):
    profile: str | None
    command: tuple[str, ...]
    max_message: int = DEFAULT_MAX_MESSAGE


def run(options: RunOptions) -> int:
    profile = _load(options)
    argv = launch.server_argv(profile, options.command)
    cwd = profile.server.cwd or os.getcwd()
    env = launch.child_env(profile, os.environ)
    # Opened before the server starts: a log that cannot be written stops the run first.
    # os.urandom, not uuid: uuid imports `platform`, ~3 ms on every start.
    audit = AuditWriter(profile.audit.path, session=os.urandom(16).hex())
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

        jail_spec = spec.build(profile, argv, env, cwd, state_dir=paths.state_dir())
        child: launch.Child = launch.start_jailed(jail_spec)
        sealed = jail_spec["sealed"]
        if sealed:
            sys.stderr.write(_sealed_note(sealed))
    else:
        _warn_unsandboxed(profile)
        child = launch.start(argv, env=env, cwd=cwd)
    from mcpwrap.session import Session  # imported while the server starts up

    if isinstance(child, launch.Jailed):
        child.wait_ready()  # a layer that failed stops the run here: fail closed
    sandbox = _layers(profile, sealed) if isinstance(child, launch.Jailed) else "off"
    session = Session(profile, child, audit, max_message=options.max_message, cwd=cwd)
    egress = _start_egress(profile, child, session) if isinstance(child, launch.Jailed) else None
    try:
        return session.run(argv, sandbox=sandbox)
    finally:
        if egress is not None:
            egress.close()


def _start_egress(profile: Profile, child: launch.Jailed, session: Any) -> Any:
    """network = "allowlist": serve the listeners the jail bound, under the profile's rules."""
    listeners = child.egress_listeners()
    if not listeners:
        return None
    from mcpwrap import egress, netpolicy

    relay = session.relay
    box = profile.sandbox
    proxy = egress.Egress(
        netpolicy.entries(profile),
        [egress.Listener(kind, sock, target) for kind, sock, target in listeners],
        record=relay.record_event,
        in_flight=relay.calls_in_flight,
        limits=egress.Limits(box.egress_connections, box.egress_idle, box.egress_bytes),
        broken=lambda: relay.audit_broken,
    )
    relay.on_call_end = proxy.call_ended
    proxy.start()
    return proxy


def _layers(profile: Profile, sealed: dict[str, list[str]]) -> str:
    """What the jail applied (it fails closed, so what it was asked for), for the record."""
    from mcpwrap.sandbox import landlock

    network = "own network namespace" if profile.sandbox.network.value == "none" else "host network"
    seal = f" (sealed, nothing new created: {', '.join(sealed)})" if sealed else ""
    return (
        f"jail: user, mount, pid, ipc, uts namespaces; {network}; new root; rlimits; "
        f"no capabilities; no_new_privs; {landlock.describe_abi()}{seal}; "
        f"seccomp {profile.sandbox.syscalls.value}"
    )


def _sealed_note(sealed: dict[str, list[str]]) -> str:
    missing = [p for paths in sealed.values() for p in paths]
    return (
        f"mcpwrap: nothing new can be created directly in {', '.join(sealed)} (existing "
        f"files there stay writable): the write grant covers {', '.join(missing)}, which "
        "do not exist yet and which no server may create. Create them yourself to lift "
        "this, or grant write on subdirectories only\n"
    )


def _load(options: RunOptions) -> Profile:
    name = options.profile or paths.profile_name_for(options.command)
    path = paths.find(name)
    return load_profile(path, state_dir=paths.state_dir(), builtin_dir=paths.builtin_profiles_dir())


def _warn_unsandboxed(profile: Profile) -> None:
    sys.stderr.write(
        f"mcpwrap: warning: {profile.source} sets [sandbox] enforce = false: the server "
        "runs with your full rights, outside the jail\n"
    )
