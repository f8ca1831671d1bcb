"""Byte code for a locked uv install: compiled by mcpwrap from verified sources, read-only
in the jail.

In the jail, Python keeps its byte code under PYTHONPYCACHEPREFIX instead of the
__pycache__ beside each source: the lock does not hash __pycache__, and whatever can write
the venv could plant a .pyc there. With the prefix in the jail's fresh /tmp, every start
compiles every module again (about a second for mcp-server-time).

So the store keeps byte code inside each uv install (store.py):

    <install>/pyc/       PYTHONPYCACHEPREFIX's layout: the byte code of the venv's lib/
                         (under each name Python may know it by) and of its
                         interpreter's standard library
    <install>/pyc.json   how it was made: the digest of pyc/, of the sources it was
                         compiled from (the venv's part the lock pins), of the interpreter

`mcpwrap approve` and `sync` call `ensure` once the install's files are verified against
the lock (`lock`, once it installed them): it keeps byte code that its manifest says
mcpwrap compiled from those same sources with that interpreter, and whose files are
still the ones it compiled; otherwise it compiles again, with the venv's own interpreter
(`-I -S`: no site, no .pth file, nothing of the package runs; compiling only parses).
Both files are outside the venv's lib/, so the lock does not pin them: the record of
what this machine verified (store.Synced) does, as part of the venv's tree, and `run`
checks them with the rest before each start. `run` never compiles (that would put
seconds before the first reply): a missing cache stops it with the advice to run
`mcpwrap sync` (lockstate.py), and the jail gets the cache read-only.

The venv's byte code is unchecked-hash: Python does not look at the source again, whose
hash the lock verifies before each start anyway, and the files come out the same for the
same sources on every install (timestamps would differ), so locking a server again does
not invalidate another lock of the same install. The standard library's is
timestamp-checked, Python's default: no lock hashes it, and a standard library updated in
place is then compiled afresh (in memory, each start) instead of running stale byte code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from mcpwrap.basics.errors import LockError

FORMAT = "mcpwrap-pyc-2"
CACHE = "pyc"
MANIFEST = "pyc.json"
# Run by the venv's interpreter, with the venv's lib directories as arguments: the
# standard library (without its tests, GUI and installers) timestamp-checked, the venv
# unchecked-hash, file by file. A source that does not compile is left out (Python
# reports it when, if ever, the server imports it).
_COMPILE = r"""
import multiprocessing, os, py_compile, sys, sysconfig
from concurrent.futures import ProcessPoolExecutor

STDLIB_SKIP = {"test", "tests", "idle_test", "idlelib", "tkinter", "turtledemo", "lib2to3",
               "ensurepip", "site-packages", "dist-packages", "__pycache__"}
MODE = py_compile.PycInvalidationMode

def sources(root, skip):
    for top, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip)
        for name in sorted(files):
            path = os.path.join(top, name)
            if name.endswith(".py") and not os.path.islink(path):
                yield path

def compile_one(job):
    try:
        py_compile.compile(job[0], doraise=True, invalidation_mode=job[1])
    except (py_compile.PyCompileError, OSError, ValueError):
        return 0
    return 1

stdlib = dict.fromkeys(sysconfig.get_path(k) for k in ("stdlib", "platstdlib"))
jobs = [(f, MODE.TIMESTAMP) for d in stdlib for f in sources(d, STDLIB_SKIP)]
jobs += [(f, MODE.UNCHECKED_HASH) for d in sys.argv[1:] for f in sources(d, {"__pycache__"})]
# fork: the workers find compile_one in this -c script (a spawned one could not).
with ProcessPoolExecutor(mp_context=multiprocessing.get_context("fork")) as pool:
    list(pool.map(compile_one, jobs, chunksize=32))
