"""The project a profile grants: never /, the home directory or above it, a system or a
shared temporary directory, whichever directory the client starts mcpwrap in.

Where each client starts a stdio server (checked December 2026):
- Claude Desktop: `/` on macOS (modelcontextprotocol.io, legacy/tools/debugging: "may be
  undefined (like `/` on macOS)"); the home directory on Linux builds (user reports,
  anthropics/claude-code#75266).
- Claude Code: the directory `claude` was started in, and since v2.1.139 it sets
  CLAUDE_PROJECT_DIR for stdio servers (its CHANGELOG; code.claude.com/docs/en/mcp).
- Cursor: the home directory (user reports: supermemoryai/cursor-supermemory#6,
  vectorize-io/hindsight#4530); `${workspaceFolder}` is replaced in args (cursor.com docs).
- VS Code: the workspace folder for .vscode/mcp.json, the home directory for the user's
  mcp.json (src/vs/workbench/api/node/extHostMcpNode.ts: cwd, else defaultCwd, else
  os.homedir()); `${workspaceFolder}` cannot be resolved in the user's mcp.json and may
  reach the server unreplaced (microsoft/vscode#243526).

Each case starts the real server-filesystem through `mcpwrap run` the way that client
would (its cwd, its arguments, its environment), with HOME pointed at a home the test
made, holding a canary key.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from wrapped import MCPWRAP, Wrapped

from mcpwrap.basics.errors import UsageError
from mcpwrap.config.project import Source, problem, resolve

REPO = Path(__file__).resolve().parent.parent
KEY = "-----BEGIN OPENSSH PRIVATE KEY----- canary\n"

# --- the rule, as a table ---------------------------------------------------------------

HOME = "/home/me"


@pytest.mark.parametrize(
    ("project", "why"),
    [
        ("/", "the root of the filesystem"),
        ("/home/me", "your home directory"),
        ("/home/me/", "your home directory"),
        ("/home", "a parent of your home directory"),
        ("/tmp", "a temporary directory shared"),
        ("/var/tmp", "a temporary directory shared"),
        ("/dev/shm", "a temporary directory shared"),
        ("/scratch/me", "a temporary directory shared"),  # $TMPDIR, below
        ("/usr", "a system directory"),
        ("/usr/local/lib", "a system directory"),
        ("/etc", "a system directory"),
        ("/etc/nginx", "a system directory"),
        ("/var/lib/postgresql", "a system directory"),
        ("/proc/1", "a system directory"),
        ("/var", "holds other users' or the system's files"),
        ("/opt", "holds other users' or the system's files"),
        ("/srv", "holds other users' or the system's files"),
        ("/mnt", "holds other users' or the system's files"),
        ("/root", "holds other users' or the system's files"),
    ],
)
def test_these_are_never_a_project(project: str, why: str) -> None:
    found = problem(project, home=HOME, temp_dirs=["/scratch/me"])
    assert found is not None and why in found


@pytest.mark.parametrize(
    "project",
    [
        "/home/me/src/app",
        "/home/me/.config/app",  # inside the home: the user named it
        "/home/other/app",
        "/tmp/build-123",  # inside a shared temp dir (a test's, a one-shot checkout)
        "/var/tmp/project",
        "/srv/www/site",
        "/opt/app",
        "/mnt/c/code/app",
        "/work/repo",
    ],
)
def test_these_may_be_a_project(project: str) -> None:
    assert problem(project, home=HOME, temp_dirs=["/scratch/me"]) is None


def test_the_project_comes_from_the_flag_then_the_environment_then_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, c = (tmp_path / n for n in "abc")
    for d in (a, b, c):
        d.mkdir()
    monkeypatch.chdir(c)
    env = {"MCPWRAP_PROJECT": str(b), "CLAUDE_PROJECT_DIR": str(c)}
    assert resolve(str(a), env) == (str(a), Source.FLAG)
    assert resolve(None, env) == (str(b), Source.ENV)
    assert resolve(None, {"CLAUDE_PROJECT_DIR": str(a)}) == (str(a), Source.CLAUDE)
    assert resolve(None, {}) == (str(c), Source.CWD)


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("${workspaceFolder}", "did not replace the variable"),
        ("${CLAUDE_PROJECT_DIR}", "did not replace the variable"),
        ("/no/such/dir", "is not a directory"),
    ],
)
def test_a_project_that_is_no_directory_is_refused(given: str, said: str) -> None:
    with pytest.raises(UsageError, match=said):
        resolve(given, {})


# --- each client's launch, with the real server-filesystem ----------------------------


@pytest.fixture
def world(var_tmp_path: Path) -> dict[str, Path]:
    """A home with a canary key and a repository in it (outside /tmp: the project root
    is granted for writing, and a seal cannot hold under the jail's private /tmp)."""
    home = var_tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text(KEY)
    repo = home / "src" / "app"
    (repo / ".git").mkdir(parents=True)
    (repo / "README.md").write_text("hello\n")
    return {"home": home, "repo": repo}


@pytest.fixture(scope="module")
def fs_server(node_exe: str) -> list[str]:
    script = REPO / "tests" / "node" / "node_modules" / ".bin" / "mcp-server-filesystem"
    return [node_exe, str(script.resolve()), "."]


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("MCPWRAP_PROJECT", "CLAUDE_PROJECT_DIR")
    }
    return {**env, "HOME": str(home), **extra}


