"""What a lock says about paths: the same on every machine that clones the project.

A lock names no directory of the machine it was written on. Two kinds of place appear in
it, as placeholders:

  {project}   the profile's project; arguments of the command that are paths are written
              relative to it (so `.` run from the project and the project's absolute path
              are the same command), and so are the files the lock pins inside it
  {install}   the store directory of the npx/uvx package the lock installs (store.py
              derives it on each machine from what the lock pins)
  {home}      arguments under the home directory (outside the project)

Files elsewhere (the node binary, a venv's base python, anything outside the project and
the store) belong to the machine: the lock cannot pin them for others, so they are left
out of it and verified on each machine against what `mcpwrap sync` recorded there.

Pure functions; imported on `run`'s path.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from mcpwrap.supply.artifacts import Artifacts, FileArtifact, Package, Tree, installer_made

PROJECT = "{project}"
INSTALL = "{install}"
HOME = "{home}"

Bases = Sequence[tuple[str, str]]  # (placeholder, absolute directory), most specific first


def is_path(word: str) -> bool:
    """Words a command means as a path: absolute, explicitly relative, or from ~."""
    return word in (".", "..", "~") or word.startswith(("/", "./", "../", "~/"))


def normalize_command(argv: Sequence[str], *, cwd: str, project: str, home: str) -> tuple[str, ...]:
    """The command as the lock records it: path arguments (also the value of an
    `--option=PATH`) resolved against `cwd` and written relative to {project} or {home}."""
    bases = [(PROJECT, project), (PROJECT, os.path.realpath(project))]
    if home not in ("", "/"):
        bases += [(HOME, home), (HOME, os.path.realpath(home))]
    return tuple(_word(word, cwd, home, bases) for word in argv)


def _word(word: str, cwd: str, home: str, bases: Bases) -> str:
    if word.startswith("--") and "=" in word:
        option, _, value = word.partition("=")
        return f"{option}={_word(value, cwd, home, bases)}" if is_path(value) else word
    if not is_path(word):
        return word
    if word == "~" or word.startswith("~/"):
        word = home + word[1:]
    path = os.path.normpath(os.path.join(cwd, word))
    return symbolic(path, bases) or path


def expand_command(command: Sequence[str], *, project: str, home: str) -> list[str]:
    """The locked command with its placeholders filled in for this machine."""
    bases = ((PROJECT, project), (HOME, home))
    return [_expand(word, bases) for word in command]


def _expand(word: str, bases: Bases) -> str:
    option, eq, value = word.partition("=") if word.startswith("--") else ("", "", word)
    for name, directory in bases:
        if value == name or value.startswith(name + "/"):
            return option + eq + directory + value[len(name) :]
    return word


def symbolic(path: str, bases: Bases) -> str | None:
    """`path` written relative to the first base that holds it, or None."""
    for name, directory in bases:
        if path == directory:
            return name
        if path.startswith(directory.rstrip("/") + "/"):
            return name + "/" + path[len(directory.rstrip("/")) + 1 :]
    return None


def view(found: Artifacts, bases: Bases) -> Artifacts:
    """The part of `found` a lock can pin for every machine: files and trees inside the
    bases, at symbolic paths, each tree with its digest over what the package archives
    put there (not what the installer wrote for this machine: artifacts.installer_made)."""
    files = tuple(
        FileArtifact(f.role, path, f.sha256)
        for f in found.files
        if (path := symbolic(f.path, bases)) is not None and not _made_here(f.path, found.trees)
    )
    trees = tuple(
        Tree(t.kind, path, t.portable, tuple(_portable_package(p, t.kind) for p in t.packages))
        for t in found.trees
        if (path := symbolic(t.path, bases)) is not None
    )
    return Artifacts(files, tuple(sorted(trees)))


def _made_here(path: str, trees: Sequence[Tree]) -> bool:
    """A file the installer wrote into a tree for this machine (a venv's console script)."""
    return any(
        path.startswith(t.path + "/") and installer_made(t.kind, path[len(t.path) + 1 :])
        for t in trees
    )


def _portable_package(package: Package, kind: str) -> Package:
    # A venv package's integrity is the hash of the RECORD the installer wrote (it lists
    # the console scripts it generated): this machine's, not the wheel's. The wheel's own
    # hash is in the lock's [install] section.
    return Package(
        package.name,
        package.version,
        package.digest,
        "" if kind == "venv" else package.integrity,
    )


def select(found: Artifacts, keep: Callable[[str], bool]) -> Artifacts:
    """The files and trees whose path `keep` accepts."""
    return Artifacts(
        tuple(f for f in found.files if keep(f.path)),
        tuple(t for t in found.trees if keep(t.path)),
    )


def under(directory: str) -> Callable[[str], bool]:
    top = directory.rstrip("/")
    return lambda path: path == top or path.startswith(top + "/")
