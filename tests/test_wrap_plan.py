"""The decisions behind `mcpwrap wrap`, as tables: how each client starts an entry
(mcpwrap.clients.apps, sources there), which profile an entry gets, who names its project,
which mcpwrap is written; and the first start's own verdicts on servers that never
answer or cannot be found. End to end, with real servers: tests/test_wrap_start.py."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pytest

from mcpwrap.basics.errors import UsageError
from mcpwrap.clients import apps as clients
from mcpwrap.clients import configfile as clientconfig
from mcpwrap.clients import executable
from mcpwrap.clients.apps import Launch, ProjectBy, Unresolved
from mcpwrap.clients.firststart import start_once
from mcpwrap.commands import wrap as wrapcmd
from mcpwrap.commands import wrapplan
from mcpwrap.config import paths

HOME = "/home/me"
WS = "/home/me/src/app"

# --- how each client starts an entry -----------------------------------------------------


@pytest.mark.parametrize(
    ("client", "workspace", "entry_cwd", "cwd", "by"),
    [
        ("claude-desktop", None, None, "/", ProjectBy.NOBODY),
        ("claude-code", WS, "/elsewhere", WS, ProjectBy.CLIENT),  # "cwd" is ignored
        ("cursor", WS, "/elsewhere", HOME, ProjectBy.WORKSPACE),
        ("vscode", WS, None, WS, ProjectBy.WORKSPACE),
        ("vscode", WS, "/srv/tools", "/srv/tools", ProjectBy.WORKSPACE),
        ("vscode", None, None, HOME, ProjectBy.NOBODY),  # the user's mcp.json
    ],
)
def test_where_each_client_starts_an_entry_and_who_names_its_project(
    client: str, workspace: str | None, entry_cwd: str | None, cwd: str, by: ProjectBy
) -> None:
    launch = Launch(client, workspace, HOME)
    assert launch.cwd(entry_cwd) == cwd
    assert launch.project_by is by


ENV = {"TOKEN": "t0k", "EMPTY": ""}


@pytest.mark.parametrize(
    ("client", "workspace", "value", "replaced"),
    [
        ("claude-desktop", None, "${HOME}/x ${workspaceFolder}", "${HOME}/x ${workspaceFolder}"),
        ("claude-code", WS, "${TOKEN}", "t0k"),
        ("claude-code", WS, "${MISSING:-fallback}/${EMPTY:-e}", "fallback/e"),
        ("claude-code", WS, "${CLAUDE_PROJECT_DIR}/tools/db.js", f"{WS}/tools/db.js"),
        ("claude-code", WS, "${env:TOKEN}", "${env:TOKEN}"),  # not its syntax: left as is
        ("cursor", WS, "${workspaceFolder}/.venv", f"{WS}/.venv"),
        ("cursor", WS, "${userHome}|${env:TOKEN}|${env:NOPE}", f"{HOME}|t0k|"),
        ("cursor", WS, "${TOKEN} ${input:x}", "${TOKEN} ${input:x}"),
        ("vscode", WS, "${workspaceFolder}|${workspaceFolderBasename}", f"{WS}|app"),
        ("vscode", WS, "${userHome}${/}${env:TOKEN}", f"{HOME}/t0k"),
        ("vscode", None, "${workspaceFolder}", "${workspaceFolder}"),  # user file: not replaced
    ],
)
def test_what_each_client_replaces(
    client: str, workspace: str | None, value: str, replaced: str
) -> None:
    launch = Launch(client, workspace, HOME)
    assert launch.substitute(value, launch.environment(ENV)) == replaced


@pytest.mark.parametrize(
    ("client", "value", "said"),
    [
        ("claude-code", "${MISSING}", "Claude Code does not start an entry naming an unset"),
        ("claude-code", "${workspaceFolder}", "${workspaceFolder} is not set"),
        ("vscode", "${input:api-key}", "VS Code asks you for ${input:api-key}"),
    ],
)
def test_what_a_client_would_not_replace_is_said(client: str, value: str, said: str) -> None:
    with pytest.raises(Unresolved, match=said.replace("$", r"\$")):
        Launch(client, WS, HOME).substitute(value, ENV)


def test_the_environment_a_client_gives() -> None:
    shell = {"PATH": "/home/me/.local/bin:/usr/bin", "MCPWRAP_PROJECT": "/x", "LANG": "C"}
    shell["CLAUDE_PROJECT_DIR"] = "/y"
    entry = {"API": "k"}
    desktop = Launch("claude-desktop", None, HOME).environment(shell, entry)
    assert desktop == {"PATH": clients.LAUNCHD_PATH, "LANG": "C", "API": "k"}
    code = Launch("claude-code", WS, HOME).environment(shell, entry)
    assert code == {"PATH": shell["PATH"], "LANG": "C", "CLAUDE_PROJECT_DIR": WS, "API": "k"}
    cursor = Launch("cursor", WS, HOME).environment(shell, {"PATH": "/opt/bin"})
    assert cursor == {"PATH": "/opt/bin", "LANG": "C"}


def test_vscode_reads_the_env_file_before_the_env(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("# comment\nexport A=\"1\"\nB=2\nC = 'three'\n\nnot a pair\n")
    entry = clients.Entry.of(
        {"command": "x", "envFile": "${workspaceFolder}/.env", "env": {"B": "b"}}
    )
    launch = Launch("vscode", str(tmp_path), HOME)
    assert launch.entry_env(entry, {}) == {"A": "1", "B": "b", "C": "three"}
    missing = clients.Entry.of({"command": "x", "envFile": "/nonexistent/.env"})
    with pytest.raises(Unresolved, match=r"its envFile /nonexistent/\.env cannot be read"):
        launch.entry_env(missing, {})


@pytest.mark.parametrize(
    ("client", "config", "scope", "workspace"),
    [
        (
            "claude-desktop",
            f"{HOME}/.config/Claude/claude_desktop_config.json",
            ("mcpServers",),
            None,
        ),
        ("claude-code", f"{WS}/.mcp.json", ("mcpServers",), WS),
        ("claude-code", f"{HOME}/.claude.json", ("projects", "/p/q", "mcpServers"), "/p/q"),
        ("claude-code", f"{HOME}/.claude.json", ("mcpServers",), "/here"),  # every project
        ("cursor", f"{WS}/.cursor/mcp.json", ("mcpServers",), WS),
        ("cursor", f"{HOME}/.cursor/mcp.json", ("mcpServers",), "/here"),  # the window's
        ("vscode", f"{WS}/.vscode/mcp.json", ("servers",), WS),
        ("vscode", f"{HOME}/.config/Code/User/mcp.json", ("servers",), None),
    ],
)
def test_which_folder_a_config_belongs_to(
    client: str, config: str, scope: tuple[str, ...], workspace: str | None
) -> None:
    launch = clients.launch_for(client, config, scope, here="/here", home=HOME)
    assert launch.workspace == workspace


# --- the project written into an entry -----------------------------------------------------


@pytest.mark.parametrize(
    ("launch", "given", "env", "expected"),
    [
        (Launch("claude-desktop", None, HOME), None, {}, (None, None)),
        (Launch("claude-desktop", None, HOME), "/p", {}, ("/p", "/p")),
        (Launch("claude-desktop", None, HOME), None, {"MCPWRAP_PROJECT": "/e"}, (None, "/e")),
        (Launch("claude-code", WS, HOME), None, {}, (None, WS)),
        (Launch("cursor", WS, HOME), None, {}, ("${workspaceFolder}", WS)),
        (Launch("vscode", WS, HOME), None, {}, ("${workspaceFolder}", WS)),
        (Launch("vscode", None, HOME), None, {}, (None, None)),
        (Launch("vscode", None, HOME), "/p", {}, ("/p", "/p")),
    ],
)
def test_who_names_the_project(
    launch: Launch, given: str | None, env: dict[str, str], expected: tuple[str | None, ...]
) -> None:
    assert wrapplan.project_for(launch, given, env) == expected


# --- which profile an entry gets ------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / ".mcpwrap").mkdir()
    return repo


def _profile(path: Path, command: list[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    server = f"[server]\ncommand = {command!r}\n".replace("'", '"') if command else ""
    path.write_text("version = 1\n" + server)
    return path


def _choose(repo: Path, key: str, argv: list[str]) -> wrapplan.Choice | None:
    def fits(file: str) -> bool:
        command = paths.load(file, project=str(repo), guard=False).server.command
        return not command or list(command) == argv

    return wrapplan.choose(key, argv, start=str(repo / "sub"), fits=fits)


def test_the_profile_is_chosen_by_what_the_entry_runs(repo: Path) -> None:
    (repo / "sub").mkdir()
    time = ["uvx", "mcp-server-time"]
    builtin = os.path.join(paths.builtin_profiles_dir(), "mcp-server-time.toml")
    # Nothing of the user's: the built-in profile of the package, whatever the key.
    assert _choose(repo, "time", time) == (builtin, "the built-in one for mcp-server-time")
    # A key that names another built-in profile does not get it.
    assert _choose(repo, "server-everything", time) == _choose(repo, "time", time)
    # The user's profile for the package beats the built-in one...
    user = _profile(Path(paths.config_dir(), "profiles", "mcp-server-time.toml"))
    assert _choose(repo, "time", time) == (str(user), "for mcp-server-time")
    # ...the project's beats the user's...
    project = _profile(repo / ".mcpwrap" / "mcp-server-time.toml")
    assert _choose(repo, "time", time) == (str(project), "for mcp-server-time")
    # ...and one named like the entry beats both.
    own = _profile(repo / ".mcpwrap" / "time.toml")
    assert _choose(repo, "time", time) == (str(own), "named like the entry")
    # Unless it names another command: then it is not this entry's.
    _profile(own, ["uvx", "mcp-server-git"])
    assert _choose(repo, "time", time) == (str(project), "for mcp-server-time")
    assert _choose(repo, "time", ["npx", "-y", "some-unknown-server"]) is None


def test_the_written_name_is_one_run_finds_from_where_the_client_starts_it(
    repo: Path,
) -> None:
    own = _profile(repo / ".mcpwrap" / "tool.toml")
    assert wrapplan._finds("tool", str(repo), str(own))
    assert not wrapplan._finds("tool", "/", str(own))  # Claude Desktop's / : by path then
    builtin = os.path.join(paths.builtin_profiles_dir(), "mcp-server-time.toml")
    assert wrapplan._finds("mcp-server-time", "/", builtin)
    _profile(repo / ".mcpwrap" / "mcp-server-time.toml")  # shadows it in this project
    assert not wrapplan._finds("mcp-server-time", str(repo), builtin)


@pytest.mark.parametrize(
    ("client", "config", "profile", "head"),
    [
        # A project's own profile that grants no project: Cursor starts the entry in the
        # home directory, so --project names where to find it (the file stays portable).
        (
            "cursor",
            ".cursor/mcp.json",
            "own",
            ["--profile", "tool", "--project", "${workspaceFolder}"],
        ),
        ("vscode", ".vscode/mcp.json", "own", ["--profile", "tool"]),  # starts in the folder
        ("claude-code", ".mcp.json", "own", ["--profile", "tool"]),  # CLAUDE_PROJECT_DIR
        # Claude Desktop starts it in /, where no name finds it: its path.
        ("claude-desktop", "claude_desktop_config.json", "own", ["--profile", "{own}"]),
        # One that grants the project: as each client names it.
        (
            "cursor",
            ".cursor/mcp.json",
            "grants",
            ["--profile", "tool", "--project", "${workspaceFolder}"],
        ),
        ("claude-code", ".mcp.json", "grants", ["--profile", "tool"]),
    ],
)
def test_what_is_written_after_run(
    client: str, config: str, profile: str, head: list[str], repo: Path
) -> None:
    own = repo / ".mcpwrap" / "tool.toml"
    own.write_text(
        "version = 1\n" + ('[sandbox]\nread = ["{project}"]\n' if profile == "grants" else "")
    )
    planner = wrapplan.Planner(
        client=client, mcpwrap="/opt/bin/mcpwrap", here=str(repo), home=HOME, environ={}
    )
    entry = clientconfig.Entry(("mcpServers",), "tool")
    wrapping = planner(str(repo / config), entry, {"command": sys.executable, "args": ["-m", "t"]})
    assert wrapping.command == "/opt/bin/mcpwrap"
    expected = ["run", *(w.replace("{own}", str(own)) for w in head), "--"]
    assert list(wrapping.head) == expected


# --- the mcpwrap written -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "environ", "why"),
    [
        ("/home/me/.local/bin/mcpwrap", {}, None),
        ("/home/me/.local/share/uv/tools/mcpwrap-cli/bin/mcpwrap", {}, None),
        ("/home/me/.local/share/pipx/venvs/mcpwrap-cli/bin/mcpwrap", {}, None),
        ("/home/me/.cache/uv/archive-v0/Xy12/bin/mcpwrap", {}, "uv's cache"),
        ("/big/uv-cache/archive-v0/Xy12/bin/mcpwrap", {"UV_CACHE_DIR": "/big/uv-cache"}, "uv's"),
        ("/xdg/uv/archive-v0/a/bin/mcpwrap", {"XDG_CACHE_HOME": "/xdg"}, "uv's cache"),
        ("/home/me/Library/Caches/uv/archive-v0/a/bin/mcpwrap", {}, "uv's cache"),
        ("/home/me/.cache/pipx/a1b2/bin/mcpwrap", {}, "pipx run's cache"),
        ("/home/me/.local/pipx/.cache/a1b2/bin/mcpwrap", {}, "pipx run's cache"),
        ("/opt/pipx/.cache/a1b2/bin/mcpwrap", {"PIPX_HOME": "/opt/pipx"}, "pipx run's cache"),
        ("/home/me/.cache/uvx-notes/mcpwrap", {}, None),
    ],
)
def test_a_throwaway_install_is_recognised(
    path: str, environ: dict[str, str], why: str | None
) -> None:
    found = executable.throwaway(path, environ, HOME)
    assert (found is None) if why is None else (found is not None and why in found), found


def test_the_console_script_of_this_install_is_written(tmp_path: Path) -> None:
    beside = str(Path(sys.executable).parent / "mcpwrap")
    assert executable.find_script("/x/mcpwrap/__main__.py", sys.executable, {"PATH": ""}) == beside
    script = tmp_path / "bin" / "mcpwrap"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    assert executable.find_script(str(script), sys.executable, {}) == str(script)
    python = str(tmp_path / "venv" / "bin" / "python")  # a venv with no console script
    path = {"PATH": str(script.parent)}
    assert executable.find_script("/x/__main__.py", python, path) == str(script)
    assert executable.find_script("/x/__main__.py", python, {"PATH": "/nonexistent"}) is None
    with pytest.raises(UsageError, match="uv tool install mcpwrap-cli"):
        cache = tmp_path / "cache"
        executable.installed(str(script), python, {"UV_CACHE_DIR": str(script.parent)}, str(cache))


# --- the command line ---------------------------------------------------------------------


def _main(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="mcpwrap")
    sub = parser.add_subparsers(dest="command", required=True)
    wrapcmd.add_wrap_parsers(sub)
    return wrapcmd.main_wrap(parser.parse_args(argv))


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--profile", "fs"], "--profile names the profile of one entry: give --server NAME"),
        (["--project", "/"], "--project /: that is the root of the filesystem"),
        (["--project", "${workspaceFolder}"], "wrap writes ${workspaceFolder} itself"),
        (["--project", "/nonexistent/dir"], "--project /nonexistent/dir: not a directory"),
    ],
)
def test_options_that_do_not_fit_are_refused(argv: list[str], said: str, tmp_path: Path) -> None:
    config = tmp_path / "mcp.json"
    config.write_text('{"mcpServers": {}}')
    with pytest.raises(UsageError, match=said.replace("$", r"\$")):
        _main("wrap", "cursor", "--config", str(config), *argv)


# --- the first start ----------------------------------------------------------------------


def test_a_server_that_never_answers_is_not_ready(tmp_path: Path) -> None:
    mute = [
        sys.executable,
        "-c",
        "import sys, time; print('starting', file=sys.stderr); time.sleep(60)",
    ]
    started = start_once(mute, cwd=str(tmp_path), env=dict(os.environ), timeout=1)
    assert not started.ready
    assert started.explained() == ["no answer to initialize within 1 s", "starting"]


def test_a_command_not_on_the_clients_path_is_not_ready(tmp_path: Path) -> None:
    started = start_once(
        ["npx", "-y", "x"], cwd=str(tmp_path), env={"PATH": str(tmp_path)}, timeout=5
    )
    assert not started.ready
    assert started.why.startswith(
        f"'npx' is not found on the PATH the client gives it ({tmp_path})"
    )
