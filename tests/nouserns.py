"""Run a command where user namespaces cannot be had: `python tests/nouserns.py CMD ...`.

Installs a seccomp filter on itself, then execs CMD, which inherits it with everything it
starts: unshare and clone with CLONE_NEWUSER fail with EPERM (as under Debian's
kernel.unprivileged_userns_clone = 0), clone3 with ENOSYS (its flags are in memory, out of
a filter's reach: glibc then falls back to clone). Chosen over a user namespace of the
test's own with max_user_namespaces = 0 because it works the same as root and as an
ordinary user, and leaves mcpwrap's own uid, files and cgroups as they are.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

_AUDIT_ARCH_X86_64 = 0xC000003E
_NR_CLONE, _NR_UNSHARE, _NR_CLONE3 = 56, 272, 435
_CLONE_NEWUSER = 0x10000000
_RET_ALLOW, _RET_ERRNO = 0x7FFF0000, 0x00050000
_EPERM, _ENOSYS = 1, 38
_LD, _JEQ, _JSET, _RET = 0x20, 0x15, 0x45, 0x06


def program() -> bytes:
    """(code, jump if true, jump if false, k); jumps count from the next instruction."""
    insns = [
        (_LD, 0, 0, 4),  # 0: arch
        (_JEQ, 0, 8, _AUDIT_ARCH_X86_64),  # 1: another arch: allow (10)
        (_LD, 0, 0, 0),  # 2: the syscall number
        (_JEQ, 3, 0, _NR_UNSHARE),  # 3: check its flags (7)
        (_JEQ, 2, 0, _NR_CLONE),  # 4: check its flags (7)
        (_JEQ, 5, 0, _NR_CLONE3),  # 5: ENOSYS (11)
        (_RET, 0, 0, _RET_ALLOW),  # 6
        (_LD, 0, 0, 16),  # 7: args[0], low 32 bits (the flags of both)
        (_JSET, 0, 1, _CLONE_NEWUSER),  # 8: EPERM (9), else allow (10)
        (_RET, 0, 0, _RET_ERRNO | _EPERM),  # 9
        (_RET, 0, 0, _RET_ALLOW),  # 10
        (_RET, 0, 0, _RET_ERRNO | _ENOSYS),  # 11
    ]
    return b"".join(struct.pack("<HBBI", *insn) for insn in insns)


class _Fprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def install() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS: needed without CAP_SYS_ADMIN
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    code = program()
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = _Fprog(len(code) // 8, ctypes.addressof(buf))
    if libc.syscall(317, 1, 0, ctypes.byref(fprog)) != 0:  # seccomp(SET_MODE_FILTER)
        raise OSError(ctypes.get_errno(), "seccomp(SECCOMP_SET_MODE_FILTER)")


_BLOCKED: list[ThreadPoolExecutor] = []  # the one thread, made at first use


def in_blocked_thread(fn: Callable[..., T], *args: object) -> T:
    """fn(*args) in a thread of this process that has the filter (a seccomp filter is per
    thread, and what that thread starts inherits it): a test can start one jail where user
    namespaces are blocked and the next one where they are not, in the same process."""
    if not _BLOCKED:
        _BLOCKED.append(ThreadPoolExecutor(1, "nouserns", initializer=install))
    return _BLOCKED[0].submit(fn, *args).result()


if __name__ == "__main__":
    install()
    os.execvp(sys.argv[1], sys.argv[1:])
