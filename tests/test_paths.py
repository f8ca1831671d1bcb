"""Where mcpwrap keeps things: the Linux fast path must agree with platformdirs."""

from __future__ import annotations

import pytest
from platformdirs import user_config_dir, user_state_dir

from mcpwrap import paths


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
