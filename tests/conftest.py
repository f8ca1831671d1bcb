"""Shared fixtures: the repo, the real MCP peers, and an isolated home for state.

The peers are installed by `scripts/test` (npm ci --prefix tests/node, pip install -e
'.[test]'). A missing peer is a FAILURE that says so, never a skip: a suite that skips
its real peers proves nothing.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from peer import peer, peer_runtime  # noqa: F401 (the teammate's fixtures, for every module)

REPO_ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = REPO_ROOT / "tests" / "node"
NODE_MODULES = NODE_DIR / "node_modules"

_SETUP_HINT = "run scripts/test once (it installs the test peers), or: npm ci --prefix tests/node"


def _fail(msg: str) -> NoReturn:
    pytest.fail(f"{msg}: {_SETUP_HINT}", pytrace=False)


def _package_bin(package: str, command: str) -> Path:
    """The JS file behind `command` in node_modules/<package>, read from its package.json."""
    pkg_dir = NODE_MODULES / package
    manifest = pkg_dir / "package.json"
    if not manifest.is_file():
        _fail(f"{package} is not installed in {NODE_MODULES}")
    bins = json.loads(manifest.read_text(encoding="utf-8")).get("bin", {})
    rel = bins.get(command) if isinstance(bins, dict) else bins
    if not rel:
        _fail(f"{package} has no `{command}` bin")
    script = (pkg_dir / str(rel)).resolve()
    if not script.is_file():
        _fail(f"{script} is missing")
    return script


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def node_exe() -> str:
    """Absolute path of `node` (so commands still start under a scrubbed PATH)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the tests need Node.js >= 20", pytrace=False)
    return node


@pytest.fixture(scope="session")
def node_bin() -> Path:
    """tests/node/node_modules/.bin (fails, never skips, when the peers are missing)."""
    bin_dir = NODE_MODULES / ".bin"
    for name in ("mcp-server-everything", "mcp-inspector"):
        if not (bin_dir / name).exists():
            _fail(f"{bin_dir / name} is missing")
    return bin_dir


@pytest.fixture(scope="session")
def everything_cmd(node_bin: Path, node_exe: str) -> list[str]:
    """argv that starts @modelcontextprotocol/server-everything over stdio.

    Same as `tests/node/node_modules/.bin/mcp-server-everything stdio`, with node named
    by absolute path so that a scrubbed environment cannot break the `env node` shebang.
    """
    script = _package_bin("@modelcontextprotocol/server-everything", "mcp-server-everything")
    return [node_exe, str(script), "stdio"]


@pytest.fixture(scope="session")
def inspector_cli(node_bin: Path, node_exe: str) -> list[str]:
    """argv prefix of the inspector CLI: append the server argv, then `--method ...`.

    e.g. inspector_cli + everything_cmd + ["--method", "tools/list"]. Its output is the
    result as JSON on stdout. (It runs `node` from PATH for its inner CLI.)
    """
    script = _package_bin("@modelcontextprotocol/inspector", "mcp-inspector")
    return [node_exe, str(script), "--cli"]


@pytest.fixture(scope="session")
def time_server_cmd() -> list[str]:
    """argv for mcp-server-time (PyPI) from the venv running the tests, pinned to UTC."""
    if importlib.util.find_spec("mcp_server_time") is None:
        _fail(f"mcp_server_time is not importable from {sys.executable}")
    return [sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC"]


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """An empty directory for a test's mcpwrap state (audit logs, pins, ...)."""
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture(autouse=True)
def _isolated_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Point the XDG base dirs at per-test tmp dirs: no test writes in the real home."""
    base = tmp_path / "xdg"
    for var, sub in (
        ("XDG_STATE_HOME", "state"),
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_CACHE_HOME", "cache"),
        ("XDG_DATA_HOME", "data"),
    ):
        path = base / sub
        path.mkdir(parents=True)
        monkeypatch.setenv(var, str(path))
    yield


@pytest.fixture(scope="session")
def bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One real Secret Service for the whole run (gnome-keyring on a private D-Bus
    session bus, tests/secret_service.py): the variables that reach it."""
    from secret_service import secret_service

    with secret_service(tmp_path_factory.mktemp("keyring")) as env:
        yield env


@pytest.fixture
def keyring_env(bus: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The test Secret Service for in-process keyring calls too (tokens issued, secrets
    read by the test itself); the bus's variables, for the subprocesses."""
    import keyring.core

    for name, value in bus.items():
        monkeypatch.setenv(name, value)
    keyring.core.init_backend()  # chosen again, now that the bus is reachable
    yield bus
    keyring.core.init_backend()


@pytest.fixture
def anyio_backend() -> str:
    """`@pytest.mark.anyio` tests run on asyncio only."""
    return "asyncio"


@pytest.fixture
def var_tmp_path() -> Iterator[Path]:
    """A fresh directory outside /tmp, removed afterwards. The jail's private /tmp passes
    its Landlock rights down to whatever is bound beneath it, so a directory the jail must
    seal cannot live there (pytest's tmp_path does)."""
    base = Path(tempfile.mkdtemp(prefix="mcpwrap-test-", dir="/var/tmp"))
    try:
        yield base
    finally:
        shutil.rmtree(base)