def _refused(cwd: Path | str, env: dict[str, str], server: list[str], *extra: str) -> str:
    """Start the entry as the client would; it must stop before anything starts."""
    argv = [*MCPWRAP, "run", "--profile", "server-filesystem", *extra, "--", *server]
    done = subprocess.run(
        argv, cwd=cwd, env=env, input=b"", capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 2, done
    assert done.stdout == b"", "nothing may be relayed from a refused start"
    err = done.stderr.decode()
    assert "mcpwrap will not grant it" in err or "did not replace" in err, err
    return err


def _serves_the_repo(w: Wrapped, repo: Path, home: Path) -> None:
    w.initialize()
    dirs = w.call("list_allowed_directories")
    assert str(repo) in dirs["result"]["content"][0]["text"], dirs
    read = w.call("read_text_file", {"path": "README.md"})
    assert read["result"]["content"][0]["text"] == "hello\n", read
    stolen = w.call("read_text_file", {"path": str(home / ".ssh" / "id_rsa")})
    assert KEY not in str(stolen)
    assert "error" in stolen or stolen["result"].get("isError"), stolen


def _wrapped(
    world: dict[str, Path], server: list[str], cwd: Path | str, extra: list[str], **env: str
) -> Wrapped:
    return Wrapped(
        Path("server-filesystem"),
        server,
        cwd=Path(cwd),
        extra=extra,
        env=_env(world["home"], **env),
    )


def test_claude_desktop_on_macos_starts_in_root_which_is_refused(
    world: dict[str, Path], fs_server: list[str]
) -> None:
    err = _refused("/", _env(world["home"]), fs_server)
    assert "the root of the filesystem" in err and "--project" in err


def test_claude_desktop_on_linux_and_cursor_start_in_home_which_is_refused(
    world: dict[str, Path], fs_server: list[str]
) -> None:
    err = _refused(world["home"], _env(world["home"]), fs_server)
    assert "your home directory" in err and "${workspaceFolder}" in err


def test_a_shared_temp_dir_is_refused(world: dict[str, Path], fs_server: list[str]) -> None:
    err = _refused("/tmp", _env(world["home"]), fs_server)
    assert "temporary directory shared" in err


def test_claude_desktop_with_an_absolute_project_serves_only_it(
    world: dict[str, Path], fs_server: list[str]
) -> None:
    extra = ["--project", str(world["repo"])]
    with _wrapped(world, fs_server, "/", extra) as w:
        _serves_the_repo(w, world["repo"], world["home"])


def test_cursor_with_its_workspace_folder_serves_only_it(
    world: dict[str, Path], fs_server: list[str]
) -> None:
    # "--project", "${workspaceFolder}" in .cursor/mcp.json, as Cursor replaces it.
    extra = ["--project", str(world["repo"])]
    with _wrapped(world, fs_server, world["home"], extra) as w:
        _serves_the_repo(w, world["repo"], world["home"])


def test_vscode_workspace_config_starts_in_the_folder_and_serves_it(
    world: dict[str, Path], fs_server: list[str]
) -> None:
    with _wrapped(world, fs_server, world["repo"], []) as w:
        _serves_the_repo(w, world["repo"], world["home"])


def test_vscode_user_config_leaves_the_variable_unreplaced_which_is_refused(
    world: dict[str, Path], fs_server: list[str]
) -> None:
    err = _refused(world["home"], _env(world["home"]), fs_server, "--project", "${workspaceFolder}")
    assert "did not replace the variable" in err


def test_claude_code_in_a_subdirectory_serves_the_project_it_names(
    world: dict[str, Path], fs_server: list[str]
) -> None:
    sub = world["repo"] / "docs"
    sub.mkdir()
    server = [*fs_server[:-1], str(world["repo"])]
    with _wrapped(world, server, sub, [], CLAUDE_PROJECT_DIR=str(world["repo"])) as w:
        _serves_the_repo(w, world["repo"], world["home"])


def test_a_profile_that_grants_no_project_starts_anywhere(
    world: dict[str, Path], time_server_cmd: list[str]
) -> None:
    """mcp-server-time needs no project: Claude Desktop may start it in / or ~."""
    for cwd in ("/", world["home"]):
        with Wrapped(
            Path("mcp-server-time"), time_server_cmd, cwd=Path(cwd), env=_env(world["home"])
        ) as w:
            assert w.initialize()["result"]["serverInfo"]


def test_check_names_the_project_run_would_refuse(tmp_path: Path) -> None:
    from mcpwrap.commands.check import ERROR, findings
    from mcpwrap.config import paths

    for where, bad in (("/", True), (str(tmp_path), False)):
        profile = paths.load("server-filesystem", project=where, guard=False)
        found = [
            f for f in findings(profile, home=HOME, exists=os.path.exists) if f.rule == "project"
        ]
        assert bool(found) is bad, found
        assert all(f.severity == ERROR and "--project" in f.fix for f in found)
