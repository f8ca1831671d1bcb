"""Seccomp, the jail's last layer: built while the filesystem is whole, loaded before execve.

Two modes, both for x86_64 only. The filters hold the native architecture alone, so an
i386 syscall (`int 0x80`) or an x32 one (number | 0x40000000, which libseccomp checks for
on x86_64) meets the bad-architecture action: the whole process is killed (SIGSYS).

  default  a deny-list: every syscall runs except the groups of `_deny_groups()`, which
           fail with EPERM, or with ENOSYS where the runtimes have a fallback (clone3,
           io_uring, the newest mount calls), or with EAFNOSUPPORT for socket families.
  strict   the same deny-list, under an allow-list of what Python, Node and static Go or
           Rust binaries need to serve MCP over stdio (after systemd's @system-service);
           any other syscall fails with EPERM, and numbers newer than libseccomp's table
           with ENOSYS, so that runtimes probing a new call fall back.

Sockets, by the jail's network (`net`; the full jail's own network namespace is the wall
there, so "any" is its answer whatever the profile's network):

  any      AF_INET and AF_INET6 of any type but SOCK_RAW (the families above stay refused)
  stream   AF_INET and AF_INET6 SOCK_STREAM only: no UDP, no SCTP, no raw. The reduced jail
           with network = "allowlist": its TCP reaches only mcpwrap's proxies (Landlock)
  none     no socket() at all: the reduced jail with network = "none"

socketpair() stays in every case: libuv and asyncio need it, and it reaches nothing.

Strict is two stacked filters. libseccomp 2.5.4 refuses a rule whose action is the
default action (EACCES) and two comparisons of one argument in a rule (EINVAL), so "allow
ioctl except TIOCSTI" cannot be said under an EPERM default. The kernel runs every filter
and keeps the strictest answer (an errno beats allow); between two errnos the newest
filter's answer wins, so the deny-list is loaded last and its answers (ENOSYS for clone3,
EAFNOSUPPORT for sockets) are the same in both modes.

Argument checks compare the low 32 bits through a mask (SCMP_CMP_MASKED_EQ): the kernel
reads the socket family, the ioctl request, personality and clone's flags as 32-bit
values, so TIOCSTI | 1 << 32 is TIOCSTI to it and must be to the filter too.

build() compiles the rules with libseccomp, through pyseccomp (imported there, not here:
the jail trampoline imports this module early and should stay light), into BPF programs
held in memory. load() installs them with prctl and seccomp() alone, so nothing needs
libseccomp or the filesystem once the jail has hidden it.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from mcpwrap.sandbox.bpf import Prepared, SeccompError

__all__ = ["Mode", "Prepared", "SeccompError", "build"]  # Prepared and the error live in bpf

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

_libc = ctypes.CDLL(None, use_errno=True)

_LOW32 = 0xFFFFFFFF
_AF_INET = 2
_AF_INET6 = 10
_SOCK_RAW = 3
_SOCK_TYPE_MASK = 0xF  # SOCK_NONBLOCK and SOCK_CLOEXEC are or-ed in above these bits
_TIOCSTI = 0x5412  # pushes bytes into a terminal's input: the classic jail escape
_TIOCLINUX = 0x541C  # virtual-console selection and paste: the same escape on a VT

# CLONE_NEWTIME (0x80) shares its bit with clone()'s exit-signal byte, where 128 is no
# valid signal: refusing it there costs nothing and keeps the set whole.
_CLONE_NEW = {
    "CLONE_NEWTIME": 0x00000080,
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}

# x86_64 syscalls newer than libseccomp 2.5.4's table, named by number (kernel 6.18's
# arch/x86/entry/syscalls/syscall_64.tbl), each decided here for the deny-list (None
# allows); the strict allow-list lists none of them.
# uretprobe (335) and uprobe (336) are absent on purpose: 6.18 runs them past seccomp
# (they return from probes the host attached), so no rule could apply.
_BY_NUMBER: tuple[tuple[int, str, int | None], ...] = (
    # Mount-API readers: they can name mounts of other namespaces by id, and libmount
    # falls back to /proc/self/mountinfo on ENOSYS.
    (457, "statmount", errno.ENOSYS),
    (458, "listmount", errno.ENOSYS),
    (459, "lsm_get_self_attr", None),  # the caller's own labels, as /proc/self/attr
    (460, "lsm_set_self_attr", errno.EPERM),  # would relabel the caller
    (461, "lsm_list_modules", None),  # the active LSMs, as /sys/kernel/security/lsm
    (462, "mseal", None),  # only takes rights away from the caller's own memory
    # The *xattr calls relative to a directory fd: the deny-list allows their elders.
    (463, "setxattrat", None),
    (464, "getxattrat", None),
    (465, "listxattrat", None),
    (466, "removexattrat", None),
    (467, "open_tree_attr", errno.EPERM),  # open_tree with mount attributes: mount API
    # FS_IOC_FSGETXATTR / FSSETXATTR by path: the deny-list allows those ioctls.
    (468, "file_getattr", None),
    (469, "file_setattr", None),
)
_NAME_OF = {nr: name for nr, name, _ in _BY_NUMBER}
_NEWEST_REVIEWED = 469
# Numbers past the reviewed table fail with ENOSYS until someone reviews them (listns is
# 470 in 6.19). 512 on are x32's numbers, which the kernel refuses from x86_64 code.
_UNREVIEWED = range(_NEWEST_REVIEWED + 1, 512)
_NEWER_THAN_LIBSECCOMP = range(_BY_NUMBER[0][0], 512)

_DENY_HEADLINE = "deny-list: x86_64 only (i386 and x32 syscalls kill the process)"


class Mode(enum.StrEnum):
    DEFAULT = "default"
    STRICT = "strict"


class Net(enum.StrEnum):
    ANY = "any"
    STREAM = "stream"
    NONE = "none"


@dataclass(frozen=True)
class _Cmp:
    """(argument `arg` & mask) == want, on the argument's low 32 bits."""

    arg: int
    mask: int
    want: int


