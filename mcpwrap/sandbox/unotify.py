"""Seccomp user notification (seccomp_unotify(2)): the filter that hands the jail's
creating calls to mcpwrap, and the ioctls mcpwrap answers them with. x86_64 only.

The filter stops open/openat with O_CREAT, creat, openat2 (its flags are in memory, so
always), mkdir, mkdirat, rename, renameat and renameat2 until the listener answers. It
refuses nothing itself: the other filters decide the rest and the kernel keeps the
strictest answer (an errno beats a notification). Non-native and x32 numbers are let
through here because the main filters kill the process for them.

If every copy of the listener is closed, the notified calls fail with ENOSYS: without
its broker the jail creates less, never more.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

NR_OPEN, NR_RENAME, NR_MKDIR, NR_CREAT = 2, 82, 83, 85
NR_OPENAT, NR_MKDIRAT, NR_RENAMEAT, NR_RENAMEAT2, NR_OPENAT2 = 257, 258, 264, 316, 437
O_CREAT = 0o100
NR_RMDIR, NR_UNLINK, NR_UNLINKAT = 84, 87, 263
_ALWAYS = (NR_CREAT, NR_MKDIR, NR_MKDIRAT, NR_RENAME, NR_RENAMEAT, NR_RENAMEAT2, NR_OPENAT2)
# The reduced jail's sealed directories are read-only to Landlock: removals go through
# mcpwrap too, which refuses those of protected paths and their ancestors.
REMOVALS = (NR_RMDIR, NR_UNLINK, NR_UNLINKAT)
_FLAGS_ARG = {NR_OPEN: 1, NR_OPENAT: 2}  # the argument holding open's flags

_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000
_RET_ALLOW = 0x7FFF0000
_RET_USER_NOTIF = 0x7FC00000
_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06

_SYS_SECCOMP = 317
_SET_MODE_FILTER = 1
_FLAG_TSYNC, _FLAG_NEW_LISTENER, _FLAG_TSYNC_ESRCH = 1, 1 << 3, 1 << 4

_RECV, _SEND = 0xC0502100, 0xC0182101  # _IOWR('!', 0 and 1, 80- and 24-byte structs)
_ID_VALID, _ADDFD = 0x40082102, 0x40182103  # _IOW('!', 2 and 3, u64 and 24 bytes)
_FLAG_CONTINUE = 1
_ADDFD_FLAG_SEND = 2


# --- the filter ---------------------------------------------------------------------------


def program(*, removals: bool = False) -> bytes:
    """The BPF program: struct sock_filter entries (code u16, jt u8, jf u8, k u32); with
    removals, unlink, unlinkat and rmdir are stopped too."""
    always = _ALWAYS + (REMOVALS if removals else ())
    insns: list[tuple[int, str, str, int]] = [  # (code, jump-if-true, jump-if-false, k)
        (_LD_ABS, "", "", 4),  # seccomp_data.arch
        (_JEQ, "", "allow", _AUDIT_ARCH_X86_64),
        (_LD_ABS, "", "", 0),  # seccomp_data.nr
        (_JGE, "allow", "", _X32_BIT),
        *((_JEQ, "notify", "", nr) for nr in always),
        *((_JEQ, f"flags{arg}", "", nr) for nr, arg in _FLAGS_ARG.items()),
        (_RET, "", "", _RET_ALLOW),
    ]
    labels = {"allow": _RET_ALLOW, "notify": _RET_USER_NOTIF}
    for arg in _FLAGS_ARG.values():  # the low 32 bits of args[arg]: open's flags are an int
        insns += [(_LD_ABS, f"@flags{arg}", "", 16 + 8 * arg), (_JSET, "notify", "allow", O_CREAT)]
    return _assemble(insns, labels)


def _assemble(insns: list[tuple[int, str, str, int]], returns: dict[str, int]) -> bytes:
    """Resolve jump labels: "@name" in an entry's jt slot marks it; the returns go last."""
    body = [(c, "" if t.startswith("@") else t, f, k) for c, t, f, k in insns]
    at = {t[1:]: i for i, (_, t, _, _) in enumerate(insns) if t.startswith("@")}
    for name, value in returns.items():
        at[name] = len(body)
        body.append((_RET, "", "", value))
    out = b""
    for i, (code, jt, jf, k) in enumerate(body):
        out += struct.pack("<HBBI", code, _jump(at, jt, i), _jump(at, jf, i), k)
    return out


