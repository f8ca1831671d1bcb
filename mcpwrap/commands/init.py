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
from mcpwrap.config.remote import RemoteSpec, is_url, url_problem

_NAME_OK = "letters, digits, '-', '_' and '.'"


class InitOptions(NamedTuple):
    name: str
    command: tuple[str, ...]
    force: bool
    timeout: float = 120.0
    project: str | None = None  # --project: where .mcpwrap/NAME.toml goes
    # A remote server (command: its one URL): what the profile's [server] sends (`wrap`
    # carries a client entry's headers and bearer reference over); None: the URL alone.
    remote: RemoteSpec | None = None
    into: str | None = None  # the directory the profile goes into, instead of the project's


def init(options: InitOptions) -> int:
    from mcpwrap.config.discovery import project_of

    if not options.name or not all(c.isalnum() or c in "-_." for c in options.name):
        raise UsageError(f"init: {options.name!r} is not a profile name ({_NAME_OK})")
    if not options.command:
        stub = _remote_stub(options)
        if stub is None:
            raise UsageError(
                f"init: give the server command: mcpwrap init {options.name} -- CMD ... (or "
                "its URL)"
            )
        return _init_remote(options._replace(command=(stub.url,), remote=stub), stub=True)
    from mcpwrap.config import project as projects

    if len(options.command) == 1 and is_url(options.command[0]):
        return _init_remote(options)
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
    tools = _written_and_locked(path, options, project)
    print(f"{path}: {len(tools)} tools, each with a guessed class; review them, then commit it")
    return 0


def _written_and_locked(
    path: str, options: InitOptions, project: str | None, remote: RemoteSpec | None = None
) -> list[dict[str, Any]]:
    """Write the profile without tools, lock it (which reads the server's tools, in the
    jail or over its verified connection), and write it again with the tools the lock
    pinned; a failure puts the profile and the lock back as they were."""
    from mcpwrap.commands.lock import LockOptions, lock
    from mcpwrap.supply import pins

    lock_file = paths.lock_path(path)
    with _undone_on_failure(path, lock_file):
        _write(path, render(options.name, options.command, [], remote=remote))
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
        locked = pins.load(lock_file)
        assert locked is not None
        tools = [json.loads(pin.definition) for _, pin in sorted(locked.tools.items())]
        _write(path, render(options.name, options.command, tools, remote=remote))
    return tools


def _remote_place(options: InitOptions) -> str:
    """Where a remote server's profile goes. It grants no directory: into the project
    when there is one, else (the home directory, /) into the user's profiles, which `run
    --profile NAME` finds from anywhere."""
    from mcpwrap.config import project as projects
    from mcpwrap.config.discovery import project_of

    into = options.into
    if into is None:
        start, source = projects.resolve(options.project, os.environ)
        project = project_of(os.path.join(start, "x")) if source is projects.Source.CWD else start
        mine = projects.refusal(project) is None
        into = os.path.join(project, ".mcpwrap") if mine else _user_profiles()
    return os.path.join(into, f"{options.name}.toml")


def _remote_stub(options: InitOptions) -> RemoteSpec | None:
    """`init NAME` alone: the profile already there, when its [server] names a URL (with
    what init cannot be told on its command line: [server.tls], bearer, headers)."""
    path = _remote_place(options)
    if not os.path.isfile(path):
        return None
    profile = paths.load(path, project=os.path.dirname(os.path.dirname(path)), guard=False)
    remote = profile.server.remote
    if remote is None or not remote.url:
        return None
    if profile.tools and not options.force:
        raise UsageError(
            f"{path} lists tools already: edit it, or run again with --force to write it "
            "again from the server's tools (its [server] is kept)"
        )
    return remote


