"""The reduced jail: the trampoline's way where user namespaces cannot be had.

No namespace at all, so no new root, no pid 1 and no network of its own. The layers:

  outer: a child subreaper (PR_SET_CHILD_SUBREAPER), the per-run private directory made
  -> fork
  inner: PDEATHSIG -> setsid, umask -> rlimits (as root: the pids cgroup) -> capabilities
  dropped -> no_new_privs -> Landlock (the host's own tree: system dirs, the /etc
  allowlist, the runtime, the grants, a few devices, /proc read-only, the private dir;
  TCP only to the ports mcpwrap listens on; signals and abstract sockets scoped) -> fds
  above 2 closed -> seccomp (the deny-list, and only the sockets the network allows)
  -> (with a sealed directory) the notifying filter -> execve

Teardown without a pid namespace: the outer process supervises. When the server exits,
or on SIGUSR1 (mcpwrap's "kill it all", also its parent-death signal, so mcpwrap dying
ends the jail too), it kills the server's process group, then every descendant still
alive: orphans are reparented to it, so it kills its children until none is left. Then
it removes the private directory and exits as the server did.
"""

from __future__ import annotations

import os

from mcpwrap.sandbox import jail, kernel, landlock
from mcpwrap.sandbox.kernel import SetupError

# As in jail.py: _signal, not signal (enum), and no typing at run time: together ~15 ms
# on every start in this jail. Annotations are strings (__future__), read only by mypy.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from typing import Any
else:
    import _signal as signal

_PR_SET_CHILD_SUBREAPER = 36
KILL_ALL = signal.SIGUSR1
_NET_ABI, _SCOPE_ABI = 4, 6


def run(spec: dict[str, Any], status_fd: int, group: str, why: str) -> None:
    """The reduced checklist; `group` is the pids cgroup the outer process is in (root),
    `why` the reason user namespaces were not used. Never returns in the inner process."""
    reduced = spec["reduced"]
    abi = landlock.abi_version()
    missing = _missing(spec, abi, why)
    prepared = jail.prepare_seccomp(spec, reduced["seccomp_net"])
    if spec.get("egress") is not None:
        spec["tcp_connect"] = _egress(spec)
    private = _private_dir(reduced["private_base"])
    env = _private_env(spec["env"], private)
    kernel.prctl(_PR_SET_CHILD_SUBREAPER, 1, "teardown")
    pid = os.fork()
    if pid == 0:
        try:
            _inner(spec, env, private, status_fd, prepared=prepared, missing=missing)
        except SetupError as exc:
            jail.report(status_fd, exc)
        except Exception as exc:
            jail.report(status_fd, SetupError("jail", type(exc).__name__, 0, hint=str(exc)))
        os._exit(126)
    if group:  # the inner process is in the group now: only the jail counts
        leave = jail.open_parent_group(group)
        if leave is not None:
            jail.leave_group(leave)
    _supervise(pid, status_fd, spec["parent"], group, private)


def _missing(spec: dict[str, Any], abi: int, why: str) -> list[str]:
    """What the full jail would have had and this one has not; a layer the profile needs
    and the kernel lacks stops the run here."""
    missing = [f"namespaces (user, mount, pid, network, ipc, uts): {why}"]
    if abi == 0:
        raise SetupError(
            "landlock",
            "landlock_create_ruleset",
            0,
            hint="the reduced jail needs Landlock (Linux 5.13+, lsm=landlock): it is its only "
            "filesystem wall; enable it, or make user namespaces available for the full jail",
        )
    if abi < _NET_ABI:
        if spec.get("egress") is not None:
            raise SetupError(
                "landlock",
                "Landlock TCP rules",
                0,
                hint=f'network = "allowlist" in the reduced jail needs Landlock ABI {_NET_ABI} '
                f"(Linux 6.7+; this kernel has ABI {abi}) to keep TCP to mcpwrap's proxies; "
                'use network = "none", or make user namespaces available for the full jail',
            )
        if not spec.get("host_network"):
            missing.append(f"Landlock TCP rules (ABI {abi} < {_NET_ABI}; seccomp still refuses)")
    if abi < _SCOPE_ABI:
        missing.append(
            f"Landlock scoping of signals and abstract unix sockets (ABI {abi} < {_SCOPE_ABI}): "
            "the server can signal other processes of its user"
        )
    return missing


