"""`run`, `sync`, `approve` and `lock` never contradict each other: every refusal names one
command, and doing exactly that ends in a server that starts and lists its tools.

Each case breaks a locked setup the way it happens (a fresh clone with an empty store, a
pull that changed the lock, a file changed in the store, another command, a changed
script in the project or outside it), reads the one `mcpwrap ...` command the refusal
prints, runs it as printed (with --yes, as a script would), and starts the server again.

Real uv and npm, real servers (mcp-server-time, server-filesystem), no network: they
install from the caches scripts/test fills, as in test_fetch.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from offline import FILESYSTEM, FILESYSTEM_VERSION, TIME, TIME_VERSION, offline_env
from wrapped import MCPWRAP, REPO, Wrapped

TIME_CMD = ["uvx", f"{TIME}=={TIME_VERSION}", "--local-timezone", "UTC"]
ADVICE = re.compile(r"`(mcpwrap (?:sync|approve|lock) [^`]*)`")
PROFILE = """version = 1
[policy]
default = "allow"
[server]
passthrough = ["DRIFT_STATE"]
[sandbox]
network = "none"
read = ["{project}"]
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git repository with two profiles; its own store and state (conftest's XDG)."""
    root = tmp_path / "proj"
    (root / ".mcpwrap").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    for name in ("time", "fs", "drift"):
        (root / ".mcpwrap" / f"{name}.toml").write_text(PROFILE)
    (root / "docs").mkdir()
    (root / "docs" / "a.txt").write_text("a")
    return root


def _env(project: Path) -> dict[str, str]:
    return {**offline_env(), "DRIFT_STATE": str(project / "state.json")}


def _mcpwrap(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MCPWRAP, *args],
        cwd=project,
        env=_env(project),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _tools(where: Path, profile: str, command: list[str]) -> list[str]:
    """Start the server under `mcpwrap run` from `where` (the project or a directory in
    it); the tools it lists, or the refusal."""
    project = where if (where / ".git").exists() else where.parent
    with Wrapped(Path(profile), command, cwd=where, env=_env(project)) as w:
        try:
            w.initialize()
        except EOFError as exc:  # its message carries mcpwrap's stderr
            assert w.proc.wait(10) == 2, exc
            raise Refused(str(exc)) from exc
        reply = w.recv_id(w.request("tools/list"))
        return sorted(t["name"] for t in reply["result"]["tools"])


class Refused(Exception):
    """`mcpwrap run` stopped before the server started; the message is its stderr."""


def _refusal(project: Path, profile: str, command: list[str]) -> str:
    with pytest.raises(Refused) as caught:
        _tools(project, profile, command)
    return str(caught.value)


def _follow(project: Path, message: str) -> tuple[str, subprocess.CompletedProcess[str]]:
    """Run the one command `message` advises, as printed (--yes added for a script)."""
    (advice,) = ADVICE.findall(message)
    words = shlex.split(advice)[1:]
    if words[0] in ("approve", "lock"):
        words.insert(1, "--yes")
    done = _mcpwrap(project, *words)
    assert done.returncode == 0, f"{advice}\n{done.stdout}{done.stderr}"
    return advice, done


def _store(project: Path) -> Path:
    return Path(os.environ["XDG_CACHE_HOME"]) / "mcpwrap" / "store"


def test_uvx_the_store_emptied_the_lock_pulled_a_file_changed_another_command(
    project: Path,
) -> None:
    locked = _mcpwrap(project, "lock", "--profile", "time", "--", *TIME_CMD)
    assert locked.returncode == 0, locked.stderr
    tools = ["convert_time", "get_current_time"]
    assert _tools(project, "time", TIME_CMD) == tools

    # A fresh clone: nothing in the store. Run refuses, downloads nothing, says sync.
    shutil.rmtree(_store(project))
    message = _refusal(project, "time", TIME_CMD)
    assert "this machine has not verified this lock yet" in message
    assert not _store(project).exists(), "run downloads nothing"
    assert _follow(project, message)[0] == "mcpwrap sync --profile time"
    assert _tools(project, "time", TIME_CMD) == tools

    # A pull changed the lock (another teammate locked it again): verify again.
    lock = project / ".mcpwrap" / "time.lock"
    lock.write_text(lock.read_text().replace("# mcpwrap lock:", "# mcpwrap lock (pulled):"))
    message = _refusal(project, "time", TIME_CMD)
    assert "the lock changed since this machine verified it" in message
    assert _follow(project, message)[0] == "mcpwrap sync --profile time"
    assert _tools(project, "time", TIME_CMD) == tools

    # A file of the installed package changed: named; sync installs it again; approve
    # (which accepts changes) says the same as run.
    (server_py,) = _store(project).glob("uv/*/lib/python*/site-packages/mcp_server_time/server.py")
    installed = server_py.read_bytes()
    with server_py.open("a") as f:
        f.write("# changed\n")
    message = _refusal(project, "time", TIME_CMD)
    assert "mcp_server_time/server.py differs from its RECORD" in message
    approve = _mcpwrap(project, "approve", "--profile", "time", "--yes")
    assert approve.returncode == 2 and ADVICE.findall(approve.stderr) == ADVICE.findall(message)
    assert _follow(project, message)[0] == "mcpwrap sync --profile time"
    assert server_py.read_bytes() == installed
    assert _tools(project, "time", TIME_CMD) == tools

    # Another command: lock it (approve, asked first, says the same).
    other = [*TIME_CMD[:-1], "Europe/Paris"]
    message = _refusal(project, "time", other)
    approve = _mcpwrap(project, "approve", "--profile", "time", "--yes", "--", *other)
    assert approve.returncode == 2 and ADVICE.findall(approve.stderr) == ADVICE.findall(message)
    advice, _ = _follow(project, message)
    assert advice == f"mcpwrap lock --profile time -- {shlex.join(other)}"
    assert _tools(project, "time", other) == tools
    # Nothing left to do: sync and approve agree that all is verified.
    assert _mcpwrap(project, "sync", "--profile", "time").returncode == 0
    approve = _mcpwrap(project, "approve", "--profile", "time", "--yes")
    assert approve.returncode == 0 and "up to date" in approve.stdout


def test_npx_dot_and_the_project_path_are_the_same_lock(project: Path) -> None:
    """The spelling that sent run to approve and approve back to lock."""
    dot = ["npx", "-y", f"{FILESYSTEM}@{FILESYSTEM_VERSION}", "."]
    absolute = [*dot[:-1], str(project)]
    locked = _mcpwrap(project, "lock", "--profile", "fs", "--", *dot)
    assert locked.returncode == 0, locked.stderr
    assert "list_directory" in _tools(project, "fs", absolute)
    for command in (dot, absolute, [*dot[:-1], f"{project}/"]):
        approve = _mcpwrap(project, "approve", "--profile", "fs", "--yes", "--", *command)
        assert approve.returncode == 0 and "up to date" in approve.stdout, approve.stderr
        assert _mcpwrap(project, "sync", "--profile", "fs", "--", *command).returncode == 0
    # From a subdirectory too: the server starts in the project, where `.` points.
    assert "list_directory" in _tools(project / "docs", "fs", dot)
    # Another directory is another command, said so by run, sync and approve alike.
    docs = [*dot[:-1], "./docs"]
    message = _refusal(project, "fs", docs)
    assert f"to lock this command instead: `mcpwrap lock --profile fs -- {shlex.join(docs)}`" in (
        message
    )
    for verb in ("sync", "approve"):
        said = _mcpwrap(project, verb, "--profile", "fs", "--", *docs)
        assert said.returncode == 2 and ADVICE.findall(said.stderr) == ADVICE.findall(message)


def test_a_changed_script_in_the_project_or_outside_it_is_approved(
    project: Path, tmp_path: Path
) -> None:
    """Changes the lock's owner makes: the project's script (pinned in the lock) and one
    outside the project (this machine's only). Both: approve shows it, then it runs."""
    drift = REPO / "tests" / "fixtures" / "drift_server.py"
    tools = [{"name": "echo", "description": "Echo.", "inputSchema": {"type": "object"}}]
    (project / "state.json").write_text(json.dumps({"tools": tools, "instructions": None}))
    python = os.path.realpath(sys.executable)
    outside = tmp_path / "outside" / "server.py"
    outside.parent.mkdir()
    for script in (project / "server.py", outside):
        shutil.copy(drift, script)
        command = [python, str(script)]
        locked = _mcpwrap(project, "lock", "--profile", "drift", "--yes", "--", *command)
        assert locked.returncode == 0, locked.stderr
        assert _tools(project, "drift", command) == ["echo"]
        with script.open("a") as f:
            f.write("# changed\n")
        message = _refusal(project, "drift", command)
        assert f"{script}: content changed" in message
        sync = _mcpwrap(project, "sync", "--profile", "drift")
        assert sync.returncode == 2 and ADVICE.findall(sync.stderr) == ADVICE.findall(message)
        advice, done = _follow(project, message)
        assert advice == "mcpwrap approve --profile drift"
        assert "content changed" in done.stdout
        assert _tools(project, "drift", command) == ["echo"]


def test_a_builtin_profile_that_serves_the_project_keeps_its_lock_in_it(
    project: Path, tmp_path: Path, var_tmp_path: Path
) -> None:
    """The curated server-filesystem profile grants the server its project: its lock is
    the project's `.mcpwrap/server-filesystem.lock`, to commit, found from wherever the
    project is named. mcp-server-time serves no project (a client may start it from /):
    its lock is the user's, even when locked in a repository."""
    repo = project
    project = var_tmp_path / "proj"  # it writes there: not under /tmp (see conftest)
    shutil.copytree(repo, project, symlinks=True)
    fs = ["npx", "-y", f"{FILESYSTEM}@{FILESYSTEM_VERSION}", "."]
    done = _mcpwrap(project, "lock", "--profile", "server-filesystem", "--", *fs)
    assert done.returncode == 0, done.stderr
    assert (project / ".mcpwrap" / "server-filesystem.lock").is_file()
    user = Path(os.environ["XDG_CONFIG_HOME"]) / "mcpwrap" / "profiles"
    assert not user.exists()
    named = ["--project", str(project)]
    with Wrapped(Path("server-filesystem"), fs, extra=named, cwd=tmp_path, env=_env(project)) as w:
        w.initialize()
        listed = w.recv_id(w.request("tools/list"))["result"]["tools"]
        assert "list_directory" in {t["name"] for t in listed}

    done = _mcpwrap(project, "lock", "--profile", "mcp-server-time", "--", *TIME_CMD)
    assert done.returncode == 0, done.stderr
    assert (user / "mcp-server-time.lock").is_file()
    assert not (project / ".mcpwrap" / "mcp-server-time.lock").exists()
    with Wrapped(Path("mcp-server-time"), TIME_CMD, cwd=Path("/"), env=_env(project)) as w:
        w.initialize()
        listed = w.recv_id(w.request("tools/list"))["result"]["tools"]
        assert sorted(t["name"] for t in listed) == ["convert_time", "get_current_time"]


def test_a_version_1_lock_says_how_to_write_it_again(project: Path) -> None:
    """A lock from before locks were portable: every command names the file and the one
    command that writes it again, which works."""
    old = project / ".mcpwrap" / "time.lock"
    old.write_text(
        "version = 1\n"
        'profile_digest = "sha256:0"\n'
        "[server]\n"
        f"command = {json.dumps(TIME_CMD)}\n"
        'run = ["/root/.cache/mcpwrap/store/uv/x/bin/mcp-server-time"]\n'
        'launcher = "uvx"\npackage = "mcp-server-time"\nversion = "0"\n'
        "[artifacts]\nfiles = []\ntrees = []\n"
    )
    message = _refusal(project, "time", TIME_CMD)
    assert message.count(f"{old} is a version 1 lock") == 1, message
    for command in ("sync", "approve"):
        done = _mcpwrap(project, command, "--profile", "time")
        assert done.returncode == 2 and ADVICE.findall(done.stderr) == ADVICE.findall(message)
    advice, done = _follow(project, message)
    assert advice == f"mcpwrap lock --profile time -- {shlex.join(TIME_CMD)}"
    assert "a version 1 lock; writing it again in version 2" in done.stdout
    assert _tools(project, "time", TIME_CMD) == ["convert_time", "get_current_time"]
