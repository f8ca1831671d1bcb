"""How `mcpwrap wrap` wraps one entry so that its client can start it, and the first
start that decides whether it is `ready`.

The profile is chosen by what the entry runs; the first of these that exists and fits
wins (a profile fits unless its [server] command names another command):
1. `--profile NAME|PATH` (given with --server, for that one entry);
2. the profile named like the entry (its key): .mcpwrap/KEY.toml from the project up to
   its root, then ~/.config/mcpwrap/profiles/KEY.toml: one written for this entry;
3. the profile named like the package it runs (`npx -y @scope/server-x` -> server-x,
   `uvx mcp-server-time` -> mcp-server-time): the same places, then the built-in ones;
4. with --init, the one `mcpwrap init KEY -- CMD` writes into the project.
The project is the one its client names (mcpwrap.clients.apps): "--project" is written where
the profile grants {project} (where a client names none, Claude Desktop and VS Code's
user file, only from `wrap --project DIR`), and where the profile is the project's own
and the client starts the entry elsewhere (Cursor: in the home directory). The name
written after --profile is one that `mcpwrap run` finds from where the client starts it,
else the profile's path. An entry that downloads (npx, uvx) is locked first; an existing
lock for another command is never replaced, and a changed server is never approved here.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from mcpwrap.basics.errors import DiscoveryError, MCPWrapError
from mcpwrap.clients import apps as clients
from mcpwrap.clients import remoteentry
from mcpwrap.clients.configfile import Entry, NotWrapped, Wrapping
from mcpwrap.clients.firststart import Started, start_once
from mcpwrap.config import paths
from mcpwrap.config.discovery import downloader, profile_name_for_command, profile_places
from mcpwrap.config.profile import Profile
from mcpwrap.config.remote import RemoteSpec

_NAME_CHARS = "-_."


class Choice(NamedTuple):
    file: str
    why: str  # said on the entry's line


def choose(
    key: str,
    argv: list[str],
    *,
    start: str,
    fits: Callable[[str], bool],
    given: str | None = None,
) -> Choice | None:
    """The profile for an entry named `key` that runs `argv`, in the order above (1-3);
    None when there is none. `start` is the directory the project's profiles are looked
    for from."""
    config, builtin = paths.config_dir(), paths.builtin_profiles_dir()
    if given is not None:
        found = paths.find(given, cwd=start)
        return Choice(found, "given with --profile")
    package = profile_name_for_command(argv)
    candidates = []
    if is_name(key):
        own = profile_places(key, cwd=start, config_dir=config, builtin_dir=None)
        candidates += [(place, "named like the entry") for place in own]
    if is_name(package):
        for place in profile_places(package, cwd=start, config_dir=config, builtin_dir=builtin):
            shared = os.path.dirname(place) == builtin
            why = f"the built-in one for {package}" if shared else f"for {package}"
            candidates.append((place, why))
    for place, why in candidates:
        if os.path.isfile(place) and fits(place):
            return Choice(place, why)
    return None


def is_name(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in _NAME_CHARS for c in name)


def project_for(
    launch: clients.Launch, given: str | None, entry_env: Mapping[str, str]
) -> tuple[str | None, str | None]:
    """(what "--project" would be followed by in the entry, or None; the directory that
    means when the client starts it, or None when nobody names one)."""
    if given:
        return given, given
    named = entry_env.get("MCPWRAP_PROJECT")
    if named:
        return None, named
    by = launch.project_by
    if by is clients.ProjectBy.CLIENT:
        return None, launch.workspace
    if by is clients.ProjectBy.WORKSPACE:
        return "${workspaceFolder}", launch.workspace
    return None, None


def lookup_start(
    launch: clients.Launch,
    written: str | None,
    project: str | None,
    entry: clients.Entry,
    entry_env: Mapping[str, str],
) -> str:
    """The directory `mcpwrap run` looks for --profile NAME from, once the client starts
    the entry: the project it is given, else the directory it starts in."""
    if written is not None and project is not None:
        return project
    if entry_env.get("MCPWRAP_PROJECT"):
        return entry_env["MCPWRAP_PROJECT"]
    if launch.client == "claude-code" and launch.workspace:
        return launch.workspace  # CLAUDE_PROJECT_DIR
    return launch.cwd(entry.cwd)


class _AsStarted(NamedTuple):
    launch: clients.Launch
    spec: clients.Entry
    argv: list[str]
    env: dict[str, str]


@dataclass(frozen=True)
class Planner:
    """clientconfig.Prepare for `mcpwrap wrap`: decides how each entry is wrapped."""

    client: str
    mcpwrap: str  # the absolute path written as "command"
    here: str  # where wrap runs
    home: str
    environ: Mapping[str, str]
    config: str | None = None  # --config as given, for the commands it suggests
    profile: str | None = None  # --profile (with --server)
    project: str | None = None  # --project, absolute
    init: bool = False
    dry_run: bool = False
    timeout: float = 120.0

    def __call__(self, path: str, entry: Entry, values: dict[str, object]) -> Wrapping:
        if remoteentry.is_url_entry(values):
            return self._remote(path, entry, values, None)
        started = self._as_started(path, entry, values)
        if remoteentry.runs_mcp_remote(started.argv):
            return self._remote(path, entry, values, started)
        offered, project = project_for(started.launch, self.project, started.env)
        try:
            choice = self._choice(entry.name, started.argv, project)
        except _WouldInit as would:
            words = ("--project", offered) if offered else ()
            head = ("run", "--profile", would.name, *words, "--")
            return Wrapping(self.mcpwrap, head, would.name, f": {would}")
        profile = self._load(choice.file, project)
        if profile.uses_project:
            self._check_project(entry.name, project, started.argv)
        arg, written = _naming(started, profile, choice.file, project, offered)
        shared = profile.source.startswith("<builtin:")
        said = [choice.why + ("" if shared or arg == choice.file else f", {choice.file}")]
        said += [f"project {written}"] if written else []
        locked = self._lock(profile, choice.file, started.argv, project, arg)
        said += [locked] if locked else []
        head = ("run", "--profile", arg, *(("--project", written) if written else ()), "--")
        return Wrapping(self.mcpwrap, head, arg, ": " + "; ".join(said))

    def _remote(
        self, path: str, entry: Entry, values: dict[str, object], started: _AsStarted | None
    ) -> Wrapping:
        """A remote server's entry ("url", or mcp-remote): `run --profile P -- URL`, with
        the profile holding what the entry sent (transport, headers, the bearer's keyring
        reference; never a credential itself)."""
        if started is None:
            launch = clients.launch_for(
                self.client, path, entry.scope, here=self.here, home=self.home
            )
            cwd = values.get("cwd")
            spec = clients.Entry(command="", cwd=cwd if isinstance(cwd, str) else None)
            started = _AsStarted(launch, spec, [], {})
            own = launch.environment(self.environ)
            try:
                found = remoteentry.from_url_entry(values, lambda v: launch.substitute(v, own))
            except (remoteentry.Refused, clients.Unresolved) as exc:
                raise NotWrapped(str(exc)) from None
        else:
            env = started.launch.environment(self.environ, started.env)
            try:
                found = remoteentry.from_mcp_remote(started.argv, env)
            except remoteentry.Refused as exc:
                raise NotWrapped(str(exc)) from None
        offered, project = project_for(started.launch, self.project, started.env)
        key = entry.name
        name = key if is_name(key) else remoteentry.host_name(found.url)
        choice = self._remote_choice(key, found, project)
        bearer = self._bearer(key, found, choice, name)
        if choice is None:
            made = self._remote_init(key, name, found, bearer, project)
            if isinstance(made, Wrapping):
                return made  # --dry-run
            choice = made
        profile = self._load(choice.file, project)
        if profile.server.command:
            raise NotWrapped(f"its profile {choice.file} runs a command, not a remote server")
        self._agrees(key, choice.file, profile, found)
        arg, written = _naming(started, profile, choice.file, project, offered)
        shared = profile.source.startswith("<builtin:")
        said = [choice.why + ("" if shared or arg == choice.file else f", {choice.file}")]
        said += [f"project {written}"] if written else []
        said += [f"remote {found.url}, no jail (it runs on its own host)"]
        said += list(found.notes)
        head = ("run", "--profile", arg, *(("--project", written) if written else ()), "--")
        return Wrapping(self.mcpwrap, head, arg, ": " + "; ".join(said), replace=(found.url,))

    def _remote_choice(
        self, key: str, found: remoteentry.RemoteEntry, project: str | None
    ) -> Choice | None:
        """The profile of a remote entry: --profile, else the one named like the entry; it
        fits unless it runs a command or names another URL."""

        def fits(file: str) -> bool:
            server = self._load(file, project).server
            remote = server.remote
            return not server.command and (remote is None or remote.url in ("", found.url))

        start = project or self.here
        if self.profile is not None:
            try:
                return choose(key, [found.url], start=start, fits=fits, given=self._given())
            except DiscoveryError as exc:
                raise NotWrapped(str(exc)) from None
        if not is_name(key):
            return None
        config = paths.config_dir()
        for place in profile_places(key, cwd=start, config_dir=config, builtin_dir=None):
            if os.path.isfile(place) and fits(place):
                return Choice(place, "named like the entry")
        return None

    def _bearer(
        self, key: str, found: remoteentry.RemoteEntry, choice: Choice | None, name: str
    ) -> str | None:
        """The keyring reference of the entry's bearer token, once the keyring holds it: a
        wrapped entry must start, and mcpwrap never copies a credential out of the entry."""
        if found.secret is None:
            return None
        ref = f"keyring:mcpwrap-{name}/bearer"
        if choice is not None:
            remote = self._load(choice.file, None).server.remote
            ref = remote.bearer if remote is not None and remote.bearer else ref
        from mcpwrap.identity import secrets

        try:
            secrets.read_one(ref, "the keyring")
        except MCPWrapError as exc:
            raise NotWrapped(
                f"it sends an {found.secret} header, a credential that mcpwrap never copies "
                f"into a profile: it sends the token from the keyring instead. Store the "
                f'token (the part after "Bearer ") with `mcpwrap secret set {ref}`, then '
                f"run `{self.rerun(key)}` again ({exc})"
            ) from None
        return ref

    def _agrees(
        self, key: str, file: str, profile: Profile, found: remoteentry.RemoteEntry
    ) -> None:
        """A chosen profile must send what the entry sends: otherwise wrapping would change
        what the server gets. Says the lines to add."""
        remote = profile.server.remote or RemoteSpec("")
        wanted: list[str] = []
        if dict(remote.headers) != dict(found.headers):
            import json

            given = found.headers.items()
            pairs = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in given)
            wanted.append(f"headers = {{ {pairs} }}")
        if remote.transport != found.transport:
            wanted.append(f'transport = "{found.transport}"')
        if (remote.bearer is None) != (found.secret is None):
            wanted.append(
                'bearer = "keyring:SERVICE/USER"' if found.secret else "no bearer (remove it)"
            )
        if wanted:
            raise NotWrapped(
                f"its profile {file} does not send what the entry sends; put in its [server]: "
                + "; ".join(wanted)
                + f", then run `{self.rerun(key)}` again"
            )

    def _remote_init(
        self,
        key: str,
        name: str,
        found: remoteentry.RemoteEntry,
        bearer: str | None,
        project: str | None,
    ) -> Choice | Wrapping:
        """--init for a remote server: the profile goes into the project, or, where the
        client names none, into the user's profiles (a remote profile grants no directory)."""
        from mcpwrap.config import project as projects

        if not self.init:
            raise NotWrapped(
                f"no profile for the remote server {found.url}; run `mcpwrap init {name} -- "
                f"{found.url}`, or `{self.rerun(key)} --init`"
            )
        into = (
            os.path.join(project, ".mcpwrap")
            if project and projects.refusal(project) is None
            else os.path.join(paths.config_dir(), "profiles")
        )
        file = os.path.join(into, f"{name}.toml")
        if self.dry_run:
            head = ("run", "--profile", name, "--")
            would = f": `mcpwrap init {name}` would write {file} from the server's tools"
            return Wrapping(self.mcpwrap, head, name, would, replace=(found.url,))
        from mcpwrap.commands.init import InitOptions, init

        spec = RemoteSpec(found.url, found.transport, found.headers, bearer)
        said = io.StringIO()
        try:
            with contextlib.redirect_stdout(said):
                init(InitOptions(name, (found.url,), False, self.timeout, remote=spec, into=into))
        except MCPWrapError as exc:
            raise NotWrapped(f"mcpwrap init {name} failed: {exc}") from None
        return Choice(file, "written by mcpwrap init now: review its guesses")

    def _as_started(self, path: str, entry: Entry, values: dict[str, object]) -> _AsStarted:
        """The entry as its client would start it: the command and env, variables replaced."""
        try:
            spec = clients.Entry.of(values)
        except ValueError as exc:
            raise NotWrapped(str(exc)) from None
        launch = clients.launch_for(self.client, path, entry.scope, here=self.here, home=self.home)
        try:
            argv = launch.argv(spec, self.environ)
        except clients.Unresolved as exc:
            raise NotWrapped(str(exc)) from None
        try:
            env = launch.entry_env(spec, self.environ)
        except clients.Unresolved:
            env = {}  # the first start reports it
        return _AsStarted(launch, spec, argv, env)

    def _choice(self, key: str, argv: list[str], project: str | None) -> Choice:
        def fits(file: str) -> bool:
            command = self._load(file, project).server.command
            return not command or list(command) == argv

        try:
            found = choose(key, argv, start=project or self.here, fits=fits, given=self._given())
        except DiscoveryError as exc:
            raise NotWrapped(str(exc)) from None
        if found is not None:
            return found
        name = key if is_name(key) else profile_name_for_command(argv)
        if not self.init:
            # init writes into the project: where the client names none, wrap needs one.
            where = "" if project else f" --project {shlex.quote(self._suggest(argv))}"
            raise NotWrapped(
                f"no profile for {profile_name_for_command(argv)}; run `mcpwrap init {name} "
                f"-- {shlex.join(argv)}` in the project, or `{self.rerun(key)} --init{where}`"
            )
        return self._init(key, name, argv, project)

    def _given(self) -> str | None:
        """--profile: a path is the user's, from here; a name is looked up as run does."""
        given = self.profile
        if given and ("/" in given or given.endswith(".toml")):
            return os.path.join(self.here, given)
        return given

    def _load(self, file: str, project: str | None) -> Profile:
        try:
            return paths.load(file, project=project or self.here, guard=False)
        except MCPWrapError as exc:
            raise NotWrapped(str(exc)) from None

    def _check_project(self, key: str, project: str | None, argv: list[str]) -> None:
        from mcpwrap.config import project as projects

        if project is None:
            raise NotWrapped(
                f"its profile grants the server a project, and {_NOBODY[self.client]}: "
                f"run `{self.rerun(key)} --project {shlex.quote(self._suggest(argv))}`"
            )
        why = projects.refusal(project)
        if why is not None:
            raise NotWrapped(
                f"its profile grants the server a project, and that would be {project}, "
                f"{why}; mcpwrap will not grant it: run `{self.rerun(key)} --project "
                f"{shlex.quote(self._suggest(argv))}`"
            )

    def _suggest(self, argv: list[str]) -> str:
        """A project for the message: a directory the command names, or the one here."""
        from mcpwrap.config import project as projects
        from mcpwrap.config.discovery import project_of

        for word in [*argv[1:], project_of(os.path.join(self.here, "x"))]:
            if os.path.isabs(word) and os.path.isdir(word) and projects.refusal(word) is None:
                return word
        return "/path/to/project"

    def _lock(
        self, profile: Profile, file: str, argv: list[str], project: str | None, arg: str
    ) -> str | None:
        """Lock an entry that downloads; stop at a lock for another command, which `run`
        would refuse to start (whether or not this entry downloads)."""
        from mcpwrap.commands.lock import LockOptions, lock
        from mcpwrap.supply import pins, portable

        path = paths.find_lock(profile.source, paths.served(profile))
        try:
            old = pins.load(path, arg)
        except MCPWrapError as exc:
            raise NotWrapped(str(exc)) from None
        if old is not None:
            cwd = profile.working_dir()
            home = os.path.expanduser("~")
            given = portable.normalize_command(argv, cwd=cwd, project=profile.project, home=home)
            if given == old.command:
                return f"locked, {path}"
            raise NotWrapped(
                f"profile {arg} is locked for another command ({path}: "
                f"{shlex.join(old.command)}), and a lock pins one command: give this entry "
                f"a profile of its own (`mcpwrap init NAME -- {shlex.join(argv)}`), or, if "
                f"the other entry is gone, `mcpwrap lock --profile {arg} -- {shlex.join(argv)}`"
            )
        if not downloader(argv):
            return None
        if self.dry_run:
            return "would lock it"
        said = io.StringIO()
        try:
            with contextlib.redirect_stdout(said):
                options = LockOptions(
                    profile=file,
                    command=tuple(argv),
                    approve=False,
                    yes=False,  # never accepts a change: a new lock only (none exists)
                    timeout=self.timeout,
                    project=project if profile.uses_project else None,
                )
                lock(options)
        except MCPWrapError as exc:
            raise NotWrapped(f"cannot lock it: {exc}") from None
        printed = said.getvalue().strip().splitlines()  # "PATH: PACKAGE VERSION, N tools pinned"
        return "locked now" + (f", {printed[-1]}" if printed else "")

    def _init(self, key: str, name: str, argv: list[str], project: str | None) -> Choice:
        from mcpwrap.commands.init import InitOptions, init

        if project is None:
            raise NotWrapped(
                f"--init writes a profile into the project, and {_NOBODY[self.client]}: "
                f"run `{self.rerun(key)} --init --project {shlex.quote(self._suggest(argv))}`"
            )
        file = os.path.join(project, ".mcpwrap", f"{name}.toml")
        if self.dry_run:
            raise _WouldInit(name, f"`mcpwrap init {name}` would write {file} and lock it")
        said = io.StringIO()
        try:
            with contextlib.redirect_stdout(said):
                init(InitOptions(name, tuple(argv), False, self.timeout, project))
        except MCPWrapError as exc:
            raise NotWrapped(f"mcpwrap init {name} failed: {exc}") from None
        return Choice(file, "written by mcpwrap init now: review its guesses")

    def rerun(self, key: str) -> str:
        """The wrap command for this one entry again, as the user gave it."""
        words = ["mcpwrap", "wrap", self.client]
        words += ["--config", self.config] if self.config else []
        words += ["--server", key]
        return shlex.join(words)


