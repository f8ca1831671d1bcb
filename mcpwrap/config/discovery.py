"""Finding a profile: by path, by name up to the project root, then the user's and the
built-in profiles; and the name a server command implies when no --profile is given.
The rules are the second half of the contract in shared/design/PROFILE.md.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

from mcpwrap.basics.errors import DiscoveryError


def find_profile(name: str, *, cwd: str, config_dir: str, builtin_dir: str) -> str:
    """The profile file for `--profile NAME|PATH` (or a server's name), per PROFILE.md."""
    if "/" in name or name.endswith(".toml"):
        path = os.path.join(cwd, name)
        if not os.path.isfile(path):
            raise DiscoveryError(f"profile file {path} does not exist")
        return path
    if not name or not name.isprintable():
        raise DiscoveryError(f"{name!r} is not a profile name")
    places = profile_places(name, cwd=cwd, config_dir=config_dir, builtin_dir=builtin_dir)
    dirs = [os.path.dirname(place) for place in places]
    for place in places:
        if os.path.isfile(place):
            return place
    close = close_names(name, _profile_names(dirs))
    meant = f" (did you mean {' or '.join(close)}?)" if close else ""
    looked = "".join(f"\n  {place}" for place in places)
    raise DiscoveryError(
        f'no profile named "{name}"{meant}; looked in:{looked}\n'
        f"create one with `mcpwrap init {name} -- CMD...`, or give --profile PATH"
    )


def _profile_names(dirs: Sequence[str]) -> list[str]:
    """The names `--profile` finds in these directories, nearest first."""
    names: dict[str, None] = {}
    for directory in dirs:
        try:
            found = sorted(os.listdir(directory))
        except OSError:
            continue
        names.update((f[:-5], None) for f in found if f.endswith(".toml") and len(f) > 5)
    return list(names)


def close_names(name: str, names: Sequence[str], limit: int = 3) -> list[str]:
    """Names a person may have meant: one that holds the typed name as a word (an old
    short name such as "time" for "mcp-server-time"), or the one spelled most like it or
    like one of its words ("tme")."""
    import difflib

    typed = name.lower()

    def words(n: str) -> list[str]:
        return re.split(r"[-_.]", n.lower())

    def likeness(n: str) -> float:
        return max(difflib.SequenceMatcher(None, typed, w).ratio() for w in [n.lower(), *words(n)])

    holding = [n for n in names if typed in words(n)]
    best = max(names, key=likeness, default=None)
    spelled = [best] if best is not None and likeness(best) >= 0.75 else []
    return list(dict.fromkeys(holding + spelled))[:limit]


def profile_places(name: str, *, cwd: str, config_dir: str, builtin_dir: str | None) -> list[str]:
    """Where `--profile NAME` looks, in order: .mcpwrap/NAME.toml from `cwd` up to the
    project root, the user's profiles, then (unless builtin_dir is None) the built-in ones."""
    places = [os.path.join(d, ".mcpwrap", f"{name}.toml") for d in _dirs_to_project(cwd)]
    places += [os.path.join(config_dir, "profiles", f"{name}.toml")]
    places += [os.path.join(builtin_dir, f"{name}.toml")] if builtin_dir is not None else []
    return places


def _dirs_to_project(start: str) -> Iterator[str]:
    """`start` and its parents, up to the first one holding `.git` or the root."""
    directory = os.path.abspath(start)
    while True:
        yield directory
        parent = os.path.dirname(directory)
        if parent == directory or os.path.exists(os.path.join(directory, ".git")):
            return
        directory = parent


def repository(start: str) -> str | None:
    """The git repository `start` is in (the nearest parent holding `.git`), or None."""
    top = list(_dirs_to_project(start))[-1]
    return top if os.path.exists(os.path.join(top, ".git")) else None


def project_of(file: str) -> str:
    home = os.path.dirname(os.path.abspath(file))
    top = list(_dirs_to_project(home))[-1]
    return top if os.path.exists(os.path.join(top, ".git")) else home


def is_directly_in(file: str, directory: str) -> bool:
    return os.path.dirname(os.path.realpath(file)) == os.path.realpath(directory)


class _Launcher(NamedTuple):
    """How to find the package or script a launcher runs."""

    subcommands: tuple[tuple[str, ...], ...] = ((),)  # words that must follow the program
    value_options: frozenset[str] = frozenset()  # options whose value is the next argument
    module_option: str | None = None  # `python -m MODULE`: MODULE names it
    inline_options: frozenset[str] = frozenset()  # code on the command line: no name


_NODE_RUNNER = _Launcher(
    value_options=frozenset({"-p", "--package", "--registry", "--cache", "--userconfig"}),
    inline_options=frozenset({"-c", "--call"}),
)
_UV_OPTIONS = frozenset(
    {"--from", "--with", "--with-editable", "--with-requirements", "-w", "--python", "-p"}
    | {"--index", "--default-index", "--index-url", "--extra-index-url", "-i", "--find-links"}
    | {"-f", "--directory", "--project", "--env-file", "--constraints", "--overrides"}
)
_PYTHON = _Launcher(
    value_options=frozenset({"-W", "-X", "--check-hash-based-pycs"}),
    module_option="-m",
    inline_options=frozenset({"-c"}),
)
_LAUNCHERS: Mapping[str, _Launcher] = {
    "npx": _NODE_RUNNER,
    "bunx": _NODE_RUNNER,
    "pnpm": _NODE_RUNNER._replace(subcommands=(("dlx",),)),
    "npm": _NODE_RUNNER._replace(subcommands=(("exec",),)),
    "uvx": _Launcher(value_options=_UV_OPTIONS),
    "uv": _Launcher(subcommands=(("tool", "run"), ("run",)), value_options=_UV_OPTIONS),
    "pipx": _Launcher(
        subcommands=(("run",),),
        value_options=frozenset({"--spec", "--python", "--pip-args", "--index-url"}),
    ),
    "node": _Launcher(
        value_options=frozenset({"-r", "--require", "--import", "--loader", "--env-file"}),
        inline_options=frozenset({"-e", "--eval", "-p", "--print"}),
    ),
    "deno": _Launcher(
        subcommands=(("run",),),
        value_options=frozenset({"--config", "-c", "--import-map", "--env-file"}),
    ),
    "python": _PYTHON,
}
_SCRIPT_SUFFIXES = (".py", ".pyz", ".js", ".mjs", ".cjs", ".ts", ".mts", ".cts", ".git", ".tgz")


def profile_name_for_command(argv: Sequence[str]) -> str:
    """The profile name for a server command when no --profile is given."""
    if not argv or not argv[0]:
        raise DiscoveryError("no server command given, so no profile name to look for")
    program = os.path.basename(argv[0])
    launcher = _LAUNCHERS.get(re.sub(r"^(python)3(\.\d+)?$", r"\1", program))
    target = _launch_target(launcher, list(argv[1:])) if launcher else None
    return _package_stem(target or program) or program


def downloader(argv: Sequence[str]) -> str:
    """ "npx" or "uvx" (also `uv tool run`) when argv downloads its package as it starts,
    else "". Here, not in fetch.py, because every unlocked run asks (fetch.py is 3 ms)."""
    name = os.path.basename(argv[0]) if argv else ""
    if name in ("npx", "uvx"):
        return name
    if name == "uv" and tuple(argv[1:3]) == ("tool", "run"):
        return "uvx"
    return ""


def _launch_target(launcher: _Launcher, args: list[str]) -> str | None:
    """The argument naming the package or script a launcher runs, or None."""
    words = next((w for w in launcher.subcommands if tuple(args[: len(w)]) == w), None)
    if words is None:
        return None
    rest = iter(args[len(words) :])
    for arg in rest:
        if arg == "--":
            return next(rest, None)
        if arg == launcher.module_option:
            module = next(rest, None)
            return module.split(".")[0] if module else None
        if arg in launcher.inline_options:
            return None
        if arg in launcher.value_options:
            next(rest, None)
        elif not arg.startswith("-"):
            return arg
    return None


def _package_stem(target: str) -> str:
    """Reduce to a name: "@scope/pkg@1.2" -> "pkg", "pkg==1.0" -> "pkg", "a/s.py" -> "s"."""
    last = target.rstrip("/").rsplit("/", 1)[-1]
    name = re.split(r"[@=<>~!\[;\s]", last, maxsplit=1)[0]
    for suffix in _SCRIPT_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name.removesuffix(suffix)
    return name if name.strip(".") else ""  # `node .` names no package
