"""Hashes of what a server runs: real venvs with a real (pip-installed) distribution, real
node_modules trees, real binaries. No mocks."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcpwrap.basics.errors import MCPWrapError
from mcpwrap.supply.artifacts import (
    ArtifactError,
    Artifacts,
    FileArtifact,
    Package,
    StatCache,
    Tree,
    collect,
    compare,
    from_data,
    to_data,
)

PATH = "/usr/bin:/bin"
SITE = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
NODE = shutil.which("node")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


# --- fixtures: a wheel, venvs, node_modules ----------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """demo 1.0: a package of two modules and a console script `demo-server`."""
    files = {
        "demo/__init__.py": b"def main():\n    print('demo')\n",
        "demo/util.py": b"VALUE = 'original'\n",
        "demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n\nText\n",
        "demo-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
        "demo-1.0.dist-info/entry_points.txt": b"[console_scripts]\ndemo-server = demo:main\n",
    }
    record = "".join(f"{n},{_record_hash(b)},{len(b)}\n" for n, b in files.items())
    path = tmp_path_factory.mktemp("wheel") / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("demo-1.0.dist-info/RECORD", record + "demo-1.0.dist-info/RECORD,,\n")
    return path


def _make_venv(where: Path, wheel: Path) -> Path:
    """A real venv with demo installed by pip (which writes RECORD and compiles .pyc)."""
    venv = where / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")),
            *("install", "-q", "--no-index", "--no-deps", "--disable-pip-version-check"),
            str(wheel),
        ],
        check=True,
    )
    return venv


@pytest.fixture
def venv(tmp_path: Path, wheel: Path) -> Path:
    """A fresh venv in <tmp>/proj/.venv, for tests that change it."""
    proj = tmp_path.resolve() / "proj"
    proj.mkdir()
    return _make_venv(proj, wheel)


@pytest.fixture(scope="module")
def shared_venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """One venv for the tests that only read."""
    return _make_venv(tmp_path_factory.mktemp("shared").resolve(), wheel)


@pytest.fixture(scope="module")
def node_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StatCache]:
    """Node is ~100 MB; hash it once for the module."""
    yield StatCache(str(tmp_path_factory.mktemp("cache") / "node.json"))


@pytest.fixture
def node() -> str:
    if NODE is None:
        pytest.fail("node is not on PATH: the tests need Node.js", pytrace=False)
    return NODE


def _write(path: Path, text: str, mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mode is not None:
        path.chmod(mode)
    return path


def _package(nm: Path, rel: str, name: str, version: str) -> None:
    _write(nm / rel / "package.json", json.dumps({"name": name, "version": version}))
    _write(nm / rel / "index.js", f"module.exports = {json.dumps(name)};\n")


def _node_app(root: Path, *, hidden_lock: bool = True) -> Path:
    """app/node_modules as npm lays it out: a, @s/p, and b nested under a (another version
    of b than a top-level one would be)."""
    app = root / "app"
    nm = app / "node_modules"
    _package(nm, "a", "a", "1.0.0")
    _package(nm, "@s/p", "@s/p", "2.0.0")
    _package(nm, "a/node_modules/b", "b", "3.0.0")
    _write(nm / "a" / "cli.sh", "#!/bin/sh\necho a\n", 0o755)
    (nm / ".bin").mkdir()
    (nm / ".bin" / "a").symlink_to("../a/cli.sh")
    if hidden_lock:
        lock = {
            "name": "app",
            "lockfileVersion": 3,
            "packages": {
                "node_modules/a": {"version": "1.0.0", "integrity": "sha512-AAA"},
                "node_modules/@s/p": {"version": "2.0.0", "integrity": "sha512-PPP"},
                "node_modules/a/node_modules/b": {"version": "3.0.0", "integrity": "sha512-BBB"},
            },
        }
        _write(nm / ".package-lock.json", json.dumps(lock))
    _write(app / "server.js", "require('a');\n")
    return app


# --- a venv ------------------------------------------------------------------------------------


def test_a_venv_console_script(shared_venv: Path) -> None:
    script = shared_venv / "bin" / "demo-server"
    got = collect([str(script), "--flag"], cwd="/", path_env=PATH)
    python = os.path.realpath(shared_venv / "bin" / "python")
    assert got.files == (
        FileArtifact("executable", str(script), _sha(script.read_bytes())),
        FileArtifact("interpreter", python, _sha(Path(python).read_bytes())),
    )
    (tree,) = got.trees
    assert (tree.kind, tree.path) == ("venv", str(shared_venv))
    assert tree.digest.startswith("sha256:")
    record = shared_venv / SITE / "demo-1.0.dist-info" / "RECORD"
    (package,) = tree.packages
    assert package.name == "demo"
    assert package.version == "1.0"
    assert package.integrity == "sha256:" + _sha(record.read_bytes())
    assert package.modified == ()
    # Found on PATH the same way, and nothing changed between two runs.
    again = collect(["demo-server"], cwd="/", path_env=f"/nonexistent:{shared_venv}/bin")
    assert again == got
    assert compare(got, again) == []


def test_python_dash_m_with_a_venv_python(shared_venv: Path) -> None:
    got = collect([str(shared_venv / "bin" / "python"), "-m", "demo"], cwd="/", path_env=PATH)
    assert [f.role for f in got.files] == ["executable"]
    assert got.files[0].path == os.path.realpath(shared_venv / "bin" / "python")
    assert [(t.kind, t.path) for t in got.trees] == [("venv", str(shared_venv))]


def test_a_script_whose_env_shebang_finds_a_venv_python(shared_venv: Path, tmp_path: Path) -> None:
    script = _write(tmp_path / "tool", "#!/usr/bin/env -S python3 -u\nprint(1)\n", 0o755)
    got = collect(["./tool"], cwd=str(tmp_path), path_env=f"{shared_venv}/bin:{PATH}")
    assert got.files[0] == FileArtifact(
        "executable", os.path.realpath(script), _sha(script.read_bytes())
    )
    assert got.files[1].role == "interpreter"
    assert got.files[1].path == os.path.realpath(shared_venv / "bin" / "python3")
    assert [(t.kind, t.path) for t in got.trees] == [("venv", str(shared_venv))]


def test_python_script_in_a_venv(shared_venv: Path, tmp_path: Path) -> None:
    app = tmp_path.resolve() / "app"
    script = _write(app / "server.py", "print('hi')\n")
    (app / "node_modules").mkdir()  # Python does not load from it: no tree for it
    got = collect(
        [str(shared_venv / "bin" / "python"), "-X", "dev", "-u", "server.py", "--port", "1"],
        cwd=str(app),
        path_env=PATH,
    )
    assert [(f.role, f.path) for f in got.files] == [
        ("executable", os.path.realpath(shared_venv / "bin" / "python")),
        ("script", str(script)),
    ]
    assert got.files[1].sha256 == _sha(script.read_bytes())
    assert [(t.kind, t.path) for t in got.trees] == [("venv", str(shared_venv))]


def test_a_changed_package_file_names_the_package_and_the_file(venv: Path) -> None:
    argv = [str(venv / "bin" / "demo-server")]
    locked = collect(argv, cwd="/", path_env=PATH)
    assert compare(locked, collect(argv, cwd="/", path_env=PATH)) == []  # the control
    (venv / SITE / "demo" / "util.py").write_text("VALUE = 'evil'\n")
    now = collect(argv, cwd="/", path_env=PATH)
    expected = [f"venv {venv}: package demo 1.0 changed: demo/util.py differs from its RECORD"]
    assert compare(locked, now) == expected
    # The same through the lock's plain data.
    assert compare(from_data(to_data(locked), source="x.lock"), now) == expected
    (venv / SITE / "demo" / "__init__.py").unlink()
    script = venv / "bin" / "demo-server"
    script.write_text(script.read_text().replace("main()", "main()  # changed"))
    new_hash = _sha(script.read_bytes())
    assert compare(locked, collect(argv, cwd="/", path_env=PATH)) == [
        f"executable {venv}/bin/demo-server: content changed (sha256 "
        f"{locked.files[0].sha256[:8]}… in the lock, now {new_hash[:8]}…)",
        f"venv {venv}: package demo 1.0 changed: ../../../bin/demo-server, "
        "demo/__init__.py and demo/util.py differ from its RECORD",
    ]


def test_the_same_wheel_installed_elsewhere_has_the_same_portable_digests(
    tmp_path: Path, wheel: Path
) -> None:
    """What a lock pins of a venv is what the wheel put there: another directory (pip
    writes it into the console script's #! line and pyvenv.cfg) changes the tree's digest
    over everything, not the one over what the archives hold, nor the package's."""
    trees = []
    for where in ("ann", "bob"):
        (tmp_path / where).mkdir()
        venv = _make_venv(tmp_path.resolve() / where, wheel)
        got = collect([str(venv / "bin" / "demo-server")], cwd="/", path_env=PATH)
        assert str(venv) in (venv / "bin" / "demo-server").read_text()
        trees.append(got.trees[0])
    ann, bob = trees
    assert ann.digest != bob.digest
    assert ann.portable == bob.portable and ann.portable.startswith("sha256:")
    assert [p.digest for p in ann.packages] == [p.digest for p in bob.packages]
    # Control: a changed module changes both.
    (Path(bob.path) / SITE / "demo" / "util.py").write_text("VALUE = 'evil'\n")
    again = collect([f"{bob.path}/bin/demo-server"], cwd="/", path_env=PATH).trees[0]
    assert again.portable != ann.portable and again.packages[0].digest != ann.packages[0].digest


def test_known_trees_are_reused_only_while_every_file_matches(venv: Path) -> None:
    argv = [str(venv / "bin" / "demo-server")]
    locked = collect(argv, cwd="/", path_env=PATH)
    marked = locked._replace(
        trees=tuple(
            t._replace(packages=(t.packages[0]._replace(version="9"),)) for t in locked.trees
        )
    )
    # Same digest: the lock's own tree comes back (its packages are not read again).
    assert collect(argv, cwd="/", path_env=PATH, known=marked).trees == marked.trees
    (venv / SITE / "demo" / "util.py").write_text("VALUE = 'evil'\n")
    # A file changed: the tree is read afresh, and the change is named.
    now = collect(argv, cwd="/", path_env=PATH, known=locked)
    assert compare(locked, now) == [
        f"venv {venv}: package demo 1.0 changed: demo/util.py differs from its RECORD"
    ]


STRAY = "files outside any package changed (a stray .pth file or script, or compiled byte code?)"


def test_a_stray_pth_file_is_detected(venv: Path) -> None:
    argv = [str(venv / "bin" / "python"), "-m", "demo"]
    locked = collect(argv, cwd="/", path_env=PATH)
    _write(venv / SITE / "zzz.pth", "import os; os.system('id')\n")
    assert compare(locked, collect(argv, cwd="/", path_env=PATH)) == [f"venv {venv}: {STRAY}"]


def test_pycache_is_ignored_but_a_sourceless_pyc_is_not(venv: Path) -> None:
    argv = [str(venv / "bin" / "python"), "-m", "demo"]
    locked = collect(argv, cwd="/", path_env=PATH)
    pycache = venv / SITE / "demo" / "__pycache__"
    compiled = next(pycache.iterdir())  # pip compiled it and listed it in RECORD (no hash)
    compiled.write_bytes(b"junk")
    _write(pycache / "new.cpython-311.pyc", "junk")
    _write(venv / "bin" / "__pycache__" / "x.pyc", "junk")
    assert compare(locked, collect(argv, cwd="/", path_env=PATH)) == []
    # A .pyc beside the sources is imported when no .py shadows it.
    (venv / SITE / "sneaky.pyc").write_bytes(b"junk")
    assert compare(locked, collect(argv, cwd="/", path_env=PATH)) == [f"venv {venv}: {STRAY}"]


def test_fifos_and_sockets_are_recorded_by_type(venv: Path) -> None:
    argv = [str(venv / "bin" / "python"), "-m", "demo"]
    os.mkfifo(venv / "fifo")  # never opened: the walk would block on it
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(venv / "s"))
    try:
        locked = collect(argv, cwd="/", path_env=PATH)
        assert compare(locked, collect(argv, cwd="/", path_env=PATH)) == []
        (venv / "fifo").unlink()
        (venv / "fifo").write_text("")
        assert len(compare(locked, collect(argv, cwd="/", path_env=PATH))) == 1
    finally:
        sock.close()