class _WouldInit(Exception):
    """--dry-run --init: the profile init would write, not written."""

    def __init__(self, name: str, said: str) -> None:
        super().__init__(said)
        self.name = name


_NOBODY = {
    "claude-desktop": "Claude Desktop names none (it starts servers in / and replaces no "
    "variables)",
    "vscode": "VS Code names none in the user's mcp.json (${workspaceFolder} is not "
    "replaced there)",
    "cursor": "Cursor names none here",
    "claude-code": "Claude Code names none here",
}


def _naming(
    started: _AsStarted, profile: Profile, file: str, project: str | None, offered: str | None
) -> tuple[str, str | None]:
    """(what follows --profile, what follows --project or None): --project where the
    profile grants {project}, and a name `mcpwrap run` finds from where the client starts
    the entry, else the profile's path."""
    written = offered if profile.uses_project else None
    start = lookup_start(started.launch, written, project, started.spec, started.env)
    arg = paths.profile_arg(profile.source)
    if _finds(arg, start, file):
        return arg, written
    if written is None and offered and project and _finds(arg, project, file):
        return arg, offered  # the project's own profile, found from the project
    return file, written


def _finds(name: str, start: str, file: str) -> bool:
    """Whether `mcpwrap run --profile NAME`, looking from `start`, finds `file`."""
    try:
        found = paths.find(name, cwd=start)
    except DiscoveryError:
        return False
    return os.path.realpath(found) == os.path.realpath(file)


def first_start(
    client: str,
    path: str,
    entry: Entry,
    values: Mapping[str, object],
    *,
    here: str,
    home: str,
    environ: Mapping[str, str],
    timeout: float,
) -> Started:
    """Start a wrapped entry once, exactly as its client would, and ask for its tools."""
    launch = clients.launch_for(client, path, entry.scope, here=here, home=home)
    try:
        spawn = launch.spawn(clients.Entry.of(values), environ)
    except (clients.Unresolved, ValueError) as exc:
        return Started(None, str(exc))
    return start_once(spawn.argv, cwd=spawn.cwd, env=spawn.env, timeout=timeout)
