"""The seal broker: mcpwrap's thread that answers the jail's stopped creating calls.

Where a protected path (`.mcp.json`, `.vscode/`, ...) does not exist, Landlock seals the
directory it would appear in: no make rights there. The jail's last seccomp filter
(unotify.py) stops every creating call; this thread, outside the jail, answers each:

- it reads the path from the caller's memory once (its own copy from then on), resolves
  the directory in the jail's view (the jail's root, cwd or dirfd, through /proc/PID)
  and finds which Landlock rule governs it, by walking up to the nearest inode the jail
  put a rule on (the jail reports those inodes with the listener);
- it checks that the caller still waits (SECCOMP_IOCTL_NOTIF_ID_VALID) after every read;
- sealrules.decide() says what to do. Outside sealed directories, and for anything it
  does not handle, the kernel runs the call as made (CONTINUE): Landlock still applies,
  so a thread that swaps the path meanwhile gains nothing. A protected name is refused
  and recorded. Any other new name in a sealed directory is made here, relative to the
  directory fd opened above: openat with O_EXCL|O_NOFOLLOW, the fd installed as the
  call's result (SECCOMP_IOCTL_NOTIF_ADDFD); mkdirat; renameat2, whose ends must be on
  the same mount of the jail (the kernel refuses EXDEV otherwise) and not mount points.

The thread drops its capabilities (root's DAC override must not reach the jail's files)
and takes a private umask, so what it makes is what the server could have made without
the seal. An error while answering refuses the call (EACCES). If the thread or mcpwrap is
gone, the listener closes and the stopped calls fail with ENOSYS: never open.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import errno
import os
import select
import stat
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from mcpwrap.sandbox import sealrules, unotify
from mcpwrap.sandbox.sealrules import AT_FDCWD, Action, Call, End, Facts, Kind, Verdict

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

_SYS_CAPSET, _SYS_RENAMEAT2, _SYS_OPENAT2 = 126, 316, 437
_CLONE_FS = 0x200
_RESOLVE_NO_XDEV, _RESOLVE_NO_MAGICLINKS, _RESOLVE_BENEATH, _RESOLVE_IN_ROOT = 1, 2, 8, 0x10
_O_LARGEFILE = 0o100000  # the kernel's bit; Python's os.O_LARGEFILE is 0 on x86_64
# open flags the broker passes on when it creates the file (access mode and file status);
# O_CREAT|O_EXCL|O_NOFOLLOW are its own, O_CLOEXEC goes with the installed fd.
_PASS = (
    os.O_ACCMODE | os.O_APPEND | os.O_NONBLOCK | os.O_DSYNC | os.O_SYNC | os.O_DIRECT
    | os.O_NOATIME | os.O_NOCTTY | os.O_TRUNC | os.O_ASYNC | _O_LARGEFILE
)  # fmt: skip
_PATH_MAX = 4096
_MAX_DEPTH = 4096  # directories walked up before giving up (then: the kernel decides)
_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC

Key = tuple[int, int]  # (st_dev, st_ino)


class Rule(enum.Enum):
    """The Landlock rule the jail put on a directory, as the broker needs it."""

    SEAL = "seal"  # write rights without the make rights
    WRITE = "write"  # make rights: Landlock lets creations through
    OTHER = "other"  # read or execute only


@dataclass(frozen=True)
class Seals:
    """Every directory the jail's Landlock rules name, by inode, and what may never appear
    directly in each sealed one."""

    rules: dict[Key, Rule]
    forbidden: dict[Key, frozenset[str]]
    removals: bool = False  # the reduced jail: seals are read-only, removals come here too
    # The reduced jail: existing protected directories. Nothing is made, renamed or
    # removed in or below one (no read-only mount covers them there).
    protected: frozenset[Key] = frozenset()


def seals(
    objects: Iterable[tuple[str, int, int, int]],
    protect: Iterable[str],
    sealed: Iterable[str] = (),
) -> Seals:
    """From the jail's report, (path, st_dev, st_ino, Landlock rights) per directory rule,
    and the protected paths: rights on one inode add up, as they do in the kernel.
    `sealed`: the reduced jail's sealed directories, named (Landlock gives them read
    rights only, which say nothing of a seal)."""
    from mcpwrap.sandbox import landlock

    named = set(sealed)
    rights: dict[Key, int] = {}
    paths: dict[Key, list[str]] = {}
    for path, dev, ino, allowed in objects:
        rights[(dev, ino)] = rights.get((dev, ino), 0) | allowed
        paths.setdefault((dev, ino), []).append(path)
    protected = tuple(protect)
    rules: dict[Key, Rule] = {}
    forbidden: dict[Key, frozenset[str]] = {}
    for key, allowed in rights.items():
        rules[key] = _rule_of(allowed, landlock)
        if named.intersection(paths[key]):
            rules[key] = Rule.SEAL
        if rules[key] is Rule.SEAL:
            names = [sealrules.forbidden_names(p, protected) for p in paths[key]]
            forbidden[key] = frozenset().union(*names)
    kept = frozenset(_existing_dirs(protected)) if named else frozenset()
    return Seals(rules, forbidden, removals=bool(named), protected=kept)


def _existing_dirs(paths: Iterable[str]) -> Iterable[Key]:
    for path in paths:
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            yield st.st_dev, st.st_ino


def _rule_of(allowed: int, landlock: Any) -> Rule:
    if allowed & landlock.MAKE:
        return Rule.WRITE
    return Rule.SEAL if allowed & landlock.WRITE_FILE else Rule.OTHER


class _Skip(Exception):
    """Not the broker's to answer: the kernel runs the call as made."""