# --- node --------------------------------------------------------------------------------------


def test_node_script_and_its_node_modules(tmp_path: Path, node: str, node_cache: StatCache) -> None:
    app = _node_app(tmp_path.resolve())
    got = collect(
        ["node", "server.js"], cwd=str(app), path_env=os.path.dirname(node), cache=node_cache
    )
    real_node = os.path.realpath(node)
    assert [(f.role, f.path) for f in got.files] == [
        ("executable", real_node),
        ("script", str(app / "server.js")),
    ]
    (tree,) = got.trees
    assert (tree.kind, tree.path) == ("node_modules", str(app / "node_modules"))
    assert [(p.name, p.version, p.integrity) for p in tree.packages] == [
        ("@s/p", "2.0.0", "sha512-PPP"),
        ("a", "1.0.0", "sha512-AAA"),
        ("a/node_modules/b", "3.0.0", "sha512-BBB"),
    ]
    # A change in the nested package names it, and only it.
    _write(app / "node_modules" / "a" / "node_modules" / "b" / "index.js", "evil();\n")
    now = collect(
        ["node", "server.js"], cwd=str(app), path_env=os.path.dirname(node), cache=node_cache
    )
    (change,) = compare(got, now)
    assert re.fullmatch(
        re.escape(
            f"node_modules tree {app}/node_modules: package a/node_modules/b 3.0.0 changed: "
            "its files differ from the lock ("
        )
        + r"sha256:[0-9a-f]{8}… in the lock, now sha256:[0-9a-f]{8}…\)",
        change,
    ), change


