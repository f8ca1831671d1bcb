"""The seal broker's rules, without I/O: which stopped calls create something, and what
mcpwrap does with a creation in a sealed directory (see broker.py for the facts it gathers).

A sealed directory is one Landlock gives every write right but the make rights, because a
protected path (`.mcp.json`, `.vscode/`, ...) would appear in it. The broker creates new
names there for the server, except the protected ones, so the server can still write
files beside its existing ones. Everything else runs as the server made it: the kernel and
Landlock decide, so a call the broker lets through can never do more than the seal allows.
"""

from __future__ import annotations

import enum
import errno
import os
from collections.abc import Iterable
from dataclasses import dataclass

from mcpwrap.sandbox import unotify

AT_FDCWD = -100
O_PATH = 0o10000000
O_DIRECTORY = 0o200000
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
RENAME_WHITEOUT = 4
AT_REMOVEDIR = 0x200
_CREAT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC  # creat(path, mode) is open with these


class Kind(enum.Enum):
    OPEN = "open"
    MKDIR = "mkdir"
    RENAME = "rename"
    REMOVE = "remove"  # unlink, unlinkat, rmdir: the reduced jail's seals only


@dataclass(frozen=True)
class Call:
    """A stopped syscall, its pointers unread. For RENAME, `dirfd`/`path` are the
    destination and `src_dirfd`/`src_path` the source; `flags` are open's or rename's.
    openat2 keeps its struct open_how in memory: `how` points at it, `how_size` is its size."""

    kind: Kind
    syscall: str
    dirfd: int
    path: int
    flags: int = 0
    mode: int = 0
    src_dirfd: int = AT_FDCWD
    src_path: int = 0
    how: int = 0
    how_size: int = 0


def _fd(raw: int) -> int:
    """A dirfd argument: an int, so the low 32 bits, signed (AT_FDCWD is -100)."""
    low = raw & 0xFFFFFFFF
    return low - (1 << 32) if low >= 1 << 31 else low


def parse(nr: int, args: tuple[int, ...]) -> Call | None:
    """The call behind a notification; None for a number the filter does not stop."""
    a = args
    low = [x & 0xFFFFFFFF for x in a]
    calls = {
        unotify.NR_OPEN: lambda: Call(Kind.OPEN, "open", AT_FDCWD, a[0], low[1], low[2]),
        unotify.NR_CREAT: lambda: Call(Kind.OPEN, "creat", AT_FDCWD, a[0], _CREAT_FLAGS, low[1]),
        unotify.NR_OPENAT: lambda: Call(Kind.OPEN, "openat", _fd(a[0]), a[1], low[2], low[3]),
        unotify.NR_OPENAT2: lambda: Call(
            Kind.OPEN, "openat2", _fd(a[0]), a[1], how=a[2], how_size=a[3]
        ),
        unotify.NR_MKDIR: lambda: Call(Kind.MKDIR, "mkdir", AT_FDCWD, a[0], mode=low[1]),
        unotify.NR_MKDIRAT: lambda: Call(Kind.MKDIR, "mkdirat", _fd(a[0]), a[1], mode=low[2]),
        unotify.NR_RENAME: lambda: Call(
            Kind.RENAME, "rename", AT_FDCWD, a[1], src_dirfd=AT_FDCWD, src_path=a[0]
        ),
        unotify.NR_RENAMEAT: lambda: Call(
            Kind.RENAME, "renameat", _fd(a[2]), a[3], src_dirfd=_fd(a[0]), src_path=a[1]
        ),
        unotify.NR_RENAMEAT2: lambda: Call(
            Kind.RENAME, "renameat2", _fd(a[2]), a[3], low[4], src_dirfd=_fd(a[0]), src_path=a[1]
        ),
        unotify.NR_UNLINK: lambda: Call(Kind.REMOVE, "unlink", AT_FDCWD, a[0]),
        unotify.NR_RMDIR: lambda: Call(Kind.REMOVE, "rmdir", AT_FDCWD, a[0], AT_REMOVEDIR),
        unotify.NR_UNLINKAT: lambda: Call(Kind.REMOVE, "unlinkat", _fd(a[0]), a[1], low[2]),
    }
    make = calls.get(nr)
    return make() if make else None


def creates(call: Call) -> bool:
    """Whether the call could make a new name (worth resolving its path at all). An open
    without O_CREAT, or with O_PATH or O_DIRECTORY (then the kernel creates nothing, or
    refuses), only opens. openat2 with resolve flags is left to the kernel too: the
    broker would have to honour them while resolving."""
    if call.kind is not Kind.OPEN:
        return True
    return bool(call.flags & os.O_CREAT) and not call.flags & (O_PATH | O_DIRECTORY)


def split(path: bytes) -> tuple[bytes, bytes, bool] | None:
    """(directory part, last name, whether a slash followed it); None when there is no
    name at all ("" or only slashes). The directory part is b"" for a bare name."""
    stripped = path.rstrip(b"/")
    if not stripped:
        return None
    head, _, name = stripped.rpartition(b"/")
    if not head and stripped.startswith(b"/"):
        head = b"/"
    return head, name, stripped != path


