"""Whether a lock holds on this machine, and what to do when it does not.

`run`, `sync`, `approve` and `lock` share these checks, and each kind of failure gets one
piece of advice, the same whichever command finds it:

  the command is not the locked one ............... `mcpwrap lock --profile P -- CMD`
  this machine has not verified the lock (a fresh clone, a lock changed by a pull, an
  emptied store), or the store's copy of the package differs from the lock
                                                    `mcpwrap sync --profile P`
  a file of the project, or of this machine's runtime (node, python), changed since it
  was verified                                      `mcpwrap approve --profile P`

Following the advice ends in a server that starts: `sync` installs and verifies what the
lock pins and never rewrites the lock; `approve` shows a change and pins it; `lock` pins a
new command. Imported on `run`'s path: keep it small.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Sequence

from mcpwrap.config import paths
from mcpwrap.config.profile import Profile
from mcpwrap.supply import portable
from mcpwrap.supply.artifacts import Artifacts, compare


def lock_command(profile_arg: str, argv: Sequence[str]) -> str:
    return f"`mcpwrap lock --profile {profile_arg} -- {shlex.join(argv)}`"


def sync_command(profile_arg: str) -> str:
    return f"`mcpwrap sync --profile {profile_arg}`"


def approve_command(profile_arg: str) -> str:
    return f"`mcpwrap approve --profile {profile_arg}`"


def other_command(path: str, locked: Sequence[str], argv: Sequence[str], profile_arg: str) -> str:
    """The message for a command that is not the locked one."""
    return (
        f"{path}: the lock is for the command `{shlex.join(locked)}`, not "
        f"`{shlex.join(argv)}` (paths are compared relative to the project, as {{project}}); "
        f"to lock this command instead: {lock_command(profile_arg, argv)}"
    )


def not_synced(path: str, why: str, profile_arg: str) -> str:
    return (
        f"{path}: {why}, so nothing was started (`mcpwrap run` never downloads). Install and "
        f"verify what the lock pins, once: {sync_command(profile_arg)}"
    )


def bases(project: str, install_dir: str) -> portable.Bases:
    """Where the lock's placeholders point on this machine (real paths: what artifacts
    records)."""
    found = [(portable.INSTALL, os.path.realpath(install_dir))] if install_dir else []
    return [*found, (portable.PROJECT, os.path.realpath(project))]


def view(found: Artifacts, project: str, install_dir: str) -> Artifacts:
    """What of `found` a lock pins (portable.view)."""
    return portable.view(found, bases(project, install_dir))


def split(
    was: Artifacts, now: Artifacts, in_store: Callable[[str], bool]
) -> tuple[list[str], list[str]]:
    """The differences in the store (sync puts them right), and the others (the project,
    the machine's runtime: approve shows and accepts them)."""
    outside: Callable[[str], bool] = lambda path: not in_store(path)  # noqa: E731
    return (
        compare(portable.select(was, in_store), portable.select(now, in_store)),
        compare(portable.select(was, outside), portable.select(now, outside)),
    )


def symbolic_store(path: str) -> bool:
    """A lock's path inside the install."""
    return path == portable.INSTALL or path.startswith(portable.INSTALL + "/")


def listed(problems: Sequence[str]) -> str:
    return "".join(f"\n  - {p}" for p in problems)


def jail_env(profile: Profile, bytecode: str | None = None) -> dict[str, str]:
    """What mcpwrap adds to a locked server's environment: Python byte code goes to a
    private directory, so a .pyc planted in the server's __pycache__ (which the lock does
    not hash) is never read. In the jail that is a uv install's compiled byte code
    (`bytecode`, read-only there: bytecode.py), or else the jail's own /tmp, where each
    start compiles anew. A server outside the jail never gets the install's: it could
    write it."""
    if profile.sandbox.enforce:
        # The jail's /tmp is its own tmpfs, not the host's shared one.
        return {"PYTHONPYCACHEPREFIX": bytecode or "/tmp/.mcpwrap-pycache"}  # noqa: S108
    return {"PYTHONPYCACHEPREFIX": os.path.join(paths.state_dir(), "pycache")}
