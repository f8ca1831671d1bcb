"""How each MCP client starts a stdio server entry: the directory it starts it in, the
PATH and variables it gives it, the ${...} it replaces, and who names the project.
`mcpwrap wrap` writes each entry for its client and then starts it exactly so, once.

Where the facts come from (checked December 2026):
- Claude Desktop: cwd `/` on macOS (modelcontextprotocol.io, legacy/tools/debugging: "may
  be undefined (like `/` on macOS)"), the home directory on Linux builds (a user report,
  anthropics/claude-code#75266); nothing is replaced in claude_desktop_config.json; started
  from Finder it has launchd's PATH, /usr/bin:/bin:/usr/sbin:/sbin (hence the familiar
  `spawn npx ENOENT`), so the command it runs must be an absolute path.
- Claude Code: cwd = the directory `claude` started in (the project), for every scope; a
  "cwd" key is ignored; ${VAR} and ${VAR:-default} are expanded in command, args and env,
  and an unset ${VAR} without a default fails the config (code.claude.com/docs/en/mcp);
  since v2.1.139 it sets CLAUDE_PROJECT_DIR for stdio servers, which mcpwrap reads.
- Cursor: cwd = the home directory (user reports: supermemoryai/cursor-supermemory#6,
  vectorize-io/hindsight#4530); ${workspaceFolder} (the folder holding .cursor/mcp.json;
  for ~/.cursor/mcp.json, reportedly the window's folder), ${userHome} and ${env:NAME} are
  replaced in command, args and env (cursor.com/docs, MCP).
- VS Code: .vscode/mcp.json starts in the workspace folder, the user's mcp.json in the
  home directory, unless the entry has a "cwd" (src/vs/workbench/api/node/extHostMcpNode.ts:
  cwd, else defaultCwd, else os.homedir()); ${workspaceFolder} works in a workspace's
  file and is not resolved in the user's (microsoft/vscode#243526); ${env:NAME},
  ${userHome}, ${input:ID} (asked of the user at start) and an "envFile" are read.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from mcpwrap.basics.errors import MCPWrapError

# A macOS app started from Finder or the Dock gets launchd's PATH, not the shell's.
LAUNCHD_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
# Named by the user's shell, never by a client: a check that kept them would pass where
# the client then fails.
_SHELL_ONLY = ("MCPWRAP_PROJECT", "CLAUDE_PROJECT_DIR")


class Unresolved(MCPWrapError):
    """A ${...} the client would not replace, or replaces only when it starts the entry."""


class ProjectBy(enum.Enum):
    """Who names the project for an entry whose profile grants {project}."""

    CLIENT = "Claude Code (CLAUDE_PROJECT_DIR)"
    WORKSPACE = "${workspaceFolder}"
    NOBODY = "nobody: an absolute --project is needed"


@dataclass(frozen=True)
class Launch:
    """How one client starts the entries of one config file."""

    client: str
    # The folder the file belongs to: ${workspaceFolder}, Claude Code's project. None for
    # a file no folder owns (Claude Desktop's, VS Code's user file).
    workspace: str | None
    home: str

    @property
    def project_by(self) -> ProjectBy:
        if self.client == "claude-code":
            return ProjectBy.CLIENT
        if self.client == "cursor" or (self.client == "vscode" and self.workspace):
            return ProjectBy.WORKSPACE
        return ProjectBy.NOBODY

    def cwd(self, entry_cwd: str | None = None) -> str:
        """The directory the client starts the entry in."""
        if self.client == "claude-desktop":
            return "/"
        if self.client == "claude-code":
            return self.workspace or self.home
        if self.client == "vscode":
            return entry_cwd or self.workspace or self.home
        return self.home

    def substitute(self, value: str, environ: Mapping[str, str]) -> str:
        """`value` with the ${...} this client replaces replaced, as it would."""
        if self.client == "claude-code":
            return _SHELL_STYLE.sub(lambda m: _shell_value(m, environ), value)
        if self.client in ("cursor", "vscode"):
            return _EDITOR_STYLE.sub(lambda m: self._editor_value(m, environ), value)
        return value

    def _editor_value(self, match: re.Match[str], environ: Mapping[str, str]) -> str:
        name = match.group(1)
        if name.startswith("env:"):
            return environ.get(name[4:], "")
        if name.startswith("input:") and self.client == "vscode":
            raise Unresolved(
                f"VS Code asks you for {match.group()} each time it starts the entry; mcpwrap "
                "cannot: start it from VS Code (MCP: List Servers) to see it start"
            )
        known = {"userHome": self.home}
        if self.workspace:
            known["workspaceFolder"] = self.workspace
            if self.client == "vscode":
                known["workspaceFolderBasename"] = os.path.basename(self.workspace)
        if self.client == "vscode":
            known |= {"pathSeparator": os.sep, "/": os.sep}
        return known.get(name, match.group())

    def environment(
        self, environ: Mapping[str, str], entry_env: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """The environment the client gives the entry: its own (as this process has it),
        with the PATH a desktop app has, plus the entry's env."""
        env = {k: v for k, v in environ.items() if k not in _SHELL_ONLY}
        if self.client == "claude-desktop":
            env["PATH"] = LAUNCHD_PATH
        if self.client == "claude-code" and self.workspace:
            env["CLAUDE_PROJECT_DIR"] = self.workspace
        env.update(entry_env or {})
        return env

    def argv(self, entry: Entry, environ: Mapping[str, str]) -> list[str]:
        """The command the client runs, its variables replaced."""
        own = self.environment(environ)
        return [self.substitute(word, own) for word in (entry.command, *entry.args)]

    def entry_env(self, entry: Entry, environ: Mapping[str, str]) -> dict[str, str]:
        """The entry's own env (VS Code: its envFile first), variables replaced."""
        own = self.environment(environ)
        env: dict[str, str] = {}
        if self.client == "vscode" and entry.env_file:
            path = self.substitute(entry.env_file, own)
            try:
                env.update(read_env_file(path))
            except (OSError, UnicodeDecodeError) as exc:
                raise Unresolved(f"its envFile {path} cannot be read ({exc})") from None
        env.update({name: self.substitute(value, own) for name, value in entry.env.items()})
        return env

    def spawn(self, entry: Entry, environ: Mapping[str, str]) -> Spawn:
        """Exactly what the client starts: command, environment, directory."""
        own = self.environment(environ)
        cwd = self.substitute(entry.cwd, own) if entry.cwd else None
        env = self.environment(environ, self.entry_env(entry, environ))
        return Spawn(self.argv(entry, environ), env, self.cwd(cwd))


