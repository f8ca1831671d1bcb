"""Why unprivileged user namespaces are blocked here, and `mcpwrap doctor --fix`.

`restrictions(facts)` is pure: the sysctl values in, what blocks the full jail and what
would unblock it out (a table in the tests, since this machine restricts nothing).
`fix()` installs the jail's own interpreter and the AppArmor profile (sandbox/apparmor.py)
and loads it. It changes no sysctl: turning a machine-wide protection off is the
administrator's decision, and doctor prints the command for it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import NamedTuple, TextIO

from mcpwrap.basics.errors import MCPWrapError
from mcpwrap.sandbox import apparmor

APPARMOR_SYSCTL = "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"
CLONE_SYSCTL = "/proc/sys/kernel/unprivileged_userns_clone"
MAX_SYSCTL = "/proc/sys/user/max_user_namespaces"
APPARMOR_ENABLED = "/sys/module/apparmor/parameters/enabled"


class Facts(NamedTuple):
    """The sysctls that decide whether an unprivileged process may create a user
    namespace; None where the kernel has no such sysctl."""

    apparmor_restrict: int | None  # kernel.apparmor_restrict_unprivileged_userns (Ubuntu)
    userns_clone: int | None  # kernel.unprivileged_userns_clone (Debian's kernels)
    max_user_namespaces: int | None  # user.max_user_namespaces


class Restriction(NamedTuple):
    kind: str  # "apparmor", "clone" or "max"
    detail: str
    fix: str


def read_facts() -> Facts:
    return Facts(_sysctl(APPARMOR_SYSCTL), _sysctl(CLONE_SYSCTL), _sysctl(MAX_SYSCTL))


def _sysctl(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def restrictions(facts: Facts) -> list[Restriction]:
    """What blocks unprivileged user namespaces, each with its fix."""
    found = []
    if facts.max_user_namespaces == 0:
        found.append(
            Restriction(
                "max",
                "user.max_user_namespaces = 0: no user namespace may be created",
                "sysctl -w user.max_user_namespaces=10000 (and the same line, without "
                "`sysctl -w`, in /etc/sysctl.d/60-mcpwrap.conf to keep it)",
            )
        )
    if facts.userns_clone == 0:
        found.append(
            Restriction(
                "clone",
                "kernel.unprivileged_userns_clone = 0: only root may create user namespaces",
                "sysctl -w kernel.unprivileged_userns_clone=1 (and the same line, without "
                "`sysctl -w`, in /etc/sysctl.d/60-mcpwrap.conf to keep it)",
            )
        )
    if facts.apparmor_restrict is not None and facts.apparmor_restrict != 0:
        found.append(
            Restriction(
                "apparmor",
                "kernel.apparmor_restrict_unprivileged_userns = 1: AppArmor lets only "
                "programs whose profile has a `userns` rule use user namespaces",
                f"as root: {fix_command()} (installs the AppArmor profile below for "
                "mcpwrap's jail alone); or, for every program, "
                "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0",
            )
        )
    return found


def fix_command() -> str:
    """`doctor --fix` as root with the mcpwrap that runs now (sudo's PATH may have none)."""
    return f"sudo {shutil.which('mcpwrap') or 'mcpwrap'} doctor --fix"


def apparmor_advice(out: TextIO) -> None:
    """The profile, where it goes, and the one command that loads it."""
    where = apparmor.places()
    out.write(
        "\nAppArmor restricts user namespaces here. mcpwrap's jail needs them; this "
        f"profile grants them to its trampoline's own interpreter, {where.executable}, "
        "and to no other program:\n\n"
    )
    for line in apparmor.profile_text(where.executable).splitlines():
        out.write(f"    {line}\n" if line else "\n")
    out.write(
        f"\nIt goes in {where.profile}, beside a copy of this Python interpreter at "
        f"{where.executable} (the profile attaches by path, and a profile on "
        f"{os.path.realpath(sys.executable)} would cover every Python program). "
        f"Load it with:\n    apparmor_parser -r {where.profile}\n"
        f"`{fix_command()}` does all three.\n"
    )


def apparmor_enabled() -> bool:
    try:
        with open(APPARMOR_ENABLED) as f:
            return f.read().strip() == "Y"
    except OSError:
        return False


class FixError(MCPWrapError):
    """doctor --fix could not install or load the profile."""


def fix(out: TextIO) -> int:
    """Install the dedicated interpreter and the profile, then load the profile. Where
    AppArmor is not enabled the files are still written (they do nothing until it is,
    and then apparmor.service loads the profile at boot), and that is said."""
    if os.geteuid() != 0:
        raise FixError(
            f"doctor --fix writes under /usr/local and /etc: run it as root: {fix_command()}"
        )
    where = apparmor.places()
    _install_interpreter(where, out)
    from mcpwrap.basics import atomicfile

    try:
        atomicfile.write(where.profile, apparmor.profile_text(where.executable))
    except OSError as exc:
        raise FixError(
            f"cannot write the AppArmor profile {where.profile}: {exc.strerror}"
        ) from exc
    out.write(f"wrote the AppArmor profile {where.profile}\n")
    if not apparmor_enabled():
        out.write(
            "AppArmor is not enabled in this kernel: the profile is not loaded, and user "
            "namespaces are not restricted by AppArmor here. apparmor.service loads it at "
            "boot once AppArmor is on.\n"
        )
        return 0
    parser = shutil.which("apparmor_parser") or next(
        (p for p in ("/usr/sbin/apparmor_parser", "/sbin/apparmor_parser") if os.path.exists(p)),
        None,
    )
    if parser is None:
        raise FixError("apparmor_parser is not installed (Debian, Ubuntu: apt install apparmor)")
    done = subprocess.run(
        [parser, "-r", where.profile], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise FixError(
            f"apparmor_parser -r {where.profile} failed (exit {done.returncode}): "
            f"{done.stderr.strip()}; AppArmor 4 (Ubuntu 23.10+) is needed for `userns`"
        )
    out.write(f"loaded it: apparmor_parser -r {where.profile}\n")
    return 0


def _install_interpreter(where: apparmor.Places, out: TextIO) -> None:
    """Copy this interpreter (times kept: apparmor.copy_problem compares them) with a
    pyvenv.cfg naming the original's directory, and check that the copy runs mcpwrap's
    way (-I -S -B) as the same Python."""
    from mcpwrap.basics import atomicfile

    original = os.path.realpath(sys.executable)
    directory = os.path.dirname(where.executable)
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        tmp = where.executable + ".new"
        shutil.copy2(original, tmp)
        os.chown(tmp, 0, 0)
        os.chmod(tmp, 0o755)  # noqa: S103 - an interpreter every user may run, only root change
        os.replace(tmp, where.executable)
        atomicfile.write(where.pyvenv, f"home = {os.path.dirname(original)}\n")
    except OSError as exc:
        raise FixError(
            f"cannot install the jail's interpreter at {where.executable}: {exc.strerror}"
        ) from exc
    probe = "import sys; print(sys.version)"
    done = subprocess.run(
        [where.executable, "-I", "-S", "-B", "-c", probe],
        capture_output=True,
        text=True,
        env={},
        check=False,
    )
    if done.returncode != 0 or done.stdout.strip() != sys.version:
        for path in (where.executable, where.pyvenv):
            os.unlink(path)
        raise FixError(
            f"a copy of {original} at {where.executable} does not run as the same Python "
            f"({(done.stderr or done.stdout).strip()[:300]}): this interpreter cannot be "
            "copied (a relocatable build?); install mcpwrap under the system's python3"
        )
    problem = apparmor.copy_problem(where.executable)
    if problem is not None:
        raise FixError(f"the installed copy would not be used: {problem}")
    out.write(f"installed the jail's interpreter {where.executable} (a copy of {original})\n")
