"""The escape suite: each attempt runs in the real jail and must be stopped; where a layer
can be switched off, the same attempt runs without it and must get through, so the test
fails if the protection goes.

Every test runs in both jail kinds ([full] and [reduced], the `kind` fixture). The reduced
one is had the way a user gets it: the profile says `[sandbox] jail = "any"` and user
namespaces are really blocked, by tests/nouserns.py's seccomp filter installed on the one
thread of this process that starts those jails (nouserns.in_blocked_thread; the trampoline
inherits it). That runs the trampoline's real fallback (unshare fails with EPERM, then the
reduced checklist) rather than a spec that asks for the reduced jail, and leaves the rest
of the process free to start full jails; each start asserts which kind it got. Where the
reduced jail is weaker by design (README "The reduced jail": other processes in /proc,
no read-only mount behind Landlock, the host's mounts not nosuid, a TCP rule per port on
every address) the test asserts the weaker behaviour, so the README's table is checked;
where a different layer holds there, its control removes that layer.

Targets are canaries this test made under tmp_path (a fake home with a fake key, files,
sockets), its own loopback listeners and its own `sleep` process: an attempt that gets
through harms nothing else. The suite runs as root here and as an ordinary user in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nouserns import in_blocked_thread

from mcpwrap.config.profile import load_profile
from mcpwrap.sandbox import landlock, launch
from mcpwrap.sandbox import spec as jail_spec

PROBE = str(Path(__file__).parent / "fixtures" / "escape_probe.py")
ROOT = os.getuid() == 0
FULL, REDUCED = "full", "reduced"
SCOPING = landlock.abi_version() >= 6  # signals and abstract sockets (reduced.py)


@dataclass
class Bed:
    """The canaries of one test."""

    tmp: Path
    project: Path
    outside: Path
    secret: Path
    profile: Path
    tcp_port: int
    udp: socket.socket
    sleeper: subprocess.Popen[bytes]
    kind: str = FULL

    @property
    def reduced(self) -> bool:
        return self.kind == REDUCED


@pytest.fixture(params=[FULL, REDUCED])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def bed(tmp_path: Path, kind: str) -> Iterator[Bed]:
    yield from _make_bed(tmp_path, kind)


@pytest.fixture
def var_bed(var_tmp_path: Path, kind: str) -> Iterator[Bed]:
    """A bed outside /tmp, where the jail can seal a directory (see var_tmp_path)."""
    yield from _make_bed(var_tmp_path, kind)


def _make_bed(tmp_path: Path, kind: str = FULL) -> Iterator[Bed]:
    """kind REDUCED: the profile accepts the reduced jail (jail = "any"); run_probe then
    starts it where user namespaces are blocked."""
    project, outside = tmp_path / "project", tmp_path / "outside"
    (project / "out").mkdir(parents=True)
    outside.mkdir()
    (project / "readonly.txt").write_text("read me\n")
    secret = tmp_path / "fakehome" / ".ssh" / "id_ed25519"
    secret.parent.mkdir(parents=True)
    secret.write_text("canary key\n")
    (outside / "canary.txt").write_text("outside\n")
    profile = project / "p.toml"
    profile.write_text(
        'version = 1\n[sandbox]\nread = ["{project}"]\nwrite = ["{project}/out"]\n'
        + ('jail = "any"\n' if kind == REDUCED else "")
        + 'memory = "256MiB"\nprocesses = 16\nopen_files = 64\ncpu = "1s"\n'
        f'[audit]\npath = "{tmp_path}/audit.jsonl"\n'
    )
    listener = socket.create_server(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.5)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        yield Bed(
            tmp_path,
            project,
            outside,
            secret,
            profile,
            listener.getsockname()[1],
            udp,
            sleeper,
            kind,
        )
    finally:
        listener.close()
        udp.close()
        sleeper.kill()
        sleeper.wait()


def run_probe(bed: Bed, attempt: str, *args: str, jail: bool = True, **off: bool) -> dict[str, Any]:
    """Run the probe in the bed's jail kind (or not); off={"seccomp": True} drops that
    layer, "landlock" the jail kind's Landlock rules, "pins" (full) the self-binds that
    keep protected paths' parents in place, "seal" (reduced) the sealed directories and
    their broker, "blocked" (reduced) the block on user namespaces around the jail (the
    profile's jail = "reduced" then chooses it)."""
    argv = [sys.executable, PROBE, attempt, *args]
    if not jail:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=bed.project)
        return _verdict(out.stdout, out.returncode)
    spec = jail_for(bed, argv)
    if off.get("seccomp"):
        spec["seccomp"] = None
    if off.get("landlock"):
        if bed.reduced:
            spec["reduced"]["landlock"] = None
        else:
            spec["landlock"] = None
    if off.get("pins"):
        spec["pins"] = []
    if off.get("seal"):
        spec["reduced"]["sealed"] = {}
    if off.get("blocked"):
        spec["jail"] = REDUCED
    return _run_spec(spec)


