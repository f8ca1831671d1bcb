"""Landlock: the filesystem, TCP-port and IPC-scope layer of the jail.

`restrict()` builds one ruleset, adds path-beneath and port rules, sets no_new_privs and
calls landlock_restrict_self. The kernel applies the domain to the *calling thread* and
to the children it creates afterwards, never to sibling threads: the jail trampoline is
a fresh single-threaded interpreter, so there it covers the whole process. Do not call
this from a multi-threaded process (ABI 9's TSYNC flag is not used).

Best effort, as Documentation/userspace-api/landlock.rst advises: ask the running ABI,
handle every right that ABI knows (masked to the highest ABI this module knows), and
report what was applied. Constants come from include/uapi/linux/landlock.h.

Landlock cannot stop stat/chmod/utime/setxattr or connect() to pathname unix sockets
(ABI 7); the mount namespace and seccomp cover those (shared/notes/sandbox.md).
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
import stat

# Not `typing`: the jail trampoline imports this module, and typing costs it ~8 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

# The Landlock syscalls have the same numbers on every architecture (the unified table
# from 424 on), x86_64 included.
_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446

_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_RULE_NET_PORT = 2
_PR_SET_NO_NEW_PRIVS = 38
_PR_GET_NO_NEW_PRIVS = 39

# Rights newer than this ABI are unknown here: asking for unknown bits is EINVAL, so a
# newer kernel gets this ABI's rights (still every right this module can name).
_KNOWN_ABI = 7

# Filesystem rights, in bit order, with the ABI that introduced each.
_FS_RIGHTS: tuple[tuple[str, int], ...] = (
    ("execute", 1),
    ("write_file", 1),
    ("read_file", 1),
    ("read_dir", 1),
    ("remove_dir", 1),
    ("remove_file", 1),
    ("make_char", 1),
    ("make_dir", 1),
    ("make_reg", 1),
    ("make_sock", 1),
    ("make_fifo", 1),
    ("make_block", 1),
    ("make_sym", 1),
    ("refer", 2),
    ("truncate", 3),
    ("ioctl_dev", 5),
)
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_TRUNCATE, _IOCTL_DEV = 1 << 14, 1 << 15
# make_char .. make_sym: what a sealed directory withholds (nothing new can appear there).
MAKE = sum(1 << i for i, (name, _) in enumerate(_FS_RIGHTS) if name.startswith("make_"))
WRITE_FILE = _WRITE_FILE
# The kernel refuses (EINVAL) a rule on a non-directory that carries directory rights.
_FILE_ONLY = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV

_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_NET_ABI = 4
_SCOPES: tuple[tuple[str, int], ...] = (("abstract_unix_socket", 1 << 0), ("signal", 1 << 1))
_SCOPE_ABI = 6

_READ = _READ_FILE | _READ_DIR
_RUN = _READ | _EXECUTE

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # packed in the uapi header: 12 bytes, no trailing padding
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


class _NetPortAttr(ctypes.Structure):
    _fields_ = (("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64))


_HINTS: dict[tuple[str, int], str] = {
    ("landlock_create_ruleset", _errno.ENOSYS): "the kernel lacks Landlock (needs Linux 5.13+)",
    ("landlock_create_ruleset", _errno.EOPNOTSUPP): (
        "Landlock is built in but disabled: add landlock to lsm= on the kernel command line"
    ),
    ("landlock_create_ruleset", _errno.EINVAL): "the kernel refused its own ABI's rights: a bug",
    ("open", _errno.EACCES): "the jail cannot open this grant: fix its permissions or drop it",
    ("open", _errno.ELOOP): "the grant is a symlink loop: fix or drop it in the profile",
    ("landlock_add_rule", _errno.EINVAL): "the rule's rights do not fit the ruleset: a bug",
    ("prctl(PR_SET_NO_NEW_PRIVS)", _errno.EPERM): "a seccomp filter or LSM refused it",
    ("landlock_restrict_self", _errno.EPERM): "needs no_new_privs or CAP_SYS_ADMIN",
    ("landlock_restrict_self", _errno.E2BIG): "16 Landlock layers already stacked on this task",
}


class LandlockError(Exception):
    """A Landlock step failed: names the call, errno and path, and what to do."""

    def __init__(self, call: str, err: int, path: str = "", hint: str = "") -> None:
        self.call, self.errno, self.path = call, err, path
        self.hint = hint or _HINTS.get((call, err), "see landlock(7) for this errno")
        name = _errno.errorcode.get(err, str(err))
        where = f" on {path}" if path else ""
        super().__init__(f"{call}{where} failed: {name} ({os.strerror(err)}); {self.hint}")


class Report:
    """What restrict() applied; describe() gives short lines for doctor and the audit.
    (A plain class, not a NamedTuple: see the typing note above.)"""

    _FIELDS: tuple[str, ...] = ("abi", "fs_rights_handled", "net_handled", "scoped", "rules")
    _FIELDS += ("skipped", "directories")
    __slots__ = _FIELDS

    def __init__(  # noqa: PLR0917 - the NamedTuple's positional signature, kept
        self,
        abi: int,
        fs_rights_handled: int,
        net_handled: bool,
        scoped: tuple[str, ...],
        rules: int,
        skipped: tuple[str, ...] = (),  # grant paths that do not exist
        # (path, st_dev, st_ino, rights) of every directory rule: the seal broker's map
        directories: tuple[tuple[str, int, int, int], ...] = (),
    ) -> None:
        self.abi = abi
        self.fs_rights_handled = fs_rights_handled
        self.net_handled = net_handled
        self.scoped = scoped
        self.rules = rules
        self.skipped = skipped
        self.directories = directories

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._FIELDS)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Report) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        pairs = ", ".join(f"{n}={v!r}" for n, v in zip(self._FIELDS, self._fields(), strict=True))
        return f"Report({pairs})"

    def describe(self) -> list[str]:
        applied = min(self.abi, _KNOWN_ABI)
        newer = f" (rights of ABI {applied} applied)" if applied < self.abi else ""
        lines = [f"Landlock ABI {self.abi}{newer}"]
        unhandled = [
            n for i, (n, _) in enumerate(_FS_RIGHTS) if not self.fs_rights_handled >> i & 1
        ]
        fs = f"filesystem: {bin(self.fs_rights_handled).count('1')} rights handled"
        lines.append(fs + (f"; not restrictable here: {', '.join(unhandled)}" if unhandled else ""))
        net = "TCP bind/connect: granted ports only" if self.net_handled else "TCP: not restricted"
        lines.append(net + ("" if self.net_handled else f" (needs ABI {_NET_ABI})"))
        lines.append("scoped: " + (", ".join(self.scoped) or _no_scope_reason(self.abi)))
        lines.append(f"rules: {self.rules}")
        if self.skipped:
            lines.append("skipped (missing): " + ", ".join(self.skipped))
        return lines


def _no_scope_reason(abi: int) -> str:
    return "none (disabled)" if abi >= _SCOPE_ABI else f"none (needs ABI {_SCOPE_ABI})"


def abi_version() -> int:
    """The kernel's Landlock ABI; 0 when it lacks Landlock or has it disabled."""
    return _probe()[0]


