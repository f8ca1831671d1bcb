"""The reduced jail (no namespaces): chosen where user namespaces are blocked, and what it
holds. User namespaces are really blocked for mcpwrap here by tests/nouserns.py (a
seccomp filter on mcpwrap itself: see its docstring for why). Each escape class is tried
in the reduced jail, with a control showing the same attempt gets through without the
layer that stops it. `REDUCED` is the jail kind for tests/test_escape.py-style helpers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_escape import PROBE, Bed, _make_bed, _make_protected, _run_spec, jail_for, stopped
from wrapped import MCPWRAP, RAW_SERVER, Wrapped, audit_records, processes_with, write_profile

from mcpwrap.sandbox import account, landlock, launch, reduced

NOUSERNS = [sys.executable, str(Path(__file__).parent / "nouserns.py")]
REDUCED = "reduced"


def with_jail(profile: Path, kind: str) -> None:
    """Set [sandbox] jail in a profile that has a [sandbox] table."""
    text = profile.read_text()
    assert "[sandbox]\n" in text
    profile.write_text(text.replace("[sandbox]\n", f'[sandbox]\njail = "{kind}"\n', 1))


@pytest.fixture
def bed(var_tmp_path: Path) -> Iterator[Bed]:
    """test_escape's canaries, outside /tmp, with a profile asking for the reduced jail."""
    for made in _make_bed(var_tmp_path):
        with_jail(made.profile, REDUCED)
        yield made


def probe(bed: Bed, attempt: str, *args: str, **off: bool) -> dict[str, Any]:
    """The probe in the reduced jail; off={"landlock"|"seccomp"|"seal": True} drops that
    layer (the seal: no sealed directories, so no broker either)."""
    spec = jail_for(bed, [sys.executable, PROBE, attempt, *args])
    assert spec["jail"] == REDUCED
    if off.get("landlock"):
        spec["reduced"]["landlock"] = None
    if off.get("seccomp"):
        spec["seccomp"] = None
    if off.get("seal"):
        spec["reduced"]["sealed"] = {}
    return _run_spec(spec)


# --- choosing the jail ---------------------------------------------------------------------


def _run_blocked(profile: Path, *, blocked: bool = True) -> tuple[int, str, list[dict[str, Any]]]:
    """`mcpwrap run` with user namespaces blocked (or not), one call when it starts."""
    start = [*NOUSERNS, *MCPWRAP] if blocked else MCPWRAP
    with Wrapped(profile, RAW_SERVER, mcpwrap=start) as w:
        try:
            w.initialize()
            w.call("echo", {"text": "x"})
            refused = ""
        except (EOFError, OSError) as exc:  # refused: the error carries mcpwrap's stderr
            refused = str(exc)
        w.close()
        code = w.proc.wait(timeout=30)
        stderr = refused + w.proc.stderr.read().decode()  # type: ignore[union-attr]
    audit = profile.parent / "audit.jsonl"
    return code, stderr, audit_records(audit) if audit.exists() else []


def test_any_takes_the_reduced_jail_where_user_namespaces_are_blocked(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, '[policy]\ndefault = "allow"\n')
    with_jail(profile, "any")
    code, stderr, records = _run_blocked(profile)
    assert code == 0, stderr
    start = records[0]
    assert start["decision"] == "start" and start["jail"] == "reduced", start
    assert start["sandbox"].startswith("jail: reduced (no namespaces)")
    assert any("seccomp filter" in m for m in start["jail_missing"]), start["jail_missing"]
    assert any(line.startswith("Landlock ABI") for line in start["jail_layers"])
    assert "the server runs in the reduced jail" in stderr
    assert any(r.get("event") == "call" for r in records), "the server answered a call"
    # the control: the same profile where user namespaces work gets the full jail
    (tmp_path / "audit.jsonl").unlink()
    code, stderr, records = _run_blocked(profile, blocked=False)
    assert code == 0, stderr
    assert records[0]["jail"] == "full" and "jail_missing" not in records[0]


def test_full_refuses_and_says_why_and_what_to_do(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, '[policy]\ndefault = "allow"\n')
    with_jail(profile, "full")
    code, stderr, records = _run_blocked(profile)
    assert code == 126, stderr
    assert "unshare(CLONE_NEWUSER)" in stderr and "seccomp filter" in stderr
    assert 'jail = "any"' in stderr and "mcpwrap doctor" in stderr
    assert not any(r.get("event") == "call" for r in records), "the server never started"


def test_the_default_is_full(tmp_path: Path) -> None:
    code, stderr, _ = _run_blocked(write_profile(tmp_path, '[policy]\ndefault = "allow"\n'))
    assert code == 126 and 'jail = "any"' in stderr, stderr