def start(spec: dict[str, Any]) -> launch.Jailed:
    """Start the jail the spec asks for and check it got that kind: jail = "any" (the
    reduced bed) starts where user namespaces are blocked, so it must be the reduced one."""
    if spec["jail"] == "any":
        child = in_blocked_thread(launch.start_jailed, spec)
    else:
        child = launch.start_jailed(spec)
    child.wait_ready()
    assert child.kind == (FULL if spec["jail"] == FULL else REDUCED), child.note
    return child


def _run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    child = start(spec)
    out, _ = child.process.communicate(timeout=30)
    return _verdict(out.decode(), child.process.returncode)


def jail_for(bed: Bed, argv: list[str]) -> dict[str, Any]:
    """The spec mcpwrap would give argv under the bed's profile."""
    profile = load_profile(str(bed.profile), state_dir=str(bed.tmp / "state"))
    env = {"PATH": os.environ["PATH"]}
    return jail_spec.build(profile, argv, env, str(bed.project), state_dir=str(bed.tmp / "state"))


def _verdict(stdout: str, returncode: int) -> dict[str, Any]:
    lines = stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines else {"escaped": False, "detail": "no output"}
    result["returncode"] = returncode
    return result


def stopped(result: dict[str, Any]) -> bool:
    return result["escaped"] is False or result["returncode"] != 0


# --- the filesystem --------------------------------------------------------------------


def test_secrets_in_home_are_not_there(bed: Bed) -> None:
    """Full: not in the new root. Reduced: on the host's tree, and Landlock refuses it."""
    assert stopped(run_probe(bed, "read_file", str(bed.secret)))
    assert not stopped(run_probe(bed, "read_file", str(bed.secret), jail=False))
    if bed.reduced:
        assert not stopped(run_probe(bed, "read_file", str(bed.secret), landlock=True))


@pytest.mark.parametrize("path", ["/run", "/var/lib", "/etc/shadow", "/etc/ssh", "/boot"])
def test_host_paths_outside_the_grants_are_not_there(bed: Bed, path: str) -> None:
    assert stopped(run_probe(bed, "list_dir" if not path.endswith("shadow") else "read_file", path))


def test_the_home_directory_shows_only_the_runtime_bound_from_it(bed: Bed) -> None:
    """The server's own runtime may live in the home (pyenv, nvm): only the directories
    leading to it appear, nothing else of the home."""
    home = os.path.expanduser("~")
    binds = jail_for(bed, [sys.executable, PROBE])["binds"]
    allowed = {p[len(home) + 1 :].split("/")[0] for p, _ in binds if p.startswith(home + "/")}
    result = run_probe(bed, "list_dir", home)
    shown = set(result["detail"].split(",")) if result["escaped"] and result["detail"] else set()
    assert shown <= allowed, f"{home} shows {shown - allowed} inside the jail"


def test_a_read_grant_is_read_only(bed: Bed) -> None:
    """Full: Landlock and a read-only bind. Reduced (weaker): Landlock alone, no mount
    behind it."""
    target = str(bed.project / "readonly.txt")
    assert not stopped(run_probe(bed, "read_file", target))
    assert stopped(run_probe(bed, "write_file", target))
    without_landlock = run_probe(bed, "write_file", target, landlock=True)
    if bed.reduced:
        assert not stopped(without_landlock), "the reduced jail has Landlock alone"
    else:
        assert stopped(without_landlock), "the mount is read-only too"
    assert not stopped(run_probe(bed, "write_file", target, jail=False))


