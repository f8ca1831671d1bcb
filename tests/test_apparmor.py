"""The way to the full jail where AppArmor restricts user namespaces (Ubuntu 23.10+):
what doctor detects and says, the profile it prints (parsed by a real apparmor_parser),
and `doctor --fix` installing the jail's own interpreter and the profile.

This kernel restricts nothing (no AppArmor, no such sysctls): the AppArmor restriction is
simulated through the inputs of the pure functions (usernsfix.restrictions,
doctor.namespaces_check), never by patching the kernel's answers. user.max_user_namespaces
= 0 is real: a throwaway user namespace of the test's own with that limit.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from wrapped import MCPWRAP, REPO

from mcpwrap.commands import doctor
from mcpwrap.sandbox import apparmor, usernsfix
from mcpwrap.sandbox.usernsfix import Facts

UBUNTU = Facts(apparmor_restrict=1, userns_clone=None, max_user_namespaces=62000)


@pytest.mark.parametrize(
    ("facts", "kinds"),
    [
        (Facts(None, None, None), []),  # an old kernel: none of the sysctls
        (Facts(None, None, 96367), []),  # this machine
        (Facts(0, None, 62000), []),  # Ubuntu with the restriction turned off
        (UBUNTU, ["apparmor"]),  # Ubuntu 23.10+ as shipped
        (Facts(None, 0, 62000), ["clone"]),  # Debian's kernel.unprivileged_userns_clone=0
        (Facts(None, 1, 62000), []),
        (Facts(None, None, 0), ["max"]),  # a hardened kernel
        (Facts(1, 0, 0), ["max", "clone", "apparmor"]),
    ],
)
def test_what_blocks_user_namespaces(facts: Facts, kinds: list[str]) -> None:
    found = usernsfix.restrictions(facts)
    assert [r.kind for r in found] == kinds
    assert all(r.detail and r.fix for r in found)


def test_the_apparmor_restriction_names_doctor_fix() -> None:
    (found,) = usernsfix.restrictions(UBUNTU)
    assert "apparmor_restrict_unprivileged_userns" in found.detail
    assert "doctor --fix" in found.fix


def test_doctor_when_apparmor_restricts_names_the_fix_and_prints_the_profile() -> None:
    """What a user on Ubuntu 24.04 sees: the failing line, its fix, and the profile, where
    it goes and the command that loads it. The probe's failure is the one Ubuntu gives an
    unconfined process (EPERM), passed in."""
    check = doctor.namespaces_check(
        False,
        "namespaces: unshare(0x7c020000) failed: Operation not permitted (errno 1)",
        "/usr/bin/python3.12",
        usernsfix.restrictions(UBUNTU),
    )
    out = StringIO()
    doctor._write_checks([check], out)
    usernsfix.apparmor_advice(out)
    text = out.getvalue()
    assert "FAIL namespaces" in text
    assert "kernel.apparmor_restrict_unprivileged_userns = 1" in text
    assert "doctor --fix" in text.split("to fix:")[1].splitlines()[0]
    assert apparmor.profile_text(apparmor.DEDICATED) in _unindented(text)
    assert f"It goes in {apparmor.PROFILE_FILE}" in text
    assert f"apparmor_parser -r {apparmor.PROFILE_FILE}" in text


def _unindented(text: str) -> str:
    return "\n".join(line.removeprefix("    ") for line in text.splitlines()) + "\n"


def test_doctor_where_user_namespaces_are_really_blocked(tmp_path: Path) -> None:
    """user.max_user_namespaces = 0 in a user namespace of the test's own: the real
    probe fails and doctor names the sysctl and its fix (and no AppArmor profile)."""
    out = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "sh",
            "-c",
            'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"',
            "sh",
            *MCPWRAP,
            "doctor",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAIL namespaces" in out.stdout
    assert "user.max_user_namespaces = 0" in out.stdout
    assert "to fix: sysctl -w user.max_user_namespaces=" in out.stdout
    assert "apparmor_parser" not in out.stdout


def _parser() -> str:
    """An apparmor_parser of AppArmor 4+ (`userns`): the system's, or Debian 13's that
    scripts/test unpacks into .cache/apparmor where the system's is older."""
    for candidate in ("/sbin/apparmor_parser", str(REPO / ".cache/apparmor/apparmor_parser")):
        if not os.access(candidate, os.X_OK):
            continue
        version = subprocess.run([candidate, "--version"], capture_output=True, text=True)
        found = re.search(r"version (\d+)", version.stdout)
        if found and int(found.group(1)) >= 4:
            return candidate
    pytest.fail("no apparmor_parser of AppArmor 4 or later: run scripts/test, which provides one")


