"""The byte code of a locked uv install (mcpwrap/supply/bytecode.py): compiled by lock, approve and
sync from the verified sources, read-only in the jail, and never used once it differs from
what this machine verified.

The integration tests lock the real mcp-server-time from the offline uv cache (as
test_lock_launchers.py does) with PYTHONVERBOSE=1 in the server's environment: Python then
says, for every module, whether it read byte code (and from which file) or compiled the
source, and mcpwrap relays that stderr.
"""

from __future__ import annotations

import json
import marshal
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import NamedTuple

import pytest
from offline import TIME, TIME_VERSION, offline_env
from wrapped import MCPWRAP, Wrapped, audit_records, processes_with

from mcpwrap.config.profile import load_profile
from mcpwrap.sandbox import launch, spec
from mcpwrap.supply import bytecode, store

COMMAND = ["uvx", f"{TIME}=={TIME_VERSION}", "--local-timezone", "UTC"]
RUN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
FROM_PYC = re.compile(r"^# code object from '(.+\.pyc)'$", re.M)  # importlib, -v
FROM_SOURCE = re.compile(r"^# code object from (/.+\.py)$", re.M)
MARKER = "MCPWRAP-TEST-TAMPERED-BYTE-CODE-RAN"


# --- the jail reads the cache and cannot write it ----------------------------------------


def _jailed_sh(profile: Path, script: str, cache: Path | None, state: Path) -> str:
    loaded = load_profile(str(profile), state_dir=str(state))
    built = spec.build(
        loaded,
        ["/bin/sh", "-c", script],
        {"PATH": "/usr/bin:/bin"},
        str(profile.parent),
        state_dir=str(state),
        bytecode=str(cache) if cache else None,
    )
    child = launch.start_jailed(built)
    child.wait_ready()
    assert child.process.stdin is not None and child.process.stdout is not None
    child.process.stdin.close()
    out = child.process.stdout.read().decode()
    child.process.wait(30)
    return out


def test_the_jail_reads_the_cache_and_cannot_write_it(var_tmp_path: Path) -> None:
    """Even under a write grant that covers it (the store outside ~/.cache): the cache is
    bound read-only and protected like the state dir. The control is the same command
    with the directory as a plain part of the write grant."""
    granted = var_tmp_path / "granted"
    cache = granted / "install" / "pyc"
    cache.mkdir(parents=True)
    (cache / "m.pyc").write_text("compiled by mcpwrap")
    profile = var_tmp_path / "p.toml"
    profile.write_text(f"version = 1\n[sandbox]\nwrite = [{json.dumps(str(granted))}]\n")
    script = (
        f"cat {cache}/m.pyc; echo; "
        f"echo planted > {cache}/m.pyc && echo wrote-m; "
        f"echo planted > {cache}/new.pyc && echo wrote-new; "
        f"mv {cache} {granted}/moved && echo moved; "
        f"mv {cache.parent} {granted}/moved && echo moved-parent"
    )
    out = _jailed_sh(profile, script, cache, var_tmp_path / "state")
    assert out.splitlines() == ["compiled by mcpwrap"], out
    assert (cache / "m.pyc").read_text() == "compiled by mcpwrap"
    assert sorted(os.listdir(cache)) == ["m.pyc"]
    control = _jailed_sh(profile, script, None, var_tmp_path / "state")
    assert "wrote-m" in control and "wrote-new" in control, control


# --- a real locked server ----------------------------------------------------------------


class Locked(NamedTuple):
    profile: Path
    audit: Path
    venv: Path  # the install, as the entry point names it
    env: dict[str, str]  # mcpwrap's: its XDG directories (the store, the state)

    @property
    def cache(self) -> Path:
        return self.venv / "pyc"

    @property
    def project(self) -> Path:
        return self.profile.parent.parent


