"""mcpwrap.supply.fetch: `npx PKG` / `uvx PKG` resolved and installed once, then run offline;
and installed again, on another machine, from what a lock pins (`fetch.install`).

Real npm and uv, and no network: they install from the project-local caches that
scripts/test fills (.cache/npm, .cache/uv) with the packages pinned in
tests/fetch_peers.json. The installed servers then run under `mcpwrap run` in a jail with
no network at all, and answer a real MCP client: nothing is fetched at run time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from offline import FILESYSTEM, FILESYSTEM_VERSION, TIME, TIME_VERSION, offline_env
from wrapped import MCPWRAP

from mcpwrap.basics.errors import LockError
from mcpwrap.config import discovery
from mcpwrap.supply import artifacts, fetch, portable
from mcpwrap.supply.store import root as store_root

EXACT = re.compile(r"^\d+(\.\d+)+$")


@pytest.fixture(scope="session")
def lock_env() -> dict[str, str]:
    """The environment `mcpwrap lock` would get, with the registries out of reach."""
    return offline_env()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with a short path: uv writes a console script's #! line with the venv's
    python only when that path is short enough (else an sh trampoline)."""
    return tmp_path_factory.mktemp("store")


def resolve(argv: list[str], store: Path, env: Mapping[str, str]) -> fetch.Resolved:
    return fetch.resolve(argv, store=str(store), env=env)


def store_entries(store: Path, kind: str) -> list[str]:
    directory = store / kind
    return sorted(os.listdir(directory)) if directory.is_dir() else []


def text(result: types.CallToolResult) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


async def call_in_jail(
    tmp_path: Path, server: tuple[str, ...], read: list[Path], tool: str, args: dict[str, str]
) -> tuple[list[str], types.CallToolResult]:
    """Start `server` under `mcpwrap run` (jail, network = "none"), list its tools and
    call one."""
    grants = ", ".join(json.dumps(str(p)) for p in read)
    profile = tmp_path / "locked.toml"
    profile.write_text(
        "version = 1\n"
        'name = "locked"\n'
        "[policy]\n"
        'default = "allow"\n'
        "[sandbox]\n"
        'network = "none"\n'
        f"read = [{grants}]\n"
        "[audit]\n"
        f"path = {json.dumps(str(tmp_path / 'audit.jsonl'))}\n"
    )
    argv = [*MCPWRAP, "run", "--profile", str(profile), "--", *server]
    params = StdioServerParameters(
        command=argv[0],
        args=argv[1:],
        cwd=str(tmp_path),
        env={
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "XDG_STATE_HOME": os.environ["XDG_STATE_HOME"],
            "XDG_CONFIG_HOME": os.environ["XDG_CONFIG_HOME"],
            "XDG_CACHE_HOME": os.environ["XDG_CACHE_HOME"],
        },
    )
    async with (
        stdio_client(params) as (read_stream, write_stream),
        ClientSession(read_stream, write_stream) as session,
    ):
        await session.initialize()
        names = sorted(t.name for t in (await session.list_tools()).tools)
        return names, await session.call_tool(tool, args)