def _egress(spec: dict[str, Any]) -> list[int]:
    """network = "allowlist": the proxies listen on the host's loopback (there is no other
    here), bound by this process and handed to mcpwrap as in the full jail; Landlock then
    lets the server's TCP reach their ports alone. A tcp: forward cannot be had: its
    listener would need the service's own address, and Landlock's rules are by port only."""
    forwards = spec["egress"]["forwards"]
    if forwards:
        shown = ", ".join(f"tcp:{a}:{p}" for a, p in forwards)
        raise SetupError(
            "egress",
            "tcp: forwards",
            0,
            hint=f"{shown} needs the full jail's network namespace (the reduced jail can "
            'only offer the HTTP and SOCKS proxies): set [sandbox] jail = "full" and make '
            "user namespaces available (`mcpwrap doctor`), or reach the service through a "
            "proxy",
        )
    return jail.egress_listeners(spec, host=True)


def _private_dir(base: str) -> str:
    """A fresh 0700 directory holding the server's HOME and TMPDIR; leftovers of jails
    whose supervisor was killed are removed first."""
    _sweep(base)
    path = f"{base}/mcpwrap-jail-{os.getpid()}-{os.urandom(6).hex()}"
    try:
        os.mkdir(path, 0o700)
        os.mkdir(path + "/home", 0o700)
        os.mkdir(path + "/tmp", 0o700)
    except OSError as exc:
        raise SetupError("private directory", "mkdir", exc.errno or 0, path) from exc
    return path


def _sweep(base: str) -> None:
    try:
        names = [n for n in os.listdir(base) if n.startswith("mcpwrap-jail-")]
    except OSError:
        return
    for name in names:
        pid = name.split("-")[2]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _remove_tree(f"{base}/{name}")


def _remove_tree(path: str) -> None:
    """Best effort, never following a symlink the server left there: os.fwalk does not
    enter one, and unlink removes the link itself. Not shutil: with re, enum, bz2 and lzma
    it cost every run's teardown ~15 ms."""
    try:
        if os.stat(path, follow_symlinks=False).st_uid != os.getuid():
            return
        for _, dirs, files, fd in os.fwalk(path, topdown=False):
            for name in files:
                _unlink(name, fd)
            for name in dirs:  # a symlink to a directory is listed here, not entered
                try:
                    os.rmdir(name, dir_fd=fd)
                except NotADirectoryError:
                    _unlink(name, fd)
                except OSError:
                    pass
        os.rmdir(path)
    except OSError:
        pass


def _unlink(name: str, fd: int) -> None:
    try:  # noqa: SIM105 - contextlib would import collections and functools here
        os.unlink(name, dir_fd=fd)
    except OSError:
        pass


def _private_env(env: dict[str, str], private: str) -> dict[str, str]:
    """HOME and TMPDIR in the private directory (the spec names the full jail's /tmp)."""
    moved = {**env, "HOME": private + "/home", "TMPDIR": private + "/tmp"}
    cache = env.get("PYTHONPYCACHEPREFIX", "")
    if cache.startswith("/tmp/"):  # the full jail's private /tmp: here it is the host's
        moved["PYTHONPYCACHEPREFIX"] = private + cache[4:]
    return moved


# --- the inner process -------------------------------------------------------------------


def _inner(
    spec: dict[str, Any],
    env: dict[str, str],
    private: str,
    status_fd: int,
    *,
    prepared: Any,
    missing: list[str],
) -> None:
    kernel.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGKILL, "parent death signal")
    channel = jail.broker_channel(spec, spec["reduced"]["sealed"])
    os.setsid()
    os.umask(0o022)
    jail.set_limits(_rlimits(spec["rlimits"]))
    _drop_capabilities()
    kernel.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1, "no_new_privs")
    report = _landlock(spec, private)
    _enter_cwd(spec["cwd"], env["HOME"], report)
    jail.note(status_fd, "reduced", [*report.describe()], missing)
    jail.wait_for_go(spec)  # a held start: the server's files are verified first
    jail.close_fds_but(status_fd, *((channel.fileno(),) if channel is not None else ()))
    if prepared is not None:
        jail.load_seccomp(prepared)
    if channel is not None:
        jail.hand_over_listener(channel, report.directories, removals=True)
    try:
        os.execve(spec["exe"], spec["argv"], env)  # noqa: S606 - the server itself
    except OSError as exc:
        raise SetupError("exec", "execve", exc.errno or 0, spec["exe"]) from exc


