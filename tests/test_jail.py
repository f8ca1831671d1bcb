"""The jail as mcpwrap uses it: fail closed, enforce = false, doctor, teardown."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from wrapped import MCPWRAP, RAW_SERVER, Wrapped, audit_records, processes_with, write_profile

from mcpwrap.config.profile import load_profile
from mcpwrap.sandbox import launch
from mcpwrap.sandbox import spec as jail_spec

BLOCK_USERNS = 'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"'


def _blocked(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run argv where no user namespace can be created: the limit lives per user namespace,
    so a throwaway one with max_user_namespaces = 0 changes nothing on the host."""
    unshare = shutil.which("unshare")
    assert unshare, "util-linux's unshare is needed for this test"
    return subprocess.run(
        [unshare, "--user", "--map-root-user", "sh", "-c", BLOCK_USERNS, "sh", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_a_layer_that_cannot_be_applied_stops_the_run(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, "")
    out = _blocked([*MCPWRAP, "run", "--profile", str(profile), "--", *RAW_SERVER], tmp_path)
    assert out.returncode == 126, out.stderr
    assert "the sandbox could not be applied: namespaces: unshare" in out.stderr
    assert "user namespaces" in out.stderr and "enforce = false" in out.stderr
    assert not (tmp_path / "out" / "server.log").exists(), "the server must never have started"


def test_doctor_says_which_layer_is_missing(tmp_path: Path) -> None:
    out = _blocked([*MCPWRAP, "doctor"], tmp_path)
    assert out.returncode == 1
    assert "FAIL namespaces" in out.stdout and "to fix:" in out.stdout


def test_doctor_on_this_machine(tmp_path: Path) -> None:
    out = subprocess.run([*MCPWRAP, "doctor"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    for layer in ("namespaces", "Landlock", "seccomp", "jail end to end"):
        assert f"ok   {layer}" in out.stdout


@pytest.mark.parametrize("cwd", ["/", "home", "project"])
def test_a_grant_of_a_directory_holding_a_system_link_starts_from_anywhere(
    tmp_path: Path, cwd: str
) -> None:
    """/etc/os-release is a link the jail recreates; a grant of /etc brings it in too.
    Started from / this broke with FileExistsError and the advice to drop the sandbox."""
    body = '[sandbox]\nread = ["/etc", "{project}"]\nwrite = ["{project}/out"]\n'
    profile = write_profile(tmp_path, body + '[policy]\ndefault = "allow"\n')
    where = {"/": Path("/"), "home": Path.home(), "project": tmp_path}[cwd]
    with Wrapped(profile, RAW_SERVER, cwd=where, extra=["--project", str(tmp_path)]) as w:
        w.initialize()
        assert w.call("echo", {"text": "x"})["result"]["isError"] is False


def test_a_grant_of_the_whole_host_is_refused_by_run_and_by_doctor(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, '[sandbox]\nread = ["/"]\n[policy]\ndefault = "allow"\n')
    run = subprocess.run(
        [*MCPWRAP, "run", "--profile", str(profile), "--", *RAW_SERVER],
        cwd="/",
        input="",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == launch.LaunchError.exit_code, run.stderr
    assert "grants /, the whole filesystem" in run.stderr
    assert not (tmp_path / "out" / "server.log").exists(), "the server must never have started"
    doctor = subprocess.run(
        [*MCPWRAP, "doctor", "--profile", str(profile)],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert doctor.returncode == 1
    assert "FAIL profile's jail" in doctor.stdout and "grants /" in doctor.stdout


def test_doctor_finds_the_project_run_would_refuse(var_tmp_path: Path) -> None:
    out = subprocess.run(
        [*MCPWRAP, "doctor", "--profile", "server-filesystem"],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "FAIL project" in out.stdout and "root of the filesystem" in out.stdout
    ok = subprocess.run(
        [*MCPWRAP, "doctor", "--profile", "server-filesystem", "--project", str(var_tmp_path)],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stdout
    assert "ok   profile's jail" in ok.stdout


def test_enforce_false_runs_unsandboxed_and_says_so(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, '[sandbox]\nenforce = false\n[policy]\ndefault = "allow"\n')
    with Wrapped(profile, RAW_SERVER) as w:
        w.initialize()
        assert w.call("echo", {"text": "x"})["result"]["isError"] is False
        w.close()
        assert "enforce = false" in w.proc.stderr.read().decode()  # type: ignore[union-attr]
    start = audit_records(tmp_path / "audit.jsonl")[0]
    assert start["decision"] == "start" and start["sandbox"] == "off"


def test_a_jailed_run_is_recorded_as_such(tmp_path: Path) -> None:
    with Wrapped(write_profile(tmp_path, '[policy]\ndefault = "allow"\n'), RAW_SERVER) as w:
        w.initialize()
        w.close()
    record = audit_records(tmp_path / "audit.jsonl")[0]["sandbox"]
    assert record.startswith("jail: ") and "seccomp default" in record
    assert re.search(r"Landlock ABI \d+", record), record
    assert "sealed" not in record


def test_a_sealed_directory_is_reported_on_stderr_and_in_the_record(var_tmp_path: Path) -> None:
    body = '[policy]\ndefault = "allow"\n[sandbox]\nread = ["{project}"]\nwrite = ["{project}"]\n'
    with Wrapped(write_profile(var_tmp_path, body), RAW_SERVER) as w:
        w.initialize()
        w.close()
        stderr = w.proc.stderr.read().decode()  # type: ignore[union-attr]
    assert f"so {var_tmp_path} is sealed: the server itself creates nothing there" in stderr
    assert f"{var_tmp_path}/.mcp.json" in stderr and "Create those paths yourself" in stderr
    record = audit_records(var_tmp_path / "audit.jsonl")[0]["sandbox"]
    assert f"sealed: {var_tmp_path}; new names there made by mcpwrap's broker" in record


def test_a_seal_the_jail_cannot_hold_stops_the_run(tmp_path: Path) -> None:
    """Under the jail's private /tmp a seal would not hold (see guard_protected)."""
    body = '[sandbox]\nread = ["{project}"]\nwrite = ["{project}"]\n'
    with Wrapped(write_profile(tmp_path, body), RAW_SERVER) as w:
        w.proc.stdin.close()  # type: ignore[union-attr]
        assert w.proc.wait(timeout=30) != 0
        stderr = w.proc.stderr.read().decode()  # type: ignore[union-attr]
    assert "private /tmp" in stderr and ".mcp.json" in stderr, stderr
    assert not (tmp_path / "out" / "server.log").exists(), "the server must never have started"


def test_a_broken_layer_reports_step_call_and_errno(tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_text("version = 1\n")
    profile = load_profile(str(tmp_path / "p.toml"), state_dir=str(tmp_path))
    spec = jail_spec.build(
        profile, ["true"], {"PATH": "/usr/bin:/bin"}, str(tmp_path), state_dir=str(tmp_path)
    )
    spec["binds"].append(["/nonexistent-mcpwrap-test-path", "ro"])
    child = launch.start_jailed(spec)
    try:
        child.wait_ready()
        raise AssertionError("a bind of a missing path must fail the jail")
    except launch.SandboxError as exc:
        assert exc.report["step"] == "mounts" and exc.report["errno"] == 2
        assert "/nonexistent-mcpwrap-test-path" in str(exc)


def test_the_server_is_pid_1_and_mcpwrap_dying_kills_the_namespace(tmp_path: Path) -> None:
    marker = f"mcpwrap-test-ns-{os.getpid()}"
    script = tmp_path / "forker.py"
    script.write_text(
        "import subprocess, sys, json, os\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', sys.argv[1]],"
        " start_new_session=True)\n"
        "sys.stdin.readline()\n"  # the request first: an earlier answer is dropped as unknown
        "print(json.dumps({'jsonrpc': '2.0', 'id': 0, 'result': {'pid': os.getpid()}}), flush=True)\n"
        "import time; time.sleep(600)\n"
    )
    with Wrapped(write_profile(tmp_path, ""), [sys.executable, str(script), marker]) as w:
        w.send({"jsonrpc": "2.0", "id": 0, "method": "ping"})
        assert w.recv()["result"]["pid"] == 1
        w.proc.kill()  # SIGKILL: no cleanup code of mcpwrap runs at all
        w.proc.wait()
    import time

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and processes_with(marker):
        time.sleep(0.05)
    left = processes_with(marker)
    for pid in left:
        os.kill(pid, 9)
    assert not left, "a process of the jail outlived mcpwrap"


SPREADER = r"""
import json, subprocess, sys, time
# Four children each stay under RLIMIT_CPU (1 s a process) but together use 3.2 s.
burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.8: pass\ntime.sleep(60)"
children = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(4)]
for line in sys.stdin:
    msg = json.loads(line)
    if "id" in msg:
        print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {}}), flush=True)
"""


def test_the_cpu_limit_holds_for_the_whole_process_tree(tmp_path: Path) -> None:
    script = tmp_path / "spreader.py"
    script.write_text(SPREADER)
    profile = write_profile(tmp_path, '[sandbox]\nread = ["{project}"]\ncpu = "1s"\n')
    with Wrapped(profile, [sys.executable, str(script)]) as w:
        w.send({"jsonrpc": "2.0", "id": 1, "method": "ping"})
        w.recv()
        status = w.proc.wait(timeout=20)  # the client never closes: only the limit ends it
        assert "[sandbox] cpu = 1 s" in w.proc.stderr.read().decode()  # type: ignore[union-attr]
    assert status == 128 + 9
    kill = next(r for r in audit_records(tmp_path / "audit.jsonl") if r.get("decision") == "kill")
    assert kill["rule"] == "sandbox.cpu"


def test_resource_figures_are_the_servers_not_the_supervisors(tmp_path: Path) -> None:
    """busybox serves in ~1 MB; the Python supervisor outside the jail holds ~10 MB."""
    script = tmp_path / "server.sh"
    script.write_text((Path(__file__).parent / "fixtures" / "busybox_server.sh").read_text())
    body = '[sandbox]\nread = ["{project}"]\n[policy]\ndefault = "allow"\n'
    with Wrapped(write_profile(tmp_path, body), ["/bin/busybox", "sh", str(script)]) as w:
        w.initialize()
        w.call("echo", {}, msg_id=5)
        w.close()
    call = next(r for r in audit_records(tmp_path / "audit.jsonl") if r.get("event") == "call")
    assert 0 < call["peak_rss_kb"] < 8 * 1024, call["peak_rss_kb"]


def test_enforce_on_a_system_without_the_jail_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not Linux: stand-in by patching sys.platform in-process (the only way to be another
    OS on this machine); the run must refuse before any server starts."""
    from mcpwrap.commands import run as runner

    profile = write_profile(tmp_path, "")
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(launch.SandboxError, match=r"the jail needs Linux.*enforce = false"):
        runner.run(runner.RunOptions(profile=str(profile), command=tuple(RAW_SERVER)))
    assert not (tmp_path / "out" / "server.log").exists()


def test_the_cgroup_sweep_keeps_the_groups_of_live_jails(tmp_path: Path) -> None:
    """Jails start side by side (a client starts every server at once): one jail's sweep
    of leftover pids groups removed another's group between its mkdir and its joining
    it, and that jail failed with ENOENT on cgroup.procs."""
    from mcpwrap.sandbox import jail

    live = tmp_path / f"jail-{os.getpid()}"  # made, not joined yet
    dead = tmp_path / "jail-4194305"  # above any pid_max: its supervisor is gone
    other = tmp_path / "not-a-jail"
    for group in (live, dead, other):
        group.mkdir()
    jail._sweep(str(tmp_path))
    assert live.is_dir() and other.is_dir() and not dead.exists()


def test_the_trampolines_byte_code_is_written_once_where_none_was_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uv installs no byte code and mcpwrap never imports jail.py itself: without this,
    the trampoline (run with -B) compiled its modules from source at every start."""
    sandbox = tmp_path / "mcpwrap" / "sandbox"
    shutil.copytree(Path(launch.__file__).parent, sandbox)  # launch is in mcpwrap/sandbox
    shutil.rmtree(sandbox / "__pycache__", ignore_errors=True)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    launch._compile_trampoline(str(tmp_path))
    assert not (sandbox / "__pycache__").exists()  # the user asked for no byte code
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    launch._compile_trampoline(str(tmp_path))
    tag = sys.implementation.cache_tag
    made = {p.name for p in (sandbox / "__pycache__").iterdir()}
    assert made == {f"{m}.{tag}.pyc" for m in launch._TRAMPOLINE_MODULES}
    jail_pyc = sandbox / "__pycache__" / f"jail.{tag}.pyc"
    before = jail_pyc.stat().st_mtime_ns
    launch._compile_trampoline(str(tmp_path))
    assert jail_pyc.stat().st_mtime_ns == before  # up to date: not written again


def test_a_trampoline_started_early_and_not_needed_leaves_nothing_behind() -> None:
    """run starts the trampoline before it knows the profile (launch.prespawn); a run
    without a jail, or one that stops first, discards it: it exits, holding nothing."""
    early = launch.Trampoline()
    pid = early.process.pid
    assert early.process.poll() is None  # waiting for a spec
    early.discard()
    assert early.process.returncode is not None
    assert not os.path.exists(f"/proc/{pid}")  # reaped, not a zombie
    # Closed without a spec (mcpwrap gone before it sent one): it exits by itself.
    quiet = launch.Trampoline()
    quiet.control.close()
    assert quiet.process.wait(10) == 0
    os.close(quiet.status_r)
    os.close(quiet.go_w)
