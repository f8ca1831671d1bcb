"""The absolute path of the mcpwrap that is running, for a client config to start.

A desktop app does not have the shell's PATH (Claude Desktop from Finder has launchd's),
so a bare "mcpwrap" in its config is not found. `wrap` writes the path of the console
script of the install it runs from; it refuses when that install is a throwaway one
(uvx's or `pipx run`'s cache), whose path the next cache clean removes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping

from mcpwrap.basics.errors import UsageError

INSTALL = "uv tool install mcpwrap-cli (or: pipx install mcpwrap-cli)"


def installed(argv0: str, executable: str, environ: Mapping[str, str], home: str) -> str:
    """The mcpwrap console script of this install: the one this process was started as,
    else the one beside its Python (`python -m mcpwrap` in a venv), else the one on PATH."""
    script = find_script(argv0, executable, environ)
    if script is None:
        raise UsageError(
            "cannot find the mcpwrap command of this install (started as "
            f"{argv0!r} by {executable}), and a client needs its absolute path: "
            f"install it with `{INSTALL}`, then run wrap again"
        )
    why = throwaway(script, environ, home)
    if why is not None:
        raise UsageError(
            f"mcpwrap runs from {script}, {why}: a client started from that path would "
            f"fail once it is cleaned. Install it for good with `{INSTALL}`, then run "
            "`mcpwrap wrap ...` again from that install"
        )
    return script


def find_script(argv0: str, executable: str, environ: Mapping[str, str]) -> str | None:
    candidates = []
    if os.path.basename(argv0) == "mcpwrap":
        candidates.append(os.path.abspath(argv0))
    # Not resolved: a venv's python is a symlink, its bin/ is the one wanted.
    candidates.append(os.path.join(os.path.dirname(os.path.abspath(executable)), "mcpwrap"))
    on_path = shutil.which("mcpwrap", path=environ.get("PATH", ""))
    candidates += [os.path.abspath(on_path)] if on_path else []
    return next((c for c in candidates if os.path.isfile(c) and os.access(c, os.X_OK)), None)


def throwaway(path: str, environ: Mapping[str, str], home: str) -> str | None:
    """Why `path` lies in an environment that a cache clean removes; None when it does
    not. Pure: the places come from `environ` and `home`."""
    cache = environ.get("XDG_CACHE_HOME", "") or os.path.join(home, ".cache")
    uv = [environ.get("UV_CACHE_DIR", ""), os.path.join(cache, "uv")]
    uv.append(os.path.join(home, "Library", "Caches", "uv"))
    pipx = [os.path.join(environ["PIPX_HOME"], ".cache")] if environ.get("PIPX_HOME") else []
    pipx += [os.path.join(home, ".local", "pipx", ".cache"), os.path.join(cache, "pipx")]
    pipx.append(os.path.join(home, "Library", "Caches", "pipx"))
    for places, what in ((uv, "uv's cache (uvx, uv run --with)"), (pipx, "pipx run's cache")):
        for place in places:
            if os.path.isabs(place) and _inside(path, place):
                return f"inside {what}, {place}"
    return None


def _inside(path: str, directory: str) -> bool:
    directory = directory.rstrip("/") or "/"
    return path.startswith(directory + "/")