def test_writing_outside_the_grants_fails(bed: Bed) -> None:
    target = str(bed.outside / "canary.txt")
    assert stopped(run_probe(bed, "write_file", target))
    assert not stopped(run_probe(bed, "write_file", target, jail=False))
    assert not stopped(run_probe(bed, "write_file", str(bed.project / "out" / "ok.txt")))
    if bed.reduced:
        assert not stopped(run_probe(bed, "write_file", target, landlock=True))


def test_symlinks_and_hardlinks_do_not_lead_out(bed: Bed) -> None:
    out, canary = str(bed.project / "out"), str(bed.outside / "canary.txt")
    assert stopped(run_probe(bed, "write_through_symlink", out, canary))
    assert not stopped(run_probe(bed, "write_through_symlink", out, canary, jail=False))
    readonly = str(bed.project / "readonly.txt")
    assert stopped(run_probe(bed, "hardlink_out", readonly, out))
    (bed.project / "out" / "hardlink").unlink(missing_ok=True)
    assert not stopped(run_probe(bed, "hardlink_out", readonly, out, jail=False))
    if bed.reduced:  # one filesystem, no mounts between: Landlock's refer rule stops it
        (bed.project / "out" / "hardlink").unlink(missing_ok=True)
        assert not stopped(run_probe(bed, "hardlink_out", readonly, out, landlock=True))


def _grant_write_on_the_project(bed: Bed) -> None:
    bed.profile.write_text(
        bed.profile.read_text().replace('write = ["{project}/out"]', 'write = ["{project}"]')
    )


def _make_protected(bed: Bed, *, hooks: bool = True) -> None:
    """Every protected path of the project, so that nothing needs sealing (but .git/hooks
    when hooks is False: .git gets objects/ instead)."""
    for sub in (".mcpwrap", ".git/hooks" if hooks else ".git/objects", ".vscode", ".cursor"):
        (bed.project / sub).mkdir(parents=True)
    (bed.project / ".claude").mkdir()
    for name in (".git/config", ".mcp.json", ".envrc", "p.lock"):
        (bed.project / name).write_text("original\n")


def test_protected_paths_stay_read_only_under_a_write_grant(var_bed: Bed) -> None:
    """A write grant on the project does not reach .mcpwrap/, .git/hooks, .git/config,
    client configs or the profile itself; every protected path exists here."""
    bed = var_bed
    _make_protected(bed)
    (bed.project / ".mcpwrap" / "p.toml").write_text("original\n")
    _grant_write_on_the_project(bed)
    targets = [
        ".git/config",
        ".mcp.json",
        ".envrc",
        ".mcpwrap/p.toml",
        ".git/hooks/pre-commit",
        ".vscode/mcp.json",
        ".cursor/mcp.json",
        ".claude/settings.json",
        "p.toml",
        "p.lock",
    ]
    for target in targets:
        assert stopped(run_probe(bed, "write_file", str(bed.project / target))), target
        if not bed.reduced:
            assert stopped(run_probe(bed, "write_file", str(bed.project / target), landlock=True))
    assert not stopped(run_probe(bed, "write_file", str(bed.project / "fine.txt")))
    assert (bed.project / ".git" / "config").read_text() == "original\n"
    assert not stopped(run_probe(bed, "write_file", str(bed.project / "fine.txt"), jail=False))
    if bed.reduced:  # no read-only binds: the seal (Landlock) is the one wall
        config = str(bed.project / ".git/config")
        assert not stopped(run_probe(bed, "write_file", config, landlock=True))


def test_a_protected_path_cannot_be_replaced_by_moving_its_parent_aside(var_bed: Bed) -> None:
    """`mv .git .git.moved && mkdir -p .git/hooks` would plant a hook. Full: the jail binds
    .git onto itself, and a mount point cannot be renamed. Reduced: the project is sealed
    (Landlock withholds the rename rights) and the broker refuses to move a protected
    path's ancestor."""
    bed = var_bed
    _make_protected(bed)
    _grant_write_on_the_project(bed)
    hook, git = str(bed.project / ".git/hooks/pre-commit"), str(bed.project / ".git")
    assert stopped(run_probe(bed, "plant", hook, git))
    assert not (bed.project / ".git.moved").exists()
    if bed.reduced:
        assert not stopped(run_probe(bed, "plant", hook, git, landlock=True, seal=True))
    else:
        assert not stopped(run_probe(bed, "plant", hook, git, pins=True)), "the pin stops it"
    assert (bed.project / ".git.moved" / "config").read_text() == "original\n"


