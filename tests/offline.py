"""The packages `mcpwrap lock` installs in the tests, and an environment in which uv and
npm install them with no network: from the caches scripts/test fills (.cache/uv,
.cache/npm) with the versions pinned in tests/fetch_peers.json."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache"
PEERS = json.loads((REPO / "tests" / "fetch_peers.json").read_text())
TIME, TIME_VERSION = next(iter(PEERS["pypi"].items()))
FILESYSTEM, FILESYSTEM_VERSION = next(iter(PEERS["npm"].items()))


def offline_env() -> dict[str, str]:
    """os.environ with the registries out of reach: npm and uv read their caches only (and
    uv may not download a Python)."""
    for cache in ("npm", "uv"):
        if not (CACHE / cache).is_dir():
            pytest.fail(
                f"{CACHE / cache} is missing: run scripts/test once (it fills the offline "
                "caches these tests install from)",
                pytrace=False,
            )
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the tests need Node.js >= 20", pytrace=False)
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(dict.fromkeys([venv_bin, os.path.dirname(node), "/usr/bin", "/bin"]))
    return {
        **os.environ,
        "PATH": path,
        "UV_CACHE_DIR": str(CACHE / "uv"),
        "UV_OFFLINE": "1",
        "UV_PYTHON_DOWNLOADS": "never",
        # The interpreter scripts/test warmed the cache with: the same resolution offline.
        "UV_PYTHON": sys.executable,
        "UV_NO_PROGRESS": "1",
        "npm_config_cache": str(CACHE / "npm"),
        "npm_config_offline": "true",
        "npm_config_update_notifier": "false",
    }