# --- uvx ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["uvx", TIME],
        ["uvx", f"{TIME}=={TIME_VERSION}"],
        ["uvx", f"{TIME}@{TIME_VERSION}"],
        ["uvx", "--from", TIME, TIME],
        ["uvx", "-q", "--from", f"{TIME}=={TIME_VERSION}", TIME],
        ["uvx", "--python", sys.executable, TIME],
        ["uv", "tool", "run", f"--from={TIME}", TIME],
    ],
    ids=["bare", "eq", "at", "from", "from-pinned", "python", "uv-tool-run"],
)
def test_uvx_installs_the_exact_version_in_the_store(
    argv: list[str], store: Path, lock_env: dict[str, str]
) -> None:
    r = resolve([*argv, "--local-timezone", "UTC"], store, lock_env)
    assert (r.launcher, r.package) == ("uvx", TIME)
    assert EXACT.match(r.version), r.version
    if any(TIME_VERSION in a for a in argv):
        assert r.version == TIME_VERSION
    python, exe, *args = r.run
    assert args == ["--local-timezone", "UTC"] and r.run[: r.skip] != argv
    assert (r.prefix, r.skip) == ((python, exe), len(argv))
    venv = Path(exe).parent.parent
    assert venv.parent == store / "uv" and venv.name.startswith(f"{TIME}-{r.version}-")
    assert venv == Path(r.directory) and python == f"{venv}/bin/python"
    assert Path(exe).name == TIME and os.access(exe, os.X_OK)
    # Relocatable: no file of the venv names its directory (another machine's differs).
    assert str(venv) not in Path(exe).read_text()
    metadata = next(venv.glob("lib/python*/site-packages/mcp_server_time-*.dist-info/METADATA"))
    assert f"\nVersion: {r.version}\n" in metadata.read_text()
    # Copies, not uv's hard links into its cache: a change to one would be a change to
    # the other (the store's files verified against a changed cache, or the reverse).
    server_py = next(venv.glob("lib/python*/site-packages/mcp_server_time/server.py"))
    assert server_py.stat().st_nlink == 1
    # What a lock pins: every distribution, by the wheel file it came from.
    assert r.install is not None and r.install.kind == "uv"
    assert r.install.runtime == "cpython {}.{}".format(*sys.version_info[:2])
    assert r.install.entry == f"bin/{TIME}"
    assert (TIME, r.version) in {(w.name, w.version) for w in r.install.wheels}
    assert all(w.file.endswith(".whl") and len(w.sha256) == 64 for w in r.install.wheels)


def test_uvx_with_installs_the_extra_requirements_beside_the_package(
    store: Path, lock_env: dict[str, str]
) -> None:
    """`uvx --with 'mcp<2' SERVER`: a server written for the 1.x SDK. Offline, from the
    wheels scripts/test put in .cache/uv when it built .cache/peers (tests/py_peers.json)."""
    r = resolve(["uvx", "--with", "mcp<2", "mcp-postgres-server==0.1.2"], store, lock_env)
    assert (r.launcher, r.package, r.version) == ("uvx", "mcp-postgres-server", "0.1.2")
    venv = Path(r.run[0]).parent.parent
    (sdk,) = venv.glob("lib/python*/site-packages/mcp-*.dist-info")
    assert sdk.name.startswith("mcp-1."), sdk.name
    with pytest.raises(
        LockError, match=re.escape("uv pip compile --no-build mcp-server-time mcp<0.0.1")
    ):
        resolve(["uvx", "-w", "mcp<0.0.1", TIME], store, lock_env)


@pytest.mark.anyio
async def test_uvx_server_runs_offline_in_the_jail(
    tmp_path: Path, store: Path, lock_env: dict[str, str]
) -> None:
    r = resolve(["uvx", f"{TIME}@{TIME_VERSION}", "--local-timezone", "UTC"], store, lock_env)
    names, now = await call_in_jail(tmp_path, r.run, [], "get_current_time", {"timezone": "UTC"})
    assert names == ["convert_time", "get_current_time"]
    assert not now.is_error, text(now)
    assert now.structured_content is not None and now.structured_content["timezone"] == "UTC"


def test_uvx_command_the_package_does_not_provide(store: Path, lock_env: dict[str, str]) -> None:
    before = store_entries(store, "uv")
    with pytest.raises(LockError) as caught:
        resolve(["uvx", "--from", TIME, "no-such-command"], store, lock_env)
    message = str(caught.value)
    assert "no command 'no-such-command'" in message
    assert f"its commands: {TIME})" in message
    assert f"uvx --from {TIME} COMMAND" in message
    assert store_entries(store, "uv") == before, "the failed install is removed"


def test_uvx_package_not_in_the_offline_cache(store: Path, lock_env: dict[str, str]) -> None:
    before = store_entries(store, "uv")
    with pytest.raises(LockError) as caught:
        resolve(["uvx", "mcpwrap-no-such-package-xyz"], store, lock_env)
    message = str(caught.value)
    assert message.startswith("uv pip compile --no-build mcpwrap-no-such-package-xyz")
    assert "network was disabled" in message, "uv's own explanation is carried"
    assert "check the package name and version" in message
    assert store_entries(store, "uv") == before