@dataclass(frozen=True)
class _Rule:
    syscall: str | int  # a name libseccomp knows, or an x86_64 number it does not
    err: int | None  # the errno the call fails with; None allows it
    when: tuple[_Cmp, ...] = ()


@dataclass(frozen=True)
class _Group:
    summary: str  # its describe() line
    rules: tuple[_Rule, ...]


def build(mode: str, net: str = Net.ANY) -> Prepared:
    """Build the filters of `mode` ("default" or "strict") in memory, without loading them;
    `net` says which sockets the jail may make (Net).

    Call it before the jail hides the filesystem: it dlopens libseccomp through pyseccomp.
    """
    chosen = _mode(mode)
    sockets = _net(net)
    sc = _import()
    deny = _deny_groups(sockets)
    lines = [_DENY_HEADLINE, *(g.summary for g in deny), _by_number_line()]
    programs = [_compile(sc, sc.ALLOW, deny)]
    if chosen is Mode.STRICT:
        allow = _allow_groups()
        lines = [_strict_headline(allow), *lines, *(g.summary for g in allow)]
        # Loaded first, so that the deny-list's errno wins where both filters refuse.
        programs.insert(0, _compile(sc, sc.ERRNO(errno.EPERM), allow))
    return Prepared(programs, lines)


E = TypeVar("E", bound=enum.Enum)


def _mode(mode: str) -> Mode:
    return _choice(Mode, "mode", mode)


def _net(net: str) -> Net:
    return _choice(Net, "net", net)


def _choice(kind: type[E], what: str, value: str) -> E:
    try:
        return kind(value)
    except ValueError:
        names = ", ".join(m.value for m in kind)
        raise SeccompError("build", f"{what} {value!r}", hint=f"use one of: {names}") from None