def test_the_nearest_node_modules_above_a_script(
    tmp_path: Path, node: str, node_cache: StatCache
) -> None:
    app = _node_app(tmp_path.resolve(), hidden_lock=False)
    script = _write(app / "src" / "deep" / "server.js", "require('a');\n")
    _write(app / "src" / "other" / "node_modules" / "x" / "package.json", "{}")  # not above
    got = collect(
        [node, "--require", "x.js", "src/deep/server.js"],
        cwd=str(app),
        path_env="",
        cache=node_cache,
    )
    assert got.files[1] == FileArtifact("script", str(script), _sha(script.read_bytes()))
    (tree,) = got.trees
    assert tree.path == str(app / "node_modules")
    # Without npm's hidden lock: names and versions from package.json, no integrity.
    assert [(p.name, p.version, p.integrity) for p in tree.packages] == [
        ("@s/p", "2.0.0", ""),
        ("a", "1.0.0", ""),
        ("a/node_modules/b", "3.0.0", ""),
    ]


def test_a_bin_link_in_node_modules(tmp_path: Path) -> None:
    """node_modules/.bin/a -> ../a/cli.sh with #!/bin/sh: the real script, sh, the tree."""
    app = _node_app(tmp_path.resolve())
    nm = app / "node_modules"
    got = collect(["node_modules/.bin/a"], cwd=str(app), path_env=PATH)
    assert [(f.role, f.path) for f in got.files] == [
        ("executable", str(nm / "a" / "cli.sh")),
        ("interpreter", os.path.realpath("/bin/sh")),
    ]
    assert [(t.kind, t.path) for t in got.trees] == [("node_modules", str(nm))]
    # An extraneous package (not in npm's lock) shows up as one; a change to a .bin link
    # belongs to no package.
    _package(nm, "evil", "evil", "6.6.6")
    assert compare(got, collect(["node_modules/.bin/a"], cwd=str(app), path_env=PATH)) == [
        f"node_modules tree {nm}: package evil 6.6.6 was added"
    ]
    shutil.rmtree(nm / "evil")
    (nm / ".bin" / "b").symlink_to("../a/cli.sh")
    assert compare(got, collect(["node_modules/.bin/a"], cwd=str(app), path_env=PATH)) == [
        f"node_modules tree {nm}: files outside any package changed "
        "(a .bin link or a directory that is no package?)"
    ]


