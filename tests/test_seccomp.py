"""mcpwrap.sandbox.seccomp on the real kernel: no mocks.

Each attempt runs in a forked child, which loads build(mode) (or no filter at all, for the
control run) and makes one raw syscall through ctypes. The child reports "ok" or the
errno's name over a pipe; if it dies of a signal, the parent reads that from the wait
status. Every refusal is also tried without a filter, and must not be refused in the
same way there: a rule removed from the filter makes its test fail.

The suite runs as root and as an ordinary user. A call that checks a capability before
its arguments (the mount calls, sethostname, raw sockets) is made inside a fresh user
namespace (`setup=_userns(...)`), where root and a user alike hold the namespace's
capabilities: its invalid arguments then give both the same EFAULT or EINVAL. Calls that
check a capability of the initial namespace first (reboot, swapon, kexec_load, acct,
init_module, syslog) cannot be told apart from a filter's EPERM as a user, and no test
makes them.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import shutil
import signal
import subprocess
import sys
import termios
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

import pytest

from mcpwrap.sandbox import seccomp

MODES = [m.value for m in seccomp.Mode]

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.unshare.argtypes = (ctypes.c_int,)

U64 = (1 << 64) - 1
BAD_FD = 2**31 - 1
HIGH = 1 << 32  # a bit the kernel drops from 32-bit arguments

CLONE_THREAD = 0x00010000
CLONE_NEW = {
    "NEWTIME": 0x80,
    "NEWNS": 0x00020000,
    "NEWCGROUP": 0x02000000,
    "NEWUTS": 0x04000000,
    "NEWIPC": 0x08000000,
    "NEWUSER": 0x10000000,
    "NEWPID": 0x20000000,
    "NEWNET": 0x40000000,
}
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_PACKET = 1, 2, 10, 16, 17
SOCK_STREAM, SOCK_DGRAM, SOCK_RAW = 1, 2, 3
SOCK_NONBLOCK, SOCK_CLOEXEC = 0o4000, 0o2000000
TIOCSTI, TIOCLINUX, TIOCGWINSZ = 0x5412, 0x541C, 0x5413
PER_LINUX32, ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC = 0x0008, 0x0040000, 0x0400000
KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING = 0, -3

NR = {
    "ioctl": 16, "getpid": 39, "socket": 41, "socketpair": 53, "clone": 56, "ptrace": 101,
    "personality": 135, "pivot_root": 155, "adjtimex": 159, "chroot": 161,
    "settimeofday": 164, "mount": 165, "umount2": 166, "sethostname": 170,
    "setdomainname": 171, "quotactl": 179, "clock_settime": 227, "add_key": 248,
    "request_key": 249, "keyctl": 250, "unshare": 272, "perf_event_open": 298,
    "name_to_handle_at": 303, "open_by_handle_at": 304, "clock_adjtime": 305, "setns": 308,
    "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312, "bpf": 321,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "clone3": 435, "pidfd_getfd": 438,
    "mount_setattr": 442, "quotactl_fd": 443, "statmount": 457, "listmount": 458,
    "lsm_set_self_attr": 460, "mseal": 462, "open_tree_attr": 467,
}  # fmt: skip
X32_SYSCALL_BIT = 0x40000000

Context = object
Setup = Callable[[], Context]
Attempt = Callable[[Context], int]  # 0 on success, else the errno


# --- running an attempt in a child ---------------------------------------------------------


def run(mode: str | None, attempt: Attempt, setup: Setup | None = None) -> str:
    """The outcome in a forked child: ok, an errno or signal name, exit N or raised ..."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rd)
        _child(mode, attempt, setup, wr)
    os.close(wr)
    with os.fdopen(rd, "rb") as pipe:
        report = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return signal.Signals(os.WTERMSIG(status)).name
    return report or f"exit {os.WEXITSTATUS(status)}"


