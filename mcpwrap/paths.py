"""Where mcpwrap keeps things: XDG dirs through platformdirs, and profile discovery."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from mcpwrap.errors import DiscoveryError

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
    here = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(here, "profiles")
    return (
        installed if os.path.isdir(installed) else os.path.join(os.path.dirname(here), "profiles")
    )


def artifact_cache() -> str:
    """Hashes of the files locks pin, by stat (the jail cannot write the state dir)."""
    return os.path.join(state_dir(), "cache", "artifacts.json")


def lock_path(source: str, cwd: str | None = None) -> str:
    """Where `mcpwrap lock` writes a profile's lock: beside the profile, named after its
    file (NAME.toml, NAME.lock). A built-in profile's: in the git repository the command
    runs in (REPO/.mcpwrap/NAME.lock, to be committed), else with the user's profiles."""
    if not source.startswith("<builtin:"):
        return os.path.splitext(source)[0] + ".lock"
    name = profile_arg(source) + ".lock"
    from mcpwrap.discovery import repository

    repo = repository(cwd or os.getcwd())
    if repo is not None:
        return os.path.join(repo, ".mcpwrap", name)
    return os.path.join(config_dir(), "profiles", name)


def find_lock(source: str, cwd: str | None = None) -> str:
    """The lock a profile runs with: where `lock_path` puts it; for a built-in profile
    used in a repository that has none, the user's (REPO/.mcpwrap first, then
    ~/.config/mcpwrap/profiles). A path that does not exist means: no lock."""
    path = lock_path(source, cwd)
    if source.startswith("<builtin:") and not os.path.exists(path):
        user = os.path.join(config_dir(), "profiles", profile_arg(source) + ".lock")
        return user if os.path.exists(user) else path
    return path


def find(name: str) -> str:
    from mcpwrap.discovery import find_profile

    return find_profile(
        name, cwd=os.getcwd(), config_dir=config_dir(), builtin_dir=builtin_profiles_dir()
    )


def profile_name_for(command: Sequence[str]) -> str:
    from mcpwrap.discovery import profile_name_for_command

    if not command:
        raise DiscoveryError(
            "no --profile and no server command: say which profile to use "
            "(mcpwrap run --profile NAME -- CMD ...)"
        )
    return profile_name_for_command(command)


def profile_arg(source: str) -> str:
    """What `--profile` takes for this profile: its file's stem (or the built-in's name)."""
    if source.startswith("<builtin:"):
        return source[len("<builtin:") : -1]
    return os.path.splitext(os.path.basename(source))[0]
