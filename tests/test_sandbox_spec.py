"""The jail's spec: which install trees a command brings in, and nothing more."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mcpwrap.profile import load_profile
from mcpwrap.sandbox import spec


@pytest.mark.parametrize(
    ("args", "script"),
    [
        (["server.py", "--config", "/home/u/.aws/credentials"], ["server.py"]),
        (["-u", "server.py"], ["server.py"]),
        (["-m", "mcp_server_time", "x.py"], []),
        (["-c", "print(1)"], []),
        (["-X", "dev", "s.py"], ["s.py"]),
        ([], []),
    ],
)
def test_only_an_interpreters_script_counts(args: list[str], script: list[str]) -> None:
    assert spec._script(sys.executable, args) == script


def test_a_non_interpreter_brings_no_argument_in() -> None:
    assert spec._script("/usr/bin/true", ["/home/u/.ssh/id_ed25519"]) == []


def test_files_named_in_arguments_are_not_bound(tmp_path: Path) -> None:
    secret_dir = tmp_path / "keys"
    secret_dir.mkdir()
    (secret_dir / "key").write_text("canary")
    script = tmp_path / "srv" / "server.py"
    script.parent.mkdir()
    script.write_text("print(1)")
    (tmp_path / "p.toml").write_text("version = 1\n")
    profile = load_profile(str(tmp_path / "p.toml"), state_dir=str(tmp_path / "state"))
    argv = [sys.executable, str(script), "--key", str(secret_dir / "key")]
    built = spec.build(profile, argv, {"PATH": "/usr/bin"}, str(tmp_path), state_dir=str(tmp_path))
    bound = [p for p, _ in built["binds"]]
    assert str(script.parent) in bound
    assert not any(p == str(secret_dir) or p.startswith(str(secret_dir) + "/") for p in bound)


def test_protected_paths_cover_the_profile_the_state_and_client_configs(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "p.toml").write_text("version = 1\n")
    profile = load_profile(str(tmp_path / "p.toml"), state_dir=str(tmp_path / "state"))
    protected = spec.protected_paths(profile, str(tmp_path / "state"))
    for must in (
        "p.toml",
        "p.lock",
        ".mcpwrap",
        ".git/hooks",
        ".git/config",
        ".mcp.json",
        ".vscode",
        ".cursor",
    ):
        assert str(tmp_path / must) in protected, must
    assert str(tmp_path / "state") in protected and profile.audit.path in protected


def test_memory_is_rlimit_data_not_address_space(tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_text('version = 1\n[sandbox]\nmemory = "1GiB"\ncpu = "30s"\n')
    profile = load_profile(str(tmp_path / "p.toml"), state_dir=str(tmp_path))
    limits = spec.rlimits(profile)
    assert limits["RLIMIT_DATA"] == 1 << 30 and "RLIMIT_AS" not in limits
    assert limits["RLIMIT_CPU"] == 30 and limits["RLIMIT_CORE"] == 0