def test_a_tcp_forward_needs_the_full_jail(tmp_path: Path) -> None:
    body = (
        '[policy]\ndefault = "allow"\n[sandbox]\njail = "reduced"\nnetwork = "allowlist"\n'
        'egress = ["tcp:10.1.2.3:5432"]\n'
    )
    code, stderr, _ = _run_blocked(write_profile(tmp_path, body), blocked=False)
    assert code == 126 and "tcp:10.1.2.3:5432" in stderr and 'jail = "full"' in stderr


# --- the filesystem --------------------------------------------------------------------


def test_files_outside_the_grants(bed: Bed) -> None:
    target = str(bed.outside / "canary.txt")
    assert stopped(probe(bed, "write_file", target))
    assert stopped(probe(bed, "read_file", target))
    assert not stopped(probe(bed, "write_file", str(bed.project / "out" / "ok.txt")))
    assert not stopped(probe(bed, "read_file", target, landlock=True)), "Landlock stops it"


def test_secrets_in_home(bed: Bed) -> None:
    assert stopped(probe(bed, "read_file", str(bed.secret)))
    assert stopped(probe(bed, "list_dir", str(Path.home())))
    assert not stopped(probe(bed, "read_file", str(bed.secret), landlock=True))


def test_private_home_and_tmp(bed: Bed) -> None:
    spec = jail_for(bed, [sys.executable, "-c", "import os; print(os.environ['HOME'])"])
    child = launch.start_jailed(spec)
    child.wait_ready()
    out, _ = child.process.communicate(timeout=30)
    home = out.decode().strip()
    assert "/mcpwrap-jail-" in home and home.endswith("/home")
    assert not os.path.exists(os.path.dirname(home)), "removed at the end of the run"


def test_the_private_directory_is_removed_without_following_links(tmp_path: Path) -> None:
    """The server may leave symlinks in its private directory: its removal takes the links,
    never what they point to."""
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "keep.txt").write_text("keep")
    (outside / "sub" / "keep.txt").write_text("keep")
    private = tmp_path / "mcpwrap-jail-1-x"
    (private / "home" / "deep").mkdir(parents=True)
    (private / "tmp").mkdir()
    (private / "home" / "deep" / "file").write_text("x")
    (private / "home" / "to-dir").symlink_to(outside)
    (private / "tmp" / "to-file").symlink_to(outside / "keep.txt")
    (private / "tmp" / "dangling").symlink_to(tmp_path / "nowhere")
    # control: the links do lead outside
    assert (private / "home" / "to-dir" / "sub" / "keep.txt").read_text() == "keep"
    reduced._remove_tree(str(private))
    assert not private.exists() and not private.is_symlink()
    assert sorted(p.relative_to(outside).as_posix() for p in outside.rglob("*")) == [
        "keep.txt",
        "sub",
        "sub/keep.txt",
    ]


def test_protected_paths_that_exist(bed: Bed) -> None:
    """No mounts: the project and .git are sealed read-only, mcpwrap's broker makes the
    other names there, and refuses to rename or remove the protected ones."""
    _make_protected(bed)
    _grant_write(bed)
    for target in (".git/config", ".mcp.json", ".envrc", ".git/hooks/pre-commit", "p.toml"):
        assert stopped(probe(bed, "write_file", str(bed.project / target))), target
    assert not stopped(probe(bed, "write_file", str(bed.project / "fine.txt")))
    assert not stopped(probe(bed, "write_file", str(bed.project / "readonly.txt")))
    assert not stopped(probe(bed, "write_file", str(bed.project / ".git/config"), landlock=True))
    assert (bed.project / ".git" / "config").read_text() == "original\n" + "escaped\n"


def test_protected_paths_cannot_be_moved_aside(bed: Bed) -> None:
    _make_protected(bed)
    _grant_write(bed)
    hook, git = str(bed.project / ".git/hooks/pre-commit"), str(bed.project / ".git")
    assert stopped(probe(bed, "plant", hook, git))
    assert not (bed.project / ".git.moved").exists()
    assert not stopped(probe(bed, "plant", hook, git, landlock=True, seal=True))
    assert (bed.project / ".git.moved" / "config").exists()


@pytest.mark.parametrize("target", [".mcp.json", ".vscode/tasks.json", ".git/config"])
def test_protected_paths_that_do_not_exist(bed: Bed, target: str) -> None:
    _grant_write(bed)
    assert stopped(probe(bed, "plant", str(bed.project / target)))
    assert not (bed.project / target.split("/", maxsplit=1)[0]).exists()
    assert not stopped(probe(bed, "plant", str(bed.project / target), landlock=True, seal=True))


def _grant_write(bed: Bed) -> None:
    bed.profile.write_text(
        bed.profile.read_text().replace('write = ["{project}/out"]', 'write = ["{project}"]')
    )


