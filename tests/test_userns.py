"""sandbox/userns.py: why user namespaces cannot be had, and what to do, as a table."""

from __future__ import annotations

import errno

import pytest

from mcpwrap.sandbox import userns
from mcpwrap.sandbox.userns import Facts

USER = Facts(root=False, max_user_namespaces=15000)

CASES = [
    # (facts, usable, a piece of the reason, a piece of the fix)
    (USER, True, "", ""),
    (USER._replace(unshare_errno=0, capability_errno=0), True, "", ""),
    (Facts(root=True, max_user_namespaces=0), False, "user.max_user_namespaces = 0", "sysctl"),
    (
        USER._replace(max_user_namespaces=0, unshare_errno=errno.ENOSPC),
        False,
        "user.max_user_namespaces = 0",
        "user.max_user_namespaces=15000",
    ),
    (
        USER._replace(unshare_errno=errno.ENOSPC),
        False,
        "limit of user namespaces is reached",
        "raise user.max_user_namespaces",
    ),
    (
        USER._replace(unprivileged_userns_clone=0),
        False,
        "kernel.unprivileged_userns_clone = 0",
        "kernel.unprivileged_userns_clone=1",
    ),
    (
        USER._replace(unprivileged_userns_clone=0, unshare_errno=errno.EPERM),
        False,
        "kernel.unprivileged_userns_clone = 0",
        "kernel.unprivileged_userns_clone=1",
    ),
    # root is not refused by Debian's switch
    (Facts(root=True, unprivileged_userns_clone=0), True, "", ""),
    (
        USER._replace(apparmor_restrict=1),
        False,
        "AppArmor restricts",
        "mcpwrap doctor",
    ),
    # AppArmor lets unshare succeed and denies the capabilities inside
    (
        USER._replace(apparmor_restrict=1, unshare_errno=0, capability_errno=errno.EPERM),
        False,
        "capabilities are denied (EPERM at the first mount): AppArmor",
        "doctor --fix",
    ),
    # a profile grants userns to mcpwrap: the probe says so
    (USER._replace(apparmor_restrict=1, unshare_errno=0, capability_errno=0), True, "", ""),
    (
        USER._replace(unshare_errno=errno.EPERM),
        False,
        "seccomp filter or security module",
        "CLONE_NEWUSER",
    ),
    (USER._replace(unshare_errno=errno.EINVAL), False, "CONFIG_USER_NS", "CONFIG_USER_NS"),
    (USER._replace(unshare_errno=errno.ENOSYS), False, "CONFIG_USER_NS", "CONFIG_USER_NS"),
]


@pytest.mark.parametrize(("facts", "usable", "reason", "fix"), CASES)
def test_classify(facts: Facts, usable: bool, reason: str, fix: str) -> None:
    found = userns.classify(facts)
    assert found.usable is usable
    assert reason in found.reason and fix in found.fix
    assert bool(found.reason) is not usable and bool(found.fix) is not usable


def test_every_unavailable_errno_has_its_own_reason() -> None:
    for err in userns.UNAVAILABLE_ERRNOS:
        found = userns.classify(USER._replace(unshare_errno=err))
        assert not found.usable and errno.errorcode[err] in found.reason


def test_only_apparmors_restriction_needs_a_probe() -> None:
    assert userns.needs_probe(USER._replace(apparmor_restrict=1))
    assert not userns.needs_probe(USER._replace(apparmor_restrict=0))
    assert not userns.needs_probe(Facts(root=True, apparmor_restrict=1))


def test_this_machine_has_user_namespaces() -> None:
    """The probe really forks, unshares, maps and mounts: here that works."""
    assert userns.available() == userns.Availability(True, "", "")
