"""mcpwrap.supply.store: an install's directory follows from what the lock pins (the same on
every machine, another for any other pin), and the record of what a machine verified
is read back only for the lock file it was written for."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcpwrap.supply import store
from mcpwrap.supply.store import Install, Synced, Wheel

UV = Install(
    "uv",
    "mcp-server-time",
    "2026.10.19",
    "cpython 3.11",
    "linux-x86_64",
    "bin/mcp-server-time",
    (
        Wheel(
            "mcp-server-time", "2026.10.19", "mcp_server_time-2026.10.19-py3-none-any.whl", "a" * 64
        ),
    ),
)
NPM = Install("npm", "@scope/srv", "1.0.0", "node 20", "", "node_modules/@scope/srv/x.js", (), "{}")


def test_an_install_directory_is_named_by_what_it_holds(tmp_path: Path) -> None:
    assert store.install_dir("/s", UV) == f"/s/uv/mcp-server-time-2026.10.19-{store.key(UV)}"
    assert store.install_dir("/s", NPM) == f"/s/npm/scope+srv@1.0.0-{store.key(NPM)}"
    assert store.key(UV) == store.key(UV._replace()) and len(store.key(UV)) == 16


@pytest.mark.parametrize(
    "other",
    [
        UV._replace(runtime="cpython 3.12"),
        UV._replace(platform="linux-aarch64"),
        UV._replace(wheels=(UV.wheels[0]._replace(sha256="b" * 64),)),
        UV._replace(entry="bin/other"),
    ],
)
def test_any_other_pin_is_another_directory(other: Install) -> None:
    assert store.install_dir("/s", other) != store.install_dir("/s", UV)


def test_the_program_an_install_runs() -> None:
    assert store.program(UV, "/d", "/usr/bin/node") == ("/d/bin/python", "/d/bin/mcp-server-time")
    assert store.program(NPM, "/d", "/usr/bin/node") == (
        "/usr/bin/node",
        "/d/node_modules/@scope/srv/x.js",
    )


def _record(lock: Path) -> Synced:
    return Synced(
        str(lock.resolve()), "c" * 64, "/s/uv/x", ("/s/uv/x/bin/python",), 2, {"files": []}
    )


def test_a_synced_record_round_trips_for_its_own_lock_only(tmp_path: Path) -> None:
    lock = tmp_path / "p" / "fs.lock"
    lock.parent.mkdir()
    lock.write_text("")
    root = str(tmp_path / "store")
    assert store.load_synced(root, str(lock)) is None
    written = store.save_synced(root, _record(lock))
    assert written.startswith(root + "/synced/")
    assert store.load_synced(root, str(lock)) == _record(lock)
    # Reached through a symlink: the same file, the same record.
    (tmp_path / "link").symlink_to(tmp_path / "p")
    assert store.load_synced(root, str(tmp_path / "link" / "fs.lock")) == _record(lock)
    assert store.load_synced(root, str(tmp_path / "p" / "other.lock")) is None


@pytest.mark.parametrize("text", ["", "{", "[]", '{"lock": 1}'])
def test_a_broken_record_is_no_record(tmp_path: Path, text: str) -> None:
    lock = tmp_path / "fs.lock"
    root = str(tmp_path / "store")
    path = Path(store.synced_path(root, str(lock)))
    path.parent.mkdir(parents=True)
    path.write_text(text)
    assert store.load_synced(root, str(lock)) is None