def describe_abi() -> str:
    """One line for the session record: the ABI the jail's Landlock layer used."""
    abi = abi_version()
    applied = min(abi, _KNOWN_ABI)
    return f"Landlock ABI {abi}" + (f" (rights of ABI {applied})" if applied < abi else "")


def _probe() -> tuple[int, int]:
    """(abi, errno): errno says why abi is 0."""
    abi = _libc.syscall(
        ctypes.c_long(_SYS_CREATE_RULESET),
        None,
        ctypes.c_size_t(0),
        ctypes.c_uint32(_CREATE_RULESET_VERSION),
    )
    if abi >= 0:
        return abi, 0
    err = ctypes.get_errno()
    if err in (_errno.ENOSYS, _errno.EOPNOTSUPP):
        return 0, err
    raise LandlockError("landlock_create_ruleset", err, hint="could not read the ABI version")


def _handled(abi: int, scope: bool) -> tuple[int, int, int]:
    """(fs, net, scoped) masks this ABI can enforce: newer bits would be EINVAL."""
    abi = min(abi, _KNOWN_ABI)
    fs = sum(1 << i for i, (_, since) in enumerate(_FS_RIGHTS) if since <= abi)
    # Handling both net rights with no port rule refuses every TCP bind and connect.
    net = _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= _NET_ABI else 0
    scoped = sum(bit for _, bit in _SCOPES) if abi >= _SCOPE_ABI and scope else 0
    return fs, net, scoped