MISSING = [".mcp.json", ".envrc", ".vscode/tasks.json", ".claude/settings.json", ".git/config"]


@pytest.mark.parametrize("target", MISSING)
def test_a_protected_path_that_does_not_exist_cannot_be_created(var_bed: Bed, target: str) -> None:
    """No mount can cover a name that does not exist: the jail seals the directory it
    would appear in (Landlock withholds the make rights there), and mcpwrap's broker makes
    the new names there that are not protected (tests/test_seal_broker.py), so existing
    files stay writable, new ones can be made, subdirectories keep the full grant."""
    bed = var_bed
    _grant_write_on_the_project(bed)
    assert stopped(run_probe(bed, "plant", str(bed.project / target)))
    assert not (bed.project / target.split("/", maxsplit=1)[0]).exists()
    assert not stopped(run_probe(bed, "write_file", str(bed.project / "readonly.txt")))
    assert not stopped(run_probe(bed, "write_file", str(bed.project / "out" / "new.txt")))
    assert not stopped(run_probe(bed, "write_file", str(bed.project / "new.txt"))), "brokered"
    # the reduced jail's broker refuses the name too: the control lifts seal and broker
    assert not stopped(
        run_probe(bed, "plant", str(bed.project / target), landlock=True, seal=bed.reduced)
    ), "Landlock's seal is what stops it"


def test_a_missing_protected_path_deeper_down_seals_only_its_way_there(var_bed: Bed) -> None:
    """.git exists without hooks/: .git and the project are sealed, out/ is not, and .git
    cannot be moved aside to make room for a fresh one."""
    bed = var_bed
    _make_protected(bed, hooks=False)
    _grant_write_on_the_project(bed)
    hook = str(bed.project / ".git/hooks/pre-commit")
    assert stopped(run_probe(bed, "plant", hook))
    assert stopped(run_probe(bed, "plant", hook, str(bed.project / ".git")))
    assert not (bed.project / ".git" / "hooks").exists()
    assert not stopped(run_probe(bed, "write_file", str(bed.project / ".git/objects/x")))
    assert not stopped(run_probe(bed, "plant", hook, landlock=True, seal=bed.reduced))


def test_a_setuid_binary_gives_no_other_uid(bed: Bed) -> None:
    """A setuid binary in the server's own install tree (bound read-only, executable)
    runs with the caller's uid: the binds are nosuid and no_new_privs is set. As root the
    test makes a setuid copy of `sleep` owned by nobody, and the same attempt outside the
    jail does get nobody's uid; as an ordinary user it cannot chown, so it checks that
    every mount the server can execute from is nosuid. Reduced (weaker): the host's own
    mounts, not all nosuid; no_new_privs alone keeps the uid."""
    install = bed.tmp / "install"
    install.mkdir()
    copy = install / "suidsleep"
    shutil.copy2(shutil.which("sleep") or "/bin/sleep", copy)
    if ROOT:
        os.chown(copy, 65534, 65534)
        os.chmod(copy, 0o4755)
        assert not stopped(run_probe(bed, "setuid_exec", str(copy), jail=False))
    spec = jail_for(bed, [sys.executable, PROBE, "setuid_exec", str(copy)])
    spec["binds"].append([str(install), "rx"])
    spec["landlock"]["execute"].append(str(install))
    if bed.reduced:
        spec["reduced"]["landlock"]["execute"].append(str(install))
    result = _run_spec(spec)
    assert result["escaped"] is False and result["returncode"] == 0, result
    assert result["detail"].startswith("uid real"), f"the copy must have run: {result}"
    spec = jail_for(bed, [sys.executable, PROBE, "exec_mounts_nosuid"])
    nosuid = _run_spec(spec)
    if bed.reduced:
        assert nosuid["escaped"] is True, "documented: the host's mounts, suid-capable"
    else:
        assert nosuid["escaped"] is False, nosuid["detail"]


def test_the_interpreter_cannot_be_rewritten(bed: Bed) -> None:
    assert stopped(run_probe(bed, "proc_self_exe"))


# --- processes and the kernel ------------------------------------------------------------