def forbidden_names(sealed_dir: str, protect: Iterable[str]) -> frozenset[str]:
    """The names that may never appear directly in `sealed_dir`: the next component of
    every protected path beneath it (".git" for .git/hooks, even while .git exists: a
    fresh .git could hold fresh hooks). Case-folded: on a case-insensitive filesystem
    ".VSCode" is ".vscode"."""
    prefix = sealed_dir.rstrip("/") + "/"
    return frozenset(
        p[len(prefix) :].split("/")[0].casefold() for p in protect if p.startswith(prefix)
    )


def is_forbidden(name: bytes, forbidden: frozenset[str]) -> bool:
    return os.fsdecode(name).casefold() in forbidden


# --- the decision -------------------------------------------------------------------------


@dataclass(frozen=True)
class End:
    """One end of a call as the broker found it in the jail: its directory and the name."""

    sealed: bool  # the directory is sealed (Landlock withholds the make rights there)
    forbidden: bool  # the name may never appear in this directory
    exists: bool  # something has the name already (a symlink counts, unfollowed)
    mountpoint: bool = False  # that something is a mount point in the jail
    sealed_dir: bool = False  # that something is itself a sealed directory
    writable: bool = True  # the directory is under a write grant or a seal


@dataclass(frozen=True)
class Facts:
    kind: Kind
    flags: int  # open's, rename's or unlinkat's
    name: bytes  # the destination's last name (REMOVE: what is removed)
    trailing_slash: bool
    dest: End
    source: End | None = None  # RENAME only
    removals: bool = False  # the reduced jail's seals: read-only, removals brokered too


class Action(enum.Enum):
    PROCEED = "proceed"  # the kernel runs the call as made (Landlock still applies)
    REFUSE = "refuse"  # the call fails with `errno`, and the refusal is recorded
    PERFORM = "perform"  # mcpwrap makes the name itself and returns the result


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str
    errno: int = 0


def _proceed(reason: str) -> Verdict:
    return Verdict(Action.PROCEED, reason)


def _refuse(reason: str, err: int = errno.EACCES) -> Verdict:
    return Verdict(Action.REFUSE, reason, err)


def decide(facts: Facts) -> Verdict:
    """What to do with a creating call whose destination the broker resolved."""
    dest = facts.dest
    # Out of a read-only seal (the reduced jail), a rename needs mcpwrap as well.
    source_sealed = facts.removals and facts.source is not None and facts.source.sealed
    if not dest.sealed and not source_sealed:
        return _proceed("not in a sealed directory")
    if facts.name in (b".", b".."):
        return _proceed("not a new name")
    shown = os.fsdecode(facts.name)
    if facts.kind is Kind.RENAME:
        return _rename(facts, shown)
    if facts.kind is Kind.REMOVE:
        return _remove(facts, shown)
    if dest.exists:  # a protected one that exists is a read-only mount, or a sealed dir
        return _proceed("exists already: this creates nothing")
    if dest.forbidden:
        return _refuse(f"{shown} is protected: no server may create it there")
    if facts.kind is Kind.OPEN and facts.trailing_slash:
        return _proceed("a file name cannot end in a slash")
    return Verdict(Action.PERFORM, f"new {facts.kind.value} {shown} in a sealed directory")


def _rename(facts: Facts, shown: str) -> Verdict:
    src, dest = facts.source, facts.dest
    if dest.forbidden:
        return _refuse(f"{shown} is protected: nothing may be renamed onto it")
    if facts.flags & (RENAME_EXCHANGE | RENAME_WHITEOUT):
        return _refuse("an exchange or whiteout rename into a sealed directory")
    if facts.flags & ~RENAME_NOREPLACE:
        return _proceed("unknown rename flags: the kernel refuses them")
    if src is None or not src.exists:
        return _proceed("no source: the kernel says so")
    if src.mountpoint or (dest.exists and dest.mountpoint):
        return _refuse("a mount point of the jail stays where it is", errno.EBUSY)
    if src.sealed_dir or src.forbidden or dest.sealed_dir:
        return _refuse("a sealed or protected directory stays where it is")
    if not src.writable or not dest.writable:
        return _refuse("the source or the destination is not under a write grant")
    return Verdict(Action.PERFORM, f"rename to {shown} in a sealed directory")


def _remove(facts: Facts, shown: str) -> Verdict:
    dest = facts.dest
    if dest.forbidden or dest.sealed_dir:
        return _refuse(f"{shown} is protected, or holds a protected path: it stays")
    if not dest.exists:
        return _proceed("nothing to remove: the kernel says so")
    if dest.mountpoint:
        return _refuse("a mount point stays where it is", errno.EBUSY)
    if facts.flags & ~AT_REMOVEDIR:
        return _proceed("unknown unlinkat flags: the kernel refuses them")
    return Verdict(Action.PERFORM, f"remove {shown} from a sealed directory")