def _import() -> Any:
    try:
        import pyseccomp
    except (ImportError, OSError, RuntimeError) as exc:  # RuntimeError: no libseccomp.so
        hint = f"install libseccomp2 and the pyseccomp package ({exc})"
        raise SeccompError("build", "import pyseccomp", hint=hint) from exc
    if pyseccomp.system_arch() != pyseccomp.Arch.X86_64:
        hint = "mcpwrap's syscall tables are x86_64's; turn seccomp off on this machine"
        raise SeccompError("build", "seccomp_arch_native", hint=hint)
    return pyseccomp


# --- the rule tables --------------------------------------------------------------------


# Refused outright, group by group: (name, errno, syscalls).
_REFUSED: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("ptrace", errno.EPERM, ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp")),
    ("fd theft", errno.EPERM, ("pidfd_getfd",)),
    ("namespaces", errno.EPERM, ("unshare", "setns")),
    ("mounts", errno.EPERM, (
        "mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount", "fsopen",
        "fsconfig", "fsmount", "fspick", "mount_setattr",
    )),
    # glibc falls back to clone, whose flags a filter can read (clone3's are in memory);
    # io_uring's operations would bypass seccomp, and libuv falls back on ENOSYS.
    ("fallback", errno.ENOSYS, (
        "clone3", "io_uring_setup", "io_uring_enter", "io_uring_register",
    )),
    ("keyring", errno.EPERM, ("keyctl", "add_key", "request_key")),
    ("kernel interfaces", errno.EPERM, (
        "bpf", "perf_event_open", "userfaultfd", "lookup_dcookie", "open_by_handle_at",
        "name_to_handle_at",
    )),
    ("modules and boot", errno.EPERM, (
        "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
        "reboot",
    )),
    ("host admin", errno.EPERM, (
        "acct", "swapon", "swapoff", "syslog", "quotactl", "quotactl_fd", "nfsservctl",
    )),
    ("clock", errno.EPERM, ("settimeofday", "clock_settime", "clock_adjtime", "adjtimex")),
    ("host names", errno.EPERM, ("sethostname", "setdomainname")),
    # Port I/O and the LDT: nothing a server needs, and a history of kernel bugs.
    ("x86 legacy", errno.EPERM, ("iopl", "ioperm", "modify_ldt")),
)  # fmt: skip


def _deny_groups(net: Net = Net.ANY) -> tuple[_Group, ...]:
    """The deny-list: the whole of "default", and the filter loaded last in "strict"."""
    if net is Net.NONE:  # libseccomp refuses an unconditional rule beside masked ones
        sockets: tuple[_Group, ...] = (
            _fail("sockets (no network)", errno.EAFNOSUPPORT, ("socket",)),
        )
    else:
        sockets = (_socket_families(), _raw_sockets(), *_stream_only(net))
    return (
        *(_fail(name, err, calls) for name, err, calls in _REFUSED),
        *(_fail("newer than libseccomp", err, nrs) for err, nrs in _refused_by_number()),
        _clone_new(),
        _personality(),
        _terminal_injection(),
        *sockets,
        _fail("unreviewed", errno.ENOSYS, _UNREVIEWED),
    )


def _refused_by_number() -> list[tuple[int, tuple[int, ...]]]:
    """_BY_NUMBER's refusals, one (errno, numbers) pair per errno."""
    errnos = dict.fromkeys(err for _, _, err in _BY_NUMBER if err is not None)
    return [(e, tuple(nr for nr, _, err in _BY_NUMBER if err == e)) for e in errnos]


def _fail(name: str, err: int, syscalls: Sequence[str | int]) -> _Group:
    rules = tuple(_Rule(s, err) for s in syscalls)
    if isinstance(syscalls, range):
        listed = f"syscall numbers {syscalls.start}-{syscalls.stop - 1}"
    else:
        listed = ", ".join(_label(s) for s in syscalls)
    return _Group(f"{name}: {errno.errorcode[err]} {listed}", rules)