# --- processes -----------------------------------------------------------------------------


NO_CAPS_SLEEPER = (
    "import ctypes, time\n"
    "data = (ctypes.c_uint32 * 6)()\n"  # no capabilities: as root too, the same uid may read
    "ctypes.CDLL(None).syscall(126, (ctypes.c_uint32 * 2)(0x20080522, 0), data)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def test_other_processes_environment(bed: Bed) -> None:
    """/proc is readable (other processes are visible: a weaker class), but Landlock's
    ptrace restriction keeps their environ, mem and fds closed. The target has no
    capabilities, so that the capability-less jail of root could read it but for Landlock."""
    target = subprocess.Popen(
        [sys.executable, "-c", NO_CAPS_SLEEPER], env={"SECRET": "canary"}, stdout=subprocess.PIPE
    )
    try:
        assert target.stdout is not None and target.stdout.readline() == b"ready\n"
        pid = str(target.pid)
        assert stopped(probe(bed, "read_environ", pid))
        assert not stopped(probe(bed, "read_environ", pid, landlock=True))
    finally:
        target.kill()
        target.wait()
    assert not stopped(probe(bed, "host_processes")), "documented: /proc shows them"


def test_signals_to_other_processes(bed: Bed) -> None:
    pid = str(bed.sleeper.pid)
    assert stopped(probe(bed, "signal_host", pid))
    assert bed.sleeper.poll() is None
    assert not stopped(probe(bed, "signal_host", pid, landlock=True)), "Landlock scoping"


def test_no_new_namespaces(bed: Bed) -> None:
    assert stopped(probe(bed, "new_user_namespace"))
    assert not stopped(probe(bed, "new_user_namespace", seccomp=True))


def test_no_capabilities_and_seccomp(bed: Bed) -> None:
    """As root every set is emptied. An ordinary user has no capabilities, and may not
    empty the bounding set (that takes CAP_SETPCAP, which a user namespace would give):
    no_new_privs keeps execve from granting any, so the bounding set is moot there."""
    result = probe(bed, "privileges", str(os.getuid()))
    found = json.loads(result["detail"])
    assert found["no_new_privs"] == "1" and found["seccomp"] == "2", found
    assert found["uid"] == os.getuid()
    caps = found["caps"]
    assert not any(caps[k] for k in ("CapInh", "CapPrm", "CapEff", "CapAmb")), caps
    if os.getuid() == 0:
        assert result["escaped"] is False and caps["CapBnd"] == 0, found


DAEMON = r"""
import os, sys, time, json
marker = sys.argv[1]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", marker])
    os._exit(0)
sys.stdin.readline()  # the request first: an answer before it would be dropped as unknown
print(json.dumps({"jsonrpc": "2.0", "id": 0, "result": {}}), flush=True)
"""


def test_teardown_reaches_a_daemonised_grandchild(bed: Bed) -> None:
    marker = f"mcpwrap-reduced-daemon-{os.getpid()}"
    script = bed.project / "daemon.py"
    script.write_text(DAEMON)
    spec = jail_for(bed, [sys.executable, str(script), marker])
    child = launch.start_jailed(spec)
    child.wait_ready()
    child.process.communicate(timeout=30)
    _assert_gone(marker)
    # the control: the same server outside the jail leaves its daemon behind
    subprocess.run(
        [sys.executable, str(script), marker], check=True, stdout=subprocess.DEVNULL, timeout=30
    )
    _wait_for(marker)
    left = processes_with(marker)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left, "without the jail's teardown the daemon survives"


def test_mcpwrap_killed_takes_the_whole_tree_along(var_tmp_path: Path) -> None:
    marker = f"mcpwrap-reduced-kill-{os.getpid()}"
    script = var_tmp_path / "daemon.py"
    script.write_text(DAEMON + "import time\ntime.sleep(600)\n")
    profile = write_profile(var_tmp_path, "")
    with_jail(profile, REDUCED)
    with Wrapped(profile, [sys.executable, str(script), marker]) as w:
        w.send({"jsonrpc": "2.0", "id": 0, "method": "ping"})
        w.recv()
        _wait_for(marker)
        w.proc.kill()  # SIGKILL: no code of mcpwrap runs; the supervisor's parent-death signal
        w.proc.wait()
    _assert_gone(marker)


def _wait_for(marker: str) -> None:
    deadline = time.monotonic() + 5
    while not processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.02)


def _assert_gone(marker: str) -> None:
    deadline = time.monotonic() + 5
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.02)
    left = processes_with(marker)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, "a process of the reduced jail outlived it"


# --- the network -----------------------------------------------------------------------


