"""The jail trampoline: `python -I -B -m mcpwrap.sandbox.jail STATUS_FD SPEC_FD`.

A fresh, single-threaded interpreter that applies the layers in the order the anchors
agree on (shared/notes/sandbox.md), then execs the server:

  PDEATHSIG -> unshare(user, mount, net, pid, ipc, uts) -> uid/gid maps -> fork
  outer: stays outside the new pid namespace, forwards signals, exits as the server did
  inner (pid 1): hostname, loopback -> new root of binds, private /tmp, /proc, /dev ->
  pivot_root -> setsid, umask -> rlimits -> capabilities dropped -> no_new_privs ->
  Landlock -> (a held start) mcpwrap's go, once the server's files are verified ->
  fds above 2 closed -> seccomp -> (with a sealed directory) the notifying
  filter, its listener handed to mcpwrap -> execve

Where user namespaces cannot be had and the profile accepts it ([sandbox] jail = "any"),
or when it asks for it (jail = "reduced"), the same process goes on down the reduced
jail's checklist instead (reduced.py): unshare is atomic, so nothing was made yet.

The close-on-exec status pipe carries frames (a 4-byte length, then a marshalled dict):
a note of the jail kind and its layers, applied and missing, just before the last steps,
and for a failing step one report (step, call, errno, path, message), after which the
trampoline exits 126. A successful execve closes the pipe, so the host sees EOF. Killing
the inner process, pid 1, kills every process in the namespace.
"""

from __future__ import annotations

import fcntl
import marshal
import os
import resource
import struct
import sys
import time

# Imported here, before anything: after pivot_root mcpwrap's own files may not be in the
# new root at all, and after Landlock no import could read them anyway. bpf (the seccomp
# cache, both jails) too: imported while the trampoline still waits for its spec.
from mcpwrap.sandbox import bpf, kernel, landlock, unotify
from mcpwrap.sandbox.kernel import SetupError

# _signal, not signal (which pulls in enum), and no typing at run time (~8 ms): both would
# be on every jailed start. Annotations are strings (__future__), read only by mypy.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from typing import Any

    from mcpwrap.sandbox import userns
else:
    import _signal as signal

_DEVICES = ("null", "zero", "full", "random", "urandom")
_BASES = ("/mnt", "/media", "/srv", "/opt", "/run", "/var/tmp", "/tmp")


def main(argv: list[str]) -> None:
    status_fd, control_fd, go_fd = int(argv[1]), int(argv[2]), int(argv[3])
    os.set_inheritable(status_fd, False)  # passed in inheritable; execve must close it
    try:
        spec = _receive_spec(control_fd)
    except SetupError as exc:
        report(status_fd, exc)
        os._exit(126)
    if spec.get("hold"):
        spec["go"] = go_fd
    else:
        os.close(go_fd)
    try:
        _outer(spec, status_fd)
    except SetupError as exc:
        report(status_fd, exc)
        os._exit(126)
    except Exception as exc:  # a bug in the jail must still fail closed and say so
        report(status_fd, SetupError("jail", type(exc).__name__, 0, hint=str(exc)))
        os._exit(126)


def _receive_spec(control_fd: int) -> dict[str, Any]:
    """The spec and the sockets it names by index (egress, broker), from mcpwrap. The
    trampoline may have been started before the spec existed (launch.Trampoline): EOF
    means it is not needed after all."""
    import _socket

    channel = _socket.socket(fileno=control_fd)
    space = _socket.CMSG_SPACE(4 * 8)
    try:
        msg, ancillary, flags, _ = channel.recvmsg(1 << 22, space, _socket.MSG_CMSG_CLOEXEC)
    finally:
        channel.close()
    if not msg:
        os._exit(0)
    if flags & (_socket.MSG_TRUNC | _socket.MSG_CTRUNC):
        raise SetupError("jail", "recvmsg(spec)", 90, hint="the spec or its sockets came cut short")
    fds: list[int] = []
    for level, kind, data in ancillary:
        if (level, kind) == (_socket.SOL_SOCKET, _socket.SCM_RIGHTS):
            fds += struct.unpack(f"{len(data) // 4}i", data[: len(data) - len(data) % 4])
    spec: dict[str, Any] = marshal.loads(msg)  # noqa: S302 - from mcpwrap, by socketpair
    for key in ("egress", "broker"):
        if spec.get(key) is not None:
            spec[key]["fd"] = fds[spec[key]["fd"]]
    return spec


