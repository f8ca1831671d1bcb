"""`mcpwrap wrap` writes entries that start: real client config files, real profiles,
locks made offline from the project caches (as tests/test_fetch.py makes them), and
then each written entry started exactly as its config says, from its client's working
directory, and driven by the MCP SDK's client.

How each client starts a stdio server, with sources, is in mcpwrap/clients/apps.py and
tests/test_project.py. In short: Claude Desktop starts it in / (macOS) with launchd's
PATH /usr/bin:/bin:/usr/sbin:/sbin and replaces no variables; VS Code starts a
.vscode/mcp.json entry in the workspace folder and replaces ${workspaceFolder}; Claude
Code starts it in the project and sets CLAUDE_PROJECT_DIR.

Each test has a home of its own under /var/tmp (with no XDG variables, so mcpwrap's
config, state and store are in it, where a client's mcpwrap finds them too) and a
repository beside it: a project under /tmp cannot be sealed (conftest's var_tmp_path).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from offline import FILESYSTEM, TIME, offline_env
from wrapped import MCPWRAP

from mcpwrap.clients.apps import LAUNCHD_PATH

# The console script beside the interpreter running `python -m mcpwrap`: what wrap writes.
MCPWRAP_BIN = str(Path(sys.executable).parent / "mcpwrap")
_XDG = ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME")


@pytest.fixture
def world(var_tmp_path: Path) -> dict[str, Path]:
    home = var_tmp_path / "home"
    repo = var_tmp_path / "repo"
    (home / ".config" / "Claude").mkdir(parents=True)
    (repo / ".git").mkdir(parents=True)
    return {"home": home, "repo": repo}


def user_env(home: Path) -> dict[str, str]:
    """The user's shell, offline: npm and uv install from the project caches."""
    env = {k: v for k, v in offline_env().items() if k not in _XDG}
    env.pop("MCPWRAP_PROJECT", None)
    env.pop("CLAUDE_PROJECT_DIR", None)
    return {**env, "HOME": str(home)}


