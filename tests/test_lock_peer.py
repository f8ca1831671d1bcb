"""A committed lock works on a teammate's machine: another Unix user, another home, an
empty store.

As root (the first machine): a git repository with two project profiles, locked, the
locks committed: mcp-server-time through uvx, server-filesystem through npx (its
directory argument given as `.`). As the user mcpwrap-peer (the teammate, made here if it
does not exist), through runuser: `git clone` into its home; `mcpwrap run` refuses, with
nothing in the store, and says which command to run; `mcpwrap sync` installs exactly the
locked versions and verifies them; `mcpwrap run` starts each server, in the jail, with no
network, and a real MCP conversation gets initialize and tools/list answered (the
directory argument now spelled as the absolute path of the clone). The lock files did not
change, and a file changed in the teammate's store stops the run, named.

The teammate runs mcpwrap with the system's python3 and this checkout (the test venv's
packages read-only on PYTHONPATH: root's own Python is out of its reach), and uv and npm
offline from its own copies of the caches scripts/test fills. Everything it gets is made
in a directory of its home that the test removes.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import subprocess
from pathlib import Path

import pytest
from offline import CACHE, FILESYSTEM, FILESYSTEM_VERSION, TIME, TIME_VERSION, offline_env
from peer import PEER, Peer
from wrapped import MCPWRAP, Wrapped

TIME_CMD = ["uvx", f"{TIME}=={TIME_VERSION}", "--local-timezone", "UTC"]
FS_CMD = ["npx", "-y", f"{FILESYSTEM}@{FILESYSTEM_VERSION}", "."]
PROFILE = """version = 1
[policy]
default = "allow"
[sandbox]
network = "none"
read = ["{project}"]
"""


@pytest.fixture
def origin(var_tmp_path: Path) -> Path:
    """The first machine's repository: profiles and locks, committed. Readable by all."""
    repo = var_tmp_path / "origin"
    (repo / ".mcpwrap").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)  # {project} is its top
    (repo / "notes").mkdir()
    (repo / "notes" / "hello.txt").write_text("hello from the repository\n")
    for name in ("time", "fs"):
        (repo / ".mcpwrap" / f"{name}.toml").write_text(PROFILE)
    env = offline_env()
    for name, command in (("time", TIME_CMD), ("fs", FS_CMD)):
        done = subprocess.run(
            [*MCPWRAP, "lock", "--profile", name, "--", *command],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "profiles and locks"], check=True)
    # What the teammate clones: the repository as one file (git refuses to read a
    # repository directory another user owns; a remote would be the same transfer).
    subprocess.run([*git, "bundle", "create", "-q", str(var_tmp_path / "repo.bundle"), "--all"])
    subprocess.run(["chmod", "-R", "a+rX", str(var_tmp_path)], check=True)
    return repo


def _digests(repo: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((repo / ".mcpwrap").glob("*.lock"))
    }


def _conversation(peer: Peer, clone: Path, profile: str, command: list[str]) -> list[str]:
    with Wrapped(Path(profile), command, cwd=clone, mcpwrap=peer.mcpwrap()) as w:
        reply = w.initialize()
        assert "serverInfo" in reply["result"], reply
        listed = w.recv_id(w.request("tools/list"), timeout=30)
        names = sorted(t["name"] for t in listed["result"]["tools"])
        if profile == "fs":
            called = w.call("list_directory", {"path": str(clone / "notes")})
            assert "[FILE] hello.txt" in called["result"]["content"][0]["text"], called
        assert w.close() == 0, w.stderr_now()
    return names


def test_a_committed_lock_runs_for_another_user_after_sync(peer: Peer, origin: Path) -> None:
    committed = _digests(origin)
    text = "".join((origin / ".mcpwrap" / f"{n}.lock").read_text() for n in ("time", "fs"))
    for machine_path in (
        "/root",
        str(origin),
        "/usr/bin",
        str(CACHE),
        os.environ["XDG_CACHE_HOME"],
    ):
        assert machine_path not in text, f"the lock names {machine_path}"

    clone = peer.home / "proj"
    cloned = peer.run("git", "clone", "-q", str(origin.parent / "repo.bundle"), str(clone))
    assert cloned.returncode == 0, cloned.stderr
    assert _digests(clone) == committed

    # An empty store: run refuses before anything starts, and says what to do.
    store = Path(peer.env["XDG_CACHE_HOME"]) / "mcpwrap" / "store"
    with Wrapped(Path("time"), TIME_CMD, cwd=clone, mcpwrap=peer.mcpwrap()) as w:
        assert w.proc.wait(60) == 2
        refused = w.stderr_now()
    assert "this machine has not verified this lock yet" in refused, refused
    assert "`mcpwrap sync --profile time`" in refused
    assert not (store / "uv").exists() and not (store / "npm").exists()

    for name in ("time", "fs"):
        synced = peer.run("/usr/bin/python3", "-m", "mcpwrap", "sync", "--profile", name, cwd=clone)
        assert synced.returncode == 0, synced.stdout + synced.stderr
        assert "verified against the lock" in synced.stdout
    assert [p.name.split("-")[0] for p in (store / "uv").iterdir()] == ["mcp"]

    assert _conversation(peer, clone, "time", TIME_CMD) == ["convert_time", "get_current_time"]
    # `.` in the lock, the clone's absolute path here: the same command.
    fs_here = [*FS_CMD[:-1], str(clone)]
    assert {"list_directory", "read_text_file"} <= set(_conversation(peer, clone, "fs", fs_here))
    owner = {p.lstat().st_uid for p in store.rglob("*")}
    uid = pwd.getpwnam(PEER).pw_uid if peer.other_user else os.getuid()
    assert owner == {uid}, "the store is the teammate's own"

    # Nothing rewrote the locks.
    assert _digests(clone) == committed
    status = peer.run("git", "-C", str(clone), "status", "--porcelain")
    assert status.returncode == 0 and status.stdout == "", status.stdout + status.stderr

    # A file changed in the teammate's store stops the run, and is named.
    (server_py,) = store.glob("uv/*/lib/python*/site-packages/mcp_server_time/server.py")
    edit = peer.run("sh", "-c", f"echo '# changed' >> {server_py}")
    assert edit.returncode == 0, edit.stderr
    with Wrapped(Path("time"), TIME_CMD, cwd=clone, mcpwrap=peer.mcpwrap()) as w:
        assert w.proc.wait(60) == 2
        refused = w.stderr_now()
    assert "mcp_server_time/server.py differs from its RECORD" in refused, refused
    assert "`mcpwrap sync --profile time`" in refused
    audit = Path(peer.env["XDG_STATE_HOME"]) / "mcpwrap" / "audit.jsonl"
    last = json.loads(audit.read_text().splitlines()[-1])
    assert (last["decision"], last["rule"]) == ("refuse", "pins.artifacts")