def _jump(at: dict[str, int], label: str, i: int) -> int:
    if not label:
        return 0
    offset = at[label] - i - 1
    if not 0 <= offset < 256:
        raise ValueError(f"BPF jump to {label} out of range")
    return offset


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def install(filter_program: bytes) -> int:
    """Load the filter on every thread of the caller; return the listener fd (close-on-exec).
    Needs no_new_privs (or CAP_SYS_ADMIN). Raises OSError."""
    code = ctypes.create_string_buffer(filter_program, len(filter_program))
    fprog = _SockFprog(len(filter_program) // 8, ctypes.addressof(code))
    flags = _FLAG_NEW_LISTENER | _FLAG_TSYNC | _FLAG_TSYNC_ESRCH
    fd = _libc.syscall(_SYS_SECCOMP, _SET_MODE_FILTER, flags, ctypes.byref(fprog))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp(SECCOMP_FILTER_FLAG_NEW_LISTENER): {os.strerror(err)}")
    return int(fd)


# --- the listener -----------------------------------------------------------------------


class Notification:
    """A stopped syscall: its cookie, the caller's thread id (in the listener's pid
    namespace), the syscall number and its six raw arguments. A plain class, not a
    NamedTuple: the jail trampoline imports this module, and typing costs it ~8 ms."""

    __slots__ = ("args", "id", "nr", "pid")

    def __init__(self, id: int, pid: int, nr: int, args: tuple[int, ...]) -> None:
        self.id = id
        self.pid = pid
        self.nr = nr
        self.args = args


class _Notif(ctypes.Structure):
    _fields_ = (
        ("id", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("nr", ctypes.c_int32),
        ("arch", ctypes.c_uint32),
        ("ip", ctypes.c_uint64),
        ("args", ctypes.c_uint64 * 6),
    )


class _Resp(ctypes.Structure):
    _fields_ = (
        ("id", ctypes.c_uint64),
        ("val", ctypes.c_int64),
        ("error", ctypes.c_int32),
        ("flags", ctypes.c_uint32),
    )


class _AddFd(ctypes.Structure):
    _fields_ = (
        ("id", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("srcfd", ctypes.c_uint32),
        ("newfd", ctypes.c_uint32),
        ("newfd_flags", ctypes.c_uint32),
    )


class Gone(OSError):
    """The caller is gone (killed, or its syscall interrupted): nothing needs answering."""


class Listener:
    """The notification fd. Each method raises OSError, Gone when the caller is gone."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def receive(self) -> Notification:
        notif = _Notif()  # must be zeroed: the kernel refuses (EINVAL) anything else
        self._ioctl(_RECV, notif, "SECCOMP_IOCTL_NOTIF_RECV")
        return Notification(notif.id, notif.pid, notif.nr, tuple(notif.args))

    def valid(self, notif_id: int) -> bool:
        """Whether the caller still waits: check after reading its memory or /proc."""
        cookie = ctypes.c_uint64(notif_id)
        return int(_libc.ioctl(self.fd, ctypes.c_ulong(_ID_VALID), ctypes.byref(cookie))) == 0

    def proceed(self, notif_id: int) -> None:
        """Let the kernel run the call as made: every other layer still applies to it."""
        self._send(_Resp(notif_id, 0, 0, _FLAG_CONTINUE))

    def fail(self, notif_id: int, err: int) -> None:
        self._send(_Resp(notif_id, 0, -err, 0))

    def succeed(self, notif_id: int, value: int = 0) -> None:
        self._send(_Resp(notif_id, value, 0, 0))

    def send_fd(self, notif_id: int, fd: int, cloexec: bool) -> int:
        """Install `fd` in the caller and make it the call's result, in one step."""
        req = _AddFd(notif_id, _ADDFD_FLAG_SEND, fd, 0, os.O_CLOEXEC if cloexec else 0)
        return self._ioctl(_ADDFD, req, "SECCOMP_IOCTL_NOTIF_ADDFD")

    def close(self) -> None:
        os.close(self.fd)

    def _send(self, resp: _Resp) -> None:
        self._ioctl(_SEND, resp, "SECCOMP_IOCTL_NOTIF_SEND")

    def _ioctl(self, request: int, arg: ctypes.Structure, name: str) -> int:
        result = int(_libc.ioctl(self.fd, ctypes.c_ulong(request), ctypes.byref(arg)))
        if result < 0:
            err = ctypes.get_errno()
            raise (Gone if err == errno.ENOENT else OSError)(err, f"{name}: {os.strerror(err)}")
        return result
