"""Whether this process can have the full jail's user namespace, and if not, why and how to
fix it: the facts are read (and probed) by `facts()` / `available()`, and judged by
`classify()`, a pure function tested as a table.

Ways a machine refuses unprivileged user namespaces:

- `user.max_user_namespaces = 0` (hardened kernels, containers): unshare fails ENOSPC;
- Debian's `kernel.unprivileged_userns_clone = 0`: unshare fails EPERM;
- Ubuntu 23.10+ `kernel.apparmor_restrict_unprivileged_userns = 1`: unshare *succeeds*, but
  AppArmor denies every capability inside the namespace unless a profile grants `userns`
  to the program, so the jail's first mount fails. Only a probe (a forked child that
  unshares, maps its ids and mounts a tmpfs) tells which;
- a seccomp filter of a container runtime or a sandbox above mcpwrap: EPERM;
- a kernel without CONFIG_USER_NS: EINVAL (or ENOSYS).

Imported by the jail trampoline: os, errno and the small kernel module only.
"""

from __future__ import annotations

import errno
import os
from typing import NamedTuple

from mcpwrap.sandbox import kernel

# unshare's answers that mean "no user namespace here", not a bug: the reduced jail is
# the way on (with [sandbox] jail = "any"). unshare is atomic: nothing was created.
UNAVAILABLE_ERRNOS = frozenset(
    (errno.EPERM, errno.ENOSPC, errno.EUSERS, errno.EINVAL, errno.ENOSYS)
)

_MAX = "/proc/sys/user/max_user_namespaces"
_DEBIAN = "/proc/sys/kernel/unprivileged_userns_clone"
_APPARMOR = "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"

ACCEPT_REDUCED = (
    'or set [sandbox] jail = "any" in the profile to accept the reduced jail (no '
    "namespaces: Landlock, seccomp, rlimits) where user namespaces cannot be had"
)


class Availability(NamedTuple):
    usable: bool
    reason: str  # what refuses user namespaces ("" when usable)
    fix: str  # what to do about it ("" when usable)


class Facts(NamedTuple):
    """What decides it. None: the sysctl does not exist here, or the probe did not run."""

    root: bool
    max_user_namespaces: int | None = None
    unprivileged_userns_clone: int | None = None
    apparmor_restrict: int | None = None
    unshare_errno: int | None = None  # the errno unshare(CLONE_NEWUSER) gave; 0: it worked
    capability_errno: int | None = None  # the errno of the first privileged step inside


_APPARMOR_FIX = (
    "`mcpwrap doctor` prints the AppArmor profile that grants userns to mcpwrap's jail "
    "alone, and `sudo mcpwrap doctor --fix` installs it; or, for every program, "
    "`sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`"
)


def classify(facts: Facts) -> Availability:
    """The verdict from the facts; a probe's errno, when there is one, beats the sysctls."""
    if facts.unshare_errno:
        return _by_errno(facts)
    if facts.capability_errno:
        return Availability(
            False,
            "the user namespace is made but its capabilities are denied "
            f"({_name(facts.capability_errno)} at the first mount)"
            + (
                ": AppArmor restricts unprivileged user namespaces "
                "(kernel.apparmor_restrict_unprivileged_userns = 1)"
                if facts.apparmor_restrict == 1
                else ""
            ),
            _APPARMOR_FIX if facts.apparmor_restrict == 1 else "see `mcpwrap doctor`",
        )
    if facts.unshare_errno == 0:
        return Availability(True, "", "")
    return _by_sysctl(facts)


def _by_sysctl(facts: Facts) -> Availability:
    if facts.max_user_namespaces == 0:
        return _max_zero()
    if not facts.root and facts.unprivileged_userns_clone == 0:
        return Availability(
            False,
            "unprivileged user namespaces are off (kernel.unprivileged_userns_clone = 0)",
            "`sudo sysctl -w kernel.unprivileged_userns_clone=1` (and the same line in "
            "/etc/sysctl.d/ to keep it)",
        )
    if not facts.root and facts.apparmor_restrict == 1:
        return Availability(
            False,
            "AppArmor restricts unprivileged user namespaces "
            "(kernel.apparmor_restrict_unprivileged_userns = 1)",
            _APPARMOR_FIX,
        )
    return Availability(True, "", "")


