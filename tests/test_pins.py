"""mcpwrap.supply.pins: canonical hashes, drift, and a lock file that round-trips, names no path
of the machine that wrote it, and refuses to load when edited by hand or written by an
older mcpwrap."""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from mcpwrap.basics.errors import LockError
from mcpwrap.supply import pins
from mcpwrap.supply.artifacts import Artifacts, FileArtifact, Package, Tree
from mcpwrap.supply.pins import Drift
from mcpwrap.supply.store import Install, Wheel

TOOL = {"name": "echo", "description": "Echo.", "inputSchema": {"type": "object", "a": None}}
NPM_LOCKFILE = '{\n "packages": {"node_modules/pkg": {"version": "1.2.3"}}\n}\n'
NPM = Install("npm", "pkg", "1.2.3", "node 20", "", "node_modules/pkg/bin.js", (), NPM_LOCKFILE)
UV = Install(
    "uv",
    "srv",
    "1.0",
    "cpython 3.11",
    "linux-x86_64",
    "bin/srv",
    (Wheel("srv", "1.0", "srv-1.0-py3-none-any.whl", "cd" * 32),),
)
PACKAGES = (Package("pkg", "1.2.3", "sha256:" + "1" * 64, "sha512-x"),)
ARTIFACTS = Artifacts(
    (FileArtifact("script", "{install}/node_modules/pkg/bin.js", "ab" * 32),),
    (Tree("node_modules", "{install}/node_modules", "sha256:" + "2" * 64, PACKAGES),),
)


def _lock(
    path: Path, tools: list[dict[str, Any]] | None = None, install: Install | None = NPM
) -> pins.Lock:
    return pins.build(
        path=str(path),
        command=["npx", "-y", "pkg", "{project}/docs"],
        launcher="npx",
        package="pkg",
        version="1.2.3",
        profile_digest="sha256:" + "0" * 64,
        install=install,
        artifacts=ARTIFACTS,
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


@pytest.mark.parametrize("install", [NPM, UV, None], ids=["npm", "uv", "as-given"])
def test_lock_round_trips(tmp_path: Path, install: Install | None) -> None:
    lock = _lock(tmp_path / "x.lock", install=install)
    saved = pins.save(lock)
    loaded = pins.load(str(tmp_path / "x.lock"))
    assert loaded == saved == lock._replace(sha256=saved.sha256)
    text = (tmp_path / "x.lock").read_text()
    assert saved.sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert text.startswith("# mcpwrap lock")
    assert "\x1b" not in text  # control characters are escaped in the TOML
    assert str(tmp_path) not in text and "/usr" not in text  # no path of this machine


def test_npm_lock_file_is_kept_as_a_literal_string(tmp_path: Path) -> None:
    """Readable JSON (no backslash before each quote) that tomllib reads at once; a
    text that a literal string cannot hold falls back to an escaped one."""
    pins.save(_lock(tmp_path / "x.lock"))
    text = (tmp_path / "x.lock").read_text()
    assert f"lockfile = '''\n{NPM_LOCKFILE}'''\n" in text
    odd = NPM._replace(lockfile='{"a": "\'\'\'"}\n')
    pins.save(_lock(tmp_path / "y.lock", install=odd))
    loaded = pins.load(str(tmp_path / "y.lock"))
    assert loaded is not None and loaded.install == odd


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
    assert "surprise: unknown key" in _edited(tmp_path, "version = 2", "version = 2\nsurprise = 2")
    assert "server.version" in _edited(tmp_path, 'version = "1.2.3"', "version = 3")
    assert "version: this mcpwrap reads" in _edited(tmp_path, "version = 2\n", "version = 9\n")
    assert "install.kind: expected uv or npm" in _edited(tmp_path, 'kind = "npm"', 'kind = "pip"')
    assert "install.entry: expected a path inside" in _edited(
        tmp_path, 'entry = "node_modules/pkg/bin.js"', 'entry = "../../evil.js"'
    )


def test_a_machine_path_in_the_artifacts_does_not_load(tmp_path: Path) -> None:
    message = _edited(tmp_path, 'path = "{install}/node_modules/pkg/bin.js"', 'path = "/opt/x.js"')
    assert "artifacts.files[0].path: expected a path under {project} or {install}" in message


V1 = """version = 1
profile_digest = "sha256:0"
[server]
command = ["npx", "-y", "@modelcontextprotocol/server-filesystem", "."]
run = ["/usr/bin/node", "/root/.cache/mcpwrap/store/npm/x/index.js", "."]
launcher = "npx"
package = "@modelcontextprotocol/server-filesystem"
version = "2026.8.31"
[artifacts]
files = []
trees = []
"""


def test_a_version_1_lock_names_itself_and_the_command_that_writes_it_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / ".mcpwrap" / "fs.lock"
    path.parent.mkdir()
    path.write_text(V1)
    with pytest.raises(pins.OldLockError) as caught:
        pins.load(str(path))
    message = str(caught.value)
    assert message.startswith(f"{path} is a version 1 lock: it holds this machine's paths")
    assert (
        "`mcpwrap lock --profile fs -- npx -y @modelcontextprotocol/server-filesystem .`" in message
    )
    assert "commit the new fs.lock" in message
    with pytest.raises(pins.OldLockError, match=re.escape("--profile ./p.toml -- npx")):
        pins.load(str(path), "./p.toml")


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