def _label(syscall: str | int) -> str:
    return f"{_NAME_OF.get(syscall, 'nr')}({syscall})" if isinstance(syscall, int) else syscall


def _clone_new() -> _Group:
    """clone() with any CLONE_NEW* flag: one rule per flag, each matching its bit."""
    rules = tuple(_Rule("clone", errno.EPERM, (_Cmp(0, bit, bit),)) for bit in _CLONE_NEW.values())
    return _Group("namespaces: EPERM clone with any CLONE_NEW* flag", rules)


def _personality() -> _Group:
    """personality: only PER_LINUX (0) and 0xffffffff, which reads the persona.

    Other personas turn off address randomisation or make data executable. libseccomp
    cannot say "neither 0 nor 0xffffffff" in one rule, but a 32-bit value other than
    those has some bit i set whose neighbour i+1 (mod 32) is clear, and neither of them
    has: so 32 two-bit masked comparisons, one rule each (rules are or-ed), match exactly
    the refused values.
    """
    rules = tuple(
        _Rule("personality", errno.EPERM, (_Cmp(0, 1 << i | 1 << (i + 1) % 32, 1 << i),))
        for i in range(32)
    )
    return _Group("personality: EPERM except PER_LINUX (0) and the 0xffffffff query", rules)


def _terminal_injection() -> _Group:
    rules = tuple(
        _Rule("ioctl", errno.EPERM, (_Cmp(1, _LOW32, request),))
        for request in (_TIOCSTI, _TIOCLINUX)
    )
    return _Group("terminal: EPERM ioctl TIOCSTI, TIOCLINUX (low 32 bits of the request)", rules)


def _inet_family() -> tuple[int, int]:
    """AF_INET and AF_INET6 as one masked pattern: they differ in bit 3 alone."""
    return _LOW32 & ~(_AF_INET ^ _AF_INET6), _AF_INET


def _socket_families() -> _Group:
    """socket() of any family but AF_INET/AF_INET6: EAFNOSUPPORT.

    Landlock cannot stop connect() to a pathname unix socket, so AF_UNIX goes too
    (socketpair stays). A family is outside the pattern when one of its fixed bits
    differs, so one single-bit comparison per fixed bit covers every other family, the
    ones future kernels add included.
    """
    mask, want = _inet_family()
    rules = tuple(
        _Rule("socket", errno.EAFNOSUPPORT, (_Cmp(0, 1 << i, ~want & 1 << i),))
        for i in range(32)
        if mask >> i & 1
    )
    return _Group("sockets: EAFNOSUPPORT every family but AF_INET, AF_INET6", rules)


def _raw_sockets() -> _Group:
    mask, want = _inet_family()
    raw = (_Cmp(0, mask, want), _Cmp(1, _SOCK_TYPE_MASK, _SOCK_RAW))
    return _Group(
        "sockets: EPERM SOCK_RAW for AF_INET, AF_INET6", (_Rule("socket", errno.EPERM, raw),)
    )


_SOCK_STREAM = 1


def _stream_only(net: Net) -> tuple[_Group, ...]:
    """The reduced jail with the proxies: it has no network namespace of its own, so no
    UDP (the host's loopback services would be reachable). Any type whose low four bits
    differ from SOCK_STREAM's in some bit: one single-bit comparison per bit (the flags
    SOCK_NONBLOCK and SOCK_CLOEXEC sit above them)."""
    if net is not Net.STREAM:
        return ()
    rules = tuple(
        _Rule("socket", errno.EPERM, (_Cmp(1, 1 << i, ~_SOCK_STREAM & 1 << i),)) for i in range(4)
    )
    return (_Group("sockets (proxies only): EPERM every type but SOCK_STREAM (no UDP)", rules),)


def _by_number_line() -> str:
    allowed = ", ".join(name for _, name, err in _BY_NUMBER if err is None)
    return f"newer than libseccomp: allowed {allowed}"


