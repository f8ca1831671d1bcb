"""Where mcpwrap keeps things: XDG dirs through platformdirs, and profile discovery."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mcpwrap.basics.errors import DiscoveryError

if TYPE_CHECKING:
    from mcpwrap.config.profile import Profile

# startswith, not ==: keeps type checkers from calling the other platforms' code dead.
_LINUX = sys.platform.startswith("linux")


def state_dir() -> str:
    """Audit log, rate state: ~/.local/state/mcpwrap (or $XDG_STATE_HOME/mcpwrap)."""
    if _LINUX:
        return _xdg("XDG_STATE_HOME", ".local/state")
    from platformdirs import user_state_dir

    return user_state_dir("mcpwrap", appauthor=False)


def config_dir() -> str:
    """User profiles: ~/.config/mcpwrap (or $XDG_CONFIG_HOME/mcpwrap)."""
    if _LINUX:
        return _xdg("XDG_CONFIG_HOME", ".config")
    from platformdirs import user_config_dir

    return user_config_dir("mcpwrap", appauthor=False)


def _xdg(variable: str, default: str) -> str:
    """The XDG base directory rule, as platformdirs applies it on Linux (a test holds the
    two together). Done here because platformdirs costs ~9 ms of imports on every start."""
    base = os.environ.get(variable, "").strip()
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), default)
    return os.path.join(base, "mcpwrap")


def builtin_profiles_dir() -> str:
    """The curated profiles: inside the installed package, or the checkout's profiles/."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # mcpwrap/
    installed = os.path.join(here, "profiles")
    return (
        installed if os.path.isdir(installed) else os.path.join(os.path.dirname(here), "profiles")
    )


def artifact_cache(lock: str) -> str:
    """Hashes of the files a lock pins, by stat (the jail cannot write the state dir). One
    file per lock: a StatCache keeps only the entries its last user saw, so with one file
    for all, each locked server's start would make the next one's hash everything again."""
    from mcpwrap.basics import sha

    name = sha.hexdigest(os.fsencode(os.path.realpath(lock)))[:16]
    return os.path.join(state_dir(), "cache", f"artifacts-{name}.json")


def lock_path(source: str, project: str | None = None) -> str:
    """Where `mcpwrap lock` writes a profile's lock: beside the profile, named after its
    file (NAME.toml, NAME.lock), to commit with it. A built-in profile's, named as
    --profile names it: in the git repository of the project it serves
    (REPO/.mcpwrap/NAME.lock, to commit), else with the user's profiles
    (~/.config/mcpwrap/profiles/NAME.lock). `project` is the project the profile serves
    (`served`): None for one that grants no {project}, which a client may start from
    anywhere (Claude Desktop: from /), where only the user's lock is found."""
    if not source.startswith("<builtin:"):
        return os.path.splitext(source)[0] + ".lock"
    name = profile_arg(source) + ".lock"
    from mcpwrap.config.discovery import repository

    repo = repository(project) if project else None
    if repo is not None:
        return os.path.join(repo, ".mcpwrap", name)
    return os.path.join(config_dir(), "profiles", name)


def find_lock(source: str, project: str | None = None) -> str:
    """The lock a profile runs with: where `lock_path` puts it; for a built-in profile
    whose repository has none, the user's. A path that does not exist means: no lock."""
    path = lock_path(source, project)
    if source.startswith("<builtin:") and not os.path.exists(path):
        user = os.path.join(config_dir(), "profiles", profile_arg(source) + ".lock")
        return user if os.path.exists(user) else path
    return path


def served(profile: Profile) -> str | None:
    """The project a profile's server is given ({project}), or None."""
    return profile.project if profile.uses_project else None


def find(name: str, cwd: str | None = None) -> str:
    from mcpwrap.config.discovery import find_profile

    return find_profile(
        name,
        cwd=cwd or os.getcwd(),
        config_dir=config_dir(),
        builtin_dir=builtin_profiles_dir(),
    )


def load(
    name: str | None,
    command: Sequence[str] = (),
    *,
    project: str | None = None,
    tenant: str | None = None,
    guard: bool = True,
) -> Profile:
    """The profile for `--profile NAME|PATH` (or the server command's name), with its
    project: `project` (--project), else MCPWRAP_PROJECT, else the repository holding a
    project profile, else the working directory. With `guard`, a profile that gives the
    server its project stops here when that project is one no server may have."""
    from mcpwrap.config import project as projects
    from mcpwrap.config.discovery import is_directly_in
    from mcpwrap.config.profile import load_profile

    start, source = projects.resolve(project, os.environ)
    given = name or profile_name_for(command)
    by_path = "/" in given or given.endswith(".toml")  # a path is the user's, from here
    file = find(given, cwd=None if by_path else start)
    shared = any(
        is_directly_in(file, d)
        for d in (builtin_profiles_dir(), os.path.join(config_dir(), "profiles"))
    )
    if source is projects.Source.CWD and not shared:
        source = projects.Source.PROFILE  # {project} is the repository holding the file
    profile = load_profile(
        file,
        state_dir=state_dir(),
        tenant=tenant,
        builtin_dir=builtin_profiles_dir(),
        project=None if source is projects.Source.PROFILE else start,
    )
    if guard and profile.uses_project:
        projects.require(profile.project, source, profile=given)
    return profile


def profile_name_for(command: Sequence[str]) -> str:
    from mcpwrap.config.discovery import profile_name_for_command

    if not command:
        raise DiscoveryError(
            "no --profile and no server command: say which profile to use "
            "(mcpwrap run --profile NAME -- CMD ...)"
        )
    from mcpwrap.config.remote import is_url

    if is_url(command[0]):
        raise DiscoveryError(
            f"no --profile for the remote server {command[0]}: say which profile to use "
            f"(mcpwrap run --profile NAME -- {command[0]})"
        )
    return profile_name_for_command(command)


def profile_arg(source: str) -> str:
    """What `--profile` takes for this profile: its file's stem (or the built-in's name)."""
    if source.startswith("<builtin:"):
        return source[len("<builtin:") : -1]
    return os.path.splitext(os.path.basename(source))[0]
