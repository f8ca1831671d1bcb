"""A developer's ordinary day, end to end (issue 14), the way a user does it.

In a fresh home with a git repository in it, the developer:
1. writes a project profile for a clock server with `mcpwrap init` (profile and lock);
2. wraps a Claude Desktop config (server-filesystem given the repository's absolute path,
   and the clock) with `wrap --project`, and the repository's own VS Code config
   (server-filesystem given `.`, the clock; comments kept) with `wrap vscode`: every
   entry is matched to its profile, locked, written with an absolute mcpwrap and reported
   ready;
3. starts every written entry as its client would, from /, from the home directory and
   from the repository (Claude Desktop with launchd's PATH; VS Code with
   ${workspaceFolder} replaced), and uses it;
4. edits files at the repository's root through the real server-filesystem (write, edit,
   new directory, move), while .envrc and .mcp.json still cannot be created;
5. commits .mcpwrap/ (profiles and locks, no path of this machine in them);
6. and a teammate clones the repository into its own home, with an empty store, syncs
   the locks and runs both servers there (a second Unix user as root; as an ordinary
   user, this user with another home: tests/peer.py).

Each step fails without its part of issue 14: the project named rather than taken from
/ or ~ (item 1), the jail started from / (2), wrap's matching, locking, absolute path and
start (3), writes at a sealed root (4), portable locks and sync (5), names that
--profile finds (8).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from offline import CACHE, FILESYSTEM, TIME, offline_env
from peer import Peer
from wrapped import MCPWRAP, REPO

from mcpwrap.clients.apps import LAUNCHD_PATH

_XDG = ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME")
VSCODE = """\
{
\t// This repository's servers (VS Code allows comments and trailing commas).
\t"servers": {
\t\t"files": {"type": "stdio", "command": "npx", "args": ["-y", "%(fs)s", "."]},
\t\t"clock": {"type": "stdio", "command": "uvx", "args": ["%(time)s"]},
\t},
}
"""
Call = tuple[str, dict[str, Any]]


def shell(home: Path) -> dict[str, str]:
    """The developer's shell: its own home, nothing of the test's XDG directories, npm
    and uv offline from the project caches."""
    env = {k: v for k, v in offline_env().items() if k not in _XDG}
    for name in ("MCPWRAP_PROJECT", "CLAUDE_PROJECT_DIR"):
        env.pop(name, None)
    return {**env, "HOME": str(home)}


def mcpwrap(home: Path, cwd: Path, *argv: str) -> str:
    done = subprocess.run(
        [*MCPWRAP, *argv],
        cwd=cwd,
        env=shell(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"mcpwrap {' '.join(argv)}:\n{out}"
    return out


def git(repo: Path, *argv: str) -> None:
    who = ["-c", "user.name=dev", "-c", "user.email=dev@example.invalid"]
    subprocess.run(["git", "-C", str(repo), *who, *argv], check=True, capture_output=True)


async def session(
    command: str, args: list[str], *, cwd: Path | str, env: dict[str, str], calls: list[Call]
) -> tuple[list[str], list[types.CallToolResult]]:
    """Start a server command as a client does, list its tools, make the calls."""
    params = StdioServerParameters(command=command, args=args, cwd=cwd, env=env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as client:
        await client.initialize()
        names = sorted(t.name for t in (await client.list_tools()).tools)
        return names, [await client.call_tool(name, arguments) for name, arguments in calls]


def text(result: types.CallToolResult) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


@pytest.fixture
def day(var_tmp_path: Path) -> dict[str, Path]:
    home = var_tmp_path / "home"
    repo = home / "src" / "app"
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "README.md").write_text("# app\n\nA project.\n")
    (repo / "notes.txt").write_text("remember the milk\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "a project")
    return {"home": home, "repo": repo, "base": var_tmp_path}


@pytest.mark.anyio
async def test_a_developers_day(day: dict[str, Path], peer: Peer) -> None:
    home, repo = day["home"], day["repo"]

    # 1. A project profile for the clock, locked: what a team commits.
    mcpwrap(home, repo, "init", "clock", "--", "uvx", TIME)
    assert (repo / ".mcpwrap" / "clock.toml").is_file()
    assert (repo / ".mcpwrap" / "clock.lock").is_file()

    # The entry as it was before mcpwrap knew the project, started by Cursor from ~: it
    # would have granted the whole home directory; it stops, saying how to name one.
    refused = subprocess.run(
        [*MCPWRAP, "run", "--profile", "server-filesystem", "--", "npx", "-y", FILESYSTEM, "."],
        cwd=home,
        env=shell(home),
        input="",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 2 and "your home directory" in refused.stderr, refused.stderr
    assert "${workspaceFolder}" in refused.stderr and refused.stdout == ""

    # 2. Claude Desktop's config and the repository's VS Code config, wrapped.
    desktop = home / ".config" / "Claude" / "claude_desktop_config.json"
    desktop.parent.mkdir(parents=True)
    desktop.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "files": {"command": "npx", "args": ["-y", FILESYSTEM, str(repo)]},
                    "clock": {"command": "uvx", "args": [TIME]},
                }
            },
            indent=2,
        )
    )
    out = mcpwrap(home, home, "wrap", "claude-desktop", "--project", str(repo))
    assert out.count("ready (") == 2, out
    vscode = repo / ".vscode" / "mcp.json"
    vscode.parent.mkdir()
    vscode.write_text(VSCODE % {"fs": FILESYSTEM, "time": TIME})
    out = mcpwrap(home, repo, "wrap", "vscode")
    assert out.count("ready (") == 2, out
    assert "// This repository's servers" in vscode.read_text()

    desktop_entries = json.loads(desktop.read_text())["mcpServers"]
    vscode_entries = _json_with_comments(vscode.read_text())["servers"]
    for entry in [*desktop_entries.values(), *vscode_entries.values()]:
        assert Path(entry["command"]).is_absolute() and entry["command"].endswith("mcpwrap")
        assert entry["args"][:2] == ["run", "--profile"], entry
    assert desktop_entries["files"]["args"][2] == "server-filesystem"
    assert "${workspaceFolder}" in vscode_entries["files"]["args"]

    # 3. Every entry started as its client would, from /, ~ and the repository.
    launchd = {"HOME": str(home), "PATH": LAUNCHD_PATH}
    for where in ("/", home, repo):
        tag = "root" if where == "/" else Path(where).name
        for client, entries, env, replace in (
            ("desktop", desktop_entries, launchd, {}),
            ("vscode", vscode_entries, shell(home), {"${workspaceFolder}": str(repo)}),
        ):
            args = [replace.get(a, a) for a in entries["clock"]["args"]]
            names, (now,) = await session(
                entries["clock"]["command"],
                args,
                cwd=where,
                env=env,
                calls=[("get_current_time", {"timezone": "UTC"})],
            )
            assert names == ["convert_time", "get_current_time"] and not now.is_error, text(now)
            target = repo / f"from-{client}-{tag}.txt"
            args = [replace.get(a, a) for a in entries["files"]["args"]]
            names, (wrote,) = await session(
                entries["files"]["command"],
                args,
                cwd=where,
                env=env,
                calls=[("write_file", {"path": str(target), "content": f"{client} {tag}"})],
            )
            assert "write_file" in names and not wrote.is_error, text(wrote)
            assert target.read_text() == f"{client} {tag}"

    # 4. Editing files at the repository's root; the protected names stay out.
    files = desktop_entries["files"]
    _, results = await session(
        files["command"],
        files["args"],
        cwd="/",
        env=launchd,
        calls=[
            ("write_file", {"path": str(repo / "README.md"), "content": "# app\n\nEdited.\n"}),
            (
                "edit_file",
                {
                    "path": str(repo / "README.md"),
                    "edits": [{"oldText": "Edited.", "newText": "Edited twice."}],
                },
            ),
            ("create_directory", {"path": str(repo / "docs")}),
            (
                "move_file",
                {"source": str(repo / "notes.txt"), "destination": str(repo / "docs/notes.txt")},
            ),
            ("write_file", {"path": str(repo / ".envrc"), "content": "export X=1\n"}),
            ("write_file", {"path": str(repo / ".mcp.json"), "content": "{}\n"}),
        ],
    )
    assert [r.is_error for r in results] == [False] * 4 + [True] * 2, [text(r) for r in results]
    assert (repo / "README.md").read_text() == "# app\n\nEdited twice.\n"
    assert (repo / "docs" / "notes.txt").read_text() == "remember the milk\n"
    assert not (repo / ".envrc").exists() and not (repo / ".mcp.json").exists()

    # 5. Profiles and locks committed; no path of this machine in a lock.
    locks = sorted(p.name for p in (repo / ".mcpwrap").glob("*.lock"))
    assert locks == ["clock.lock", "server-filesystem.lock"], locks
    for lock in (repo / ".mcpwrap").glob("*.lock"):
        body = lock.read_text()
        for machine in (str(home), str(day["base"]), str(CACHE), str(REPO), "/root/"):
            assert machine not in body, f"{lock.name} names {machine}"
    git(repo, "add", ".mcpwrap", ".vscode/mcp.json", "README.md", "docs")
    git(repo, "commit", "-qm", "mcpwrap: profiles and locks")
    bundle = day["base"] / "app.bundle"
    git(repo, "bundle", "create", "-q", str(bundle), "--all")
    subprocess.run(["chmod", "-R", "a+rX", str(day["base"])], check=True)

    # 6. The teammate: a clone, an empty store, `mcpwrap sync`, then both servers.
    clone = peer.home / "app"
    cloned = peer.run("git", "clone", "-q", str(bundle), str(clone))
    assert cloned.returncode == 0, cloned.stderr
    for profile in ("clock", "server-filesystem"):
        synced = peer.run(
            "/usr/bin/python3", "-m", "mcpwrap", "sync", "--profile", profile, cwd=clone
        )
        assert synced.returncode == 0, synced.stdout + synced.stderr
    teammate = peer.mcpwrap()
    names, (now,) = await session(
        teammate[0],
        [*teammate[1:], "run", "--profile", "clock", "--", "uvx", TIME],
        cwd=clone,
        env={},
        calls=[("get_current_time", {"timezone": "UTC"})],
    )
    assert names == ["convert_time", "get_current_time"] and not now.is_error, text(now)
    _, (wrote,) = await session(
        teammate[0],
        [
            *teammate[1:],
            "run",
            "--profile",
            "server-filesystem",
            "--",
            "npx",
            "-y",
            FILESYSTEM,
            ".",
        ],
        cwd=clone,
        env={},
        calls=[("write_file", {"path": str(clone / "TEAMMATE.md"), "content": "hello\n"})],
    )
    assert not wrote.is_error, text(wrote)
    assert peer.run("cat", str(clone / "TEAMMATE.md")).stdout == "hello\n"
    status = peer.run("git", "-C", str(clone), "status", "--porcelain", ".mcpwrap")
    assert status.stdout == "", "the teammate's runs changed no lock"


def _json_with_comments(text_: str) -> Any:
    """VS Code's JSON with comments and trailing commas, as mcpwrap's own reader sees it."""
    from mcpwrap.clients.configfile import parse, plain

    return plain(parse(text_, "mcp.json"))
