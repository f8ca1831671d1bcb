"""`mcpwrap lock` on real uvx and npx servers, then `mcpwrap run` from the lock: the
version fetched at lock time starts offline in a jail with no network, without uv or npm,
and a file changed in the installed package afterwards stops the run.

No network at test time: uv and npm install from the caches scripts/test fills
(tests/fetch_peers.json), as in test_fetch.py.
"""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path

import pytest
from offline import FILESYSTEM, FILESYSTEM_VERSION, TIME, TIME_VERSION, offline_env
from wrapped import MCPWRAP, Wrapped


@pytest.fixture
def short_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """mcpwrap's store under a short path: uv writes a console script's #! line with the
    venv's python only when the path is short enough."""
    cache = tmp_path_factory.mktemp("c")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


def _profile(tmp_path: Path, read: list[Path]) -> Path:
    grants = ", ".join(json.dumps(str(p)) for p in read)
    profile = tmp_path / ".mcpwrap" / "srv.toml"
    profile.parent.mkdir()
    profile.write_text(
        'version = 1\n[policy]\ndefault = "allow"\n'
        f'[sandbox]\nnetwork = "none"\nread = [{grants}]\n'
        f"[audit]\npath = {json.dumps(str(tmp_path / 'audit.jsonl'))}\n"
    )
    return profile


def _lock(profile: Path, command: list[str]) -> dict[str, object]:
    done = subprocess.run(
        [*MCPWRAP, "lock", "--profile", str(profile), "--", *command],
        capture_output=True,
        text=True,
        env=offline_env(),
        cwd=profile.parent.parent,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return tomllib.loads(profile.with_suffix(".lock").read_text())


# PATH at run time has neither uv nor npm's registry client in reach of mcpwrap: the
# locked entry point runs as it is.
RUN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin"}


def _tools(w: Wrapped) -> list[str]:
    return sorted(t["name"] for t in w.recv_id(w.request("tools/list"))["result"]["tools"])


def test_uvx_server_locked_then_run_offline_and_a_modified_venv_refused(
    tmp_path: Path, short_cache: Path
) -> None:
    profile = _profile(tmp_path, [])
    command = ["uvx", f"{TIME}=={TIME_VERSION}", "--local-timezone", "UTC"]
    doc = _lock(profile, command)
    server = doc["server"]
    assert isinstance(server, dict)
    assert (server["launcher"], server["package"], server["version"]) == (
        "uvx",
        TIME,
        TIME_VERSION,
    )
    assert server["command"] == command
    assert sorted(doc["tools"]) == ["convert_time", "get_current_time"]  # type: ignore[arg-type]
    (venv,) = (short_cache / "mcpwrap" / "store" / "uv").iterdir()
    with Wrapped(profile, command, env=RUN_ENV, cwd=tmp_path) as w:
        w.initialize()
        assert _tools(w) == ["convert_time", "get_current_time"]
        reply = w.call("get_current_time", {"timezone": "UTC"})
        assert reply["result"]["isError"] is False, reply
    # Someone edits the installed package after locking: the run stops and names it.
    server_py = next(venv.glob("lib/python*/site-packages/mcp_server_time/server.py"))
    with server_py.open("a") as f:
        f.write("\n# changed after locking\n")
    with Wrapped(profile, command, env=RUN_ENV, cwd=tmp_path) as w:
        assert w.proc.wait(60) == 2
        err = w.stderr_now()
    assert "the store's copy of the server was changed after it was verified" in err
    assert f"package {TIME}" in err and "mcp_server_time/server.py" in err
    assert err.rstrip().endswith(
        f"Install it again from the lock: `mcpwrap sync --profile {profile}`"
    )


def test_npx_server_locked_then_run_offline(tmp_path: Path, short_cache: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello.txt").write_text("hello")
    profile = _profile(tmp_path, [shared])
    command = ["npx", "-y", f"{FILESYSTEM}@{FILESYSTEM_VERSION}", str(shared)]
    doc = _lock(profile, command)
    server = doc["server"]
    assert isinstance(server, dict)
    assert (server["launcher"], server["version"]) == ("npx", FILESYSTEM_VERSION)
    trees = doc["artifacts"]["trees"]  # type: ignore[index]
    assert trees[0]["kind"] == "node_modules"
    assert any(p["name"] == FILESYSTEM for p in trees[0]["packages"])
    with Wrapped(profile, command, env=RUN_ENV, cwd=tmp_path) as w:
        w.initialize()
        assert "list_directory" in _tools(w)
        reply = w.call("list_directory", {"path": str(shared)})
        assert "hello.txt" in reply["result"]["content"][0]["text"], reply