# --- npx ----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_npx_server_installs_then_runs_offline_in_the_jail(
    tmp_path: Path, lock_env: dict[str, str]
) -> None:
    store = tmp_path / "store"
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello.txt").write_text("hi")
    r = resolve(["npx", "-y", FILESYSTEM, str(shared)], store, lock_env)
    assert (r.launcher, r.package) == ("npx", FILESYSTEM)
    assert EXACT.match(r.version), r.version
    node, script, *args = r.run
    assert node == shutil.which("node", path=lock_env["PATH"]) and os.path.isabs(node)
    manifest_dir = Path(script).parent.parent
    manifest = json.loads((manifest_dir / "package.json").read_text())
    assert manifest["name"] == FILESYSTEM and manifest["version"] == r.version
    assert Path(script) == (manifest_dir / manifest["bin"]["mcp-server-filesystem"]).resolve()
    assert args == [str(shared)]
    (installed,) = store_entries(store, "npm")
    assert installed.startswith(f"modelcontextprotocol+server-filesystem@{r.version}-")
    assert script.startswith(f"{store}/npm/{installed}/node_modules/{FILESYSTEM}/")

    names, listed = await call_in_jail(
        tmp_path, r.run, [shared], "list_directory", {"path": str(shared)}
    )
    assert {"list_directory", "read_text_file"} <= set(names)
    assert not listed.is_error, text(listed)
    assert "[FILE] hello.txt" in text(listed)


@pytest.mark.parametrize(
    "argv",
    [
        ["npx", "--yes", "--", f"{FILESYSTEM}@{FILESYSTEM_VERSION}"],
        ["npx", "-p", f"{FILESYSTEM}@{FILESYSTEM_VERSION}", "mcp-server-filesystem"],
    ],
    ids=["pinned", "package-option"],
)
def test_npx_exact_version(argv: list[str], tmp_path: Path, lock_env: dict[str, str]) -> None:
    r = resolve([*argv, "/srv"], tmp_path / "store", lock_env)
    assert (r.launcher, r.package, r.version) == ("npx", FILESYSTEM, FILESYSTEM_VERSION)
    assert r.run[1].endswith(f"/node_modules/{FILESYSTEM}/dist/index.js") and r.run[2:] == ("/srv",)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["npx", "--registry=https://example.org", "x"],
            "npx option --registry=https://example.org is not understood by mcpwrap lock; write the command as `npx -y PACKAGE ARGS...`",
        ),
        (["npx", "-c", "echo hi"], "npx option -c is not understood"),
        (["npx", "-y"], "npx names no package"),
        (["npx", "-p"], "npx option -p needs a value"),
        (["npx", "-p", "a", "-p", "b", "a"], "npx with several packages (a, b) cannot be locked"),
        (["/usr/bin/npx", "-p", "a"], "npx -p a names no command to run"),
        (
            ["uvx", "--with-editable", "./x", TIME],
            "uvx option --with-editable is not understood by mcpwrap lock; write the command as `uvx [--from SPEC] [--with REQ]... [--python P] PACKAGE ARGS...`",
        ),
        (["uvx", "--with"], "uvx option --with needs a value"),
        (["uvx", "--from"], "uvx option --from needs a value"),
        (["uvx", "-q"], "uvx names no package"),
        (["uvx", "./local-dir"], "uvx ./local-dir: not a package name"),
    ],
)
def test_commands_lock_does_not_understand(
    argv: list[str], message: str, store: Path, lock_env: dict[str, str]
) -> None:
    with pytest.raises(LockError) as caught:
        resolve(argv, store, lock_env)
    assert message in str(caught.value)


def test_npx_package_not_in_the_offline_cache(store: Path, lock_env: dict[str, str]) -> None:
    before = store_entries(store, "npm")
    with pytest.raises(LockError) as caught:
        resolve(["npx", "-y", "@mcpwrap-test/no-such-package-xyz"], store, lock_env)
    message = str(caught.value)
    assert message.startswith("npm install @mcpwrap-test/no-such-package-xyz")
    assert "ENOTCACHED" in message, "npm's own explanation is carried"
    assert "--ignore-scripts" in message
    assert store_entries(store, "npm") == before, "the failed install is removed"


def test_npx_bin_the_package_does_not_have(tmp_path: Path, lock_env: dict[str, str]) -> None:
    store = tmp_path / "store"
    with pytest.raises(LockError) as caught:
        resolve(["npx", "-p", f"{FILESYSTEM}@{FILESYSTEM_VERSION}", "nope"], store, lock_env)
    assert str(caught.value) == (
        f"{FILESYSTEM}@{FILESYSTEM_VERSION} has no bin named 'nope' (its bins: "
        "mcp-server-filesystem); mcpwrap lock runs a bin of the package itself"
    )
    assert store_entries(store, "npm") == []


