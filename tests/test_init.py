"""`mcpwrap init`: a first profile from the real server's tools, locked, passing `check`,
and usable by `run` as it is."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from wrapped import MCPWRAP, Wrapped

from mcpwrap.commands.suggest import guess_args, guess_class
from mcpwrap.config.profile import ToolClass, load_profile


def _init(
    project: Path, name: str, command: list[str], *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MCPWRAP, "init", name, *extra, "--", *command],
        capture_output=True,
        text=True,
        cwd=project,
        env=os.environ,
        timeout=180,
    )


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "proj"
    (project / ".git").mkdir(parents=True)
    return project


@pytest.mark.parametrize("server", ["time", "everything"])
def test_init_writes_a_locked_profile_that_passes_check_and_runs(
    tmp_path: Path, server: str, time_server_cmd: list[str], everything_cmd: list[str]
) -> None:
    command = time_server_cmd if server == "time" else everything_cmd
    project = _project(tmp_path)
    done = _init(project, server, command)
    assert done.returncode == 0, done.stdout + done.stderr
    path = project / ".mcpwrap" / f"{server}.toml"
    text = path.read_text()
    doc = tomllib.loads(text)  # valid TOML
    assert doc["sandbox"] == {"network": "none", "read": ["{project}"]}
    assert doc["server"]["command"] == command
    lock = tomllib.loads((project / ".mcpwrap" / f"{server}.lock").read_text())
    assert sorted(doc["tools"]) == sorted(lock["tools"])  # every tool the server offers
    for name in doc["tools"]:
        assert f"# {name}: " in text  # each guess says why
    profile = load_profile(path, state_dir=str(tmp_path / "state"))
    assert profile.tools  # loads with every key valid
    check = subprocess.run(
        [*MCPWRAP, "check", str(path)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout
    read_tool = "get_current_time" if server == "time" else "echo"
    assert doc["tools"][read_tool]["class"] == "read"
    with Wrapped(path, command, cwd=project) as w:
        w.initialize()
        args: dict[str, Any] = {"timezone": "UTC"} if server == "time" else {"message": "hi"}
        reply = w.call(read_tool, args)
        assert reply["result"].get("isError") is not True, reply


def test_init_refuses_to_overwrite_without_force(
    tmp_path: Path, time_server_cmd: list[str]
) -> None:
    project = _project(tmp_path)
    (project / ".mcpwrap").mkdir()
    (project / ".mcpwrap" / "time.toml").write_text("version = 1\n# mine\n")
    done = _init(project, "time", time_server_cmd)
    assert done.returncode == 2 and "--force" in done.stderr
    assert (project / ".mcpwrap" / "time.toml").read_text() == "version = 1\n# mine\n"


@pytest.mark.parametrize(
    ("name", "command", "message"),
    [("bad/name", ["true"], "not a profile name"), ("ok", [], "give the server command")],
)
def test_init_usage_errors(tmp_path: Path, name: str, command: list[str], message: str) -> None:
    done = _init(_project(tmp_path), name, command)
    assert done.returncode == 2 and message in done.stderr


def test_a_server_that_cannot_start_in_the_jail_is_reported(tmp_path: Path) -> None:
    project = _project(tmp_path)
    crash = ["/bin/sh", "-c", "echo 'cannot open /home/me/.config/x' >&2; exit 3"]
    done = _init(project, "crash", crash)
    assert done.returncode == 2
    assert "the server exited" in done.stderr and "cannot open /home/me/.config/x" in done.stderr


def test_a_failed_init_leaves_nothing_behind_and_the_retry_works(
    tmp_path: Path, time_server_cmd: list[str]
) -> None:
    project = _project(tmp_path)
    crash = ["/bin/sh", "-c", "echo 'no config' >&2; exit 3"]
    assert _init(project, "time", crash).returncode == 2
    assert not (project / ".mcpwrap").exists()  # no stub profile, no lock, no directory
    retry = _init(project, "time", time_server_cmd)  # the fixed command, no --force needed
    assert retry.returncode == 0, retry.stdout + retry.stderr
    assert (project / ".mcpwrap" / "time.lock").is_file()


def test_a_failed_init_with_force_keeps_the_profile_and_lock_it_would_replace(
    tmp_path: Path, time_server_cmd: list[str]
) -> None:
    project = _project(tmp_path)
    assert _init(project, "time", time_server_cmd).returncode == 0
    files = {p.name: p.read_bytes() for p in (project / ".mcpwrap").iterdir()}
    crash = ["/bin/sh", "-c", "exit 3"]
    assert _init(project, "time", crash, "--force").returncode == 2
    assert {p.name: p.read_bytes() for p in (project / ".mcpwrap").iterdir()} == files


CLASSES = [
    ({"name": "read_file"}, ToolClass.READ),
    ({"name": "getFileInfo"}, ToolClass.READ),
    ({"name": "list-directory"}, ToolClass.READ),
    ({"name": "write_file"}, ToolClass.WRITE),
    ({"name": "delete_branch"}, ToolClass.WRITE),
    ({"name": "git_commit"}, ToolClass.WRITE),  # the verb after a prefix
    ({"name": "update_config"}, ToolClass.ADMIN),
    ({"name": "set_user_role"}, ToolClass.ADMIN),
    ({"name": "frobnicate"}, ToolClass.WRITE),  # nothing known: assumed to write
    ({"name": "frobnicate", "annotations": {"readOnlyHint": True}}, ToolClass.READ),
    ({"name": "get_and_clear", "annotations": {"readOnlyHint": False}}, ToolClass.WRITE),
    ({"name": "frob", "annotations": {"destructiveHint": True}}, ToolClass.WRITE),
    ({"name": "create_thing", "annotations": {"readOnlyHint": True}}, ToolClass.WRITE),
]


@pytest.mark.parametrize(("tool", "expected"), CLASSES, ids=[str(c[0]) for c in CLASSES])
def test_guess_class(tool: dict[str, Any], expected: ToolClass) -> None:
    guess = guess_class(tool)
    assert guess.cls is expected and guess.why


def test_guess_args() -> None:
    tool = {
        "name": "x",
        "inputSchema": {
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "source_file": {"type": "string"},
                "url": {"type": "string"},
                "homepage": {"type": "string", "format": "uri"},
                "count": {"type": "integer"},
                "text": {"type": "string"},
            },
        },
    }
    guesses = {g.name: g.constraint for g in guess_args(tool)}
    assert guesses == {
        "path": {"within": ["{project}"]},
        "source_file": {"within": ["{project}"]},
        "url": None,
        "homepage": None,
    }