def test_the_server_has_the_same_uid_and_no_capabilities_at_all(bed: Bed) -> None:
    """As an ordinary user and as root alike: every capability set empty (securebits keep
    uid 0 from regaining any at exec), no_new_privs, a seccomp filter, the caller's uid.
    Reduced, as an ordinary user: the bounding set stays (emptying it takes CAP_SETPCAP,
    which only a user namespace would give); moot under no_new_privs, asserted here."""
    result = run_probe(bed, "privileges", str(os.getuid()))
    found = json.loads(result["detail"])
    if bed.reduced and not ROOT:
        caps = found["caps"]
        assert not any(caps[k] for k in ("CapInh", "CapPrm", "CapEff", "CapAmb")), found
        assert caps["CapBnd"] != 0, "documented: the bounding set is the user's"
        assert (found["no_new_privs"], found["seccomp"], found["uid"]) == ("1", "2", os.getuid())
    else:
        assert result["escaped"] is False, result["detail"]
    assert (
        json.loads(run_probe(bed, "privileges", str(os.getuid()), jail=False)["detail"])["seccomp"]
        == "0"
    )


def test_host_processes_are_invisible_and_unreachable(bed: Bed) -> None:
    """Full: a pid namespace. Reduced: no pid namespace, so /proc lists the host's
    processes (weaker, documented); signals are stopped by Landlock scoping (ABI 6+),
    below it they get through (weaker, documented)."""
    seen = run_probe(bed, "host_processes")
    if bed.reduced:
        assert not stopped(seen), "documented: the reduced jail's /proc shows them"
    else:
        assert stopped(seen)
    assert not stopped(run_probe(bed, "host_processes", jail=False))
    pid = str(bed.sleeper.pid)
    if bed.reduced and not SCOPING:
        assert not stopped(run_probe(bed, "signal_host", pid)), "documented: no scoping"
        return
    assert stopped(run_probe(bed, "signal_host", pid))
    assert bed.sleeper.poll() is None, "the canary process must still run"
    if bed.reduced:
        assert not stopped(run_probe(bed, "signal_host", pid, landlock=True)), "scoping"
    else:
        assert not stopped(run_probe(bed, "signal_host", pid, jail=False))


# Stopped by seccomp. "jail": with the filter off, the same call gets through inside the
# jail. "host": a second wall stops it even then (no CAP_NET_RAW, vm.unprivileged_
# userfaultfd, the perf paranoia level...), so the control runs it outside the jail, as
# root (as an ordinary user the kernel refuses these outside the jail too).
SECCOMP = [
    ("ptrace", "jail"),
    ("process_vm_readv", "jail"),
    ("io_uring", "jail"),
    ("new_user_namespace", "jail"),
    ("keyctl", "jail"),
    ("personality", "jail"),
    ("netlink_socket", "jail"),
    ("raw_socket", "host"),
    ("bpf", "host"),
    ("perf_event_open", "host"),
    ("userfaultfd", "host"),
]


@pytest.mark.parametrize(("attempt", "control"), SECCOMP, ids=[a for a, _ in SECCOMP])
def test_seccomp_stops(bed: Bed, attempt: str, control: str) -> None:
    """The same in both kinds. The reduced jail's control for a new user namespace runs
    without the test's own block on them (jail = "reduced" chooses it), which would
    otherwise stop the attempt with the jail's filter off."""
    assert stopped(run_probe(bed, attempt))
    if control == "jail":
        unblock = bed.reduced and attempt == "new_user_namespace"
        assert not stopped(run_probe(bed, attempt, seccomp=True, blocked=unblock))
    elif ROOT:
        assert not stopped(run_probe(bed, attempt, jail=False))


def test_32_bit_syscalls_kill_the_process(bed: Bed) -> None:
    result = run_probe(bed, "x32_syscall")
    assert result["returncode"] == -signal.SIGSYS
    assert not stopped(run_probe(bed, "x32_syscall", seccomp=True))


@pytest.mark.parametrize("attempt", ["mount_tmpfs", "tiocsti", "raise_rlimit"])
def test_no_capabilities_and_no_terminal(bed: Bed, attempt: str) -> None:
    """No layer can be removed here without harm (mounting over /tmp unjailed would hide
    the host's): the jail alone is asserted."""
    assert stopped(run_probe(bed, attempt, seccomp=True))


def test_limits_stop_fork_bombs_and_memory_hogs(bed: Bed) -> None:
    assert stopped(run_probe(bed, "fork_bomb", "16"))
    assert not stopped(run_probe(bed, "fork_bomb", "16", jail=False))
    half_gig = str(512 * 1024 * 1024)
    assert stopped(run_probe(bed, "memory_hog", half_gig))
    assert not stopped(run_probe(bed, "memory_hog", half_gig, jail=False))


