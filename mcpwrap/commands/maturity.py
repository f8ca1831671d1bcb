"""How far a profile has come, on four levels, and what each missing step would take.

1. wrapped: the server runs behind mcpwrap, every decision in the audit log (any profile
   that loads).
2. isolated: the jail is on, the network is not the host's, and `check` has no error.
3. least privilege: tools not named are refused, and every write tool has argument
   constraints.
4. pinned and authenticated: a lock pins the server, and write calls need a token (a
   profile with no write tools has no write calls to guard).

A level counts only when every step of it and of the levels below is met. Pure: the
caller says whether a lock loads and whether there was an error finding.
"""

from __future__ import annotations

from typing import NamedTuple

from mcpwrap.config import paths
from mcpwrap.config.profile import Access, Network, Profile, ToolClass

NAMES = {1: "wrapped", 2: "isolated", 3: "least privilege", 4: "pinned and authenticated"}


class Step(NamedTuple):
    level: int
    met: bool
    missing: str  # what is wrong when not met, and what to do


class Level(NamedTuple):
    value: int
    missing: list[Step]  # the steps not met, lowest level first


def steps(profile: Profile, *, locked: bool, errors: bool) -> list[Step]:
    unconstrained = sorted(
        name for name, t in profile.tools.items() if t.cls is ToolClass.WRITE and not t.args
    )
    return [
        Step(2, profile.sandbox.enforce, "[sandbox] enforce = false: turn the jail on"),
        Step(
            2,
            profile.sandbox.network is not Network.HOST,
            'network = "host": use "none" or "allowlist"',
        ),
        Step(2, not errors, "error findings above: fix them"),
        Step(
            3,
            profile.policy.default is Access.DENY,
            '[policy] default = "allow": name the tools and set default = "deny"',
        ),
        Step(
            3,
            not unconstrained,
            f"write tools without argument constraints: {', '.join(unconstrained)}",
        ),
        Step(
            4,
            locked,
            f"no lock: run `mcpwrap lock --profile {paths.profile_arg(profile.source)}` "
            "and commit the lock",
        ),
        Step(
            4,
            not has_writes(profile) or profile.auth.needs_token(ToolClass.WRITE),
            'write calls need no token: set [auth] required = "write" (or true)',
        ),
    ]


def has_writes(profile: Profile) -> bool:
    """Whether a call may change something: a write tool, or any tool under default allow
    (unnamed tools count as write)."""
    return profile.policy.default is Access.ALLOW or any(
        t.cls is ToolClass.WRITE for t in profile.tools.values()
    )


def assess(profile: Profile, *, locked: bool, errors: bool) -> Level:
    all_steps = steps(profile, locked=locked, errors=errors)
    value = 1
    for level in (2, 3, 4):
        if all(s.met for s in all_steps if s.level <= level):
            value = level
    return Level(value, [s for s in all_steps if not s.met])