def _strict_headline(allow: Sequence[_Group]) -> str:
    count = sum(len(g.rules) for g in allow if g.rules[0].err is None)
    return f"allow-list: {count} syscalls, others EPERM, the deny-list's answers on top"


# --- the strict allow-list -------------------------------------------------------------

# After systemd's @system-service, without @keyring, @mount, @privileged calls, @aio and
# anything the deny-list refuses; clone, ioctl, personality and socket are allowed here
# and argument-checked by the deny-list stacked on top.
_ALLOWED: dict[str, tuple[str, ...]] = {
    "basic io": (
        "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev",
        "preadv2", "pwritev2", "lseek", "close", "close_range", "dup", "dup2", "dup3",
        "sendfile", "splice", "tee", "vmsplice", "copy_file_range",
    ),
    "files": (
        "open", "openat", "openat2", "creat", "access", "faccessat", "faccessat2", "stat",
        "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs", "getdents",
        "getdents64", "getcwd", "chdir", "fchdir", "readlink", "readlinkat", "mkdir",
        "mkdirat", "mknod", "mknodat", "rmdir", "rename", "renameat", "renameat2", "link",
        "linkat", "symlink", "symlinkat", "unlink", "unlinkat", "truncate", "ftruncate",
        "fallocate", "fadvise64", "readahead", "chmod", "fchmod", "fchmodat", "fchmodat2",
        "chown", "fchown", "fchownat", "lchown", "umask", "utime", "utimes", "utimensat",
        "futimesat", "fcntl", "flock", "ioctl", "getxattr", "lgetxattr", "fgetxattr",
        "setxattr", "lsetxattr", "fsetxattr", "listxattr", "llistxattr", "flistxattr",
        "removexattr", "lremovexattr", "fremovexattr", "inotify_init", "inotify_init1",
        "inotify_add_watch", "inotify_rm_watch", "fsync", "fdatasync", "sync", "syncfs",
        "sync_file_range", "memfd_create", "cachestat",
    ),
    "memory": (
        "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync",
        "mlock", "mlock2", "munlock", "mlockall", "munlockall", "membarrier", "mbind",
        "get_mempolicy", "set_mempolicy", "pkey_alloc", "pkey_free", "pkey_mprotect",
        "map_shadow_stack",
    ),
    "threads": (
        "clone", "set_tid_address", "set_robust_list", "get_robust_list", "rseq", "futex",
        "futex_waitv", "futex_wake", "futex_wait", "futex_requeue", "arch_prctl",
        "sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getparam",
        "sched_setparam", "sched_getscheduler", "sched_setscheduler", "sched_getattr",
        "sched_setattr", "sched_get_priority_max", "sched_get_priority_min",
        "sched_rr_get_interval", "getcpu", "gettid",
    ),
    "processes": (
        "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid",
        "kill", "tkill", "tgkill", "pidfd_open", "pidfd_send_signal", "getpid", "getppid",
        "getpgid", "getpgrp", "setpgid", "getsid", "setsid", "getuid", "geteuid", "getgid",
        "getegid", "getresuid", "getresgid", "getgroups", "setuid", "setgid", "setreuid",
        "setregid", "setresuid", "setresgid", "setgroups", "setfsuid", "setfsgid",
        "capget", "capset", "prctl", "personality", "getrlimit", "setrlimit", "prlimit64",
        "getrusage", "times", "getpriority", "setpriority", "ioprio_get", "ioprio_set",
        "uname", "sysinfo", "getrandom", "restart_syscall",
        # Each of these can only take rights away from the caller.
        "seccomp", "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
    ),
    "signals": (
        "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigsuspend",
        "rt_sigtimedwait", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "sigaltstack",
        "signalfd", "signalfd4", "pause",
    ),
    "time": (
        "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday",
        "time", "alarm", "getitimer", "setitimer", "timer_create", "timer_delete",
        "timer_getoverrun", "timer_gettime", "timer_settime", "timerfd_create",
        "timerfd_gettime", "timerfd_settime",
    ),
    "events": (
        "poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl",
        "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "pipe", "pipe2",
    ),
    # System V and POSIX IPC: the jail's own IPC namespace holds them.
    "ipc": (
        "shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semtimedop", "semctl",
        "msgget", "msgsnd", "msgrcv", "msgctl", "mq_open", "mq_unlink", "mq_timedsend",
        "mq_timedreceive", "mq_notify", "mq_getsetattr",
    ),
    "network": (
        "socket", "socketpair", "bind", "listen", "accept", "accept4", "connect",
        "getsockname", "getpeername", "getsockopt", "setsockopt", "sendto", "recvfrom",
        "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown",
    ),
}  # fmt: skip