def test_node_modules_cache_is_ignored(tmp_path: Path) -> None:
    app = _node_app(tmp_path.resolve())
    argv = ["node_modules/.bin/a"]
    locked = collect(argv, cwd=str(app), path_env=PATH)
    _write(app / "node_modules" / ".cache" / "babel" / "x.json", "{}")
    assert compare(locked, collect(argv, cwd=str(app), path_env=PATH)) == []


def test_symlinks_are_recorded_by_target_not_followed(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    app = _node_app(root)
    nm = app / "node_modules"
    outside = _write(root / "outside" / "data.txt", "one\n")
    (nm / "a" / "passwd").symlink_to("/etc/passwd")
    (nm / "a" / "data").symlink_to(outside)
    (nm / "a" / "dir").symlink_to(outside.parent)
    argv = ["node_modules/.bin/a"]
    cache = StatCache(str(root / "cache.json"), settle=0)
    locked = collect(argv, cwd=str(app), path_env=PATH, cache=cache)
    cache.save()
    hashed = json.loads((root / "cache.json").read_text())
    assert not any(p.endswith(("passwd", "data.txt")) or "/dir/" in p for p in hashed)
    # What the links point at can change: not part of the tree.
    outside.write_text("two\n")
    _write(outside.parent / "new.js", "x\n")
    assert compare(locked, collect(argv, cwd=str(app), path_env=PATH)) == []
    # Where they point is.
    (nm / "a" / "passwd").unlink()
    (nm / "a" / "passwd").symlink_to("/etc/shadow")
    (change,) = compare(locked, collect(argv, cwd=str(app), path_env=PATH))
    assert change.startswith(
        f"node_modules tree {nm}: package a 1.0.0 changed: its files differ from the lock "
        f"({next(p for p in locked.trees[0].packages if p.name == 'a').digest[:15]}… in the "
        "lock, now sha256:"
    ), change


# --- a static binary ---------------------------------------------------------------------------


def test_a_binary_and_a_change_to_it(tmp_path: Path) -> None:
    binary = tmp_path.resolve() / "bin" / "server"
    binary.parent.mkdir()
    shutil.copy2("/bin/true", binary)
    locked = collect(["server"], cwd="/", path_env=str(binary.parent))
    assert locked == Artifacts(
        files=(FileArtifact("executable", str(binary), _sha(binary.read_bytes())),), trees=()
    )
    with binary.open("ab") as f:
        f.write(b"\0")
    now = collect(["server"], cwd="/", path_env=str(binary.parent))
    assert compare(locked, now) == [
        f"executable {binary}: content changed (sha256 {locked.files[0].sha256[:8]}… in the "
        f"lock, now {now.files[0].sha256[:8]}…)"
    ]


# --- the stat cache ----------------------------------------------------------------------------


def test_the_cache_reuses_hashes_and_drops_stale_entries(venv: Path, tmp_path: Path) -> None:
    argv = [str(venv / "bin" / "demo-server")]
    path = str(tmp_path / "state" / "cache.json")
    stale = _write(venv / "stale.txt", "x")
    first = StatCache(path, settle=0)  # the files were just written: trust them anyway
    locked = collect(argv, cwd="/", path_env=PATH, cache=first)
    assert first.hits == 1  # the executable, met again in the venv's walk
    assert first.save()
    assert str(stale) in json.loads(Path(path).read_text())
    stale.unlink()
    second = StatCache(path, settle=0)
    assert collect(argv, cwd="/", path_env=PATH, cache=second) != locked  # stale.txt is gone
    assert second.misses == 0  # every hash came from the cache
    assert second.hits == first.hits + first.misses - 1
    assert second.save()
    assert str(stale) not in json.loads(Path(path).read_text())


def test_a_change_behind_a_restored_mtime_is_still_detected(venv: Path, tmp_path: Path) -> None:
    argv = [str(venv / "bin" / "demo-server")]
    path = str(tmp_path / "cache.json")
    util = venv / SITE / "demo" / "util.py"
    cache = StatCache(path, settle=0)
    locked = collect(argv, cwd="/", path_env=PATH, cache=cache)
    cache.save()
    assert str(util) in json.loads(Path(path).read_text())
    before = util.stat()
    time.sleep(0.02)  # past the file system clock's tick
    util.write_text("VALUE = 'xxxxxxxx'\n")  # the same size
    os.utime(util, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = util.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    again = StatCache(path, settle=0)
    now = collect(argv, cwd="/", path_env=PATH, cache=again)
    assert again.misses == 1  # only util.py: the ctime the kernel set on the write
    assert compare(locked, now) == [
        f"venv {venv}: package demo 1.0 changed: demo/util.py differs from its RECORD"
    ]


def test_files_changed_just_now_are_not_cached(tmp_path: Path) -> None:
    binary = tmp_path / "server"
    shutil.copy(Path("/bin/true"), binary)  # a fresh ctime
    cache = StatCache(str(tmp_path / "cache.json"))
    collect([str(binary)], cwd="/", path_env=PATH, cache=cache)
    cache.save()
    assert _cached(tmp_path / "cache.json") == {}


def _cached(path: Path) -> dict[str, object]:
    """Every file hash a StatCache at `path` kept: its big file (the trees' files) and
    its small launch file (files hashed on their own)."""
    found: dict[str, object] = {}
    if path.exists():
        found.update(json.loads(path.read_text()))
    launch = path.with_name(path.stem + ".launch.json")
    if launch.exists():
        found.update(json.loads(launch.read_text())["files"])
    return found


@pytest.mark.parametrize(
    "content", ["{not json", "[1, 2]", '{"/x": [1, 2]}', '{"/bin/true": [0,0,0,0,0,"zz"]}', ""]
)
def test_a_corrupt_cache_is_an_empty_one(tmp_path: Path, content: str) -> None:
    path = tmp_path / "cache.json"
    path.write_text(content)
    path.with_name("cache.launch.json").write_text(content)
    binary = tmp_path / "server"
    shutil.copy2("/bin/true", binary)
    cache = StatCache(str(path), settle=0)
    got = collect([str(binary)], cwd="/", path_env=PATH, cache=cache)
    assert got.files[0].sha256 == _sha(binary.read_bytes())
    assert cache.hits == 0
    assert cache.save()
    assert list(json.loads(path.with_name("cache.launch.json").read_text())["files"]) == [
        str(binary)
    ]


# --- plain data --------------------------------------------------------------------------------

_DIGEST = "sha256:" + "a" * 64
_SAMPLE = Artifacts(
    files=(
        FileArtifact("executable", "/usr/bin/node", "b" * 64),
        FileArtifact("script", "/p/server.js", "c" * 64),
    ),
    trees=(
        Tree(
            "node_modules",
            "/p/node_modules",
            _DIGEST,
            (Package("a", "1.0.0", _DIGEST, "sha512-x"), Package("b", "2.0.0", _DIGEST)),
        ),
        Tree("venv", "/p/.venv", _DIGEST, ()),
    ),
)


def _toml_ready(value: object) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _toml_ready(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_toml_ready(v) for v in value)
    return isinstance(value, (str, int)) and not isinstance(value, bool)


def test_plain_data_round_trip(shared_venv: Path) -> None:
    assert from_data(to_data(_SAMPLE), source="x.lock") == _SAMPLE
    real = collect([str(shared_venv / "bin" / "demo-server")], cwd="/", path_env=PATH)
    data = to_data(real)
    assert _toml_ready(data)
    assert from_data(json.loads(json.dumps(data)), source="x.lock") == real


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            ["trees", 1, "digest"],
            3,
            "x.lock: artifacts.trees[1].digest: expected a string like sha256:<hex>, got 3",
        ),
        (
            ["trees", 0, "packages", 1, "version"],
            [],
            "x.lock: artifacts.trees[0].packages[1].version: expected a string, got an array",
        ),
        (
            ["files", 0, "role"],
            "runner",
            "x.lock: artifacts.files[0].role: expected one of executable, interpreter, "
            "script, got 'runner'",
        ),
        (
            ["files", 1, "sha256"],
            "sha256:" + "c" * 64,
            "x.lock: artifacts.files[1].sha256: expected 64 lowercase hex digits",
        ),
        (["files", 1, "path"], "rel/x", "x.lock: artifacts.files[1].path: expected an absolute"),
        (["trees", 0, "kind"], "gems", "x.lock: artifacts.trees[0].kind: expected one of"),
        (["trees", 0, "packages"], {}, "x.lock: artifacts.trees[0].packages: expected an array"),
        (["files", 1, "extra"], "x", "x.lock: artifacts.files[1].extra: unknown key"),
        (["files"], "x", "x.lock: artifacts.files: expected an array, got 'x'"),
    ],
)
def test_from_data_names_the_key_path(path: list[str | int], value: object, message: str) -> None:
    data = to_data(_SAMPLE)
    target: object = data
    for key in path[:-1]:
        target = target[key]  # type: ignore[index]
    target[path[-1]] = value  # type: ignore[index]
    with pytest.raises(ArtifactError) as exc:
        from_data(data, source="x.lock")
    assert str(exc.value).startswith(message)


