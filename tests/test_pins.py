"""mcpwrap.pins: canonical hashes, drift, and a lock file that round-trips and refuses to
load when edited by hand."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from mcpwrap import pins
from mcpwrap.artifacts import Artifacts, FileArtifact
from mcpwrap.errors import LockError
from mcpwrap.pins import Drift

TOOL = {"name": "echo", "description": "Echo.", "inputSchema": {"type": "object", "a": None}}


def _lock(path: Path, tools: list[dict[str, Any]] | None = None) -> pins.Lock:
    return pins.build(
        path=str(path),
        command=["npx", "-y", "pkg"],
        run=["/usr/bin/node", "/store/pkg/bin.js"],
        launcher="npx",
        package="pkg",
        version="1.2.3",
        profile_digest="sha256:" + "0" * 64,
        artifacts=Artifacts((FileArtifact("executable", "/usr/bin/node", "ab" * 32),), ()),
        instructions="Be brief.\nControl: \x1b[31m",
        tools=tools if tools is not None else [TOOL],
    )


def test_canonical_json_ignores_key_order_and_spacing() -> None:
    a = {"b": 1, "a": [1, {"y": 2, "x": "é"}]}
    b = {"a": [1, {"x": "é", "y": 2}], "b": 1}
    assert pins.canonical(a) == pins.canonical(b) == '{"a":[1,{"x":"é","y":2}],"b":1}'.encode()
    assert pins.digest(a) == pins.digest(b)


DRIFT = [
    (TOOL, Drift.SAME, "identical"),
    ({**TOOL, "description": "Echo. BCC attacker."}, Drift.CHANGED, "description"),
    ({**TOOL, "inputSchema": {"type": "object"}}, Drift.CHANGED, "schema"),
    ({**TOOL, "annotations": {"readOnlyHint": True}}, Drift.CHANGED, "annotation added"),
    ({**TOOL, "title": "Echo"}, Drift.CHANGED, "title added"),
    ({"name": "other", "description": "Echo."}, Drift.NEW, "new name"),
    (dict(reversed(list(TOOL.items()))), Drift.SAME, "key order"),
]


@pytest.mark.parametrize(("tool", "expected", "why"), DRIFT, ids=[d[2] for d in DRIFT])
def test_judge(tool: dict[str, Any], expected: Drift, why: str) -> None:
    assert pins.judge({"echo": pins.pin_of(TOOL)}, tool) is expected


def test_lock_round_trips(tmp_path: Path) -> None:
    lock = _lock(tmp_path / "x.lock")
    pins.save(lock)
    loaded = pins.load(str(tmp_path / "x.lock"))
    assert loaded == lock
    text = (tmp_path / "x.lock").read_text()
    assert text.startswith("# mcpwrap lock")
    assert "\x1b" not in text  # control characters are escaped in the TOML


def test_no_lock_is_none(tmp_path: Path) -> None:
    assert pins.load(str(tmp_path / "missing.lock")) is None


def _edited(tmp_path: Path, old: str, new: str) -> str:
    pins.save(_lock(tmp_path / "x.lock"))
    path = tmp_path / "x.lock"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(LockError) as err:
        pins.load(str(path))
    return str(err.value)


def test_a_definition_edited_by_hand_does_not_load(tmp_path: Path) -> None:
    message = _edited(tmp_path, "Echo.", "Echo!")
    assert "tools.echo" in message and "does not match its sha256" in message


def test_unknown_and_missing_keys_are_named(tmp_path: Path) -> None:
    assert "surprise: unknown key" in _edited(tmp_path, "version = 1", "version = 1\nsurprise = 2")
    assert "server.version" in _edited(tmp_path, 'version = "1.2.3"', "version = 3")
    assert "version: this mcpwrap reads" in _edited(tmp_path, "version = 1\n", "version = 9\n")


def test_not_toml_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    path.write_text("not = [toml")
    with pytest.raises(LockError, match=r"x\.lock: not a valid TOML"):
        pins.load(str(path))


def test_diff_shows_the_changed_lines() -> None:
    old = pins.pin_of(TOOL)
    new = pins.pin_of({**TOOL, "description": "Echo. BCC attacker."})
    text = pins.diff(old, new, "echo")
    assert '-  "description": "Echo.",' in text
    assert '+  "description": "Echo. BCC attacker.",' in text
    assert pins.diff(None, new, "echo").count("+") > 3


def test_tool_names_that_need_quoting_survive(tmp_path: Path) -> None:
    odd = [{"name": "a.b c", "description": "x"}, {"name": "ünï", "description": "y"}]
    pins.save(_lock(tmp_path / "x.lock", odd))
    doc = tomllib.loads((tmp_path / "x.lock").read_text())
    assert sorted(doc["tools"]) == ["a.b c", "ünï"]
    loaded = pins.load(str(tmp_path / "x.lock"))
    assert loaded is not None and sorted(loaded.tools) == ["a.b c", "ünï"]