@dataclass
class _Found:
    """What answering one notification gathered: fds to close, facts to decide on."""

    fds: list[int]
    path: bytes = b""  # the destination's path as the caller gave it
    src_path: bytes = b""
    dest_dir: int = -1
    name: bytes = b""
    src_dir: int = -1
    src_name: bytes = b""
    umask: int = 0o022


Report = Callable[[dict[str, Any]], None]


class Broker:
    """One jail's listener and the thread that serves it."""

    def __init__(self, listener: unotify.Listener, found: Seals) -> None:
        self._listener = listener
        self._seals = found
        self.counts: Counter[str] = Counter()  # answers by action, for tests and the bench
        self._root = -1  # the jail's root directory, opened from the first caller
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._serve, name="mcpwrap-seal", daemon=True)
        self._lock = threading.Lock()
        self._report: Report | None = None
        self._pending: list[dict[str, Any]] = []  # records made before attach()

    def start(self) -> None:
        self._thread.start()

    def attach(self, report: Report) -> None:
        """Hand every record (a refusal, an error) to `report` too, earlier ones first."""
        with self._lock:
            self._report = report
            pending, self._pending = self._pending, []
        for record in pending:
            report(record)

    def _emit(self, record: dict[str, Any]) -> None:
        _to_stderr(record)
        with self._lock:
            report = self._report
            if report is None:
                self._pending.append(record)
        if report is not None:
            report(record)

    def close(self) -> None:
        """Stop serving: calls still stopped, and later ones, fail with ENOSYS."""
        if self._thread.ident is None:  # never started
            self._shut()
            return
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not threading.current_thread():
            self._thread.join(5.0)

    # --- the thread -------------------------------------------------------------------

    def _serve(self) -> None:
        degraded = _own_credentials()
        if degraded:
            self._emit({"decision": "error", "reason": degraded})
        poller = select.poll()
        poller.register(self._listener.fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        try:
            while True:
                events = dict(poller.poll())
                if self._wake_r in events or events.get(self._listener.fd, 0) & ~select.POLLIN:
                    return  # closed, or every process of the jail is gone (POLLHUP)
                try:
                    notif = self._listener.receive()
                except OSError:
                    continue  # its caller was killed or interrupted before we got to it
                if degraded:
                    self._answer_plain(notif.id)
                else:
                    self._answer(notif)
        finally:
            self._shut()

    def _shut(self) -> None:
        for fd in (self._listener.fd, self._root, self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _answer_plain(self, notif_id: int) -> None:
        with contextlib.suppress(OSError):
            self._listener.proceed(notif_id)

    def _answer(self, notif: unotify.Notification) -> None:
        found = _Found([])
        try:
            call = sealrules.parse(notif.nr, notif.args)
            if call is None:
                raise _Skip
            facts, call = self._gather(notif, call, found)
            if not self._listener.valid(notif.id):
                return  # the caller is gone: what was read may be another process's
            verdict = sealrules.decide(facts)
            self._act(notif, call, verdict, found)
        except unotify.Gone:
            pass  # killed, or interrupted by a signal: the kernel restarts or drops the call
        except _Skip:
            self.counts["proceed"] += 1
            self._answer_plain(notif.id)
        except Exception as exc:  # never leave a caller stopped, never let it through
            self.counts["error"] += 1
            self._emit({"decision": "error", "reason": f"{type(exc).__name__}: {exc}"})
            with contextlib.suppress(OSError):
                self._listener.fail(notif.id, errno.EACCES)
        finally:
            for fd in found.fds:
                os.close(fd)

    # --- what the call is about ----------------------------------------------------------

    def _gather(self, notif: unotify.Notification, call: Call, found: _Found) -> tuple[Facts, Call]:
        memory = _Memory(notif.pid, found)
        if call.syscall == "openat2":
            call = _with_how(call, memory)
        if not sealrules.creates(call):
            raise _Skip
        found.path = memory.string(call.path)
        parts = sealrules.split(found.path)
        if parts is None:
            raise _Skip
        head, found.name, slash = parts
        found.dest_dir = self._directory(notif, call.dirfd, head, found)
        dest = self._end(found.dest_dir, found.name, found)
        out_of_seal = self._seals.removals and call.kind is Kind.RENAME
        if not dest.sealed and not out_of_seal:
            raise _Skip  # what decide() says too, without resolving a rename's source
        source = None
        if call.kind is Kind.RENAME:
            found.src_path = memory.string(call.src_path)
            src = sealrules.split(found.src_path)
            if src is None:
                raise _Skip
            found.src_dir = self._directory(notif, call.src_dirfd, src[0], found)
            found.src_name = src[1] + (b"/" if src[2] else b"")
            source = self._end(found.src_dir, src[1], found)
        else:
            found.umask = _umask(notif.pid)
        if slash and call.kind is not Kind.OPEN:
            found.name += b"/"  # kept for the kernel: a trailing slash wants a directory
        if source is not None and not dest.sealed and not source.sealed:
            raise _Skip
        facts = Facts(call.kind, call.flags, parts[1], slash, dest, source, self._seals.removals)
        return facts, call

    def _directory(
        self, notif: unotify.Notification, dirfd: int, head: bytes, found: _Found
    ) -> int:
        """The directory a path's head names, in the jail's view, as an O_PATH fd."""
        pid = notif.pid
        if head.startswith(b"/"):
            return _open(self._jail_root(notif, found), head.lstrip(b"/") or b".", found)
        if dirfd != AT_FDCWD and dirfd < 0:
            raise _Skip  # EBADF: the kernel says so
        where = f"/proc/{pid}/cwd" if dirfd == AT_FDCWD else f"/proc/{pid}/fd/{dirfd}"
        base = _keep(found, _os(os.open, where, _DIR))
        try:
            return _open(base, head or b".", found, _RESOLVE_BENEATH)
        except _Climbs:
            # "../x", or an absolute symlink on the way: resolve it from the jail's root,
            # below the base's own path, once that path still leads to the same directory.
            seen = _os(os.readlink, where.encode())
            root = self._jail_root(notif, found)
            if not seen.startswith(b"/") or _key(_open(root, seen[1:] or b".", found)) != _key(
                base
            ):
                raise _Skip from None
            return _open(root, (seen + b"/" + head).lstrip(b"/"), found)

    def _jail_root(self, notif: unotify.Notification, found: _Found) -> int:
        """Every process of the jail has the same root (chroot and pivot_root are refused
        there): opened from the first caller, kept once that caller proved still waiting."""
        if self._root < 0:
            fd = _keep(found, _os(os.open, f"/proc/{notif.pid}/root", _DIR))
            if not self._listener.valid(notif.id):
                raise _Skip
            found.fds.remove(fd)
            self._root = fd
        return self._root

    def _end(self, directory: int, name: bytes, found: _Found) -> End:
        rule, depth, key, inside = self._governing(directory)
        sealed = rule is Rule.SEAL
        names = self._seals.forbidden.get(key, frozenset()) if depth == 0 else frozenset()
        forbidden = sealed and (inside or sealrules.is_forbidden(name, names))
        writable = rule in (Rule.SEAL, Rule.WRITE)
        if name in (b".", b".."):
            return End(sealed, forbidden, True, writable=writable)
        how = _RESOLVE_BENEATH | _RESOLVE_NO_XDEV | _RESOLVE_NO_MAGICLINKS
        try:
            flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
            entry = _keep(found, _openat2(directory, name, flags, how))
        except FileNotFoundError:
            return End(sealed, forbidden, False, writable=writable)
        except OSError as exc:
            if exc.errno == errno.EXDEV:  # crossing into it is crossing a mount
                return End(sealed, forbidden, True, mountpoint=True, writable=writable)
            raise _Skip from exc
        st = os.fstat(entry)
        is_sealed = stat.S_ISDIR(st.st_mode) and self._seals.rules.get(_key(entry)) is Rule.SEAL
        return End(sealed, forbidden, True, sealed_dir=is_sealed, writable=writable)

    def _governing(self, directory: int) -> tuple[Rule | None, int, Key, bool]:
        """The rule on the nearest directory at or above `directory` that has one (Landlock
        looks the same way), how many levels up it was, that directory's inode, and
        whether the way up passed a protected directory (the reduced jail's)."""
        current, key = directory, _key(directory)
        inside = False
        try:
            for depth in range(_MAX_DEPTH):
                inside = inside or key in self._seals.protected
                rule = self._seals.rules.get(key)
                if rule is not None:
                    return rule, depth, key, inside
                parent = _os(os.open, "..", _DIR, dir_fd=current)
                if current != directory:
                    os.close(current)
                current, above = parent, key
                key = _key(current)
                if key == above:
                    break  # the jail's root: its ".." is itself
        finally:
            if current != directory:
                os.close(current)
        return None, 0, key, inside

    # --- the answer ----------------------------------------------------------------------

    def _act(
        self, notif: unotify.Notification, call: Call, verdict: Verdict, found: _Found
    ) -> None:
        self.counts[verdict.action.value] += 1
        if verdict.action is Action.PROCEED:
            self._listener.proceed(notif.id)
        elif verdict.action is Action.REFUSE:
            self._listener.fail(notif.id, verdict.errno)
            self._record_refusal(call, verdict, found)
        elif call.kind is Kind.OPEN:
            self._create(notif, call, found)
        else:
            self._finish(notif.id, lambda: self._make(call, found))

    def _create(self, notif: unotify.Notification, call: Call, found: _Found) -> None:
        flags = (call.flags & _PASS) | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        mode = call.mode & 0o7777 & ~found.umask
        try:
            fd = os.open(found.name, flags, mode, dir_fd=found.dest_dir)
        except FileExistsError:
            if call.flags & os.O_EXCL:
                self._listener.fail(notif.id, errno.EEXIST)
            else:  # made meanwhile: now an open of what exists, the kernel's to decide
                self._listener.proceed(notif.id)
            return
        except OSError as exc:
            self._listener.fail(notif.id, exc.errno or errno.EACCES)
            return
        try:
            self._listener.send_fd(notif.id, fd, cloexec=bool(call.flags & os.O_CLOEXEC))
        except OSError as exc:  # gone, or no fd left (EMFILE): take back the file
            with contextlib.suppress(OSError):
                if os.stat(found.name, dir_fd=found.dest_dir, follow_symlinks=False).st_ino == (
                    os.fstat(fd).st_ino
                ):
                    os.unlink(found.name, dir_fd=found.dest_dir)
            if not isinstance(exc, unotify.Gone):
                self._listener.fail(notif.id, exc.errno or errno.EMFILE)
        finally:
            os.close(fd)

    def _make(self, call: Call, found: _Found) -> None:
        if call.kind is Kind.REMOVE:
            if call.flags & sealrules.AT_REMOVEDIR:
                os.rmdir(found.name, dir_fd=found.dest_dir)
            else:
                os.unlink(found.name, dir_fd=found.dest_dir)
            return
        if call.kind is Kind.MKDIR:
            os.mkdir(found.name, call.mode & 0o1777 & ~found.umask, dir_fd=found.dest_dir)
            return
        result = _libc.syscall(
            ctypes.c_long(_SYS_RENAMEAT2),
            ctypes.c_long(found.src_dir),
            found.src_name,
            ctypes.c_long(found.dest_dir),
            found.name,
            ctypes.c_ulong(call.flags & sealrules.RENAME_NOREPLACE),
        )
        if result < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def _finish(self, notif_id: int, operation: Callable[[], None]) -> None:
        try:
            operation()
        except OSError as exc:
            self._listener.fail(notif_id, exc.errno or errno.EACCES)
            return
        self._listener.succeed(notif_id)

    def _record_refusal(self, call: Call, verdict: Verdict, found: _Found) -> None:
        record: dict[str, Any] = {
            "decision": "refuse",
            "rule": "sandbox.seal",
            "call": call.syscall,
            "path": os.fsdecode(found.path),
            "reason": verdict.reason,
        }
        if call.kind is Kind.RENAME:
            record["source"] = os.fsdecode(found.src_path)
        self._emit(record)


# --- helpers ----------------------------------------------------------------------------


class _Climbs(Exception):
    """A relative path left its base directory (EXDEV under RESOLVE_BENEATH)."""


class _Memory:
    """The caller's memory, read once per string: the broker keeps its own copy."""

    def __init__(self, pid: int, found: _Found) -> None:
        self._pid, self._found, self._fd = pid, found, -1

    def read(self, address: int, size: int) -> bytes:
        if self._fd < 0:
            where = f"/proc/{self._pid}/mem"
            self._fd = _keep(self._found, _os(os.open, where, os.O_RDONLY | os.O_CLOEXEC))
        data: bytes = _os(os.pread, self._fd, size, address)
        return data

    def string(self, address: int) -> bytes:
        """A NUL-terminated path of at most PATH_MAX bytes; longer, or unreadable, is the
        kernel's to refuse (ENAMETOOLONG, EFAULT)."""
        data = self.read(address, _PATH_MAX) if 0 < address < 1 << 63 else b""
        end = data.find(b"\0")
        if end < 0:
            raise _Skip
        return data[:end]


def _with_how(call: Call, memory: _Memory) -> Call:
    """openat2's flags and mode, from its struct open_how (flags, mode, resolve: u64 each).
    Resolve flags are left to the kernel (the broker would have to honour them)."""
    if call.how_size < 24 or not 0 < call.how < 1 << 63:
        raise _Skip
    raw = memory.read(call.how, 24)
    if len(raw) < 24:
        raise _Skip
    flags, mode, resolve = (int.from_bytes(raw[i : i + 8], "little") for i in (0, 8, 16))
    if resolve or flags >> 32:
        raise _Skip
    return replace(call, flags=flags, mode=mode)


def _umask(pid: int) -> int:
    """The caller's umask, from /proc/PID/status (read raw: io.open costs more than this)."""
    fd = _os(os.open, f"/proc/{pid}/status", os.O_RDONLY | os.O_CLOEXEC)
    try:
        status: bytes = _os(os.read, fd, 8192)
    finally:
        os.close(fd)
    at = status.find(b"\nUmask:")
    if at < 0:
        raise _Skip
    return int(status[at + 7 : status.index(b"\n", at + 1)].strip(), 8)


def _open(base: int, path: bytes, found: _Found, resolve: int = _RESOLVE_IN_ROOT) -> int:
    """A directory below (or, with IN_ROOT, inside the root of) `base`, magic links
    refused (they would resolve in mcpwrap's view, not the jail's)."""
    try:
        return _keep(found, _openat2(base, path, _DIR, resolve | _RESOLVE_NO_MAGICLINKS))
    except OSError as exc:
        if exc.errno == errno.EXDEV and resolve & _RESOLVE_BENEATH:
            raise _Climbs from exc
        raise _Skip from exc


class _OpenHow(ctypes.Structure):
    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64))