def _parses(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "mcpwrap-jail"
    path.write_text(text)
    return subprocess.run([_parser(), "-Q", str(path)], capture_output=True, text=True)


def test_the_profile_parses(tmp_path: Path) -> None:
    text = apparmor.profile_text(apparmor.DEDICATED)
    done = _parses(text, tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"profile mcpwrap-jail {apparmor.DEDICATED} flags=(unconfined) {{" in text
    assert "\n  userns,\n" in text


def test_control_the_parser_rejects_a_broken_rule(tmp_path: Path) -> None:
    """The parser checks the rule itself: a misspelt `userns` does not pass."""
    text = apparmor.profile_text(apparmor.DEDICATED).replace("  userns,", "  usernz,")
    assert _parses(text, tmp_path).returncode != 0


def test_the_profile_refuses_a_path_apparmor_would_read_as_a_pattern() -> None:
    with pytest.raises(ValueError, match="plain paths"):
        apparmor.profile_text("/opt/mcp wrap/*/python")


@pytest.fixture
def root(var_tmp_path: Path) -> Path:
    """A directory to stand for /, that root alone may change (/var/tmp is sticky)."""
    if os.geteuid() != 0:
        pytest.fail("doctor --fix installs as root: run this test as root (scripts/test does)")
    return var_tmp_path


def test_doctor_fix_installs_the_interpreter_and_the_profile(root: Path) -> None:
    env = {**os.environ, apparmor.ROOT_ENV: str(root)}
    out = subprocess.run(
        [*MCPWRAP, "doctor", "--fix"], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, out.stdout + out.stderr
    exe = root / apparmor.DEDICATED.lstrip("/")
    profile = root / apparmor.PROFILE_FILE.lstrip("/")
    assert profile.read_text() == apparmor.profile_text(str(exe))
    assert (exe.parent / "pyvenv.cfg").read_text() == (
        f"home = {os.path.dirname(os.path.realpath(sys.executable))}\n"
    )
    st = exe.stat()
    assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o755)
    # AppArmor is not enabled in this kernel: written, not loaded, and said so.
    assert "AppArmor is not enabled in this kernel" in out.stdout
    # The doctor after the fix probed namespaces and ran the jail through the copy.
    assert f"(by {exe})" in out.stdout
    assert "ok   jail end to end" in out.stdout


def test_the_copy_runs_the_jail_under_isolation_with_its_stdlib(root: Path) -> None:
    """Copied, CPython still finds its standard library under -I (which ignores
    PYTHONHOME): the pyvenv.cfg beside it names the original's directory."""
    env = {**os.environ, apparmor.ROOT_ENV: str(root)}
    subprocess.run([*MCPWRAP, "doctor", "--fix"], capture_output=True, env=env, check=True)
    exe = str(root / apparmor.DEDICATED.lstrip("/"))
    probe = "import sys, json, ctypes; print(sys.version, sys.flags.isolated)"
    done = subprocess.run([exe, "-I", "-S", "-B", "-c", probe], capture_output=True, text=True)
    assert done.stdout.strip() == f"{sys.version} 1", done.stderr


def test_trampoline_executable_takes_only_a_current_root_owned_copy(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(apparmor.ROOT_ENV, str(root))
    assert apparmor.trampoline_executable() == sys.executable  # nothing installed
    usernsfix.fix(StringIO())
    exe = apparmor.places().executable
    assert apparmor.trampoline_executable() == exe
    # another user could change the directory: not used
    os.chmod(os.path.dirname(exe), 0o777)
    assert "not root's alone" in (apparmor.copy_problem(exe) or "")
    assert apparmor.trampoline_executable() == sys.executable
    os.chmod(os.path.dirname(exe), 0o755)
    # Python upgraded (the original's time no longer matches): stale, not used
    os.utime(exe, ns=(0, 0))
    assert "not a current copy" in (apparmor.copy_problem(exe) or "")
    assert apparmor.trampoline_executable() == sys.executable


def test_doctor_fix_needs_root() -> None:
    """As another user (nobody, in a forked child) --fix stops before writing anything."""
    pid = os.fork()
    if pid == 0:
        os.setgid(65534)
        os.setuid(65534)
        try:
            usernsfix.fix(StringIO())
        except usernsfix.FixError as exc:
            os._exit(0 if "run it as root: sudo " in str(exc) else 1)
        os._exit(2)
    assert os.waitpid(pid, 0)[1] == 0
