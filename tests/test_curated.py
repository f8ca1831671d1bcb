"""The curated profiles in profiles/, each against its real server: found by name among
the built-in profiles, the tools it allows work, the rest are hidden and refused."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from wrapped import MCPWRAP, REPO, Wrapped

PROFILES = sorted((REPO / "profiles").glob("*.toml"))


@pytest.mark.parametrize("path", PROFILES, ids=[p.stem for p in PROFILES])
def test_every_curated_profile_has_no_error_finding(path: Path, var_tmp_path: Path) -> None:
    """Checked by name, as a user would from a project ({project} of a built-in profile
    is the current directory). Not under /tmp, where a write grant on the project root
    is an error: the seal cannot hold there."""
    out = subprocess.run(
        [*MCPWRAP, "check", "--format", "json", path.stem],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=var_tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)["profiles"][0]
    assert report["level"]["value"] >= 3  # isolated, and least privilege


@pytest.mark.parametrize("path", [*PROFILES, REPO / "mcpwrap" / "commands" / "demo" / "demo.toml"])
def test_every_bundled_profile_goes_by_the_name_profile_takes(path: Path, tmp_path: Path) -> None:
    """The audit log's `server` is the profile's name: the one a person types."""
    from mcpwrap.config.profile import load_profile

    loaded = load_profile(path, state_dir=str(tmp_path), builtin_dir=str(path.parent))
    assert loaded.name == path.stem


def _text(reply: dict[str, Any]) -> str:
    return str(reply["result"]["content"][0].get("text", ""))


def test_server_everything_profile_against_the_real_server(
    tmp_path: Path, everything_cmd: list[str]
) -> None:
    with Wrapped(Path("server-everything"), everything_cmd, cwd=tmp_path) as w:
        w.initialize()
        listed = sorted(t["name"] for t in w.recv_id(w.request("tools/list"))["result"]["tools"])
        assert listed == [
            "echo",
            "get-annotated-message",
            "get-resource-links",
            "get-resource-reference",
            "get-structured-content",
            "get-sum",
            "get-tiny-image",
            "trigger-long-running-operation",
        ]
        assert "hi" in _text(w.call("echo", {"message": "hi"}))
        assert "3" in _text(w.call("get-sum", {"a": 1, "b": 2}))
        assert "tools.get-sum.args.a" in _text(w.call("get-sum", {"a": 1e13, "b": 2}))
        fetch = w.call("gzip-file-as-resource", {"data": "https://example.com/"})
        assert "Unknown tool" in fetch["error"]["message"]  # hidden and refused
        assert "Unknown tool" in w.call("get-env")["error"]["message"]