def test_unix_sockets_of_host_services(bed: Bed) -> None:
    path = str(bed.outside / "service.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    name = f"mcpwrap-reduced-{os.getpid()}"
    abstract.bind("\0" + name)
    abstract.listen()
    try:
        for target in (path, "@" + name):
            assert stopped(probe(bed, "unix_connect", target)), target
        assert not stopped(probe(bed, "unix_connect", path, seccomp=True)), "seccomp stops it"
        both = {"seccomp": True, "landlock": True}
        assert stopped(probe(bed, "unix_connect", "@" + name, seccomp=True)), "scoping too"
        assert not stopped(probe(bed, "unix_connect", "@" + name, **both))
    finally:
        server.close()
        abstract.close()


def test_udp_to_the_host(bed: Bed) -> None:
    port = str(bed.udp.getsockname()[1])
    probe(bed, "udp_send", "127.0.0.1", port)
    with pytest.raises(TimeoutError):
        bed.udp.recvfrom(64)
    probe(bed, "udp_send", "127.0.0.1", port, seccomp=True)
    assert bed.udp.recvfrom(64)[0] == b"escaped"


def test_tcp_outside_the_allowed_ports(bed: Bed) -> None:
    port = str(bed.tcp_port)
    assert stopped(probe(bed, "tcp_connect", "127.0.0.1", port))
    assert stopped(probe(bed, "tcp_connect", "127.0.0.1", port, seccomp=True)), "Landlock TCP"
    both = {"seccomp": True, "landlock": True}
    assert not stopped(probe(bed, "tcp_connect", "127.0.0.1", port, **both))


# --- the account: README, doctor and check say the same -----------------------------------


def test_the_readme_table_is_the_account() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert account.readme_table() in readme, "README's reduced-jail table differs"
    assert "| class | in the reduced jail |" not in readme.replace(account.readme_table(), "")


def test_doctor_prints_the_account_where_user_namespaces_are_blocked(tmp_path: Path) -> None:
    abi = landlock.abi_version()
    blocked = subprocess.run(
        [*NOUSERNS, *MCPWRAP, "doctor"], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert "FAIL namespaces" in blocked.stdout, blocked.stdout + blocked.stderr
    for line in account.lines(abi):
        assert f"  {line}\n" in blocked.stdout
    assert f"{'holds':6} signals to other processes" in blocked.stdout, "ABI 6+ here"
    # the control: where user namespaces work and no profile accepts the reduced jail
    free = subprocess.run(
        [*MCPWRAP, "doctor"], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert "ok   namespaces" in free.stdout and "the reduced jail" not in free.stdout
    # ...and where a profile accepts it
    profile = write_profile(tmp_path, '[policy]\ndefault = "allow"\n')
    with_jail(profile, "any")
    accepted = subprocess.run(
        [*MCPWRAP, "doctor", "--profile", str(profile)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert account.lines(abi)[0] in accepted.stdout, accepted.stdout + accepted.stderr


def test_check_quotes_the_weaker_rows() -> None:
    from mcpwrap.commands import check

    for row in account.ACCOUNT:
        quoted = f"{row.escape}: {row.how}" in check._WEAKER
        assert quoted is (row.result in (account.WEAKER, account.SCOPED)), row


# Degrading by Landlock ABI: this machine has ABI 7, so the older kernels' answers are
# checked on the decision itself (a pure function of the spec and the ABI).
ABI_TABLE = [
    # abi, egress (allowlist), host network, refused?, missing layers named (besides namespaces)
    (0, False, False, "Landlock", []),
    (3, True, False, "ABI 4", []),
    (3, False, False, None, ["Landlock TCP rules", "Landlock scoping"]),
    (3, False, True, None, ["Landlock scoping"]),
    (4, True, False, None, ["Landlock scoping"]),
    (5, False, False, None, ["Landlock scoping"]),
    (6, True, False, None, []),
    (7, False, False, None, []),
]


@pytest.mark.parametrize(("abi", "egress", "host", "refused", "named"), ABI_TABLE)
def test_a_missing_layer_is_named_or_refused_by_abi(
    abi: int, egress: bool, host: bool, refused: str | None, named: list[str]
) -> None:
    from mcpwrap.sandbox import reduced
    from mcpwrap.sandbox.kernel import SetupError

    spec = {"egress": {"forwards": []} if egress else None, "host_network": host}
    if refused is not None:
        with pytest.raises(SetupError) as caught:
            reduced._missing(spec, abi, "blocked")
        assert refused in str(caught.value)
        return
    missing = reduced._missing(spec, abi, "blocked")
    assert missing[0].startswith("namespaces") and "blocked" in missing[0]
    assert len(missing) == 1 + len(named), missing
    assert all(m.startswith(n) for m, n in zip(missing[1:], named, strict=True)), missing