@dataclass(frozen=True)
class Entry:
    """The parts of a stdio entry a client starts it from."""

    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None  # VS Code only
    env_file: str | None = None  # VS Code only

    @classmethod
    def of(cls, values: Mapping[str, object]) -> Entry:
        """From the entry's JSON values; ValueError says what is not as a client wants."""
        command, args, env = values.get("command"), values.get("args", []), values.get("env")
        if not isinstance(command, str):
            raise ValueError('its "command" is not a string')
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ValueError('its "args" is not a list of strings')
        if env is not None and not (
            isinstance(env, dict) and all(isinstance(v, str) for v in env.values())
        ):
            raise ValueError('its "env" is not an object of strings')
        cwd, env_file = values.get("cwd"), values.get("envFile")
        return cls(
            command,
            tuple(args),
            dict(env or {}),
            cwd if isinstance(cwd, str) else None,
            env_file if isinstance(env_file, str) else None,
        )


class Spawn(NamedTuple):
    argv: list[str]
    env: dict[str, str]
    cwd: str


_SHELL_STYLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_EDITOR_STYLE = re.compile(r"\$\{([^}]*)\}")


def _shell_value(match: re.Match[str], environ: Mapping[str, str]) -> str:
    name, default = match.group(1), match.group(2)
    value = environ.get(name)
    if default is not None:
        return value or default
    if value is None:
        raise Unresolved(
            f"{match.group()} is not set, and Claude Code does not start an entry naming an "
            "unset variable without a default: set it, or write ${" + name + ":-DEFAULT}"
        )
    return value


def launch_for(client: str, config: str, scope: tuple[str, ...], *, here: str, home: str) -> Launch:
    """How `client` starts the entries of `config` (under `scope`, the keys leading to
    the servers object). `here` is where wrap runs: the project Claude Code's user-wide
    servers and Cursor's user file get when started from it."""
    parent = os.path.dirname(os.path.abspath(config))
    owner = os.path.dirname(parent)
    workspace: str | None = None
    if client == "claude-code":
        if scope[0] == "projects":
            workspace = scope[1]
        elif os.path.basename(config) == ".mcp.json":
            workspace = parent
        else:
            workspace = here
    elif client == "cursor":
        own = os.path.basename(parent) == ".cursor" and not _same(owner, home)
        workspace = owner if own else here
    elif client == "vscode" and os.path.basename(parent) == ".vscode":
        workspace = owner
    return Launch(client, workspace, home)


def _same(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def read_env_file(path: str) -> dict[str, str]:
    """A dotenv file as VS Code's "envFile" reads it: NAME=VALUE lines, `#` comments,
    an optional `export `, values optionally quoted."""
    found: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            name, value = line.removeprefix("export ").split("=", 1)
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            found[name.strip()] = value
    return found
