"""The few Linux calls the jail needs that Python 3.11's os module lacks, through ctypes.

Every failure raises SetupError naming the step, the call, its arguments and errno, so
that the trampoline can report exactly which layer could not be applied.
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
# SECURE_NOROOT, NO_SETUID_FIXUP and NO_CAP_AMBIENT_RAISE with their locks, and KEEP_CAPS
# locked off (bit 4 stays clear): uid 0 gains no capabilities at execve, and nothing can
# turn that back on.
SECUREBITS_LOCKED_NOROOT = 0b1110_1111

_SYS_PIVOT_ROOT = 155
_SYS_CAPSET = 126

_libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    """A jail step that failed: what, where, and the errno."""

    def __init__(self, step: str, call: str, err: int, path: str = "", hint: str = "") -> None:
        self.step, self.call, self.errno, self.path, self.hint = step, call, err, path, hint
        where = f" on {path}" if path else ""
        if err:
            super().__init__(f"{step}: {call}{where} failed: {os.strerror(err)} (errno {err})")
        else:  # not a syscall: the hint is the whole story
            super().__init__(f"{step}: {call}{where}: {hint}")

    def as_dict(self) -> dict[str, object]:
        return {
            "step": self.step,
            "call": self.call,
            "errno": self.errno,
            "path": self.path,
            "message": str(self),
            "hint": self.hint,
        }


def _check(result: int, step: str, call: str, path: str = "") -> int:
    if result < 0:
        raise SetupError(step, call, ctypes.get_errno(), path)
    return result


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "namespaces", f"unshare({flags:#x})")


def mount(
    source: str, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    call = f"mount({source!r}, {fstype or 'none'}, {flags:#x})"
    _check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        "mounts",
        call,
        target,
    )


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), ctypes.c_int(flags)), "mounts", "umount2", target)


def pivot_root(new_root: str, put_old: str) -> None:
    _check(
        _libc.syscall(_SYS_PIVOT_ROOT, new_root.encode(), put_old.encode()),
        "mounts",
        "pivot_root",
        new_root,
    )


def prctl(option: int, arg: int, step: str) -> None:
    _check(
        _libc.prctl(
            ctypes.c_int(option),
            ctypes.c_ulong(arg),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
        ),
        step,
        f"prctl({option}, {arg})",
    )


def drop_all_capabilities() -> None:
    """Empty the bounding, ambient, inheritable, permitted and effective sets."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last_cap = int(f.read())
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, "capabilities")
    for cap in range(last_cap + 1):
        prctl(PR_CAPBSET_DROP, cap, "capabilities")
    prctl(PR_SET_SECUREBITS, SECUREBITS_LOCKED_NOROOT, "capabilities")
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: all zero
    _check(_libc.syscall(_SYS_CAPSET, header, data), "capabilities", "capset")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), "uts namespace", "sethostname")


def inet_dgram_socket() -> int:
    af_inet, sock_dgram_cloexec = 2, 2 | 0o2000000
    return _check(_libc.socket(af_inet, sock_dgram_cloexec, 0), "network", "socket(AF_INET)")


def write_file(path: str, text: str, step: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as exc:
        raise SetupError(step, f"write {text.strip()!r}", exc.errno or 0, path) from exc