def _max_zero() -> Availability:
    return Availability(
        False,
        "user namespaces are disabled (user.max_user_namespaces = 0)",
        "`sudo sysctl -w user.max_user_namespaces=15000` (and the same line in /etc/sysctl.d/ "
        "to keep it)",
    )


def _by_errno(facts: Facts) -> Availability:
    err = facts.unshare_errno or 0
    if err in (errno.ENOSPC, errno.EUSERS):
        if facts.max_user_namespaces == 0:
            return _max_zero()
        return Availability(
            False,
            f"the limit of user namespaces is reached ({_name(err)}; user.max_user_namespaces "
            f"= {facts.max_user_namespaces})",
            "raise user.max_user_namespaces, or end processes that hold user namespaces",
        )
    if err in (errno.EINVAL, errno.ENOSYS):
        return Availability(
            False,
            f"the kernel has no user namespaces ({_name(err)}: built without CONFIG_USER_NS)",
            "use a kernel with CONFIG_USER_NS=y",
        )
    found = _by_sysctl(facts)
    if not found.usable:
        return found
    return Availability(
        False,
        f"unshare(CLONE_NEWUSER) is refused ({_name(err)}) by a seccomp filter or security "
        "module above mcpwrap (a container runtime, another sandbox)",
        "allow unshare and clone with CLONE_NEWUSER for mcpwrap in that runtime (docker: "
        "--security-opt seccomp=unconfined, or a profile that allows them)",
    )


def _name(err: int) -> str:
    return errno.errorcode.get(err, str(err))


def _read_int(path: str) -> int | None:
    try:
        with open(path, "rb") as f:
            return int(f.read().strip() or b"0")
    except (OSError, ValueError):
        return None


def facts(probe: bool = False) -> Facts:
    """The sysctls; with probe, what a forked child's unshare, id maps and mount gave."""
    read = Facts(
        root=os.geteuid() == 0,
        max_user_namespaces=_read_int(_MAX),
        unprivileged_userns_clone=_read_int(_DEBIAN),
        apparmor_restrict=_read_int(_APPARMOR),
    )
    if not probe:
        return read
    unshared, capability = _probe()
    return read._replace(unshare_errno=unshared, capability_errno=capability)


def needs_probe(found: Facts) -> bool:
    """Only AppArmor's restriction lets unshare succeed and fail later: probe for it."""
    return found.apparmor_restrict == 1 and not found.root


def available() -> Availability:
    """Whether the full jail's user namespace can be had here (forks a probe child)."""
    return classify(facts(probe=True))


def _probe() -> tuple[int, int]:
    """(unshare's errno, the first privileged step's errno) in a forked child; 0 for ok."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report two numbers, exit, never return to the caller
        os.close(r)
        code = b"0 0"
        uid, gid = os.getuid(), os.getgid()  # after unshare they read as the overflow id
        try:
            kernel.unshare(kernel.CLONE_NEWUSER | kernel.CLONE_NEWNS)
            try:
                _map_and_mount(uid, gid)
            except kernel.SetupError as exc:
                code = f"0 {exc.errno or errno.EPERM}".encode()
        except kernel.SetupError as exc:
            code = f"{exc.errno or errno.EPERM} 0".encode()
        except BaseException:
            code = f"{errno.EPERM} 0".encode()
        os.write(w, code)
        os._exit(0)
    os.close(w)
    try:
        data = os.read(r, 64)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    first, _, second = data.decode().partition(" ")
    return int(first or errno.EPERM), int(second or 0)


def _map_and_mount(uid: int, gid: int) -> None:
    kernel.write_file("/proc/self/setgroups", "deny", "user namespace")
    kernel.write_file("/proc/self/uid_map", f"{uid} {uid} 1\n", "user namespace")
    kernel.write_file("/proc/self/gid_map", f"{gid} {gid} 1\n", "user namespace")
    kernel.mount("none", "/", None, kernel.MS_REC | kernel.MS_PRIVATE)
    kernel.mount("tmpfs", "/tmp", "tmpfs", 0, "size=4k")
