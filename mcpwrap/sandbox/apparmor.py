"""The jail trampoline's own interpreter, and the AppArmor profile that lets it alone
create user namespaces (Ubuntu 23.10+, kernel.apparmor_restrict_unprivileged_userns=1).

AppArmor attaches a profile by the real path of the executable (symlinks resolved). The
trampoline is a Python interpreter, so a profile on /usr/bin/python3.X would grant user
namespaces to every Python program. `mcpwrap doctor --fix` (doctor.py, usernsfix.py)
installs instead a copy of the interpreter that runs mcpwrap, at a root-owned path of its
own (DEDICATED), with a pyvenv.cfg beside it that points the copy at the original's
standard library (`-I` ignores PYTHONHOME, never pyvenv.cfg), and a profile attached to
that path alone.

`trampoline_executable()` is on the path of every jailed start: a few stat calls, no
imports beyond os and sys.
"""

from __future__ import annotations

import os
import stat
import sys
from typing import NamedTuple

# TEST ONLY: a directory that stands for / in every path below, so that the tests can
# install and use the copy without touching the machine's /usr/local and /etc.
ROOT_ENV = "MCPWRAP_APPARMOR_ROOT"

DEDICATED = "/usr/local/libexec/mcpwrap/jail-python"
PROFILE_FILE = "/etc/apparmor.d/mcpwrap-jail"
PROFILE_NAME = "mcpwrap-jail"


class Places(NamedTuple):
    executable: str  # the trampoline's interpreter
    pyvenv: str  # its pyvenv.cfg: `home` is the original interpreter's directory
    profile: str  # the AppArmor profile


def places() -> Places:
    root = os.environ.get(ROOT_ENV, "").rstrip("/")
    exe = root + DEDICATED
    return Places(exe, os.path.join(os.path.dirname(exe), "pyvenv.cfg"), root + PROFILE_FILE)


def trampoline_executable() -> str:
    """The dedicated interpreter when it is installed and is a current copy of the one
    running mcpwrap; else sys.executable."""
    exe = places().executable
    return exe if copy_problem(exe) is None else sys.executable


def copy_problem(exe: str) -> str | None:
    """Why `exe` cannot stand in for this interpreter (None: it can). A copy counts as
    current when size and modification time match the original's (doctor --fix copies
    with the time kept), so an upgraded Python makes it stale, never silently mixed with
    a newer standard library. Only root may be able to change it or any directory above
    it: another user who could would choose the program mcpwrap starts."""
    try:
        copy = os.stat(exe)
    except OSError:
        return f"{exe} is not installed"
    original = os.path.realpath(sys.executable)
    try:
        mine = os.stat(original)
    except OSError as exc:
        return f"cannot stat this interpreter {original}: {exc.strerror}"
    if (copy.st_size, copy.st_mtime_ns) != (mine.st_size, mine.st_mtime_ns):
        return (
            f"{exe} is not a current copy of this interpreter {original} (Python was "
            "upgraded, or mcpwrap runs under another one)"
        )
    return untrusted(exe)


def untrusted(path: str) -> str | None:
    """Why a user other than root could replace `path` (None: none could): it and each
    directory above it must be root's and not writable by group or others, except a
    sticky directory (/tmp), where no one may rename or remove root's entries."""
    current = path
    while True:
        try:
            st = os.lstat(current)
        except OSError as exc:
            return f"cannot stat {current}: {exc.strerror}"
        sticky = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
        if st.st_uid != 0 or (st.st_mode & 0o022 and not sticky):
            mode = f"{st.st_mode & 0o7777:o}"
            return f"{current} is not root's alone (owner uid {st.st_uid}, mode {mode})"
        if stat.S_ISLNK(st.st_mode):
            return f"{current} is a symbolic link"
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def profile_text(executable: str) -> str:
    """The AppArmor profile: `userns` for `executable` and nothing else changed."""
    import re

    if not re.fullmatch(r"/[A-Za-z0-9/._+-]*", executable):
        # Anything else would be quoting or an AppArmor pattern (*, ?, {...}) in the path.
        raise ValueError(f"{executable!r}: AppArmor attachment paths here are plain paths")
    return f"""\
# mcpwrap's jail trampoline: lets {executable} create user namespaces where
# AppArmor restricts them (kernel.apparmor_restrict_unprivileged_userns=1).
# Installed by `mcpwrap doctor --fix`; load it with: apparmor_parser -r {PROFILE_FILE}
#
# What it grants: the profile is unconfined apart from the `userns` rule, as Ubuntu's
# profiles for Chrome and VS Code are. That executable is a copy of a Python interpreter,
# so whoever may run it may create user namespaces with code of their choice, exactly as
# on a machine without the restriction. Every other program, /usr/bin/python3 included,
# stays restricted. The server mcpwrap starts through it keeps this label (an unconfined
# profile keeps its label across exec); the jail's seccomp filter refuses it any new
# namespace, and it holds no capabilities. To narrow who may use it:
#   chgrp GROUP {executable} && chmod 0750 {executable}

abi <abi/4.0>,
include <tunables/global>

profile {PROFILE_NAME} {executable} flags=(unconfined) {{
  userns,

  # Site-specific additions and overrides. See local/README for details.
  include if exists <local/{PROFILE_NAME}>
}}
"""