def _frame(data: dict[str, Any]) -> bytes:
    body = marshal.dumps(data)
    return struct.pack("<I", len(body)) + body


def report(status_fd: int, exc: SetupError) -> None:
    try:
        os.write(status_fd, _frame(exc.as_dict()))
    except OSError:
        pass  # mcpwrap is gone: nobody is left to tell


def note(status_fd: int, kind: str, applied: list[str], missing: list[str]) -> None:
    """Tell mcpwrap which jail this is and its layers, for the session record."""
    frame = _frame({"jail": kind, "applied": applied, "missing": missing})
    try:
        os.write(status_fd, frame)
    except OSError as exc:
        raise SetupError("jail", "write(status)", exc.errno or 0) from exc


def _outer(spec: dict[str, Any], status_fd: int) -> None:
    kernel.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGKILL, "parent death signal")
    if os.getppid() != spec["parent"]:  # mcpwrap died before the signal was armed
        os._exit(1)
    kind = spec.get("jail", "full")
    group = _pids_cgroup(spec)
    if kind == "reduced":
        _reduced(spec, status_fd, group, 'the profile asks for it ([sandbox] jail = "reduced")')
    found = _apparmor_probe()  # Ubuntu's AppArmor lets unshare work, then denies mounts
    if found is not None and not found.usable:
        _no_user_namespaces(spec, status_fd, group, found, 0)
    # Before unshare: a cache miss runs ldconfig, and the first fork after CLONE_NEWPID is
    # that namespace's pid 1 (its exit would leave no pid namespace for the server).
    prepared = prepare_seccomp(spec, "any")
    # network = "host" keeps the host's network namespace; everything else gets its own.
    net = 0 if spec.get("host_network") else kernel.CLONE_NEWNET
    try:
        kernel.unshare(
            kernel.CLONE_NEWUSER
            | kernel.CLONE_NEWNS
            | net
            | kernel.CLONE_NEWPID
            | kernel.CLONE_NEWIPC
            | kernel.CLONE_NEWUTS
        )
    except SetupError as exc:
        from mcpwrap.sandbox import userns  # only here: it imports typing (~8 ms)

        if exc.errno not in userns.UNAVAILABLE_ERRNOS:
            raise
        found = userns.classify(userns.facts()._replace(unshare_errno=exc.errno))
        _no_user_namespaces(spec, status_fd, group, found, exc.errno)
    _map_identity(spec["uid"], spec["gid"])
    leave = open_parent_group(group)
    pid = os.fork()
    if pid and leave is not None:
        # pid 1 is in the group now; the outer process leaves it so that only the jail counts.
        leave_group(leave)
    if pid == 0:
        if leave is not None:
            os.close(leave)
        try:
            _inner(spec, status_fd, prepared)
        except SetupError as exc:
            report(status_fd, exc)
        except Exception as exc:
            report(status_fd, SetupError("jail", type(exc).__name__, 0, hint=str(exc)))
        os._exit(126)
    _supervise(pid, status_fd, group)


def _apparmor_probe() -> userns.Availability | None:
    """Only where AppArmor restricts user namespaces (and not as root): a forked child
    tries what the jail would do, and the result decides. userns.needs_probe's rule,
    read here first so that other starts do not import userns (and typing, ~8 ms)."""
    if os.geteuid() == 0 or _sysctl(_APPARMOR_RESTRICT) != b"1":
        return None
    from mcpwrap.sandbox import userns

    facts = userns.facts()
    if not userns.needs_probe(facts):
        return None
    return userns.available()


_APPARMOR_RESTRICT = "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"


