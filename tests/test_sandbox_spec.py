"""The jail's spec: which install trees a command brings in, and nothing more."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mcpwrap.config.profile import load_profile
from mcpwrap.sandbox import spec
from mcpwrap.sandbox.launch import LaunchError
from mcpwrap.supply.entrypoints import script_of


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
    assert script_of(sys.executable, args) == script


def test_a_non_interpreter_brings_no_argument_in() -> None:
    assert script_of("/usr/bin/true", ["/home/u/.ssh/id_ed25519"]) == []


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


# --- protected paths under a write grant: pins and seals -------------------------------


def _tree(root: Path, dirs: tuple[str, ...] = (), files: tuple[str, ...] = ()) -> str:
    root.mkdir(parents=True, exist_ok=True)
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text("x")
    return str(root)


GUARDS = [
    # (dirs, files, protected (relative), expected pins, expected sealed {dir: [paths]})
    ((".git/hooks",), (".git/config",), (".git/hooks", ".git/config"), [".git"], {}),
    ((), (), (".mcp.json",), [], {"": [".mcp.json"]}),
    ((".git",), (), (".git/hooks",), [], {"": [], ".git": [".git/hooks"]}),
    ((), (".git",), (".git/hooks",), [], {"": [".git/hooks"]}),  # a worktree's .git file
    ((".mcpwrap",), (), (".mcpwrap", ".mcpwrap/p.lock"), [], {}),  # inside a read-only one
    ((".vscode",), (), (".vscode",), [], {}),  # the grant's own child: it is a mount point
]


@pytest.mark.parametrize(("dirs", "files", "protected", "pins", "sealed"), GUARDS)
def test_guard_pins_parents_and_seals_where_a_protected_path_is_missing(
    var_tmp_path: Path,
    dirs: tuple[str, ...],
    files: tuple[str, ...],
    protected: tuple[str, ...],
    pins: list[str],
    sealed: dict[str, list[str]],
) -> None:
    root = _tree(var_tmp_path / "p", dirs, files)

    def at(rel: str) -> str:
        return f"{root}/{rel}" if rel else root

    guard = spec.guard_protected([root], [at(p) for p in protected], "p.toml")
    assert list(guard.pins) == [at(p) for p in pins]
    assert guard.sealed == {at(d): tuple(at(p) for p in ps) for d, ps in sealed.items()}


def test_a_symlinked_protected_path_counts_as_missing(var_tmp_path: Path) -> None:
    """A link can be removed and replaced by the real thing: seal its directory, and give
    no rule to links among the sealed directory's entries (a rule follows the link, and a
    link back to the directory would unseal it)."""
    root = _tree(var_tmp_path / "p", ("src",), ("README",))
    (var_tmp_path / "p" / ".vscode").symlink_to(var_tmp_path / "elsewhere")
    (var_tmp_path / "p" / "loop").symlink_to(var_tmp_path / "p")
    guard = spec.guard_protected([root], [f"{root}/.vscode"], "p.toml")
    assert guard.sealed == {root: (f"{root}/.vscode",)}
    assert sorted(guard.unsealed) == [f"{root}/README", f"{root}/src"]


def test_a_seal_under_the_jails_private_tmp_is_refused(tmp_path: Path) -> None:
    """/tmp inside the jail is writable, and Landlock passes its make rights to anything
    bound beneath it: a seal there would not hold, so the run fails closed."""
    assert str(tmp_path).startswith("/tmp/"), "pytest's tmp_path is expected under /tmp"
    root = _tree(tmp_path / "p")
    with pytest.raises(LaunchError, match=r"\.mcp\.json.*private /tmp.*Create those paths"):
        spec.guard_protected([root], [f"{root}/.mcp.json"], "p.toml")


def test_a_write_grant_inside_a_protected_path_is_refused(var_tmp_path: Path) -> None:
    root = _tree(var_tmp_path / "p", (".git/hooks",))
    with pytest.raises(LaunchError, match=r"p\.toml: \[sandbox\] write grant .*hooks is inside"):
        spec.guard_protected([f"{root}/.git/hooks"], [f"{root}/.git/hooks"], "p.toml")


def test_the_landlock_grants_drop_a_sealed_write_grant_for_its_entries(var_tmp_path: Path) -> None:
    root = _tree(var_tmp_path / "p", ("src",), ("README",))
    (var_tmp_path / "p.toml").write_text(f'version = 1\n[sandbox]\nwrite = ["{root}"]\n')
    guard = spec.guard_protected([root], [f"{root}/.mcp.json"], "p.toml")
    grants = spec._landlock_grants([[root, "rw"]], guard)
    assert root not in grants["write"] and grants["seal"] == [root]
    assert f"{root}/src" in grants["write"] and f"{root}/README" in grants["write"]