def _allow_groups() -> tuple[_Group, ...]:
    """The strict allow-list, and ENOSYS for everything newer than libseccomp's names."""
    groups = [
        _Group(f"allow {name}: {len(calls)} syscalls", tuple(_Rule(c, None) for c in calls))
        for name, calls in _ALLOWED.items()
    ]
    newer = _fail("unlisted and newer than libseccomp", errno.ENOSYS, _NEWER_THAN_LIBSECCOMP)
    return (*groups, newer)


# --- libseccomp ---------------------------------------------------------------------------


def _compile(sc: Any, default: int, groups: Iterable[_Group]) -> bytes:
    """One filter as a BPF program: native x86_64 only, KILL_PROCESS for any other arch."""
    built = _libseccomp("seccomp_init", sc.SyscallFilter, default)
    for arch in (sc.Arch.X86, sc.Arch.X32):  # never there by default: make sure of it
        if built.exist_arch(arch):
            _libseccomp("seccomp_arch_remove", built.remove_arch, arch)
    # KILL is kill-thread in pyseccomp: a process must not outlive a bad-arch syscall.
    attr = sc.Attr.ACT_BADARCH
    _libseccomp(f"seccomp_attr_set({attr})", built.set_attr, attr, sc.KILL_PROCESS)
    for group in groups:
        for rule in group.rules:
            _add(sc, built, rule)
    return _export(built)


def _export(built: Any) -> bytes:
    """The program libseccomp would load. load() installs it with one seccomp() call,
    because libseccomp 2.5.4's seccomp_load reports the kernel's EPERM as EFAULT."""
    with os.fdopen(os.memfd_create("mcpwrap-seccomp", os.MFD_CLOEXEC), "w+b") as memfd:
        _libseccomp("seccomp_export_bpf", built.export_bpf, memfd)
        memfd.seek(0)
        return memfd.read()


def _add(sc: Any, built: Any, rule: _Rule) -> None:
    nr = rule.syscall if isinstance(rule.syscall, int) else _resolve(sc, rule.syscall)
    action = sc.ALLOW if rule.err is None else sc.ERRNO(rule.err)
    args = [sc.Arg(c.arg, sc.MASKED_EQ, c.mask, c.want) for c in rule.when]
    _libseccomp(f"seccomp_rule_add({_label(rule.syscall)})", built.add_rule, action, nr, *args)


def _resolve(sc: Any, name: str) -> int:
    # Negative: unknown, or a pseudo-number for a syscall x86_64 does not have.
    nr = int(sc.resolve_syscall(sc.Arch.NATIVE, name))
    if nr < 0:
        hint = "libseccomp has no x86_64 number for it: use the number (kernel syscall_64.tbl)"
        raise SeccompError("build", f"seccomp_syscall_resolve_name({name})", hint=hint)
    return nr


def _libseccomp(call: str, func: Any, *args: Any) -> Any:
    try:
        return func(*args)
    except OSError as exc:
        hint = "libseccomp refused mcpwrap's filter: a bug, please report it with this line"
        raise SeccompError("build", call, exc.errno or 0, hint) from exc
