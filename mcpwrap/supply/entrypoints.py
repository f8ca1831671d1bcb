"""Which files of a command bring their install trees in: the interpreter's script, and
the node_modules a file lies in. Shared by the jail (what it must be able to read) and the
lock (what it hashes), so that both see the same server."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

INTERPRETERS = ("python", "node", "nodejs", "deno", "bun", "ruby", "perl", "php", "sh", "bash")


def script_of(exe: str, args: Sequence[str]) -> list[str]:
    """An interpreter's script: its first argument that is not an option. Only the
    executable and this script bring their install trees in; any other file the command
    names (a config, a key) is the profile's to grant, never implied."""
    name = os.path.basename(os.path.realpath(exe))
    if not name.startswith(INTERPRETERS):
        return []
    for i, arg in enumerate(args):
        if arg in ("-m", "-c", "-e", "--eval"):
            return []
        if not arg.startswith("-") and (
            i == 0 or args[i - 1] not in ("-W", "-X", "-r", "--require")
        ):
            return [arg]
    return []


def node_modules_of(path: str) -> Iterable[str]:
    """The node_modules tree that `path` lies in (the outermost one), if any."""
    parts = path.split("/")
    if "node_modules" in parts:
        yield "/".join(parts[: len(parts) - parts[::-1].index("node_modules")])