def run_wrap(home: Path, cwd: Path, *argv: str) -> tuple[int, str]:
    done = subprocess.run(
        [*MCPWRAP, *argv],
        cwd=cwd,
        env=user_env(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=600,
        check=False,
    )
    return done.returncode, done.stdout.decode() + done.stderr.decode()


def entry_line(out: str, name: str, verdict: str) -> str:
    """The one line saying `verdict` of server `name` (it must be there)."""
    found = [line for line in out.splitlines() if f": server {name}: {verdict}" in line]
    assert len(found) == 1, out
    return found[0]


def text(result: types.CallToolResult) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


async def drive(
    entry: dict[str, object],
    *,
    cwd: Path | str,
    env: dict[str, str],
    call: tuple[str, dict[str, str]],
    replace: dict[str, str] | None = None,
) -> tuple[list[str], types.CallToolResult]:
    """Start an entry exactly as its config says (after the client's own variable
    replacement, `replace`), list its tools and make one call."""
    listed = entry["args"]
    assert isinstance(listed, list)
    args = [str(a) for a in listed]
    for variable, value in (replace or {}).items():
        args = [a.replace(variable, value) for a in args]
    params = StdioServerParameters(command=str(entry["command"]), args=args, cwd=cwd, env=env)
    async with (
        stdio_client(params) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        names = sorted(t.name for t in (await session.list_tools()).tools)
        return names, await session.call_tool(*call)


# --- Claude Desktop -----------------------------------------------------------------------

DESKTOP = """\
{
  "globalShortcut": "Alt+Space",
  "mcpServers": {
    "filesystem": {
      "command": "npx",
      "args": ["-y", "@modelcontextprotocol/server-filesystem", "REPO"]
    },
    "time": {
      "command": "uvx",
      "args": ["mcp-server-time"]
    }
  }
}
"""


@pytest.mark.anyio
async def test_claude_desktop_entries_start_from_root_with_launchds_path(
    world: dict[str, Path],
) -> None:
    home, repo = world["home"], world["repo"]
    config = home / ".config" / "Claude" / "claude_desktop_config.json"
    original = DESKTOP.replace("REPO", str(repo)).encode()
    config.write_bytes(original)

    # Claude Desktop names no project: filesystem's profile grants one, so it is left
    # alone, with the command that names it; time needs none and is wrapped and started.
    status, out = run_wrap(home, home, "wrap", "claude-desktop")
    assert status == 1, out
    refused = entry_line(out, "filesystem", "not wrapped")
    assert f"run `mcpwrap wrap claude-desktop --server filesystem --project {repo}`" in refused
    assert re.search(r"server time: wrapped \(profile mcp-server-time: the built-in one", out)
    assert "mcp-server-time" in entry_line(out, "time", "wrapped") and "locked now" in out
    entry_line(out, "time", "ready (2 tools)")
    after = json.loads(config.read_text())["mcpServers"]
    assert after["filesystem"] == json.loads(original)["mcpServers"]["filesystem"]

    # The command wrap printed, run as printed: filesystem is wrapped, locked, ready.
    status, out = run_wrap(
        home, home, "wrap", "claude-desktop", "--server", "filesystem", "--project", str(repo)
    )
    assert status == 0, out
    assert "locked now" in entry_line(out, "filesystem", "wrapped (profile server-filesystem")
    assert re.search(r"server filesystem: ready \(\d+ tools\)", out), out

    servers = json.loads(config.read_text())["mcpServers"]
    assert servers["filesystem"] == {
        "command": MCPWRAP_BIN,
        "args": [
            *("run", "--profile", "server-filesystem", "--project", str(repo), "--"),
            *("npx", "-y", FILESYSTEM, str(repo)),
        ],
    }
    assert servers["time"] == {
        "command": MCPWRAP_BIN,
        "args": ["run", "--profile", "mcp-server-time", "--", "uvx", TIME],
    }
    # Each lock is named as --profile names the profile. A built-in profile's goes to the
    # repository it serves, to commit; time, which serves none, to the user's profiles.
    assert (repo / ".mcpwrap" / "server-filesystem.lock").is_file()
    assert (home / ".config" / "mcpwrap" / "profiles" / "mcp-server-time.lock").is_file()

    # As Claude Desktop starts them: in /, with launchd's PATH, nothing else of the shell.
    desktop = {"HOME": str(home), "PATH": LAUNCHD_PATH}
    names, now = await drive(
        servers["time"], cwd="/", env=desktop, call=("get_current_time", {"timezone": "UTC"})
    )
    assert names == ["convert_time", "get_current_time"]
    assert not now.is_error, text(now)
    target = repo / "from-claude.txt"
    names, wrote = await drive(
        servers["filesystem"],
        cwd="/",
        env=desktop,
        call=("write_file", {"path": str(target), "content": "written through mcpwrap"}),
    )
    assert {"write_file", "read_text_file"} <= set(names) and "read_file" not in names
    assert not wrote.is_error, text(wrote)
    assert target.read_text() == "written through mcpwrap"

    status, out = run_wrap(home, home, "unwrap", "claude-desktop")
    assert status == 0, out
    assert config.read_bytes() == original


# --- VS Code, a workspace's .vscode/mcp.json ------------------------------------------------

VSCODE = """\
{
\t// Servers for this repository: VS Code reads comments and trailing commas.
\t"servers": {
\t\t"filesystem": {
\t\t\t"type": "stdio",
\t\t\t"command": "npx",
\t\t\t"args": ["-y", "@modelcontextprotocol/server-filesystem", "${workspaceFolder}"],
\t\t},
\t\t/* the clock */
\t\t"time": { "type": "stdio", "command": "uvx", "args": ["mcp-server-time"] },
\t\t"github": { "type": "http", "url": "https://api.githubcopilot.com/mcp/" },
\t},
}
"""


@pytest.mark.anyio
async def test_vscode_workspace_entries_get_the_workspace_folder(
    world: dict[str, Path],
) -> None:
    home, repo = world["home"], world["repo"]
    config = repo / ".vscode" / "mcp.json"
    config.parent.mkdir()
    config.write_text(VSCODE)
    original = config.read_bytes()

    status, out = run_wrap(home, repo, "wrap", "vscode")
    assert status == 1, out  # github, a remote server with no profile (test_wrap_remote.py)
    assert re.search(r"server filesystem: ready \(\d+ tools\)", out), out
    entry_line(out, "time", "ready (2 tools)")
    github = "https://api.githubcopilot.com/mcp/"
    assert f"run `mcpwrap init github -- {github}`" in entry_line(out, "github", "not wrapped")

    written = config.read_text()
    assert "// Servers for this repository" in written and "/* the clock */" in written
    assert '"github": { "type": "http", "url": "https://api.githubcopilot.com/mcp/" },' in written
    command = json.dumps(MCPWRAP_BIN)
    assert (
        f'"command": {command},\n\t\t\t"args": ["run", "--profile", "server-filesystem", '
        '"--project", "${workspaceFolder}", "--", "npx", "-y", '
        '"@modelcontextprotocol/server-filesystem", "${workspaceFolder}"],\n\t\t},'
    ) in written
    assert (
        f'"time": {{ "type": "stdio", "command": {command}, "args": ["run", "--profile", '
        '"mcp-server-time", "--", "uvx", "mcp-server-time"] },'
    ) in written

    # As VS Code starts them: in the workspace folder, ${workspaceFolder} replaced.
    servers = _jsonc_servers(written)
    vscode = {"HOME": str(home)}
    folder = {"${workspaceFolder}": str(repo)}
    names, wrote = await drive(
        servers["filesystem"],
        cwd=repo,
        env=vscode,
        replace=folder,
        call=("write_file", {"path": "from-vscode.txt", "content": "in the workspace"}),
    )
    assert not wrote.is_error, text(wrote)
    assert (repo / "from-vscode.txt").read_text() == "in the workspace"
    names, now = await drive(
        servers["time"], cwd=repo, env=vscode, call=("get_current_time", {"timezone": "UTC"})
    )
    assert names == ["convert_time", "get_current_time"] and not now.is_error, text(now)

    status, out = run_wrap(home, repo, "unwrap", "vscode")
    assert status == 0, out
    assert config.read_bytes() == original


def test_init_writes_a_profile_for_an_entry_with_none(world: dict[str, Path]) -> None:
    home, repo = world["home"], world["repo"]
    (repo / ".vscode").mkdir()
    config = repo / ".vscode" / "mcp.json"
    clock = {"type": "stdio", "command": sys.executable, "args": ["-m", "mcp_server_time"]}
    config.write_text(json.dumps({"servers": {"clock": clock}}))
    status, out = run_wrap(home, repo, "wrap", "vscode")
    assert status == 1, out
    assert "no profile for mcp_server_time" in entry_line(out, "clock", "not wrapped")

    status, out = run_wrap(home, repo, "wrap", "vscode", "--init")
    assert status == 0, out
    assert "written by mcpwrap init now" in entry_line(out, "clock", "wrapped (profile clock")
    entry_line(out, "clock", "ready (2 tools)")
    assert (repo / ".mcpwrap" / "clock.toml").is_file()
    assert (repo / ".mcpwrap" / "clock.lock").is_file()
    # init's profile reads {project}: VS Code names it with ${workspaceFolder}.
    assert _jsonc_servers(config.read_text())["clock"]["args"] == [
        *("run", "--profile", "clock", "--project", "${workspaceFolder}", "--"),
        *(sys.executable, "-m", "mcp_server_time"),
    ]


def _jsonc_servers(text: str) -> dict[str, dict[str, object]]:
    from mcpwrap.clients.configfile import parse, plain

    servers = plain(parse(text, ".vscode/mcp.json"))
    assert isinstance(servers, dict)
    found = servers["servers"]
    assert isinstance(found, dict)
    return found


# --- entries that would not start -----------------------------------------------------------


def test_claude_desktop_entries_that_cannot_start_are_said_so(world: dict[str, Path]) -> None:
    """Left alone when no profile fits; `not ready`, with the reason, when the entry is
    written but would not start the way Claude Desktop starts it."""
    home, repo = world["home"], world["repo"]
    (repo / ".mcpwrap").mkdir()
    (repo / ".mcpwrap" / "dies.toml").write_text("version = 1\n")
    dies = "import sys; print('boom: the database is gone', file=sys.stderr); sys.exit(3)"
    servers = {
        "unknown": {"command": "npx", "args": ["-y", "some-unknown-mcp-server"]},
        "dies": {"command": sys.executable, "args": ["-c", dies]},
        # The console script is in the venv's bin, which launchd's PATH does not hold.
        "clock": {"command": "mcp-server-time"},
    }
    config = home / ".config" / "Claude" / "claude_desktop_config.json"
    config.write_text(json.dumps({"mcpServers": servers}, indent=2))
    assert os.access(Path(sys.executable).parent / "mcp-server-time", os.X_OK)

    status, out = run_wrap(home, repo, "wrap", "claude-desktop")
    assert status == 1, out
    assert entry_line(out, "unknown", "not wrapped").endswith(
        ": not wrapped: no profile for some-unknown-mcp-server; run `mcpwrap init unknown -- "
        "npx -y some-unknown-mcp-server` in the project, or `mcpwrap wrap claude-desktop "
        f"--server unknown --init --project {repo}`"
    )
    after = json.loads(config.read_text())["mcpServers"]
    assert after["unknown"] == servers["unknown"]

    # A profile of the project, which Claude Desktop (in /) finds only by its path.
    assert after["dies"]["args"][:4] == ["run", "--profile", str(repo / ".mcpwrap/dies.toml"), "--"]
    dead = _block(out, "dies")
    assert (
        "not ready: it answered initialize with an error: the MCP server exited (status 3)" in dead
    )
    assert "boom: the database is gone" in dead
    assert "`mcpwrap unwrap claude-desktop --server dies` puts it back as it was" in dead

    lost = _block(out, "clock")
    assert "not ready: it exited (status 127) before answering initialize" in lost
    assert (
        "mcpwrap: error: cannot start the server: 'mcp-server-time' is not found on PATH "
        f"({LAUNCHD_PATH})"
    ) in lost


def test_claude_code_starts_them_in_the_project_with_its_path(world: dict[str, Path]) -> None:
    """The control of the last test: from a terminal's PATH the same console script
    starts. And an entry the old wrap wrote (the profile named after its key) is never
    called ready."""
    home, repo = world["home"], world["repo"]
    config = repo / ".mcp.json"
    old = {"command": "mcpwrap", "args": ["run", "--profile", "time", "--", "uvx", TIME]}
    config.write_text(json.dumps({"mcpServers": {"clock": {"command": TIME}, "time": old}}))
    env = user_env(home)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    done = subprocess.run(
        [*MCPWRAP, "wrap", "claude-code"],
        cwd=repo,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=300,
        check=False,
    )
    out = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 1, out
    entry_line(out, "clock", "ready (2 tools)")
    entry_line(out, "time", "already wrapped")
    assert 'mcpwrap: error: no profile named "time"' in _block(out, "time")


def _block(out: str, name: str) -> str:
    """The `not ready` line of server `name` and the indented lines under it."""
    lines = out.splitlines()
    start = end = lines.index(entry_line(out, name, "not ready")) + 1
    while end < len(lines) and lines[end].startswith("  "):
        end += 1
    return "\n".join(lines[start - 1 : end])


def test_dry_run_writes_locks_and_starts_nothing(world: dict[str, Path]) -> None:
    home, repo = world["home"], world["repo"]
    config = home / ".config" / "Claude" / "claude_desktop_config.json"
    config.write_text(DESKTOP.replace("REPO", str(repo)))
    before = config.read_bytes()
    status, out = run_wrap(
        home, home, "wrap", "claude-desktop", "--project", str(repo), "--dry-run"
    )
    assert status == 0, out
    assert "would lock it" in entry_line(out, "filesystem", "would wrap (profile server-filesystem")
    assert f"project {repo}" in entry_line(out, "filesystem", "would wrap")
    assert "would lock it" in entry_line(out, "time", "would wrap (profile mcp-server-time")
    assert "ready" not in out
    assert config.read_bytes() == before
    assert sorted(p.name for p in config.parent.iterdir()) == [config.name]
    assert not (home / ".config" / "mcpwrap").exists()
    assert not (home / ".cache" / "mcpwrap").exists()


def test_no_check_writes_and_starts_nothing(world: dict[str, Path]) -> None:
    """--no-check: the entry is written, and neither started nor called ready (this one
    would not start from launchd's PATH, as test_claude_desktop_entries_that_cannot_start
    shows)."""
    home, repo = world["home"], world["repo"]
    config = home / ".config" / "Claude" / "claude_desktop_config.json"
    config.write_text(json.dumps({"mcpServers": {"clock": {"command": TIME}}}))
    status, out = run_wrap(home, repo, "wrap", "claude-desktop", "--no-check")
    assert status == 0, out
    entry_line(out, "clock", "wrapped (profile mcp-server-time")
    entry_line(out, "clock", "not started (--no-check)")
    assert "ready" not in out
    assert json.loads(config.read_text())["mcpServers"]["clock"]["command"] == MCPWRAP_BIN