def _sysctl(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read().strip()
    except OSError:
        return b""


def _no_user_namespaces(
    spec: dict[str, Any], status_fd: int, group: str, found: userns.Availability, err: int
) -> None:
    """jail = "any": on down the reduced path (never returns). jail = "full": refuse,
    with the cause, its fix, the key that accepts the reduced jail, and doctor."""
    if spec.get("jail") == "any":
        _reduced(spec, status_fd, group, found.reason)
    from mcpwrap.sandbox import userns

    raise SetupError(
        "namespaces",
        "unshare(CLONE_NEWUSER)" if err else "user namespace probe",
        err,
        hint=f"{found.reason}. To fix: {found.fix}; {userns.ACCEPT_REDUCED}. "
        "`mcpwrap doctor` says more",
    )


def _reduced(spec: dict[str, Any], status_fd: int, group: str, why: str) -> None:
    from mcpwrap.sandbox import reduced

    if spec.get("reduced") is None:
        raise SetupError("jail", "reduced jail", 0, hint="the spec has no reduced part: a bug")
    reduced.run(spec, status_fd, group, why)
    os._exit(126)  # run() never returns: the supervisor and the server exit on their own


def prepare_seccomp(spec: dict[str, Any], net: str) -> Any:
    """The filter's BPF: from the cache in the state dir when the rules, mode, socket set
    and libseccomp are unchanged, else built (libseccomp, ~25 ms) and cached."""
    mode = spec.get("seccomp")
    if not mode:
        return None
    cache = spec.get("seccomp_cache") or ""
    key = bpf.cache_key(f"{mode}/{net}")
    path = os.path.join(cache, f"seccomp-{mode}-{net}-{key}.marshal") if cache else ""
    cached = bpf.load_cached(path) if path else None
    if cached is not None:
        return cached
    from mcpwrap.sandbox import seccomp

    try:
        prepared = seccomp.build(mode, net)
    except bpf.SeccompError as exc:
        raise SetupError("seccomp", exc.call, exc.errno, hint=exc.hint or str(exc)) from exc
    if path:
        bpf.store(path, prepared)
    return prepared


def _map_identity(uid: int, gid: int) -> None:
    """The same uid and gid inside as outside; setgroups denied, as unprivileged maps need."""
    kernel.write_file("/proc/self/setgroups", "deny", "user namespace")
    kernel.write_file("/proc/self/uid_map", f"{uid} {uid} 1\n", "user namespace")
    kernel.write_file("/proc/self/gid_map", f"{gid} {gid} 1\n", "user namespace")


def remove_group(group: str) -> None:
    """Best effort: cgroup v1 lets go of an exited task lazily, so the group may still be
    busy; the next jail's sweep removes it then. The server's exit is not held up for it."""
    for _ in range(3):
        try:
            os.rmdir(group)
            return
        except OSError:
            time.sleep(0.005)


def _pids_cgroup(spec: dict[str, Any]) -> str:
    """As root, RLIMIT_NPROC does not apply (the kernel exempts the initial user's uid 0),
    so [sandbox] processes becomes pids.max of a cgroup of the jail's own. Joined before the
    namespaces are made, so that pid 1 and all it starts are in it."""
    limit = spec["rlimits"].get("RLIMIT_NPROC")
    if os.getuid() != 0 or limit is None:
        return ""
    for base in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        if os.path.isfile(base + "/cgroup.procs") and _has_pids(base):
            parent = f"{base}/mcpwrap"
            os.makedirs(parent, exist_ok=True)
            _sweep(parent)
            if base.endswith("unified") or base == "/sys/fs/cgroup":
                try:  # v2: the controller must be on for children
                    kernel.write_file(parent + "/cgroup.subtree_control", "+pids", "rlimits")
                except SetupError:
                    pass
            group = f"{parent}/jail-{os.getpid()}"
            os.mkdir(group)
            kernel.write_file(group + "/pids.max", str(limit), "rlimits")
            kernel.write_file(group + "/cgroup.procs", str(os.getpid()), "rlimits")
            return group
    raise SetupError(
        "rlimits",
        "pids cgroup",
        2,
        "/sys/fs/cgroup",
        "as root, [sandbox] processes needs the pids cgroup controller "
        "(RLIMIT_NPROC does not apply to uid 0)",
    )


def open_parent_group(group: str) -> int | None:
    """The pids group's parent's cgroup.procs, opened before the fork: the outer process
    shares the new mount namespace with pid 1, whose pivot_root also moves the outer's
    root, after which /sys is no longer there to open (a race lost 1 start in 5 under
    load, with ENOENT)."""
    if not group:
        return None
    path = os.path.dirname(group) + "/cgroup.procs"
    try:
        return os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SetupError("rlimits", "open", exc.errno or 0, path) from exc


def leave_group(fd: int) -> None:
    """The outer process leaves the jail's pids group, through `open_parent_group`'s fd."""
    try:
        os.write(fd, str(os.getpid()).encode())
    except OSError as exc:
        raise SetupError("rlimits", "write cgroup.procs", exc.errno or 0) from exc
    finally:
        os.close(fd)


def _sweep(parent: str) -> None:
    """Remove groups left by jails whose supervisor was killed: rmdir refuses a group that
    still holds a process, and a group whose supervisor is alive is skipped, since it may
    not have joined it yet (jails start side by side: a client starts all its servers)."""
    for name in os.listdir(parent):
        pid = name.removeprefix("jail-")
        if name == pid or (pid.isdigit() and os.path.exists(f"/proc/{pid}")):
            continue
        try:
            os.rmdir(f"{parent}/{name}")
        except OSError:
            pass  # still in use, or not ours


def _has_pids(base: str) -> bool:
    if base.endswith("/pids"):
        return True
    try:
        with open(base + "/cgroup.controllers") as f:
            return "pids" in f.read().split()
    except OSError:
        return False


def _supervise(child: int, status_fd: int, group: str) -> None:
    """Outside the new pid namespace: pass stop signals on, then exit as the server did."""
    os.close(status_fd)
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):  # only the server may hold the pipes: EOF must mean its EOF
        os.dup2(null, fd)
    os.close(null)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: os.kill(child, signum))
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except ChildProcessError:
            os._exit(1)
    if group:
        remove_group(group)
    if os.WIFSIGNALED(status):  # die of the same signal, so mcpwrap reports it as such
        killer = os.WTERMSIG(status)
        if killer not in (signal.SIGKILL, signal.SIGSTOP):  # those cannot be caught anyway
            signal.signal(killer, signal.SIG_DFL)
        os.kill(os.getpid(), killer)
    os._exit(os.waitstatus_to_exitcode(status))