"""


def cache_dir(install_dir: str) -> str:
    return os.path.join(install_dir, CACHE)


def present(install_dir: str) -> bool:
    """Whether a uv install has its byte code (`run`: whether it is intact is the tree
    check's part, against what this machine verified)."""
    return os.path.isdir(cache_dir(install_dir)) and os.path.isfile(
        os.path.join(install_dir, MANIFEST)
    )


def ensure(install_dir: str, sources: str) -> bool:
    """The install's byte code, compiled from its verified files unless it is there as
    mcpwrap made it from the same sources (`sources`: the digest of the venv's part the
    lock pins, artifacts.Tree.portable) and interpreter; whether it was compiled now."""
    import sys

    python = os.path.join(install_dir, "bin", "python")
    names = _names(install_dir)
    made = {"format": FORMAT, "sources": sources, "python": _interpreter(python), "names": names}
    why = _stale(install_dir, made)
    if why is None:
        return False
    sys.stderr.write(f"mcpwrap: compiling the Python byte code of {install_dir}{why}\n")
    _build(install_dir, python, names, made)
    return True


def _stale(install_dir: str, made: Mapping[str, object]) -> str | None:
    """None if the install's byte code is what `made` describes, as mcpwrap compiled it;
    else why it is compiled now (said after "compiling ...")."""
    from mcpwrap.supply import artifacts

    recorded = _manifest(os.path.join(install_dir, MANIFEST))
    if recorded is None:
        return ""
    if {k: recorded.get(k) for k in made} != made:
        return " again, for other sources or another interpreter"
    try:
        if artifacts.tree_digest(cache_dir(install_dir)) == recorded.get("digest"):
            return None
    except artifacts.ArtifactError:
        pass  # unreadable or gone
    return " again: it is not what mcpwrap compiled"


def _names(install_dir: str) -> list[str]:
    """The venv's lib/ under each name Python may know it by: as the entry point names it
    (the store as reached, maybe through a symlink) and resolved."""
    named = (install_dir, os.path.realpath(install_dir))
    return list(dict.fromkeys(os.path.join(d, "lib") for d in named))


def _interpreter(python: str) -> str:
    """The venv's base interpreter, by real path and content (another interpreter makes
    other byte code)."""
    from mcpwrap.basics import sha

    real = os.path.realpath(python)
    h = sha.sha256()
    try:
        with open(real, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError as exc:
        raise LockError(
            f"cannot read {real} ({exc.strerror}), the interpreter of {python}, to compile "
            "its byte code; install that Python again, then `mcpwrap sync`"
        ) from exc
    return f"{real} sha256:{h.hexdigest()}"


def _build(install_dir: str, python: str, names: list[str], made: Mapping[str, object]) -> None:
    """Compile into a new directory in the store's .tmp, then put it in place (an old
    cache goes first: it is what failed the check) and write its manifest."""
    import shutil
    import tempfile

    from mcpwrap.basics import atomicfile
    from mcpwrap.supply import artifacts, store

    temp = store.temp_root(store.root())
    try:
        os.makedirs(temp, exist_ok=True)
        work = tempfile.mkdtemp(prefix="pyc-", dir=temp)
    except OSError as exc:
        raise _unwritable(temp, exc) from exc
    old = ""
    try:
        _compile(python, work, names)
        manifest = {**made, "digest": artifacts.tree_digest(work)}
        final = cache_dir(install_dir)
        if os.path.lexists(final):
            old = tempfile.mkdtemp(prefix="old-", dir=temp)
            os.rename(final, os.path.join(old, CACHE))
        os.rename(work, final)
        text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
        atomicfile.write(os.path.join(install_dir, MANIFEST), text)
    except OSError as exc:
        raise _unwritable(install_dir, exc) from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)  # gone already once it is in place
        if old:
            shutil.rmtree(old, ignore_errors=True)


def _unwritable(where: str, exc: OSError) -> LockError:
    return LockError(
        f"cannot write the compiled byte code in {where} ({exc.strerror or exc}): it is "
        "part of mcpwrap's store; check its permissions and free space"
    )


def _compile(python: str, into: str, libs: list[str]) -> None:
    import subprocess

    argv = [python, "-I", "-S", "-X", f"pycache_prefix={into}", "-c", _COMPILE, *libs]
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            env={"PATH": os.defpath},
            check=False,
        )
    except OSError as exc:
        raise LockError(f"cannot run {python} to compile its byte code: {exc.strerror}") from exc
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip() or "(no output)").splitlines()[-10:]
        raise LockError(
            f"compiling the byte code of {os.path.dirname(os.path.dirname(python))} failed "
            f"(exit status {done.returncode}):\n" + "\n".join("  " + line for line in tail)
        )


def _manifest(path: str) -> dict[str, object] | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None
