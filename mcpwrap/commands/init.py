"""`mcpwrap init NAME -- CMD`: a first profile from what the server offers, then a lock.

The server starts in the strictest jail that mcpwrap offers by default (no network; the
project readable, nothing writable), which is what the profile then grants: if the server
cannot list its tools there, init stops and says why, rather than loosening anything by
itself. Every tool gets a guessed class and, where a parameter looks like a path or a URL,
a constraint, each with a comment saying what the guess rests on. The result is plain
TOML (tomli-w) with comments, passes `mcpwrap check`, and is locked.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from mcpwrap.basics.errors import UsageError
from mcpwrap.commands.suggest import guess_args, guess_class
from mcpwrap.config import paths

_NAME_OK = "letters, digits, '-', '_' and '.'"


class InitOptions(NamedTuple):
    name: str
    command: tuple[str, ...]
    force: bool
    timeout: float = 120.0
    project: str | None = None  # --project: where .mcpwrap/NAME.toml goes


def init(options: InitOptions) -> int:
    from mcpwrap.commands.lock import LockOptions, lock
    from mcpwrap.config.discovery import project_of

    if not options.name or not all(c.isalnum() or c in "-_." for c in options.name):
        raise UsageError(f"init: {options.name!r} is not a profile name ({_NAME_OK})")
    if not options.command:
        raise UsageError(f"init: give the server command: mcpwrap init {options.name} -- CMD ...")
    from mcpwrap.config import project as projects

    start, source = projects.resolve(options.project, os.environ)
    if source is projects.Source.CWD:
        project = project_of(os.path.join(start, "x"))
        source = projects.Source.PROFILE if project != start else source
    else:
        project = start
    # The profile written grants {project}: refuse one no server may have before writing.
    projects.require(project, source, profile=options.name)
    path = os.path.join(project, ".mcpwrap", f"{options.name}.toml")
    if os.path.exists(path) and not options.force:
        raise UsageError(f"{path} exists: edit it, or run again with --force to replace it")
    lock_file = paths.lock_path(path)
    with _undone_on_failure(path, lock_file):
        _write(path, render(options.name, options.command, []))  # the jail tools are read in
        lock(
            LockOptions(
                profile=path,
                command=(),
                approve=False,
                yes=True,
                timeout=options.timeout,
                project=project,
            )
        )
        from mcpwrap.supply import pins

        locked = pins.load(lock_file)
        assert locked is not None
        tools = [json.loads(pin.definition) for _, pin in sorted(locked.tools.items())]
        _write(path, render(options.name, options.command, tools))
    print(f"{path}: {len(tools)} tools, each with a guessed class; review them, then commit it")
    return 0


@contextlib.contextmanager
def _undone_on_failure(*files: str) -> Iterator[None]:
    """Put `files` (and their directory) back as they were if the body fails: a stub
    profile left behind by a server that would not start would block the retry."""
    directory = os.path.dirname(files[0])
    made = not os.path.isdir(directory)
    before = {f: _content(f) for f in files}
    try:
        yield
    except BaseException:
        for file, data in before.items():
            with contextlib.suppress(OSError):
                if data is None:
                    os.unlink(file)
                else:
                    _write(file, data)
        if made:
            with contextlib.suppress(OSError):  # only if empty: never what someone else put
                os.rmdir(directory)
        raise


def _content(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def render(name: str, command: Sequence[str], tools: list[dict[str, Any]]) -> str:
    """The profile's text: tomli-w for the values, comments for the guesses."""
    import tomli_w

    head = {
        "version": 1,
        "server": {"command": list(command)},
        "sandbox": {"network": "none", "read": ["{project}"]},
        "policy": {"default": "deny"},
    }
    parts = [
        f"# mcpwrap profile for {name}, written by `mcpwrap init`. The classes and constraints\n"
        "# below are guesses from each tool's name and annotations (the server's own\n"
        "# claims): read them before you rely on them. mcpwrap-profile(5) has every key.\n",
        tomli_w.dumps(head),
    ]
    parts += [_tool_block(tool) for tool in tools if isinstance(tool.get("name"), str)]
    return "\n".join(parts)


def _tool_block(tool: dict[str, Any]) -> str:
    import tomli_w

    guess = guess_class(tool)
    args = guess_args(tool)
    table: dict[str, Any] = {"class": guess.cls.value}
    constrained = {a.name: a.constraint for a in args if a.constraint is not None}
    if constrained:
        table["args"] = constrained
    comments = [f"# {tool['name']}: {guess.cls.value}, because {guess.why}"]
    comments += [f"#   args.{a.name}: {a.note}" for a in args if a.constraint is not None]
    comments += [
        f'#   args.{a.name}: {a.note}, e.g. {a.name} = {{ hosts = ["api.example.com"] }}'
        for a in args
        if a.constraint is None
    ]
    body = tomli_w.dumps({"tools": {tool["name"]: table}})
    return "\n".join(comments) + "\n" + body


def _write(path: str, text: str | bytes) -> None:
    from mcpwrap.basics import atomicfile

    atomicfile.write(path, text)