def _inner(spec: dict[str, Any], status_fd: int, prepared: Any) -> None:
    kernel.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGKILL, "parent death signal")
    kernel.sethostname("mcpwrap")
    if not spec.get("host_network"):
        _loopback_up()
    if spec.get("egress") is not None:
        spec["tcp_connect"] = egress_listeners(spec)
    channel = broker_channel(spec, spec.get("sealed"))  # before the new root hides _socket
    root = _build_root(spec)
    _enter_root(root)
    os.setsid()
    os.umask(0o022)
    set_limits(spec["rlimits"])
    kernel.drop_all_capabilities()
    kernel.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1, "no_new_privs")
    ruled = _landlock(spec)
    _enter_cwd(spec["cwd"], spec["env"]["HOME"])
    note(status_fd, "full", [], [])
    wait_for_go(spec)
    close_fds_but(status_fd, *((channel.fileno(),) if channel is not None else ()))
    if prepared is not None:
        load_seccomp(prepared)
    if channel is not None:
        hand_over_listener(channel, ruled)
    try:
        os.execve(spec["exe"], spec["argv"], spec["env"])  # noqa: S606 - the server itself
    except OSError as exc:
        raise SetupError("exec", "execve", exc.errno or 0, spec["exe"]) from exc


def wait_for_go(spec: dict[str, Any]) -> None:
    """A held start: mcpwrap verifies the server's files while the jail is built and
    sends one byte when they match; EOF means they did not, and nothing is run."""
    go = spec.get("go")
    if go is None:
        return
    try:
        ready = os.read(go, 1)
    except OSError as exc:
        raise SetupError("exec", "read(go)", exc.errno or 0) from exc
    if not ready:
        os._exit(125)  # mcpwrap refused the files and reports it itself
    os.close(go)


def close_fds_but(*keep: int) -> None:
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 65536)


def broker_channel(spec: dict[str, Any], sealed: Any) -> Any:
    """The socket mcpwrap's seal broker receives its listener on, when a directory is
    sealed in this jail (`sealed`: the kind's own; the channel is there when the other
    kind would seal). _socket, not socket: the wrapper module costs the jail ~10 ms."""
    broker = spec.get("broker")
    if broker is None or not sealed:
        return None
    import _socket

    return _socket.socket(fileno=broker["fd"])