def _child(mode: str | None, attempt: Attempt, setup: Setup | None, wr: int) -> NoReturn:
    try:
        context = setup() if setup else None
        if mode is not None:
            seccomp.build(mode).load()
        err = attempt(context)
        report = "ok" if err == 0 else errno.errorcode.get(err, str(err))
    except BaseException as exc:  # reported, never raised into the forked pytest
        report = f"raised {exc!r}"
    try:
        os.write(wr, report.encode())
    finally:
        os._exit(0)


def sys_call(nr: int, *args: int) -> int:
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(nr), *(ctypes.c_ulong(a & U64) for a in args))
    return ctypes.get_errno() if result == -1 else 0


def raw(name: str, *args: int) -> Attempt:
    return lambda _: sys_call(NR[name], *args)


def _userns(extra: int = 0) -> Setup:
    """A fresh user namespace (and `extra` ones it owns), before any filter is loaded."""

    def setup() -> None:
        if libc.unshare(CLONE_NEW["NEWUSER"] | extra) != 0:
            raise OSError(ctypes.get_errno(), "unshare")

    return setup


def _controlling_pty() -> int:
    """A pty that is this process's controlling terminal, as TIOCSTI needs for a user."""
    _master, slave = os.openpty()
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    return slave


_BYTE = ctypes.c_char(b"x")
_PAIR = (ctypes.c_int * 2)()


def _tty_ioctl(request: int) -> Attempt:
    def attempt(fd: Context) -> int:
        assert isinstance(fd, int)
        return sys_call(NR["ioctl"], fd, request, ctypes.addressof(_BYTE))

    return attempt


def _in_thread(attempt: Attempt) -> Attempt:
    """The attempt on a second thread: a bad-arch syscall must kill the whole process."""

    def threaded(context: Context) -> int:
        results: list[int] = []
        worker = threading.Thread(target=lambda: results.append(attempt(context)))
        worker.start()
        worker.join(timeout=30)  # only a thread killed alone (KILL_THREAD) leaves it hanging
        return results[0] if results else errno.ETIMEDOUT

    return threaded


def _int80_getpid(_: Context) -> int:
    """The i386 entry from 64-bit code: mov eax, 20 (i386 getpid); int 0x80; ret."""
    code = bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3])
    prot = mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=prot)
    page.write(code)
    stub = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    if stub() != os.getpid():
        raise AssertionError("int 0x80 getpid returned another pid")
    return 0


# --- the table -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    attempt: Attempt
    expect: dict[str, str]  # mode -> outcome
    setup: Setup | None = field(default=None, compare=False)


def both(outcome: str) -> dict[str, str]:
    return dict.fromkeys(MODES, outcome)


def case(name: str, attempt: Attempt, outcome: str, setup: Setup | None = None) -> Case:
    return Case(name, attempt, both(outcome), setup)


MNT = _userns(CLONE_NEW["NEWNS"])  # mount calls check the mount namespace's owner first
NET = _userns(CLONE_NEW["NEWNET"])  # raw and packet sockets: CAP_NET_RAW of the netns
UTS = _userns(CLONE_NEW["NEWUTS"])  # sethostname checks CAP_SYS_ADMIN before the length