def _init_remote(options: InitOptions, *, stub: bool = False) -> int:
    """A remote server: connect as `run` would, list its tools, write the profile with
    [server] url, and lock it (no jail to start it in).
    `stub`: the profile there names the server, and is written again with its tools."""
    url = options.command[0]
    problem = url_problem(url)
    if problem is not None:
        raise UsageError(f"init: the server URL is refused: {problem}")
    spec = (options.remote or RemoteSpec(url))._replace(url=url)
    path = _remote_place(options)
    if os.path.exists(path) and not options.force and not stub:
        raise UsageError(f"{path} exists: edit it, or run again with --force to replace it")
    tools = _written_and_locked(path, options, options.project, remote=spec)
    print(
        f"{path}: {len(tools)} tools of {url}, each with a guessed class, and its lock (the "
        "tools, the instructions and the server's key); review them, then commit both"
    )
    return 0


def _user_profiles() -> str:
    return os.path.join(paths.config_dir(), "profiles")


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


def render(
    name: str,
    command: Sequence[str],
    tools: list[dict[str, Any]],
    *,
    remote: RemoteSpec | None = None,
) -> str:
    """The profile's text: tomli-w for the values, comments for the guesses. For a remote
    server, [server] url (and what it sends) instead of a command and a jail."""
    import tomli_w

    head: dict[str, Any] = {"version": 1}
    if remote is None:
        head["server"] = {"command": list(command)}
        head["sandbox"] = {"network": "none", "read": ["{project}"]}
    else:
        head["server"] = _remote_server(remote)
    head["policy"] = {"default": "deny"}
    about = ""
    if remote is not None:
        about = (
            f"# The server runs on its own host ({remote.url}): no jail applies to it; every\n"
            "# message is still checked against this profile and audited.\n"
        )
    parts = [
        f"# mcpwrap profile for {name}, written by `mcpwrap init`. The classes and constraints\n"
        "# below are guesses from each tool's name and annotations (the server's own\n"
        "# claims): read them before you rely on them. mcpwrap-profile(5) has every key.\n" + about,
        tomli_w.dumps(head),
    ]
    far = remote is not None
    parts += [_tool_block(t, remote=far) for t in tools if isinstance(t.get("name"), str)]
    return "\n".join(parts)


def _remote_server(spec: RemoteSpec) -> dict[str, Any]:
    server: dict[str, Any] = {"url": spec.url}
    if spec.transport != "auto":
        server["transport"] = spec.transport
    if spec.headers:
        server["headers"] = dict(spec.headers)
    if spec.bearer:
        server["bearer"] = spec.bearer  # a keyring reference, never the token
    tls = {key: value for key, value in spec.tls._asdict().items() if value}
    if tls:
        server["tls"] = {k: list(v) if isinstance(v, tuple) else v for k, v in tls.items()}
    return server


def _tool_block(tool: dict[str, Any], *, remote: bool = False) -> str:
    import tomli_w

    guess = guess_class(tool)
    args = guess_args(tool)
    # A remote server's paths are on its own host: {project} (a directory here) says
    # nothing about them, so a path guess is left to the reader.
    elsewhere = [a for a in args if remote and a.constraint is not None and _local(a.constraint)]
    args = [a for a in args if a not in elsewhere]
    table: dict[str, Any] = {"class": guess.cls.value}
    constrained = {a.name: a.constraint for a in args if a.constraint is not None}
    if constrained:
        table["args"] = constrained
    comments = [f"# {tool['name']}: {guess.cls.value}, because {guess.why}"]
    comments += [f"#   args.{a.name}: {a.note}" for a in args if a.constraint is not None]
    comments += [
        f"#   args.{a.name}: looks like a path, on the server's host: constrain it by hand"
        for a in elsewhere
    ]
    comments += [
        f'#   args.{a.name}: {a.note}, e.g. {a.name} = {{ hosts = ["api.example.com"] }}'
        for a in args
        if a.constraint is None
    ]
    body = tomli_w.dumps({"tools": {tool["name"]: table}})
    return "\n".join(comments) + "\n" + body


def _local(constraint: dict[str, Any]) -> bool:
    return "{project}" in json.dumps(constraint)


def _write(path: str, text: str | bytes) -> None:
    from mcpwrap.basics import atomicfile

    atomicfile.write(path, text)