def hand_over_listener(
    channel: Any, ruled: tuple[tuple[str, int, int, int], ...], *, removals: bool = False
) -> None:
    """The last filter: it stops the server's creating calls (with removals, its unlink
    and rmdir calls too) until mcpwrap answers them. Its listener goes to mcpwrap with the
    inodes Landlock put rules on, then leaves the jail (a listener kept here could let
    the server answer its own calls)."""
    import _socket

    try:
        listener = unotify.install(unotify.program(removals=removals))
    except OSError as exc:
        raise SetupError(
            "seal broker",
            "seccomp(SECCOMP_FILTER_FLAG_NEW_LISTENER)",
            exc.errno or 0,
            hint="the kernel lacks seccomp user notification (Linux 5.14+ is needed to "
            "create files in a sealed directory); create the protected paths yourself so "
            "that nothing needs sealing, or grant write on subdirectories only",
        ) from exc
    rights = struct.pack("i", listener)
    try:
        channel.sendmsg(
            [marshal.dumps(list(ruled))], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)]
        )
    except OSError as exc:
        raise SetupError("seal broker", "sendmsg(SCM_RIGHTS)", exc.errno or 0) from exc
    finally:
        channel.close()
        os.close(listener)


def load_seccomp(prepared: Any) -> None:
    from mcpwrap.sandbox import bpf  # already imported by _prepare_seccomp

    try:
        prepared.load()
    except bpf.SeccompError as exc:
        raise SetupError("seccomp", exc.call, exc.errno, hint=exc.hint or str(exc)) from exc


def _enter_cwd(cwd: str, home: str) -> None:
    if os.path.isdir(cwd):
        os.chdir(cwd)
        return
    start_in_home(cwd, home)


def start_in_home(cwd: str, home: str) -> None:
    """Not granted: the server starts in its private home and sees nothing of the host."""
    os.chdir(home)
    note = (
        f"mcpwrap: the server's working directory {cwd} is not in its grants; it starts in "
        "its private home instead (add the directory to [sandbox] read to share it)\n"
    )
    os.write(2, note.encode())


def _loopback_up() -> None:
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    fd = kernel.inet_dgram_socket()  # not the socket module: ~3 ms of every start
    try:
        request = struct.pack("16sH14s", b"lo", 0, b"\0" * 14)
        flags = struct.unpack("16sH14s", fcntl.ioctl(fd, siocgifflags, request))[1]
        fcntl.ioctl(fd, siocsifflags, struct.pack("16sH14s", b"lo", flags | iff_up, b"\0" * 14))
    except OSError as exc:
        raise SetupError("network", "ioctl(SIOCSIFFLAGS)", exc.errno or 0, "lo") from exc
    finally:
        os.close(fd)


def egress_listeners(spec: dict[str, Any], *, host: bool = False) -> list[int]:
    """Bind the proxy listeners and the tcp: forwards in this namespace (the reduced
    jail, `host`: the host's), hand them to mcpwrap, and point the server's environment at
    them: the ports its TCP may reach. On the host's loopback the proxy URLs carry the
    run's secret (proxyauth.py), which mcpwrap's proxies then require."""
    import socket  # only with network = "allowlist": ~3 ms

    egress = spec["egress"]
    made: list[tuple[str, list[Any] | None, socket.socket]] = []
    env = spec["env"]
    try:
        for kind in ("http", "socks"):
            sock = socket.create_server(("127.0.0.1", 0), backlog=128)
            made.append((kind, None, sock))
        for n, (address, port) in enumerate(egress["forwards"]):
            v6 = ":" in address
            if not v6 and not address.startswith("127."):
                _add_loopback_address(address, n)
            family = socket.AF_INET6 if v6 else socket.AF_INET
            made.append(
                ("tcp", [address, port], socket.create_server((address, port), family=family))
            )
    except OSError as exc:
        raise SetupError("egress", "bind", exc.errno or 0, str(exc)) from exc
    auth = f"mcpwrap:{egress['secret']}@" if host else ""
    http = f"http://{auth}127.0.0.1:{made[0][2].getsockname()[1]}"
    socks = f"socks5h://{auth}127.0.0.1:{made[1][2].getsockname()[1]}"
    local = ",".join(["localhost", "127.0.0.1", "::1", *(a for a, _ in egress["forwards"])])
    # ALL_PROXY names the HTTP proxy too, not SOCKS: httpx and httpx2 (the MCP SDK's
    # client) build a transport for every proxy variable when a client is made, and a
    # socks5h:// one raises ImportError without the optional socksio, even for requests
    # that would use HTTPS_PROXY. SOCKS5 is offered as SOCKS_PROXY, which they ignore.
    for name, value in (
        ("http_proxy", http),
        ("https_proxy", http),
        ("all_proxy", http),
        ("socks_proxy", socks),
        ("no_proxy", local),
    ):
        env[name] = env[name.upper()] = value
    env["NODE_USE_ENV_PROXY"] = "1"  # Node >= 22.21 / 24.5: fetch honours the variables
    if host:  # git would try each request without the credentials first (a refusal each)
        env["GIT_HTTP_PROXY_AUTHMETHOD"] = "basic"
    channel = socket.socket(fileno=egress["fd"])
    try:
        kinds = [(kind, target) for kind, target, _ in made]
        socket.send_fds(channel, [marshal.dumps(kinds)], [s.fileno() for _, _, s in made])
    except OSError as exc:
        raise SetupError("egress", "sendmsg(SCM_RIGHTS)", exc.errno or 0) from exc
    finally:
        channel.close()
    ports = [s.getsockname()[1] for _, _, s in made]
    for _, _, sock in made:
        sock.close()
    return ports