def _openat2(dirfd: int, path: bytes, flags: int, resolve: int) -> int:
    how = _OpenHow(flags, 0, resolve)
    fd = _libc.syscall(
        _SYS_OPENAT2, ctypes.c_int(dirfd), path, ctypes.byref(how), ctypes.c_size_t(24)
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return int(fd)


def _os(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A /proc read that fails (the caller died, the fd is not a directory) is the kernel's
    to answer."""
    try:
        return func(*args, **kwargs)
    except OSError as exc:
        raise _Skip from exc


def _keep(found: _Found, fd: int) -> int:
    found.fds.append(fd)
    return fd


def _key(fd: int) -> Key:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _own_credentials() -> str:
    """For this thread only: no capabilities (as root, DAC override would let the broker
    make what the capability-less server cannot), and its own umask (set per call)."""

    class Header(ctypes.Structure):
        _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))

    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: all empty
    if _libc.syscall(_SYS_CAPSET, ctypes.byref(Header(0x20080522, 0)), data) != 0:
        return f"capset: {os.strerror(ctypes.get_errno())}: creations are left to Landlock"
    if _libc.unshare(_CLONE_FS) != 0:
        return f"unshare(CLONE_FS): {os.strerror(ctypes.get_errno())}: left to Landlock"
    os.umask(0)
    return ""


def _to_stderr(record: dict[str, Any]) -> None:
    """One line; the names in it come from the server, so no escape reaches the terminal."""
    from mcpwrap.policy.sanitize import clean_text

    if record.get("decision") == "refuse":
        text = f"refused {record['call']} {record['path']!r}: {record['reason']}"
    else:
        text = f"seal broker: {record.get('reason')}"
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"mcpwrap: {clean_text(text, keep_newlines=False)}\n")
        sys.stderr.flush()