@pytest.fixture
def locked(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Locked:
    """mcp-server-time locked with `uvx`, Python verbose about its imports. The store has a
    short path: uv writes the console script's #! line with the venv's python only then."""
    return _lock(tmp_path / "project", _xdg(tmp_path_factory, tmp_path_factory.mktemp("c")))


def _xdg(factory: pytest.TempPathFactory, cache: Path) -> dict[str, str]:
    """A machine of its own: store, state and config directories."""
    state = factory.mktemp("s")
    return {
        "XDG_CACHE_HOME": str(cache),
        "XDG_STATE_HOME": str(state / "state"),
        "XDG_CONFIG_HOME": str(state / "config"),
    }


def _lock(project: Path, xdg: dict[str, str]) -> Locked:
    profile = project / ".mcpwrap" / "time.toml"
    profile.parent.mkdir(parents=True)
    audit = project / "audit.jsonl"
    profile.write_text(
        'version = 1\n[server]\nenv = { PYTHONVERBOSE = "1" }\n[policy]\ndefault = "allow"\n'
        f'[sandbox]\nnetwork = "none"\n[audit]\npath = {json.dumps(str(audit))}\n'
    )
    _mcpwrap(["lock", "--profile", str(profile), "--", *COMMAND], project, xdg)
    return _locked(profile, xdg)


def _locked(profile: Path, xdg: dict[str, str]) -> Locked:
    root = os.path.join(xdg["XDG_CACHE_HOME"], "mcpwrap", "store")
    record = store.load_synced(root, str(profile.with_suffix(".lock")))
    assert record is not None and record.install_dir
    return Locked(profile, profile.parent.parent / "audit.jsonl", Path(record.install_dir), xdg)


def _mcpwrap(args: list[str], cwd: Path, xdg: dict[str, str], code: int = 0) -> str:
    done = subprocess.run(
        [*MCPWRAP, *args],
        capture_output=True,
        text=True,
        env={**offline_env(), **xdg},
        cwd=cwd,
        timeout=300,
    )
    assert done.returncode == code, done.stdout + done.stderr
    return done.stdout + done.stderr


class Run(NamedTuple):
    stderr: str
    environ: dict[str, str]  # the server's, read from /proc while it ran
    mounts: list[list[str]]  # its mountinfo lines for the cache's path, split


def _run(locked: Locked) -> Run:
    """Start the locked server under `mcpwrap run`, list its tools and call one; look at
    the server process from outside while it runs."""
    env = {**RUN_ENV, **locked.env}
    with Wrapped(locked.profile, COMMAND, env=env, cwd=locked.project) as w:
        assert w.proc.stderr is not None
        fd = w.proc.stderr.fileno()
        chunks: list[bytes] = []
        # PYTHONVERBOSE writes far more than a pipe holds: read it all along.
        drain = threading.Thread(
            target=lambda: chunks.extend(iter(lambda: os.read(fd, 1 << 16), b""))
        )
        drain.start()
        try:
            environ, mounts = _session(w, locked)
            w.close()
        except BaseException:
            w.proc.kill()
            drain.join(30)
            text = b"".join(chunks).decode(errors="replace").splitlines()
            quiet = [line for line in text if not line.startswith(("#", "import "))]
            print("\n".join(quiet[-50:]))  # shown with the failure, without -v's lines
            raise
        drain.join(30)
    return Run(b"".join(chunks).decode(errors="replace"), environ, mounts)


def _session(w: Wrapped, locked: Locked) -> tuple[dict[str, str], list[list[str]]]:
    w.initialize()
    tools = w.recv_id(w.request("tools/list"))["result"]["tools"]
    assert sorted(t["name"] for t in tools) == ["convert_time", "get_current_time"]
    reply = w.call("get_current_time", {"timezone": "UTC"})
    assert reply["result"]["isError"] is False, reply
    (pid,) = processes_with(str(locked.venv / "bin"))
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    environ = dict(e.decode().partition("=")[::2] for e in raw if e)
    mountinfo = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    return environ, [m.split() for m in mountinfo if m.split()[4] == str(locked.cache)]


def _refused(locked: Locked) -> str:
    """`mcpwrap run` stops before anything of the server starts; its stderr."""
    with Wrapped(locked.profile, COMMAND, env={**RUN_ENV, **locked.env}, cwd=locked.project) as w:
        assert w.proc.wait(60) == 2
        err = w.stderr_now()
    assert processes_with(str(locked.venv / "bin")) == []
    return err


def _reads_only_the_cache(run: Run, cache: Path) -> None:
    assert run.environ["PYTHONPYCACHEPREFIX"] == str(cache)
    assert run.mounts and all("ro" in m[5].split(",") for m in run.mounts), run.mounts
    read = FROM_PYC.findall(run.stderr)
    assert len(read) > 300, run.stderr[-2000:]  # the SDK, pydantic, asyncio, ...
    assert all(p.startswith(f"{cache}/") for p in read), [
        p for p in read if not p.startswith(f"{cache}/")
    ]
    assert any(p.endswith("/mcp_server_time/server.cpython-311.pyc") for p in read)
    assert any("/encodings/" in p for p in read), "the standard library's too"
    assert FROM_SOURCE.findall(run.stderr) == [], "no module may be compiled in the jail"


def test_a_locked_server_reads_all_its_byte_code_from_the_read_only_cache(
    locked: Locked,
) -> None:
    assert sorted(p.name for p in locked.venv.iterdir() if p.name.startswith("pyc")) == [
        "pyc",
        "pyc.json",
    ]
    _reads_only_the_cache(_run(locked), locked.cache)
    # approve with nothing changed keeps the cache as it is.
    inode = locked.cache.stat().st_ino
    out = _mcpwrap(
        ["approve", "--profile", str(locked.profile), "--yes"], locked.project, locked.env
    )
    assert "up to date" in out and "compiling" not in out
    assert locked.cache.stat().st_ino == inode


def test_a_missing_cache_stops_the_run_and_sync_compiles_it(locked: Locked) -> None:
    shutil.rmtree(locked.cache)
    err = _refused(locked)
    assert f"the store has no compiled byte code for {TIME} {TIME_VERSION} ({locked.cache})" in err
    assert f"mcpwrap sync --profile {locked.profile}" in err
    (record,) = [r for r in audit_records(locked.audit) if r.get("decision") == "refuse"]
    assert record["rule"] == "pins.sync" and "no compiled byte code" in record["reason"]
    out = _mcpwrap(["sync", "--profile", str(locked.profile)], locked.project, locked.env)
    assert f"compiling the Python byte code of {locked.venv} again" in out
    _reads_only_the_cache(_run(locked), locked.cache)


def test_byte_code_from_other_sources_is_compiled_again(
    locked: Locked, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """What sync and approve do once the venv is verified: keep byte code made from those
    sources, compile it again for any other (as for another interpreter)."""
    monkeypatch.setenv("XDG_CACHE_HOME", locked.env["XDG_CACHE_HOME"])  # its store's .tmp
    manifest = locked.venv / "pyc.json"
    verified = json.loads(manifest.read_text())["sources"]
    assert bytecode.ensure(str(locked.venv), verified) is False
    other = "sha256:" + "0" * 64
    assert bytecode.ensure(str(locked.venv), other) is True
    assert "again, for other sources or another interpreter" in capfd.readouterr().err
    assert json.loads(manifest.read_text())["sources"] == other
    assert bytecode.ensure(str(locked.venv), other) is False


def _tamper(pyc: Path, source: Path) -> None:
    """Replace a cached .pyc's code with other code, keeping its header (the source's
    hash, which Python does not check for this cache's files)."""
    code = compile(
        f"import sys\nsys.stderr.write({MARKER!r} + '\\n')\n" + source.read_text(),
        str(source),
        "exec",
        dont_inherit=True,  # not this file's `from __future__ import annotations`
    )
    pyc.write_bytes(pyc.read_bytes()[:16] + marshal.dumps(code))


def test_a_tampered_cache_stops_the_run_and_sync_compiles_it_again(locked: Locked) -> None:
    (source,) = locked.venv.glob("lib/python*/site-packages/mcp_server_time/server.py")
    pyc = Path(f"{locked.cache}{source.parent}/server.cpython-311.pyc")
    assert pyc.is_file()
    _tamper(pyc, source)
    # Control: Python itself runs the tampered byte code from that directory.
    direct = subprocess.run(
        [str(locked.venv / "bin" / "python"), str(locked.venv / "bin" / TIME)],
        env={**RUN_ENV, "PYTHONPYCACHEPREFIX": str(locked.cache), "PYTHONDONTWRITEBYTECODE": "1"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert MARKER in direct.stderr, direct.stderr[-2000:]
    err = _refused(locked)
    assert MARKER not in err
    assert "the store's copy of the server was changed after it was verified" in err
    assert "compiled byte code?" in err and f"mcpwrap sync --profile {locked.profile}" in err
    # sync compiles it again, from the verified sources.
    out = _mcpwrap(["sync", "--profile", str(locked.profile)], locked.project, locked.env)
    assert f"compiling the Python byte code of {locked.venv} again: it is not what" in out
    assert MARKER.encode() not in pyc.read_bytes()
    again = _run(locked)
    assert MARKER not in again.stderr
    _reads_only_the_cache(again, locked.cache)


def test_a_server_outside_the_jail_never_gets_the_cache(locked: Locked) -> None:
    """enforce = false: the server runs with the user's rights and could write the cache
    (Python writes whatever byte code it lacks into PYTHONPYCACHEPREFIX)."""
    text = locked.profile.read_text().replace("[sandbox]\n", "[sandbox]\nenforce = false\n")
    locked.profile.write_text(text)
    env = {**RUN_ENV, **locked.env}
    with Wrapped(locked.profile, COMMAND, env=env, cwd=locked.project) as w:
        w.initialize()
        (pid,) = processes_with(str(locked.venv / "bin"))
        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        environ = dict(e.decode().partition("=")[::2] for e in raw if e)
        w.close()
    pycache = os.path.join(locked.env["XDG_STATE_HOME"], "mcpwrap", "pycache")
    assert environ["PYTHONPYCACHEPREFIX"] == pycache


def test_a_teammate_s_sync_compiles_the_byte_code_from_the_sources_it_verified(
    locked: Locked, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The committed lock on another machine (a clone, a store and state of its own):
    `run` refuses until `mcpwrap sync`, whose byte code the server then reads."""
    clone = tmp_path / "clone"
    (clone / ".mcpwrap").mkdir(parents=True)
    for name in ("time.toml", "time.lock"):
        shutil.copy(locked.profile.parent / name, clone / ".mcpwrap" / name)
    profile = clone / ".mcpwrap" / "time.toml"
    profile.write_text(locked.profile.read_text().replace(str(locked.audit), str(clone / "a")))
    xdg = _xdg(tmp_path_factory, tmp_path_factory.mktemp("c"))
    out = _mcpwrap(["sync", "--profile", str(profile)], clone, xdg)
    assert "verified against the lock" in out
    teammate = _locked(profile, xdg)
    assert f"compiling the Python byte code of {teammate.venv}\n" in out
    assert teammate.venv != locked.venv
    _reads_only_the_cache(_run(teammate), teammate.cache)


def test_locking_the_same_server_again_keeps_another_lock_of_it_running(
    locked: Locked, tmp_path: Path
) -> None:
    """A second profile locks the same command: the install is made again in the same
    place, with its byte code; the first lock's record of it still holds, because the
    same sources make the same byte code (unchecked-hash .pyc files: no timestamps)."""
    before = (locked.venv / "pyc.json").read_text()
    second = _lock(tmp_path / "second", locked.env)
    assert second.venv == locked.venv
    assert json.loads((locked.venv / "pyc.json").read_text()) == json.loads(before)
    _reads_only_the_cache(_run(locked), locked.cache)


def test_a_store_reached_through_a_symlink_has_its_byte_code_where_python_looks(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Python names a module by the venv path the entry point gives, not the resolved
    one; byte code compiled only under the other name would never be read."""
    link = tmp_path_factory.mktemp("l") / "c"
    link.symlink_to(tmp_path_factory.mktemp("c"))
    locked = _lock(tmp_path / "project", _xdg(tmp_path_factory, link))
    assert str(locked.venv).startswith(f"{link}/")
    run = _run(locked)
    assert run.environ["PYTHONPYCACHEPREFIX"] == str(locked.cache)
    assert any(p.startswith(f"{locked.cache}{locked.venv}/") for p in FROM_PYC.findall(run.stderr))
    assert FROM_SOURCE.findall(run.stderr) == [], "no module may be compiled in the jail"
    assert bytecode.present(str(locked.venv))