@pytest.mark.parametrize(
    ("bins", "chosen"),
    [
        ("cli.js", "cli.js"),
        ({"only": "only.js"}, "only.js"),
        ({"tool": "a.js", "other": "b.js"}, "a.js"),
    ],
)
def test_npm_bin_chosen_as_npx_does(bins: object, chosen: str) -> None:
    assert fetch._npm_bin("@scope/tool", "1.0.0", {"bin": bins}, None) == chosen


@pytest.mark.parametrize(
    ("bins", "message"),
    [
        (None, "@scope/tool@1.0.0 declares no bin in its package.json"),
        (
            {"a": "a.js", "b": "b.js"},
            "@scope/tool@1.0.0 has several bins (a, b) and none is named tool: say which with "
            "`npx -y -p @scope/tool@1.0.0 BIN ARGS...`",
        ),
    ],
)
def test_npm_bin_that_npx_could_not_choose(bins: object, message: str) -> None:
    with pytest.raises(LockError, match=re.escape(message)):
        fetch._npm_bin("@scope/tool", "1.0.0", {"bin": bins}, None)


# --- installing what a lock pins (mcpwrap sync) ----------------------------------------------


def _pinned(r: fetch.Resolved) -> artifacts.Artifacts:
    """What a lock pins of an install: its hashes at {install}-relative paths."""
    found = artifacts.collect(list(r.run), cwd="/", path_env="/usr/bin:/bin")
    return portable.view(found, [(portable.INSTALL, os.path.realpath(r.directory))])


@pytest.mark.parametrize(
    "argv",
    [["uvx", f"{TIME}=={TIME_VERSION}"], ["npx", "-y", f"{FILESYSTEM}@{FILESYSTEM_VERSION}"]],
    ids=["uvx", "npx"],
)
def test_what_a_lock_pins_installs_again_elsewhere_with_the_same_hashes(
    argv: list[str], tmp_path: Path, lock_env: dict[str, str]
) -> None:
    """Another store (another user, another machine): the same directory name, from the
    pins alone, and the same files."""
    first = resolve(argv, tmp_path / "a", lock_env)
    assert first.install is not None
    directory = fetch.install(
        first.install, launcher=argv[0], store=str(tmp_path / "b"), env=lock_env
    )
    assert directory == str(tmp_path / "b" / Path(first.directory).relative_to(tmp_path / "a"))
    prefix = fetch.entry(first.install, directory, lock_env)
    again = first._replace(run=(*prefix, *argv[first.skip :]), directory=directory)
    assert _pinned(again) == _pinned(first)
    assert os.listdir(tmp_path / "b" / ".tmp") == []


def test_a_wheel_whose_hash_is_not_the_locked_one_is_refused(
    tmp_path: Path, store: Path, lock_env: dict[str, str]
) -> None:
    r = resolve(["uvx", f"{TIME}=={TIME_VERSION}"], store, lock_env)
    assert r.install is not None
    wrong = tuple(w._replace(sha256="0" * 64) if w.name == TIME else w for w in r.install.wheels)
    with pytest.raises(LockError) as caught:
        fetch.install(
            r.install._replace(wheels=wrong), launcher="uvx", store=str(tmp_path), env=lock_env
        )
    message = str(caught.value)
    assert "uv pip install --require-hashes" in message and "0" * 64 in message, message
    assert store_entries(tmp_path, "uv") == [] and os.listdir(tmp_path / ".tmp") == []


def test_an_npm_package_whose_integrity_is_not_the_locked_one_is_refused(
    tmp_path: Path, lock_env: dict[str, str]
) -> None:
    r = resolve(["npx", "-y", f"{FILESYSTEM}@{FILESYSTEM_VERSION}"], tmp_path / "a", lock_env)
    assert r.install is not None
    doc = json.loads(r.install.lockfile)
    entry = doc["packages"][f"node_modules/{FILESYSTEM}"]
    entry["integrity"] = "sha512-" + "A" * 86 + "=="
    changed = r.install._replace(lockfile=json.dumps(doc))
    with pytest.raises(LockError) as caught:
        fetch.install(changed, launcher="npx", store=str(tmp_path / "b"), env=lock_env)
    assert str(caught.value).startswith("npm ci"), caught.value
    assert store_entries(tmp_path / "b", "npm") == []