def restrict(
    *,
    read: Sequence[str],
    write: Sequence[str],
    execute: Sequence[str],
    tcp_connect: Sequence[int] = (),
    tcp_bind: Sequence[int] = (),
    seal: Sequence[str] = (),
    sealed_read_only: bool = False,
    scope: bool = True,
    tcp: bool = True,
) -> Report:
    """Landlock the calling thread (and its future children) to these grants.

    read: READ_FILE, READ_DIR. execute: those and EXECUTE. write: every handled right but
    EXECUTE (a written file runs only if also under an execute grant). seal: the write
    rights without the make rights (entries can be changed and removed, none created); a
    sealed directory must have no write grant above it, as rights inherit downwards;
    sealed_read_only (the reduced jail, where no mount keeps a protected file read-only)
    gives the sealed directories the read rights alone. A
    directory grant covers everything beneath it; a file grant gets only the file rights;
    a missing path is skipped and reported. TCP is refused except the listed ports
    (ABI >= 4); abstract unix sockets and signals stay inside the domain when scope
    (ABI >= 6). tcp=False leaves TCP alone (a server the profile gives the host's network).
    """
    ports = _port_rules(tcp_connect, tcp_bind)
    abi, err = _probe()
    if abi == 0:
        raise LandlockError("landlock_create_ruleset", err)
    fs, net, scoped = _handled(abi, scope)
    net = net if tcp else 0
    fd = _create_ruleset(abi, fs, net, scoped)
    try:
        added, skipped, directories = _add_path_rules(
            fd, _path_grants(read, write, execute, seal, fs, sealed_read_only=sealed_read_only)
        )
        if net:
            added += _add_port_rules(fd, ports)
        _no_new_privs()
        _call("landlock_restrict_self", _SYS_RESTRICT_SELF, ctypes.c_int(fd), ctypes.c_uint32(0))
    finally:
        os.close(fd)
    names = tuple(name for name, bit in _SCOPES if scoped & bit)
    return Report(abi, fs, bool(net), names, added, tuple(skipped), tuple(directories))


def _call(name: str, nr: int, *args: object, path: str = "") -> int:
    result: int = _libc.syscall(ctypes.c_long(nr), *args)
    if result < 0:
        raise LandlockError(name, ctypes.get_errno(), path)
    return result


def _create_ruleset(abi: int, fs: int, net: int, scoped: int) -> int:
    attr = _RulesetAttr(fs, net, scoped)
    # Older kernels know a shorter struct; pass only the fields this ABI has.
    size = 24 if abi >= _SCOPE_ABI else 16 if abi >= _NET_ABI else 8
    ref = ctypes.byref(attr)
    return _call(
        "landlock_create_ruleset",
        _SYS_CREATE_RULESET,
        ref,
        ctypes.c_size_t(size),
        ctypes.c_uint32(0),
    )