def test_from_data_missing_and_duplicate_and_not_a_table() -> None:
    data = to_data(_SAMPLE)
    del data["trees"][0]["digest"]
    with pytest.raises(ArtifactError, match=r"^x\.lock: artifacts\.trees\[0\]\.digest: missing"):
        from_data(data, source="x.lock")
    data = to_data(_SAMPLE)
    data["files"].append(dict(data["files"][0]))
    with pytest.raises(ArtifactError, match=r"artifacts\.files\[2\]: the same file again"):
        from_data(data, source="x.lock")
    with pytest.raises(ArtifactError, match=r"^x\.lock: artifacts: expected a table, got 3"):
        from_data(3, source="x.lock")
    assert issubclass(ArtifactError, MCPWrapError)


# --- compare -----------------------------------------------------------------------------------


def test_compare_sentences_are_sorted_and_name_each_change() -> None:
    d = "sha256:" + "d" * 64
    locked = _SAMPLE
    current = Artifacts(
        files=(FileArtifact("executable", "/usr/bin/node", "b" * 64),),
        trees=(
            Tree(
                "node_modules",
                "/p/node_modules",
                d,
                (
                    Package("a", "1.1.0", d, "sha512-y"),
                    Package("evil", "1.0", d),
                ),
            ),
            Tree("venv", "/q/.venv", _DIGEST, ()),
        ),
    )
    assert compare(locked, current) == [
        "node_modules tree /p/node_modules: package a: version 1.0.0 in the lock, now 1.1.0",
        "node_modules tree /p/node_modules: package b 2.0.0 was removed",
        "node_modules tree /p/node_modules: package evil 1.0 was added",
        "script /p/server.js: missing",
        "venv /p/.venv is gone",
        "venv /q/.venv is not in the lock",
    ]
    assert compare(current, current) == []
    integrity = current._replace(
        trees=(current.trees[0]._replace(packages=(Package("a", "1.1.0", d, "sha512-z"),)),)
    )
    assert compare(current._replace(trees=current.trees[:1]), integrity) == [
        "node_modules tree /p/node_modules: package a 1.1.0: integrity sha512-y… in the lock, "
        "now sha512-z…",
        "node_modules tree /p/node_modules: package evil 1.0 was removed",
    ]


