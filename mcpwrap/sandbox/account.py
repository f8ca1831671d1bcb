"""What holds in the reduced jail (no namespaces) and what is weaker, class by class.

The one source of this account: `mcpwrap doctor` prints it, `mcpwrap check`'s note on a
profile that accepts the reduced jail quotes its weaker rows, the README's table under
"The reduced jail" is tested to say the same (tests/test_reduced_jail.py), and each row
names the escape test that checks it (tests/test_escape.py runs every class in both jail
kinds). Data only: nothing on the trampoline's path imports it.
"""

from __future__ import annotations

from typing import NamedTuple

HOLDS, WEAKER, SCOPED, ABSENT = "holds", "weaker", "holds with Landlock ABI 6+", "not available"


class Row(NamedTuple):
    escape: str  # the class, as the README names it
    result: str  # HOLDS, WEAKER, SCOPED (weaker below ABI 6) or ABSENT
    how: str


ACCOUNT: tuple[Row, ...] = (
    Row(
        "files outside the grants (secrets in $HOME, /etc/shadow, /run, the host's /tmp)",
        HOLDS,
        "Landlock on the host's tree; a read grant is read-only by Landlock alone (the full "
        "jail adds a read-only mount); HOME and TMPDIR are a private per-run directory",
    ),
    Row(
        "symlinks and hard links out of a grant",
        HOLDS,
        "Landlock checks the path a link leads to, and refuses a link that would gain rights",
    ),
    Row(
        "protected paths (.git/hooks, .mcp.json, the profile...)",
        HOLDS,
        "their directories are sealed read-only (Landlock) and mcpwrap's broker makes, "
        "renames and removes the other names there, never a protected one or its ancestors",
    ),
    Row(
        "setuid binaries, capabilities",
        HOLDS,
        "no_new_privs (the host's mounts are not nosuid); every capability dropped (an "
        "ordinary user's bounding set stays, moot under no_new_privs)",
    ),
    Row(
        "new namespaces, ptrace, mounts, io_uring, keyctl, bpf, 32-bit syscalls",
        HOLDS,
        "seccomp, no capabilities, no_new_privs",
    ),
    Row(
        "unix sockets of host services, UDP, raw, netlink",
        HOLDS,
        'seccomp (no socket(AF_UNIX), only SOCK_STREAM; with network = "none" no socket)',
    ),
    Row(
        "TCP to host services",
        HOLDS,
        "seccomp, and Landlock TCP rules (ABI 4) that allow only mcpwrap's proxy ports",
    ),
    Row(
        "TCP to a proxy's port number at another address",
        WEAKER,
        'a Landlock rule is per port, not per address: with network = "allowlist" a host '
        "service on the loopback or elsewhere listening on that port number is reachable",
    ),
    Row(
        "other local processes using mcpwrap's proxies",
        HOLDS,
        "they listen on the host's loopback and ask for the run's secret, which only the "
        "server is given, in its proxy URLs (a process of your own user could read it from "
        "the server's environment, but already has your network)",
    ),
    Row(
        "other processes' environment, memory, fds",
        HOLDS,
        "Landlock's ptrace restriction",
    ),
    Row(
        "signals to other processes, abstract unix sockets",
        SCOPED,
        "Landlock scoping; below ABI 6 the server can signal your processes and reach the "
        "host's abstract unix sockets (the start record names it)",
    ),
    Row(
        "seeing other processes",
        WEAKER,
        "no pid namespace: /proc lists them and their command lines",
    ),
    Row(
        "daemonised grandchildren",
        HOLDS,
        "the supervisor is their subreaper and kills them all, also when mcpwrap is killed",
    ),
    Row(
        "fork bombs, memory, CPU",
        WEAKER,
        "rlimits; RLIMIT_NPROC counts your processes on the host, so it is set to their "
        "number at start plus [sandbox] processes (as root, a pids cgroup holds exactly)",
    ),
    Row(
        "tcp: forwards",
        ABSENT,
        "they need the full jail's network namespace: the run refuses them",
    ),
)


def result_here(row: Row, abi: int) -> str:
    """The row's result on a kernel with Landlock ABI `abi`."""
    if row.result == SCOPED:
        return HOLDS if abi >= 6 else WEAKER
    return row.result


def weaker_summary() -> str:
    """The weaker rows in one sentence, for `mcpwrap check`."""
    return "; ".join(
        f"{row.escape}: {row.how}" for row in ACCOUNT if row.result in (WEAKER, SCOPED)
    )


def lines(abi: int) -> list[str]:
    """The account as doctor prints it: one row a line, its result on this kernel first."""
    return [f"{result_here(row, abi):6} {row.escape}: {row.how}" for row in ACCOUNT]


def readme_table() -> str:
    """The README's table, as it must read."""
    head = "| class | in the reduced jail | how |\n| --- | --- | --- |\n"
    return head + "".join(
        f"| {row.escape} | {_result_md(row.result)} | {row.how} |\n" for row in ACCOUNT
    )


def _result_md(result: str) -> str:
    return f"**{result}**" if result in (WEAKER, ABSENT) else result