def test_a_lock_for_another_platform_or_python_is_refused_before_any_download(
    tmp_path: Path, store: Path, lock_env: dict[str, str]
) -> None:
    r = resolve(["uvx", f"{TIME}=={TIME_VERSION}"], store, lock_env)
    assert r.install is not None
    arm = r.install._replace(platform="linux-aarch64")
    with pytest.raises(LockError, match="was locked on linux-aarch64, whose wheels this machine"):
        fetch.install(arm, launcher="uvx", store=str(tmp_path), env=lock_env)
    old = r.install._replace(runtime="cpython 3.99")
    with pytest.raises(LockError, match=r"uv venv --relocatable .* --python cpython3\.99 failed"):
        fetch.install(old, launcher="uvx", store=str(tmp_path), env=lock_env)
    assert store_entries(tmp_path, "uv") == []


# --- anything else, and the store ---------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["python3", "-m", "mcp_server_time"],
        ["node", "server.js"],
        ["uv", "run", "server.py"],
        ["/opt/npx-like/bin/npxx", "x"],
        [],
    ],
)
def test_other_commands_run_as_given(argv: list[str], tmp_path: Path) -> None:
    r = fetch.resolve(argv, store=str(tmp_path / "store"), env={"PATH": "/nonexistent"})
    assert r == fetch.Resolved(tuple(argv), "", "", "")
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize(
    ("argv", "kind"),
    [
        (["npx", "-y", "@modelcontextprotocol/server-filesystem", "."], "npx"),
        (["/usr/local/bin/uvx", "mcp-server-time"], "uvx"),
        (["uv", "tool", "run", "mcp-server-time"], "uvx"),
        (["uv", "run", "server.py"], ""),
        (["node", "server.js"], ""),
        ([], ""),
    ],
)
def test_downloader_names_the_commands_that_download_as_they_start(
    argv: list[str], kind: str
) -> None:
    assert discovery.downloader(argv) == kind


@pytest.mark.parametrize(
    "argv",
    [["uvx", "mcp-server-time"], ["npx", "-y", "@modelcontextprotocol/server-filesystem", "."]],
)
def test_run_without_a_lock_refuses_a_download_and_says_how_to_lock(
    tmp_path: Path, argv: list[str]
) -> None:
    """The jail has no way to a registry: without this, uvx/npx fail inside it with a DNS
    error that does not say what to do. Nothing starts (no uv or npm is even needed)."""
    profile = tmp_path / "p.toml"
    profile.write_text(f'version = 1\n[audit]\npath = "{tmp_path}/audit.jsonl"\n')
    out = subprocess.run(
        [*MCPWRAP, "run", "--profile", str(profile), "--", *argv],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": "/nonexistent"},
    )
    assert out.returncode == 2, out.stderr
    shown = " ".join(argv)
    assert f"`mcpwrap lock --profile {profile} -- {shown}`" in out.stderr
    (record,) = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert record["rule"] == "pins.unlocked" and record["decision"] == "refuse"


def test_store_dir_follows_xdg_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    assert store_root() == str(tmp_path / "c" / "mcpwrap" / "store")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert store_root() == str(tmp_path / "home" / ".cache" / "mcpwrap" / "store")


def test_uvx_never_builds_a_source_distribution(
    tmp_path: Path, store: Path, lock_env: dict[str, str]
) -> None:
    """Building an sdist runs its code outside any jail: lock refuses instead. The backend
    here is in the tree and needs nothing from an index, so without --no-build uv would
    run it (and the canary would appear)."""
    import tarfile

    canary = tmp_path / "canary"
    src = tmp_path / "evilpkg-1.0"
    src.mkdir()
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
        '[project]\nname = "evilpkg"\nversion = "1.0"\n'
    )
    (src / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: evilpkg\nVersion: 1.0\n")
    (src / "backend.py").write_text(f"open({str(canary)!r}, 'w').write('ran')\n")
    sdist = tmp_path / "evilpkg-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(src, arcname=src.name)
    with pytest.raises(LockError) as caught:
        resolve(["uvx", "--from", str(sdist), "evilpkg"], store, lock_env)
    assert "no wheel is refused" in str(caught.value)
    assert not canary.exists()