# --- the network -----------------------------------------------------------------------


def test_no_tcp_to_host_loopback(bed: Bed) -> None:
    """Full: a network namespace of its own. Reduced: the host's network; seccomp refuses
    the socket (network = "none") and, without it, Landlock's TCP rules the port."""
    port = str(bed.tcp_port)
    assert stopped(run_probe(bed, "tcp_connect", "127.0.0.1", port))
    assert not stopped(run_probe(bed, "tcp_connect", "127.0.0.1", port, jail=False))
    if bed.reduced:
        assert stopped(run_probe(bed, "tcp_connect", "127.0.0.1", port, seccomp=True))
        both = {"seccomp": True, "landlock": True}
        assert not stopped(run_probe(bed, "tcp_connect", "127.0.0.1", port, **both))


def test_a_port_allowed_for_tcp_is_allowed_on_every_address(bed: Bed) -> None:
    """network = "allowlist" lets the server's TCP reach mcpwrap's proxy ports. Full: on
    the jail's own loopback only. Reduced (weaker, documented): a Landlock rule names a
    port, not an address, so a host service listening on that port number at another
    address is reachable too. Here the bed's listener stands for it: the spec allows its
    port as a proxy port would be, and stream sockets as allowlist's filter does."""
    spec = jail_for(bed, [sys.executable, PROBE, "tcp_connect", "127.0.0.1", str(bed.tcp_port)])
    spec["tcp_connect"] = [bed.tcp_port]
    if bed.reduced:
        spec["reduced"]["seccomp_net"] = "stream"
        assert not stopped(_run_spec(dict(spec))), "documented: the port is open on every address"
        spec["tcp_connect"] = []
    assert stopped(_run_spec(spec))


def test_no_udp_to_host_loopback(bed: Bed) -> None:
    port = str(bed.udp.getsockname()[1])
    run_probe(bed, "udp_send", "127.0.0.1", port)
    with pytest.raises(TimeoutError):
        bed.udp.recvfrom(64)  # full: the jail's loopback is its own; reduced: seccomp
    run_probe(bed, "udp_send", "127.0.0.1", port, jail=False)
    assert bed.udp.recvfrom(64)[0] == b"escaped"
    if bed.reduced:  # the host's loopback: nothing but the filter is in the way
        run_probe(bed, "udp_send", "127.0.0.1", port, seccomp=True)
        assert bed.udp.recvfrom(64)[0] == b"escaped"


def test_no_unix_sockets_of_host_services(bed: Bed) -> None:
    path = str(bed.outside / "service.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    name = f"mcpwrap-test-{os.getpid()}"
    abstract.bind("\0" + name)
    abstract.listen()
    try:
        for target in (path, "@" + name):
            assert stopped(run_probe(bed, "unix_connect", target)), target
            assert not stopped(run_probe(bed, "unix_connect", target, jail=False)), target
        if bed.reduced:  # seccomp; for the abstract name, Landlock scoping as well
            assert not stopped(run_probe(bed, "unix_connect", path, seccomp=True))
            abstract_off = run_probe(bed, "unix_connect", "@" + name, seccomp=True)
            assert stopped(abstract_off) is SCOPING
    finally:
        server.close()
        abstract.close()


# --- what crosses into the jail -----------------------------------------------------------


def test_no_fds_and_no_environment_cross(bed: Bed) -> None:
    assert stopped(run_probe(bed, "fds_and_env"))
    leaky = subprocess.run(
        [sys.executable, PROBE, "fds_and_env"],
        capture_output=True,
        text=True,
        env={**os.environ, "AWS_SECRET_ACCESS_KEY": "canary"},
        timeout=30,
    )
    assert json.loads(leaky.stdout)["escaped"] is True


def test_cpu_limit_ends_a_spinning_server(bed: Bed) -> None:
    result = run_probe(bed, "memory_hog", "1", jail=True)  # a quick one first: the jail works
    assert result["returncode"] == 0
    spin = [sys.executable, "-c", "while True: pass"]
    child = start(jail_for(bed, spin))
    assert child.process.wait(timeout=20) in (-signal.SIGXCPU, -signal.SIGKILL)
