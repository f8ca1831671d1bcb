"""PATH lookup and the terminal's width without `shutil`: it imports zlib, bz2 and lzma
(~3 ms), which `mcpwrap run` would pay on every start for one lookup of the server's
program and for argparse's help width. Both behave as shutil's do on POSIX (mcpwrap runs
nowhere else); tests/test_programs.py holds them to that."""

from __future__ import annotations

import os
import sys


def which(program: str, path: str | None = None) -> str | None:
    """shutil.which(program, path=path): the first executable, non-directory `program`
    in the directories of `path` (default: $PATH, else the system's default path); a
    program with a directory part is checked as given; an empty `path` finds nothing."""
    if os.path.dirname(program):
        return program if _executable(program) else None
    if path is None:
        path = os.environ.get("PATH")
        if path is None:
            try:
                path = os.confstr("CS_PATH")
            except (AttributeError, ValueError):
                path = os.defpath
    if not path:
        return None
    seen = set()
    for directory in os.fsdecode(path).split(os.pathsep):
        if directory not in seen:
            seen.add(directory)
            name = os.path.join(directory, program)
            if _executable(name):
                return name
    return None


def _executable(name: str) -> bool:
    return os.path.exists(name) and os.access(name, os.F_OK | os.X_OK) and not os.path.isdir(name)


def terminal_columns() -> int:
    """shutil.get_terminal_size().columns: $COLUMNS when a positive number, else the
    width of the terminal on stdout, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
        columns = columns or 80
    return columns