REFUSED = [
    # ptrace family; PTRACE_TRACEME is harmless: the child exits without being stopped.
    case("ptrace TRACEME", raw("ptrace", 0), "EPERM"),
    case("process_vm_readv", raw("process_vm_readv", 0, 0, 1, 0, 1, 0), "EPERM"),
    case("process_vm_writev", raw("process_vm_writev", 0, 0, 1, 0, 1, 0), "EPERM"),
    case("kcmp", raw("kcmp", 0, 0, 99, 0, 0), "EPERM"),
    case("pidfd_getfd", raw("pidfd_getfd", BAD_FD, 0, 0), "EPERM"),
    # namespaces; unshare(CLONE_NEWUSER) succeeds unfiltered, in the child only.
    case("unshare NEWUSER", raw("unshare", CLONE_NEW["NEWUSER"]), "EPERM"),
    case("setns", raw("setns", BAD_FD, 0), "EPERM"),
    # With CLONE_THREAD but no CLONE_SIGHAND the kernel answers EINVAL before creating
    # anything, so the control run never forks.
    *(
        case(f"clone {name}", raw("clone", flag | CLONE_THREAD, 0, 0, 0, 0), "EPERM")
        for name, flag in CLONE_NEW.items()
    ),
    case("clone NEWNS|NEWUSER", raw("clone", 0x10020000 | CLONE_THREAD, 0, 0, 0, 0), "EPERM"),
    case("clone3", raw("clone3", 0, 0), "ENOSYS"),
    # mounts, with invalid pointers: nothing is ever mounted.
    case("mount", raw("mount", 0, 0, 1, 0, 0), "EPERM", MNT),
    case("umount2", raw("umount2", 0, 0), "EPERM", MNT),
    case("pivot_root", raw("pivot_root", 0, 0), "EPERM", MNT),
    case("chroot", raw("chroot", 0), "EPERM", MNT),
    case("open_tree", raw("open_tree", BAD_FD, 0, 0), "EPERM", MNT),
    case("move_mount", raw("move_mount", BAD_FD, 0, BAD_FD, 0, 0), "EPERM", MNT),
    case("fsopen", raw("fsopen", 0, 0), "EPERM", MNT),
    case("fsconfig", raw("fsconfig", BAD_FD, 0, 0, 0, 0), "EPERM", MNT),
    case("fsmount", raw("fsmount", BAD_FD, 0, 0), "EPERM", MNT),
    case("fspick", raw("fspick", BAD_FD, 0, 0), "EPERM", MNT),
    case("mount_setattr", raw("mount_setattr", BAD_FD, 0, 0, 0, 0), "EPERM", MNT),
    case("open_tree_attr (467)", raw("open_tree_attr", BAD_FD, 0, 0, 0, 0), "EPERM", MNT),
    case("statmount (457)", raw("statmount", 0, 0, 0, 0), "ENOSYS"),
    case("listmount (458)", raw("listmount", 0, 0, 0, 0), "ENOSYS"),
    case("io_uring_setup", raw("io_uring_setup", 0, 0), "ENOSYS"),
    case("io_uring_enter", raw("io_uring_enter", BAD_FD, 0, 0, 0, 0, 0), "ENOSYS"),
    case("io_uring_register", raw("io_uring_register", BAD_FD, 0, 0, 0), "ENOSYS"),
    # kernel interfaces; KEYCTL_GET_KEYRING_ID only reads the session keyring's id.
    case("keyctl", raw("keyctl", KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0), "EPERM"),
    case("add_key", raw("add_key", 0, 0, 0, 0, 0), "EPERM"),
    case("request_key", raw("request_key", 0, 0, 0, 0), "EPERM"),
    case("bpf", raw("bpf", 9999, 0, 0), "EPERM"),
    case("userfaultfd", raw("userfaultfd", 1 | 0x10000), "EPERM"),
    case("perf_event_open", raw("perf_event_open", 0, 0, -1, -1, 0), "EPERM"),
    case("name_to_handle_at", raw("name_to_handle_at", BAD_FD, 0, 0, 0, 0), "EPERM"),
    case("open_by_handle_at", raw("open_by_handle_at", BAD_FD, 0, 0), "EPERM"),
    case("lsm_set_self_attr (460)", raw("lsm_set_self_attr", 0, 0, 0, 0), "EPERM"),
    case("quotactl", raw("quotactl", 0xFFFFFFFF, 0, 0, 0), "EPERM"),
    case("quotactl_fd", raw("quotactl_fd", BAD_FD, 0xFFFFFFFF, 0, 0), "EPERM"),
    # the clock and host names, with invalid pointers or lengths: nothing changes.
    case("settimeofday", raw("settimeofday", 1, 0), "EPERM"),
    case("clock_settime", raw("clock_settime", 0, 0), "EPERM"),
    case("clock_adjtime", raw("clock_adjtime", 0, 0), "EPERM"),
    case("adjtimex", raw("adjtimex", 0), "EPERM"),
    case("sethostname", raw("sethostname", 0, -1), "EPERM", UTS),
    case("setdomainname", raw("setdomainname", 0, -1), "EPERM", UTS),
    # personality changes only the child's own persona when unfiltered.
    case("personality PER_LINUX32", raw("personality", PER_LINUX32), "EPERM"),
    case("personality ADDR_NO_RANDOMIZE", raw("personality", ADDR_NO_RANDOMIZE), "EPERM"),
    case("personality READ_IMPLIES_EXEC", raw("personality", READ_IMPLIES_EXEC), "EPERM"),
    case("personality 0xfffffffe", raw("personality", 0xFFFFFFFE), "EPERM"),
    case("personality PER_LINUX32|1<<32", raw("personality", PER_LINUX32 | HIGH), "EPERM"),
    # TIOCSTI pushes a byte into the child's own pty; as a user, with legacy_tiocsti
    # off, the kernel answers EIO instead (still not EPERM).
    case("ioctl TIOCSTI", _tty_ioctl(TIOCSTI), "EPERM", _controlling_pty),
    case("ioctl TIOCSTI|1<<32", _tty_ioctl(TIOCSTI | HIGH), "EPERM", _controlling_pty),
    case("ioctl TIOCLINUX", _tty_ioctl(TIOCLINUX), "EPERM", _controlling_pty),
    # sockets
    case("socket AF_UNIX", raw("socket", AF_UNIX, SOCK_STREAM, 0), "EAFNOSUPPORT"),
    case("socket AF_UNIX|1<<32", raw("socket", AF_UNIX | HIGH, SOCK_STREAM, 0), "EAFNOSUPPORT"),
    case(
        "socket AF_UNIX dgram", raw("socket", AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0), "EAFNOSUPPORT"
    ),
    case("socket AF_NETLINK", raw("socket", AF_NETLINK, SOCK_RAW, 0), "EAFNOSUPPORT"),
    case("socket AF_PACKET", raw("socket", AF_PACKET, SOCK_RAW, 0), "EAFNOSUPPORT", NET),
    case("socket AF_INET SOCK_RAW", raw("socket", AF_INET, SOCK_RAW, 1), "EPERM", NET),
    case(
        "socket AF_INET6 SOCK_RAW|SOCK_CLOEXEC",
        raw("socket", AF_INET6, SOCK_RAW | SOCK_CLOEXEC, 58),
        "EPERM",
        NET,
    ),
    # other architectures' entries
    case("int 0x80 (i386 getpid)", _int80_getpid, "SIGSYS"),
    case("int 0x80 from a thread", _in_thread(_int80_getpid), "SIGSYS"),
    case("x32 getpid", lambda _: sys_call(X32_SYSCALL_BIT | NR["getpid"]), "SIGSYS"),
    # newer than libseccomp's names: allowed by the deny-list, unlisted in strict
    Case("mseal (462)", raw("mseal", 0, 0, 0), {"default": "ok", "strict": "ENOSYS"}),
]