# --- errors ------------------------------------------------------------------------------------


def test_a_command_not_on_path(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"'no-such-server' is not found on PATH \(/usr/bin"):
        collect(["no-such-server"], cwd=str(tmp_path), path_env=PATH)
    with pytest.raises(ArtifactError, match=r"'\./missing\.sh' is not found \(in /"):
        collect(["./missing.sh"], cwd="/", path_env=PATH)
    with pytest.raises(ArtifactError, match="empty"):
        collect([], cwd="/", path_env=PATH)
    script = _write(tmp_path / "s", "#!/usr/bin/env no-such-interpreter\n", 0o755)
    with pytest.raises(ArtifactError, match=rf"{script}: its #! line runs 'no-such-interpreter'"):
        collect([str(script)], cwd="/", path_env=PATH)


def _collect_unprivileged(argv: list[str]) -> str:
    """collect() in a child that cannot read mode-000 files. As root that takes a user
    namespace with no uid mapped: root's files then keep only their owner bits."""
    code = (
        "import json, sys\n"
        "from mcpwrap.supply.artifacts import ArtifactError, collect\n"
        "try:\n"
        f"    collect({argv!r}, cwd='/', path_env={PATH!r})\n"
        "except ArtifactError as exc:\n"
        "    print(exc)\n"
    )
    prefix = ["unshare", "--user"] if os.geteuid() == 0 else []
    done = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_unreadable_files_and_directories_are_errors(venv: Path) -> None:
    argv = [str(venv / "bin" / "python"), "-m", "demo"]
    secret = venv / SITE / "demo" / "util.py"
    secret.chmod(0)
    message = _collect_unprivileged(argv)
    assert message.startswith(f"cannot read {secret} to hash it (Permission denied)")
    assert "make it readable" in message
    secret.chmod(0o644)
    locked_dir = venv / "include"
    locked_dir.chmod(0)
    try:
        message = _collect_unprivileged(argv)
    finally:
        locked_dir.chmod(0o755)
    assert message.startswith(f"cannot read {locked_dir}")