def _add_loopback_address(address: str, n: int) -> None:
    """A tcp: forward to a non-loopback IPv4 address: give lo an alias with it, so the
    server connects to the same address it would outside."""
    siocsifaddr, siocsifnetmask = 0x8916, 0x891C
    name = f"lo:{n}".encode()
    fd = kernel.inet_dgram_socket()
    try:
        for request, value in ((siocsifaddr, address), (siocsifnetmask, "255.255.255.255")):
            packed = struct.pack("16sH2s4s8s", name, 2, b"\0\0", _ipv4(value), b"\0" * 8)
            fcntl.ioctl(fd, request, packed)
    except OSError as exc:
        raise SetupError("egress", "ioctl(SIOCSIFADDR)", exc.errno or 0, address) from exc
    finally:
        os.close(fd)


def _ipv4(text: str) -> bytes:
    return bytes(int(part) for part in text.split("."))


# --- the new root ----------------------------------------------------------------------


def _build_root(spec: dict[str, Any]) -> str:
    kernel.mount("none", "/", None, kernel.MS_REC | kernel.MS_PRIVATE)
    sources = [b[0] for b in spec["binds"]]
    base = next((b for b in _BASES if os.path.isdir(b) and not _any_under(sources, b)), None)
    if base is None:
        raise SetupError("mounts", "choose a scratch mount point", 16, " ".join(_BASES))
    kernel.mount("tmpfs", base, "tmpfs", kernel.MS_NOSUID | kernel.MS_NODEV, "mode=0755,size=1m")
    root = base + "/root"
    os.mkdir(root)
    kernel.mount("tmpfs", root, "tmpfs", kernel.MS_NOSUID | kernel.MS_NODEV, "mode=0755,size=1m")
    _private_tmp(root, spec)
    for source, mode in sorted(spec["binds"], key=lambda b: b[0].count("/")):
        _bind(root, source, mode)
    _proc_and_dev(root)
    for path in spec.get("pins", ()):  # a mount point cannot be renamed away (EBUSY)
        _bind(root, path, "rw", source_root=root)
    for path in spec["protect"]:
        if os.path.lexists(root + path) and not os.path.islink(root + path):
            _bind(root, path, "ro", source_root=root)
    kernel.mount(
        "tmpfs",
        root,
        "tmpfs",
        kernel.MS_REMOUNT | kernel.MS_RDONLY | kernel.MS_NOSUID | kernel.MS_NODEV,
    )
    return root


def _any_under(paths: list[str], base: str) -> bool:
    return any(p == base or p.startswith(base.rstrip("/") + "/") for p in paths)


def _private_tmp(root: str, spec: dict[str, Any]) -> None:
    os.makedirs(root + "/tmp")
    size = spec.get("tmp_size", "256m")
    kernel.mount(
        "tmpfs",
        root + "/tmp",
        "tmpfs",
        kernel.MS_NOSUID | kernel.MS_NODEV,
        f"mode=1777,size={size}",
    )
    home = spec["env"].get("HOME", "/tmp/home")
    os.makedirs(root + home, mode=0o700, exist_ok=True)
    os.chown(root + home, spec["uid"], spec["gid"])