ALLOWED = [
    case("personality query", raw("personality", 0xFFFFFFFF), "ok"),
    case("personality query|1<<32", raw("personality", 0xFFFFFFFF | HIGH), "ok"),
    case("personality PER_LINUX", raw("personality", 0), "ok"),
    case("socket AF_INET stream", raw("socket", AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), "ok"),
    case("socket AF_INET6 dgram", raw("socket", AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK, 0), "ok"),
    case(
        "socketpair AF_UNIX",
        lambda _: sys_call(NR["socketpair"], AF_UNIX, SOCK_STREAM, 0, ctypes.addressof(_PAIR)),
        "ok",
    ),
    case("ioctl TIOCGWINSZ", _tty_ioctl(TIOCGWINSZ), "ok", _controlling_pty),
]


def _ids(cases: list[Case]) -> list[str]:
    return [c.name for c in cases]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("attempt", REFUSED + ALLOWED, ids=_ids(REFUSED + ALLOWED))
def test_filtered_outcome(mode: str, attempt: Case) -> None:
    assert run(mode, attempt.attempt, attempt.setup) == attempt.expect[mode]


@pytest.mark.parametrize("attempt", REFUSED, ids=_ids(REFUSED))
def test_unfiltered_is_not_refused_the_same_way(attempt: Case) -> None:
    outcome = run(None, attempt.attempt, attempt.setup)
    assert not outcome.startswith(("raised", "exit")), outcome  # setup worked, no crash
    assert outcome not in {v for v in attempt.expect.values() if v != "ok"}