def test_hashing_does_not_load_openssl(shared_venv: Path) -> None:
    code = (
        "import sys\n"
        "from mcpwrap.supply.artifacts import collect\n"
        f"collect([{str(shared_venv / 'bin' / 'demo-server')!r}], cwd='/', path_env='/bin')\n"
        "print('_hashlib' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# --- the launch's fast path: a tree's stat signature --------------------------------------------


def _locked_venv(venv: Path, path: str) -> tuple[list[str], Artifacts]:
    """What `lock` and a first launch leave: the artifacts, and a cache that has seen them."""
    argv = [str(venv / "bin" / "demo-server")]
    cache = StatCache(path, settle=0)
    locked = collect(argv, cwd="/", path_env=PATH, cache=cache)
    again = StatCache(path, settle=0)
    assert collect(argv, cwd="/", path_env=PATH, cache=again, known=locked) == locked
    assert again.save()
    return argv, locked


def test_an_unchanged_tree_is_verified_by_its_signature_alone(venv: Path, tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    argv, locked = _locked_venv(venv, str(path))
    path.unlink()  # the per-file hashes: the fast path must not need them
    cache = StatCache(str(path), settle=0)
    assert collect(argv, cwd="/", path_env=PATH, cache=cache, known=locked) == locked
    # The files hashed on their own (executable, interpreter); none of the tree's.
    assert (cache.hits, cache.misses) == (len(locked.files), 0)


def test_a_change_behind_a_restored_mtime_breaks_the_signature(venv: Path, tmp_path: Path) -> None:
    path = str(tmp_path / "cache.json")
    argv, locked = _locked_venv(venv, path)
    util = venv / SITE / "demo" / "util.py"
    before = util.stat()
    time.sleep(0.02)
    util.write_text("VALUE = 'xxxxxxxx'\n")  # same size, mtime put back: only ctime moves
    os.utime(util, ns=(before.st_atime_ns, before.st_mtime_ns))
    cache = StatCache(path, settle=0)
    now = collect(argv, cwd="/", path_env=PATH, cache=cache, known=locked)
    assert compare(locked, now) == [
        f"venv {venv}: package demo 1.0 changed: demo/util.py differs from its RECORD"
    ]
    assert cache.misses == 1  # the slow path ran: util.py was hashed again


def test_a_file_added_to_the_tree_breaks_the_signature(venv: Path, tmp_path: Path) -> None:
    path = str(tmp_path / "cache.json")
    argv, locked = _locked_venv(venv, path)
    _write(venv / SITE / "zz-startup.pth", "import os\n")  # runs at every Python start
    now = collect(argv, cwd="/", path_env=PATH, cache=StatCache(path, settle=0), known=locked)
    assert now.trees[0].digest != locked.trees[0].digest


def test_a_signature_with_a_digest_the_lock_lacks_is_not_trusted(
    venv: Path, tmp_path: Path
) -> None:
    path = tmp_path / "cache.json"
    argv, locked = _locked_venv(venv, str(path))
    launch = path.with_name("cache.launch.json")
    data = json.loads(launch.read_text())
    for entry in data["trees"].values():
        entry[1] = "sha256:" + "0" * 64  # a cache that says another digest
    launch.write_text(json.dumps(data))
    cache = StatCache(str(path), settle=0)
    assert collect(argv, cwd="/", path_env=PATH, cache=cache, known=locked) == locked
    assert cache.misses == 0 and cache.hits > 1  # walked and hashed from the file cache


def test_a_tree_changed_just_now_keeps_no_signature(venv: Path, tmp_path: Path) -> None:
    argv = [str(venv / "bin" / "demo-server")]
    path = tmp_path / "cache.json"
    locked = collect(argv, cwd="/", path_env=PATH)
    cache = StatCache(str(path))  # settle 2 s: the venv was written a moment ago
    collect(argv, cwd="/", path_env=PATH, cache=cache, known=locked)
    cache.save()
    assert json.loads(path.with_name("cache.launch.json").read_text())["trees"] == {}
