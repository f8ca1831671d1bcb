"""Which directory is the project, and whether it may be one.

A profile grants `{project}` to the server (its files, its write grants, its argument
roots). Desktop clients start servers from `/` or from the home directory, so a project
taken from the working directory could hand the server every file of the user. The rule:
the project is never `/`, the home directory or one of its parents, a system directory,
or a shared temporary directory. `problem()` decides (pure); `require()` applies it.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping, Sequence

from mcpwrap.basics.errors import UsageError

# Directories whose whole tree belongs to the system: never a project, nor anything in them.
SYSTEM_TREES = (
    "/usr",
    "/etc",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/boot",
    "/dev",
    "/proc",
    "/sys",
    "/run",
    "/snap",
    "/var/lib",
    "/var/log",
    "/var/cache",
    "/var/spool",
    "/var/mail",
    "/var/run",
)
# Directories that hold other people's or the system's trees: never a project themselves
# (a project inside them is fine: /srv/www/site, /mnt/c/code/app).
SHARED_PARENTS = ("/", "/home", "/var", "/opt", "/srv", "/mnt", "/media", "/root", "/Users")
# Everyone's scratch space: a server given it sees every user's temporary files.
SHARED_TEMP = ("/tmp", "/var/tmp", "/dev/shm")  # noqa: S108 (names them to refuse them)


class Source(enum.Enum):
    """Where the project came from: the message says so, and how to name it instead."""

    FLAG = "--project"
    ENV = "MCPWRAP_PROJECT"
    CLAUDE = "CLAUDE_PROJECT_DIR (set by Claude Code)"
    CWD = "the directory mcpwrap was started in"
    PROFILE = "the repository that holds the profile"

    @property
    def name_in_env(self) -> str:
        return {"ENV": "MCPWRAP_PROJECT", "CLAUDE": "CLAUDE_PROJECT_DIR"}.get(self.name, "")


def problem(project: str, *, home: str, temp_dirs: Sequence[str] = ()) -> str | None:
    """Why `project` (absolute, symlinks resolved) may not be a project; None when it may."""
    project = _strip(project)
    home = _strip(home)
    if project == "/":
        return "the root of the filesystem"
    if project == home:
        return "your home directory (~/.ssh, ~/.config and every other secret are in it)"
    if home.startswith(project + "/"):
        return f"a parent of your home directory ({home})"
    if project in SHARED_TEMP or project in {_strip(t) for t in temp_dirs if t}:
        return "a temporary directory shared with other programs and users"
    if any(project == t or project.startswith(t + "/") for t in SYSTEM_TREES):
        return "a system directory"
    if project in SHARED_PARENTS:
        return "a directory that holds other users' or the system's files"
    return None


def _strip(path: str) -> str:
    return path.rstrip("/") or "/"


def resolve(given: str | None, environ: Mapping[str, str]) -> tuple[str, Source]:
    """The project the user named (--project, else MCPWRAP_PROJECT, else the
    CLAUDE_PROJECT_DIR that Claude Code gives the servers it starts), else the working
    directory; a profile in a repository overrides only the last (paths.load)."""
    if given:
        return _absolute(given, Source.FLAG), Source.FLAG
    for source in (Source.ENV, Source.CLAUDE):
        named = environ.get(source.name_in_env, "")
        if named:
            return _absolute(named, source), source
    return os.getcwd(), Source.CWD


def _absolute(path: str, source: Source) -> str:
    if "${" in path:
        # A client variable the client did not replace: VS Code's ${workspaceFolder} in
        # the user's own mcp.json, a ${VAR} Claude Code found unset.
        raise UsageError(
            f"{source.value} is {path!r}: the client did not replace the variable in it. "
            "${workspaceFolder} works only in a workspace's own config (.vscode/mcp.json, "
            ".cursor/mcp.json); in a user-wide config give an absolute path"
        )
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(full):
        raise UsageError(f"{source.value}: {path!r} is not a directory")
    return full


def require(project: str, source: Source, *, profile: str) -> None:
    """Stop before anything starts when the profile would be given a project it may not
    have. `profile` is what the user typed for --profile (or the file)."""
    real = os.path.realpath(project)
    why = refusal(real)
    if why is None:
        return
    shown = project if real == project else f"{project} (that is {real})"
    raise UsageError(
        f"profile {profile} gives the server its project, and the project would be {shown}, "
        f"{source.value}: that is {why}. mcpwrap will not grant it. Name the project:\n"
        "  - on the command line: mcpwrap run --project /path/to/repo ...\n"
        '  - in VS Code or Cursor: "--project", "${workspaceFolder}" in the entry\'s args\n'
        "  - for a desktop app (Claude Desktop starts servers in /): an absolute "
        "--project path in the entry\n"
        "  - or set MCPWRAP_PROJECT in the entry's env, or start mcpwrap from the project "
        "(Claude Code starts servers there and sets CLAUDE_PROJECT_DIR)"
    )


def refusal(project: str) -> str | None:
    """Why `project` may not be a project on this machine (this user's home, its temporary
    directories); None when it may."""
    home = os.path.realpath(os.path.expanduser("~"))
    return problem(os.path.realpath(project), home=home, temp_dirs=_temp_dirs())


def _temp_dirs() -> list[str]:
    found = []
    for name in ("TMPDIR", "TEMP", "TMP"):
        value = os.environ.get(name, "")
        if value and os.path.isabs(value):
            found.append(os.path.realpath(value))
    return found