# --- ordinary work and real runtimes -------------------------------------------------------


def _ordinary_work(_: Context) -> int:
    """A file read, a thread (glibc: clone3, then clone on ENOSYS) and a subprocess."""
    with open(__file__, "rb") as source:
        source.read()
    seen: list[int] = []
    worker = threading.Thread(target=lambda: seen.append(threading.get_native_id()))
    worker.start()
    worker.join()
    if not seen:
        raise AssertionError("the thread did not run")
    subprocess.run(["/bin/true"], check=True)
    return 0


@pytest.mark.parametrize("mode", MODES)
def test_ordinary_work_still_runs(mode: str) -> None:
    assert run(mode, _ordinary_work) == "ok"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the jail's Node servers cannot be tested")
    return node


PYTHON_WORK = (
    "import os, subprocess, threading; os.urandom(16); "
    "t = threading.Thread(target=print); t.start(); t.join(); "
    "subprocess.run(['/bin/true'], check=True)"
)
# Node probes io_uring at start (libuv) and must fall back; fs.promises uses its thread pool.
NODE_WORK = (
    "const fs = require('fs'); fs.readFileSync('/etc/hostname'); "
    "fs.promises.readFile('/etc/hostname').then(() => process.exit(0))"
)


def _exec(argv: list[str]) -> Attempt:
    def attempt(_: Context) -> int:
        os.execv(argv[0], argv)

    return attempt


RUNTIMES: dict[str, Callable[[], list[str]]] = {
    "python": lambda: [sys.executable, "-I", "-c", PYTHON_WORK],
    "node": lambda: [_node(), "-e", NODE_WORK],
    "true": lambda: ["/bin/true"],
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("program", list(RUNTIMES))
def test_a_runtime_execs_and_exits_0_under_the_filter(mode: str, program: str) -> None:
    assert run(mode, _exec(RUNTIMES[program]())) == "exit 0"


# --- the module's own surface --------------------------------------------------------------


def test_an_unknown_mode_is_refused_with_the_modes_named() -> None:
    with pytest.raises(seccomp.SeccompError) as caught:
        seccomp.build("paranoid")
    assert caught.value.step == "build"
    assert "'paranoid'" in str(caught.value)
    assert all(m in str(caught.value) for m in MODES)


def _refused_load(_: Context) -> int:
    """A filter already in place refuses seccomp(): load() must say so, with the errno."""
    import pyseccomp

    prepared = seccomp.build("default")
    blocker = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    blocker.add_rule(pyseccomp.ERRNO(errno.EPERM), "seccomp")
    blocker.load()
    try:
        prepared.load()
    except seccomp.SeccompError as exc:
        if exc.step != "load" or "seccomp(" not in str(exc) or "EPERM" not in str(exc):
            raise AssertionError(str(exc)) from exc
        return exc.errno
    return 0


def test_a_refused_load_names_the_step_call_and_errno() -> None:
    assert run(None, _refused_load) == "EPERM"


@pytest.mark.parametrize("mode", MODES)
def test_describe_names_every_guarded_escape(mode: str) -> None:
    text = "\n".join(seccomp.build(mode).describe())
    for word in (
        "x86_64",
        "ptrace",
        "clone3",
        "io_uring_setup",
        "TIOCSTI",
        "AF_INET",
        "SOCK_RAW",
        "personality",
        "lsm_set_self_attr",
        "mount",
        "keyctl",
        "bpf",
    ):
        assert word in text
    assert ("allow-list" in text) is (mode == "strict")


def test_importing_the_module_does_not_load_libseccomp() -> None:
    code = "import sys, mcpwrap.sandbox.seccomp; sys.exit('pyseccomp' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
