"""A teammate on another machine: another Unix user with a home, caches and an mcpwrap
store of its own, who runs this checkout's mcpwrap with the system's python3.

As root (CI) the teammate is the user mcpwrap-peer (made if missing), reached through
runuser. As an ordinary user no second account can be made: the teammate is then this
user with another home and empty caches, which is what "another machine" changes for
mcpwrap (its config, state and store all live in the home); the fixture says which.

The teammate's python3 reads mcpwrap and the test venv's packages from PYTHONPATH: in
place where every user may read them, else from a copy under /var/tmp that every user
may read (a checkout under /root is out of another user's reach).
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from offline import CACHE
from wrapped import REPO

PEER = "mcpwrap-peer"


class Peer(NamedTuple):
    """The teammate: how to run a command as it, and where its things are."""

    home: Path  # the test's directory in its home: removed afterwards
    env: dict[str, str]
    other_user: bool  # False: this user, with another home (not root: no second account)

    def argv(self, *words: str) -> list[str]:
        pairs = [f"{k}={v}" for k, v in sorted(self.env.items())]
        who = ["runuser", "-u", PEER, "--"] if self.other_user else []
        return [*who, "env", "-i", *pairs, *words]

    def mcpwrap(self) -> list[str]:
        return self.argv("/usr/bin/python3", "-m", "mcpwrap")

    def run(self, *words: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*words),
            cwd=cwd or self.home,
            capture_output=True,
            text=True,
            timeout=300,
        )


def _readable_by_all(path: Path) -> bool:
    for part in [path, *path.parents]:
        mode = part.stat().st_mode
        if not mode & stat.S_IXOTH or (part == path and not mode & stat.S_IROTH):
            return False
    return True


@pytest.fixture(scope="session")
def peer_runtime() -> Iterator[tuple[str, Path]]:
    """(PYTHONPATH, the directory holding uv) that every user can read."""
    site = Path(sysconfig.get_paths()["purelib"])
    uv_dir = Path(sys.executable).parent
    if all(_readable_by_all(p) for p in (REPO / "mcpwrap", site, uv_dir / "uv")):
        yield f"{REPO}:{site}", uv_dir
        return
    copy = Path(tempfile.mkdtemp(prefix="mcpwrap-peer-runtime-", dir="/var/tmp"))
    try:
        for name in ("mcpwrap", "profiles"):
            shutil.copytree(REPO / name, copy / "src" / name, symlinks=True)
        shutil.copytree(site, copy / "site", symlinks=True)
        (copy / "bin").mkdir()
        for tool in ("uv", "uvx"):
            shutil.copy2(uv_dir / tool, copy / "bin" / tool)
        subprocess.run(["chmod", "-R", "a+rX", str(copy)], check=True)
        yield f"{copy / 'src'}:{copy / 'site'}", copy / "bin"
    finally:
        shutil.rmtree(copy, ignore_errors=True)


@pytest.fixture
def peer(var_tmp_path: Path, peer_runtime: tuple[str, Path]) -> Iterator[Peer]:
    if os.geteuid() == 0:
        if subprocess.run(["id", PEER], capture_output=True, check=False).returncode != 0:
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", PEER], check=True)
        account = pwd.getpwnam(PEER)
        home = Path(account.pw_dir) / f"t-{var_tmp_path.name}"
        home.mkdir()
        owner = (account.pw_uid, account.pw_gid, account.pw_dir, True)
    else:
        home = var_tmp_path / "teammate"
        home.mkdir()
        owner = (os.getuid(), os.getgid(), str(home), False)
    try:
        yield _setup(home, owner, peer_runtime)
    finally:
        shutil.rmtree(home)


def _setup(home: Path, owner: tuple[int, int, str, bool], runtime: tuple[str, Path]) -> Peer:
    """The teammate's own caches (uv and npm write to theirs), its own XDG directories,
    uv by a link, and this checkout's mcpwrap for its /usr/bin/python3."""
    uid, gid, account_home, other_user = owner
    for name in ("uv", "npm"):
        shutil.copytree(CACHE / name, home / "cache" / name, symlinks=True)
    bin_dir = home / "bin"
    bin_dir.mkdir()
    pythonpath, uv_dir = runtime
    for tool in ("uv", "uvx"):
        (bin_dir / tool).symlink_to(uv_dir / tool)
    subprocess.run(["chown", "-hR", f"{uid}:{gid}", str(home)], check=True)
    env = {
        "HOME": account_home,
        "USER": PEER if other_user else pwd.getpwuid(uid).pw_name,
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": pythonpath,
        "XDG_CACHE_HOME": str(home / "xdg" / "cache"),
        "XDG_STATE_HOME": str(home / "xdg" / "state"),
        "XDG_CONFIG_HOME": str(home / "xdg" / "config"),
        "UV_CACHE_DIR": str(home / "cache" / "uv"),
        "UV_OFFLINE": "1",
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_NO_PROGRESS": "1",
        "npm_config_cache": str(home / "cache" / "npm"),
        "npm_config_offline": "true",
        "npm_config_update_notifier": "false",
    }
    return Peer(home, env, other_user)