def _bind(root: str, source: str, mode: str, source_root: str = "") -> None:
    target = root + source
    if mode == "link":  # /bin -> usr/bin on merged-/usr systems: the same link inside
        if os.path.lexists(target):
            return  # a grant of its directory already brought the host's own link in
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.symlink(os.readlink(source), target)
        return
    real_source = source_root + source
    if os.path.isdir(real_source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.lexists(target):
            open(target, "w").close()
    kernel.mount(real_source, target, None, kernel.MS_BIND | kernel.MS_REC)
    flags = kernel.MS_BIND | kernel.MS_REMOUNT | kernel.MS_NOSUID | kernel.MS_NODEV
    if mode != "rw":
        flags |= kernel.MS_RDONLY
    if mode == "ro":
        flags |= kernel.MS_NOEXEC
    flags |= _locked_flags(target)
    kernel.mount("none", target, None, flags)


def _locked_flags(path: str) -> int:
    """Flags a bind keeps from its source: a remount inside a user namespace may not
    clear them, so they must be repeated."""
    st = os.statvfs(path)
    flags = 0
    for bit, flag in (
        (os.ST_NOSUID, kernel.MS_NOSUID),
        (os.ST_NODEV, kernel.MS_NODEV),
        (os.ST_NOEXEC, kernel.MS_NOEXEC),
        (os.ST_RDONLY, kernel.MS_RDONLY),
    ):
        if st.f_flag & bit:
            flags |= flag
    return flags


def _proc_and_dev(root: str) -> None:
    os.makedirs(root + "/proc", exist_ok=True)
    kernel.mount(
        "proc", root + "/proc", "proc", kernel.MS_NOSUID | kernel.MS_NODEV | kernel.MS_NOEXEC
    )
    dev = root + "/dev"
    os.makedirs(dev, exist_ok=True)
    kernel.mount("tmpfs", dev, "tmpfs", kernel.MS_NOSUID | kernel.MS_NOEXEC, "mode=0755,size=64k")
    for name in _DEVICES:
        open(f"{dev}/{name}", "w").close()
        kernel.mount(f"/dev/{name}", f"{dev}/{name}", None, kernel.MS_BIND)
        # A bind keeps its source's flags: the host's /dev may allow suid and exec.
        flags = kernel.MS_BIND | kernel.MS_REMOUNT | kernel.MS_NOSUID | kernel.MS_NOEXEC
        kernel.mount("none", f"{dev}/{name}", None, flags | _locked_flags(f"{dev}/{name}"))
    os.mkdir(dev + "/shm", 0o1777)
    kernel.mount(
        "tmpfs", dev + "/shm", "tmpfs", kernel.MS_NOSUID | kernel.MS_NODEV, "mode=1777,size=64m"
    )
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, f"{dev}/{name}")


def _enter_root(root: str) -> None:
    os.chdir(root)
    kernel.pivot_root(".", ".")  # the old root ends up stacked on the new one
    kernel.umount(".", kernel.MNT_DETACH)
    os.chdir("/")


# --- limits and Landlock ---------------------------------------------------------------


def set_limits(rlimits: dict[str, int]) -> None:
    for name, value in rlimits.items():
        kind = getattr(resource, name)
        try:
            resource.setrlimit(kind, (value, value))
        except (OSError, ValueError, OverflowError) as exc:
            hard = resource.getrlimit(kind)[1]
            # Python raises ValueError, without an errno, for a raise above the hard limit,
            # which no process in a new user namespace may do, root or not.
            above = hard != resource.RLIM_INFINITY and value > hard
            hint = (
                f"{value} is above this user's hard limit of {hard}: lower it in the "
                "profile's [sandbox] or raise the hard limit (ulimit -H, limits.conf)"
                if above
                else str(exc)
            )
            raise SetupError(
                "rlimits", f"setrlimit({name}, {value})", getattr(exc, "errno", 0) or 0, hint=hint
            ) from exc


def _landlock(spec: dict[str, Any]) -> tuple[tuple[str, int, int, int], ...]:
    """Apply the grants; return the directories given a rule (for the seal broker)."""
    grants = spec.get("landlock")
    if grants is None:
        return ()

    try:
        # network = "none": TCP refused as a second wall behind the empty namespace.
        report = landlock.restrict(
            read=grants["read"],
            write=grants["write"],
            execute=grants["execute"],
            seal=grants.get("seal", ()),
            tcp_connect=spec.get("tcp_connect", ()),
            tcp=not spec.get("host_network"),
        )
    except landlock.LandlockError as exc:
        raise SetupError("landlock", exc.call, exc.errno, exc.path, exc.hint) from exc
    return report.directories


if __name__ == "__main__":
    main(sys.argv)