def _rlimits(limits: dict[str, int]) -> dict[str, int]:
    """RLIMIT_NPROC counts every task of the uid on the host here (no user namespace of
    the jail's own): the limit is the user's tasks now plus [sandbox] processes. As root
    it does not apply at all; the pids cgroup holds instead (jail._pids_cgroup)."""
    nproc = limits.get("RLIMIT_NPROC")
    if nproc is None or os.getuid() == 0:
        return limits
    return {**limits, "RLIMIT_NPROC": nproc + _tasks_of(os.getuid())}


def _tasks_of(uid: int) -> int:
    count = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid == uid:
                count += len(os.listdir(f"/proc/{name}/task"))
        except OSError:
            continue  # gone meanwhile
    return count


def _drop_capabilities() -> None:
    """Root (or a process with capabilities) drops them all, as in the full jail. An
    ordinary user has none to drop and may not touch the bounding set (that needs
    CAP_SETPCAP): no_new_privs keeps execve from granting any."""
    with open("/proc/self/status", "rb") as f:
        status = f.read()
    line = status[status.index(b"\nCapPrm:") + 8 :].split(b"\n", 1)[0]
    if os.geteuid() == 0 or int(line.strip(), 16):
        kernel.drop_all_capabilities()
    else:
        kernel.prctl(kernel.PR_CAP_AMBIENT, kernel.PR_CAP_AMBIENT_CLEAR_ALL, "capabilities")


def _landlock(spec: dict[str, Any], private: str) -> landlock.Report:
    grants = spec["reduced"]["landlock"]
    if grants is None:  # the escape suite's control: the same jail without this layer
        return landlock.Report(0, 0, False, (), 0)
    try:
        return landlock.restrict(
            read=grants["read"],
            write=[*grants["write"], private],
            execute=grants["execute"],
            seal=grants["seal"],
            sealed_read_only=True,
            tcp_connect=spec.get("tcp_connect", ()),
            tcp=not spec.get("host_network"),
        )
    except landlock.LandlockError as exc:
        raise SetupError("landlock", exc.call, exc.errno, exc.path, exc.hint) from exc


def _enter_cwd(cwd: str, home: str, report: landlock.Report) -> None:
    """The working directory when a grant covers it, else the private home (stat and
    chdir pass Landlock, so a directory's existence says nothing about access)."""
    granted = [path for path, _, _, _ in report.directories]
    if any(cwd == g or cwd.startswith(g.rstrip("/") + "/") for g in granted):
        try:
            os.chdir(cwd)
            return
        except OSError:
            pass
    jail.start_in_home(cwd, home)


# --- the supervisor ------------------------------------------------------------------------


def _supervise(child: int, status_fd: int, parent: int, group: str, private: str) -> None:
    os.close(status_fd)
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):  # only the server may hold the pipes: EOF must mean its EOF
        os.dup2(null, fd)
    os.close(null)

    def forward(signum: int, frame: object) -> None:
        _kill(child, signum)

    def kill_all(signum: int, frame: object) -> None:
        _kill(child, signal.SIGKILL, group=True)
        _kill(child, signal.SIGKILL)  # before its setsid, the group is not its own

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    signal.signal(KILL_ALL, kill_all)
    # mcpwrap dying (even by SIGKILL) is "kill it all": a pid namespace would have done it.
    kernel.prctl(kernel.PR_SET_PDEATHSIG, KILL_ALL, "parent death signal")
    if os.getppid() != parent:
        kill_all(KILL_ALL, None)
    status = _wait(child)
    teardown(child)
    _remove_tree(private)
    if group:
        jail.remove_group(group)
    _exit_as(status)


def _wait(child: int) -> int:
    while True:
        try:
            pid, status = os.waitpid(-1, 0)  # adopted orphans are reaped as they come
        except ChildProcessError:
            os._exit(1)
        if pid == child:
            return status


def teardown(child: int) -> None:
    """Kill the server's group, then every child this subreaper has (orphans come to it
    as their parents die), until it has none: nothing of the server is left."""
    _kill(child, signal.SIGKILL, group=True)
    while True:
        for pid in _children():
            _kill(pid, signal.SIGKILL)
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _kill(pid: int, sig: int, *, group: bool = False) -> None:
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except OSError:
        return  # gone already, or a zombie


def _children() -> list[int]:
    found: list[int] = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children", "rb") as f:
                found += [int(p) for p in f.read().split()]
        except OSError:
            continue
    return found


def _exit_as(status: int) -> None:
    if os.WIFSIGNALED(status):  # die of the same signal, so mcpwrap reports it as such
        killer = os.WTERMSIG(status)
        if killer not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(killer, signal.SIG_DFL)
        os.kill(os.getpid(), killer)
    os._exit(os.waitstatus_to_exitcode(status))
