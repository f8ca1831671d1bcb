"""Where mcpwrap keeps things: the Linux fast path must agree with platformdirs; where a
profile's lock goes, and where `run` looks for it."""

from __future__ import annotations

from pathlib import Path

import pytest
from platformdirs import user_config_dir, user_state_dir

from mcpwrap.config import paths


@pytest.mark.parametrize("value", [None, "", "   ", "relative/dir", "/abs/xdg", "/abs/with space/"])
def test_xdg_dirs_match_platformdirs(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    for variable in ("XDG_STATE_HOME", "XDG_CONFIG_HOME"):
        if value is None:
            monkeypatch.delenv(variable, raising=False)
        else:
            monkeypatch.setenv(variable, value)
    assert paths.state_dir() == user_state_dir("mcpwrap", appauthor=False)
    assert paths.config_dir() == user_config_dir("mcpwrap", appauthor=False)


def test_builtin_profiles_dir_exists() -> None:
    assert paths.builtin_profiles_dir().endswith("profiles")


def test_a_lock_is_named_after_the_profile_file_and_sits_beside_it(tmp_path: Path) -> None:
    """Not after the profile's `name` (a curated profile's can differ from its file's)."""
    profile = tmp_path / ".mcpwrap" / "fs.toml"
    assert paths.lock_path(str(profile)) == str(tmp_path / ".mcpwrap" / "fs.lock")
    assert paths.find_lock(str(profile), "/elsewhere") == str(tmp_path / ".mcpwrap" / "fs.lock")


def test_a_builtin_profiles_lock_goes_to_the_repository_it_serves_else_the_users(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "src" / "deep").mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    user = Path(paths.config_dir()) / "profiles" / "server-filesystem.lock"
    source = "<builtin:server-filesystem>"
    in_repo = repo / ".mcpwrap" / "server-filesystem.lock"
    assert paths.lock_path(source, str(repo / "src" / "deep")) == str(in_repo)
    assert paths.lock_path(source, str(outside)) == str(user)  # a project, not a repository
    assert paths.lock_path(source, None) == str(user)  # a profile that serves no project
    # run: the repository's lock first, then the user's; none: where lock would write it.
    assert paths.find_lock(source, str(repo)) == str(in_repo)
    user.parent.mkdir(parents=True)
    user.write_text("")
    assert paths.find_lock(source, str(repo)) == str(user)
    in_repo.parent.mkdir()
    in_repo.write_text("")
    assert paths.find_lock(source, str(repo / "src")) == str(in_repo)
    assert paths.find_lock(source, str(outside)) == str(user)
    assert paths.find_lock(source, None) == str(user)