def _path_grants(
    read: Sequence[str],
    write: Sequence[str],
    execute: Sequence[str],
    seal: Sequence[str],
    fs: int,
    *,
    sealed_read_only: bool = False,
) -> list[tuple[str, int]]:
    """(path, rights) in order; rights for the same path accumulate in the kernel."""
    write_rights = fs & ~_EXECUTE
    sealed = _READ if sealed_read_only else write_rights & ~MAKE
    kinds = ((read, _READ), (execute, _RUN), (write, write_rights), (seal, sealed))
    return [(path, rights & fs) for paths, rights in kinds for path in paths]


def _add_path_rules(
    ruleset: int, grants: Iterable[tuple[str, int]]
) -> tuple[int, list[str], list[tuple[str, int, int, int]]]:
    """(rules added, grants skipped as missing, (path, dev, ino, rights) of directories)."""
    added, skipped, directories = 0, [], []
    for path, rights in grants:
        fd = _open_grant(path)
        if fd is None:
            skipped.append(path)
            continue
        try:
            st = os.fstat(fd)
            is_dir = stat.S_ISDIR(st.st_mode)
            allowed = rights if is_dir else rights & _FILE_ONLY
            _add_rule(ruleset, _RULE_PATH_BENEATH, _PathBeneathAttr(allowed, fd), path)
            added += 1
            if is_dir:  # the inode the rule is on, not what the path may name later
                directories.append((path, st.st_dev, st.st_ino, allowed))
        finally:
            os.close(fd)
    return added, skipped, directories


def _open_grant(path: str) -> int | None:
    """An O_PATH fd on the grant (symlinks followed), or None when it does not exist."""
    try:
        # O_PATH: the rule needs the inode only, and it opens without read permission.
        return os.open(path, os.O_PATH | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise LandlockError("open", exc.errno or 0, path) from exc


def _add_rule(ruleset: int, rule_type: int, attr: ctypes.Structure, what: str) -> None:
    args = (ctypes.c_int(ruleset), ctypes.c_int(rule_type), ctypes.byref(attr), ctypes.c_uint32(0))
    _call("landlock_add_rule", _SYS_ADD_RULE, *args, path=what)


def _port_rules(connect: Sequence[int], bind: Sequence[int]) -> dict[int, int]:
    """port -> net rights, checked before any syscall so a bad port changes nothing."""
    rules: dict[int, int] = {}
    for ports, right in ((connect, _NET_CONNECT_TCP), (bind, _NET_BIND_TCP)):
        for port in ports:
            if not 0 <= port <= 65535:
                raise LandlockError(
                    "landlock_add_rule",
                    _errno.EINVAL,
                    f"tcp port {port}",
                    hint="a TCP port is 0..65535",
                )
            rules[port] = rules.get(port, 0) | right
    return rules


def _add_port_rules(ruleset: int, ports: dict[int, int]) -> int:
    added = 0
    for port, rights in ports.items():
        try:
            _add_rule(ruleset, _RULE_NET_PORT, _NetPortAttr(rights, port), f"tcp port {port}")
        except LandlockError as exc:
            # A kernel without TCP says EAFNOSUPPORT: the doc says it is safe to ignore.
            if exc.errno != _errno.EAFNOSUPPORT:
                raise
            continue
        added += 1
    return added


def _no_new_privs() -> None:
    """restrict_self needs it (or CAP_SYS_ADMIN); set it only if the jail has not."""
    if _prctl(_PR_GET_NO_NEW_PRIVS, 0) == 1:
        return
    if _prctl(_PR_SET_NO_NEW_PRIVS, 1) != 0:
        raise LandlockError("prctl(PR_SET_NO_NEW_PRIVS)", ctypes.get_errno())


def _prctl(option: int, arg2: int) -> int:
    # glibc reads arg2..arg5 as unsigned long, and the kernel wants the unused ones 0:
    # pass full-width zeros, not ints whose upper register halves are undefined.
    zero = ctypes.c_ulong(0)
    result: int = _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), zero, zero, zero)
    return result
