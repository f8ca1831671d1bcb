"""`mcpwrap run`: load the profile, start the server, then relay until one side ends.

The server is started as early as possible: the relay's own modules are imported while
the child boots, so their import time hides behind the server's start-up.
"""

from __future__ import annotations

import os
import sys
from typing import NamedTuple

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
    _warn_unsandboxed(profile)
    # Opened before the server starts: a log that cannot be written stops the run first.
    # os.urandom, not uuid: uuid imports `platform`, ~3 ms on every start.
    audit = AuditWriter(profile.audit.path, session=os.urandom(16).hex())
    child = launch.start(argv, env=env, cwd=cwd)
    from mcpwrap.session import Session

    return Session(profile, child, audit, max_message=options.max_message, cwd=cwd).run(argv)


def _load(options: RunOptions) -> Profile:
    name = options.profile or paths.profile_name_for(options.command)
    path = paths.find(name)
    return load_profile(path, state_dir=paths.state_dir(), builtin_dir=paths.builtin_profiles_dir())


def _warn_unsandboxed(profile: Profile) -> None:
    # The jail arrives with the next release; until then say so on every start.
    sys.stderr.write(
        f"mcpwrap: warning: this build relays and enforces the policy of {profile.name!r} "
        "but does not sandbox the server process yet ([sandbox] is validated, not applied)\n"
    )
