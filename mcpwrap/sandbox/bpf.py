"""Installing seccomp BPF programs, and caching them: the cheap half of the filters.

Building a filter (seccomp.py) takes libseccomp and ~25 ms per start; the programs it
exports are the same for the same rules, mode and libseccomp. The jail keeps them in the
state directory (read-only inside every jail) keyed by exactly those, so a start that
finds them imports neither seccomp.py nor libseccomp.
"""

from __future__ import annotations

import ctypes
import errno
import marshal
import os

from mcpwrap.basics import sha

# The trampoline imports this module: no collections (or typing) at run time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

_libc = ctypes.CDLL(None, use_errno=True)

_LOAD_HINTS = {
    errno.EINVAL: "the kernel rejected the filter: is CONFIG_SECCOMP_FILTER set?",
    errno.EACCES: "no_new_privs could not be set and the process lacks CAP_SYS_ADMIN",
    errno.EPERM: "a seccomp filter or LSM already on this process refuses seccomp()",
    errno.ENOMEM: "the kernel's limit on stacked filters was reached",
    errno.ESRCH: "another thread could not take the filter: load it from one thread",
}


class SeccompError(Exception):
    """A seccomp step failed: names the step, the call, errno and what to do."""

    def __init__(self, step: str, call: str, err: int = 0, hint: str = "") -> None:
        self.step, self.call, self.errno = step, call, err
        self.hint = hint or _LOAD_HINTS.get(err, "see seccomp(2) for this errno")
        cause = f"{errno.errorcode.get(err, err)} ({os.strerror(err)})" if err else "no errno"
        super().__init__(f"seccomp {step}: {call} failed: {cause}; {self.hint}")


class Prepared:
    """BPF programs built in memory; load() installs them in the calling process."""

    def __init__(self, programs: Sequence[bytes], lines: Sequence[str]) -> None:
        self._programs = tuple(programs)  # in load order: the deny-list last
        self._lines = tuple(lines)

    def load(self) -> None:
        """Set no_new_privs, then install every program on all threads; raises SeccompError.

        A failure after the first program leaves that one in place: the jail then exits
        without running the server, so a half-loaded set never runs untrusted code.
        """
        _prctl_no_new_privs()
        for program in self._programs:
            _install(program)

    def describe(self) -> list[str]:
        return list(self._lines)

    @property
    def programs(self) -> tuple[bytes, ...]:
        return self._programs


# --- the kernel ----------------------------------------------------------------------------

_SYS_SECCOMP = 317  # x86_64
_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_TSYNC = 1
_PR_SET_NO_NEW_PRIVS = 38
_BPF_INSN_SIZE = 8


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def _prctl_no_new_privs() -> None:
    """Required to install a filter without CAP_SYS_ADMIN; the jail has set it already."""
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SeccompError("load", "prctl(PR_SET_NO_NEW_PRIVS)", ctypes.get_errno())


def _install(program: bytes) -> None:
    code = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // _BPF_INSN_SIZE, ctypes.addressof(code))
    # TSYNC: every thread takes the filter, or none does and the call fails.
    result = _libc.syscall(
        _SYS_SECCOMP, _SECCOMP_SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_TSYNC, ctypes.byref(fprog)
    )
    if result < 0:
        raise SeccompError("load", "seccomp(SECCOMP_SET_MODE_FILTER)", ctypes.get_errno())
    if result > 0:  # the id of a thread that could not be synchronised
        raise SeccompError("load", "seccomp(SECCOMP_SET_MODE_FILTER)", errno.ESRCH)


# --- the cache -------------------------------------------------------------------------


_LIBSECCOMP = (
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
)


def cache_key(mode: str) -> str:
    """Digest of what the programs depend on: the rules (seccomp.py's source), the mode
    (with the jail's socket set: "default/stream"), and the libseccomp library that
    compiled them."""
    digest = sha.sha256(mode.encode())  # not hashlib: OpenSSL costs the trampoline ~4 ms
    with open(os.path.join(os.path.dirname(__file__), "seccomp.py"), "rb") as f:
        digest.update(f.read())
    # The file the soname resolves to (pyseccomp loads "libseccomp.so.2"), in fixed places:
    # no listing of /usr/lib/x86_64-linux-gnu (a thousand names, ~1.5 ms per start).
    for directory in _LIBSECCOMP:
        soname = os.path.join(directory, "libseccomp.so.2")
        if os.path.exists(soname):
            digest.update(os.path.realpath(soname).encode())
    return str(digest.hexdigest())[:32]


def load_cached(path: str) -> Prepared | None:
    try:
        with open(path, "rb") as f:
            data = marshal.load(f)  # noqa: S302 - our own file, in a dir the jail cannot write
        return Prepared(list(data["programs"]), list(data["lines"]))
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None  # absent or unreadable: build it again


def store(path: str, prepared: Prepared) -> None:
    """Best effort, atomic: a unique temp file renamed into place."""
    data = {"programs": list(prepared.programs), "lines": prepared.describe()}
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(tmp, "wb") as f:
            marshal.dump(data, f)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
