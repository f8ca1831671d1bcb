"""The command line's parsers (argparse), its help and its examples. cli.py imports this
only for what its quick parse of `mcpwrap run` does not take (_quick_run there): argparse
and the parsers cost ~3-4 ms, paid on each launch of a server otherwise."""

from __future__ import annotations

import argparse

from mcpwrap import __version__
from mcpwrap.basics.programs import terminal_columns

# Every example below runs as written (tests/test_examples.py runs them): a command a
# line (a trailing backslash continues it), `#` starts a comment, and a client's server
# entry is JSON.
_RUN_EXAMPLE = """\
examples:
  mcpwrap lock --profile mcp-server-time -- uvx mcp-server-time   # once: pin the version
  mcpwrap run --profile mcp-server-time -- uvx mcp-server-time

  # the same as a client's server entry (Claude Desktop, Claude Code, Cursor, VS Code):
  "command": "mcpwrap",
  "args": ["run", "--profile", "mcp-server-time", "--", "uvx", "mcp-server-time"]

An npx or uvx command runs only once locked: it would download its package in a jail
that has no way to a registry. `mcpwrap lock` fetches the exact version and pins it; on
another machine, `mcpwrap sync` installs what a committed lock pins. `run` never
downloads: it stops and says which command to run.

--profile NAME looks in ./.mcpwrap/NAME.toml up to the project root, then
~/.config/mcpwrap/profiles/NAME.toml, then the built-in profiles (mcp-server-time,
server-filesystem, ...: `ls profiles/`). With no --profile, the name comes from the
server command (npx @scope/server-x -> server-x).
"""

_AUDIT_EXAMPLE = """\
examples:
  mcpwrap audit verify          # check the hash chain of the log; print its last hash
  mcpwrap audit tail -n 50      # the last 50 decisions, one line each
  mcpwrap audit tail -f         # follow the log as it grows, until Ctrl-C
"""

_DOCTOR_EXAMPLE = """\
examples:
  mcpwrap doctor                              # can this machine apply every layer?
  mcpwrap doctor --profile server-filesystem  # ... and what this profile needs, and
                                              # what its last run applied
  sudo "$(command -v mcpwrap)" doctor --fix   # Ubuntu 23.10+: AppArmor lets the jail
                                              # (alone) use user namespaces
"""

_CHECK_EXAMPLE = """\
examples:
  mcpwrap check .mcpwrap/*.toml                  # findings for a repository's profiles
  mcpwrap check server-filesystem --format json  # one profile, by name, for a machine

exit status: 0 no errors (notes allowed), 1 an error finding, 2 a profile that does not load
"""

_INIT_EXAMPLE = """\
examples:
  mcpwrap init time -- uvx mcp-server-time

It writes .mcpwrap/NAME.toml at the project root (review the guessed classes), and
.mcpwrap/NAME.lock. Then: mcpwrap run --profile NAME -- <the same command>
"""

_LOCK_EXAMPLE = """\
examples:
  mcpwrap lock --profile server-filesystem -- npx -y @modelcontextprotocol/server-filesystem .
      # fetch the exact version once; pin it and every tool definition
  mcpwrap approve --profile server-filesystem
      # show what changed since the lock (a diff per tool); update it on yes
  mcpwrap approve --profile server-filesystem --yes   # the same, for scripts
  mcpwrap sync --profile server-filesystem
      # another machine, after a clone or a pull: install what the lock pins, verify it

npx and uvx commands are fetched (uvx's --from, --with and --python are understood, as
in `uvx --with 'mcp<2' mcp-server-sqlite`), without install scripts or source builds.
The lock goes beside a project's profile (.mcpwrap/NAME.lock). A built-in profile that
grants the server its project (server-filesystem) keeps its lock in that project's git
repository (.mcpwrap/NAME.lock); any other built-in profile's lock is yours
(~/.config/mcpwrap/profiles/NAME.lock). A lock names no path of this machine: commit it.
`mcpwrap run` verifies it before every start, never downloads, and hides tools whose
definition no longer matches.

A remote server is locked with its URL in place of the command (mcpwrap lock --profile
P -- https://HOST/PATH, or no command when the profile names [server] url): the lock
pins its tool definitions and instructions and its server key (SPKI pin); `run` refuses
another URL or another key (unless [server.tls] pins names it) before any request, and
`approve` shows and records a changed key or tool.
"""

_KEYRING_EXAMPLE = """\
examples:
  mcpwrap secret set keyring:github/token   # asks for the value (or reads it from stdin)
  pass show github | mcpwrap secret set keyring:github/token
  mcpwrap secret list                       # references and whether each is stored
  mcpwrap secret delete keyring:github/token

A profile then names it, and the value reaches only the server's environment:
  [server]
  secrets = { GITHUB_TOKEN = "keyring:github/token" }
"""

_DEMO_EXAMPLE = """\
example:
  mcpwrap demo     # the bundled server under the bundled profile: what was allowed, what
                   # was refused and why, what the jail stopped, and the audit log
"""


class _Help(argparse.HelpFormatter):
    """argparse's help, its width found without importing shutil (programs.py): argparse
    makes a formatter for every argument it adds, and shutil costs ~3 ms of each start."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        width = terminal_columns() if width is None else width
        super().__init__(prog, indent_increment, max_help_position, width)


class _RawHelp(_Help, argparse.RawDescriptionHelpFormatter):
    """The same, with descriptions and examples printed as written."""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with only="run", just that subcommand: a client starts
    `mcpwrap run` for every server, and the other parsers cost ~5-10 ms of its start."""
    parser = argparse.ArgumentParser(
        prog="mcpwrap",
        description="Run a stdio MCP server behind a capability profile, with an audit log.",
        epilog="See mcpwrap(1) and mcpwrap-profile(5). `mcpwrap CMD --help` shows examples.",
        formatter_class=_Help,
    )
    parser.add_argument("--version", action="version", version=f"mcpwrap {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_run(sub)
    if only == "run":
        return parser
    _add_audit(sub)
    _add_check(sub)
    _add_init(sub)
    _add_lock(sub)
    _add_secret(sub)
    from mcpwrap.commands.token import add_token_parser

    add_token_parser(sub)
    from mcpwrap.commands.wrap import add_wrap_parsers

    add_wrap_parsers(sub)
    _add_doctor(sub)
    _add_demo(sub)
    return parser


def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="relay a server's stdio under a profile",
        description="Start CMD as the MCP server and relay the client's stdio to it: tools/list is "
        "filtered and every tools/call is checked against the profile before the server sees it; "
        "each decision is written to the audit log. With `-- https://HOST/PATH` (or [server] url), "
        "relay a remote server instead: no jail, TLS verified ([server.tls]), the same checks.",
        epilog=_RUN_EXAMPLE,
        formatter_class=_RawHelp,
    )
    p.add_argument(
        "--profile", "-p", metavar="NAME|PATH", help="the capability profile (name or .toml path)"
    )
    _add_project(p)
    p.add_argument(
        "--max-message",
        metavar="SIZE",
        default="64MiB",
        help="largest message relayed in either direction (default: 64MiB)",
    )
    p.add_argument(
        "--token-name",
        metavar="NAME",
        help="run with the token stored under NAME in the keyring (`mcpwrap token issue "
        "--name`); or put the token in MCPWRAP_TOKEN. Never on the command line",
    )
    p.add_argument(
        "server",
        nargs=argparse.REMAINDER,
        metavar="-- CMD ... | URL",
        help="the server command, after `--` (or [server] command in the profile); or a "
        "remote server's URL (or [server] url)",
    )


def _add_audit(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "audit",
        help="verify and read the audit log",
        description="Read the hash-chained JSONL audit log.",
        epilog=_AUDIT_EXAMPLE,
        formatter_class=_RawHelp,
    )
    asub = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = asub.add_parser(
        "verify",
        help="check the hash chain; say which record broke it",
        epilog=_AUDIT_EXAMPLE,
        formatter_class=_RawHelp,
    )
    tail = asub.add_parser(
        "tail",
        help="print the last records for a person",
        epilog=_AUDIT_EXAMPLE,
        formatter_class=_RawHelp,
    )
    tail.add_argument("-n", type=int, default=20, metavar="N", help="how many records (default 20)")
    tail.add_argument(
        "-f", "--follow", action="store_true", help="keep printing records as they arrive"
    )
    for q in (verify, tail):
        q.add_argument(
            "--log", metavar="PATH", help="the log file (default: the state dir's audit.jsonl)"
        )


def _add_check(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check",
        help="validate profiles and list what they leave open",
        description="Load each profile (every key validated) and list its findings: errors for "
        'settings that weaken the jail (enforce = false, network = "host", egress to cloud '
        "metadata, write grants on the home or system directories), notes for what the jail "
        "will do that may surprise (egress to loopback or private addresses, sealed grants), "
        "and findings for exposed tools, a missing lock and poisoned pinned definitions. Each "
        "profile gets a maturity level (1 wrapped, 2 isolated, 3 least privilege, 4 pinned "
        "and authenticated) with what each missing step takes.",
        epilog=_CHECK_EXAMPLE,
        formatter_class=_RawHelp,
    )
    p.add_argument("profiles", nargs="+", metavar="PROFILE", help="profile names or .toml paths")
    _add_project(p)
    p.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )


def _add_init(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "init",
        help="write a first profile for a server, from the tools it offers",
        description="Start the server in the jail (no network, the project readable), list "
        "its tools, and write .mcpwrap/NAME.toml: every tool with a class guessed from its "
        "name and annotations (a comment says why), path arguments kept inside the project, "
        "URL arguments flagged for a hosts list; then lock it. The profile passes `mcpwrap "
        "check`; read the guesses before you commit it. With `-- https://HOST/PATH`, a remote "
        "server: connect as `run` would (TLS verified), list its tools and write the profile "
        "with [server] url instead of a command and a jail (into the project, else "
        "~/.config/mcpwrap/profiles/), and lock it (tools, instructions, the server key). "
        "`init NAME` alone reads the URL (and [server.tls], bearer, headers) from the profile "
        "there, and writes it again with the tools.",
        epilog=_INIT_EXAMPLE,
        formatter_class=_RawHelp,
    )
    p.add_argument("name", metavar="NAME", help="the profile's name (.mcpwrap/NAME.toml)")
    p.add_argument("--force", action="store_true", help="replace an existing profile")
    _add_project(p)
    _add_timeout(p)
    p.add_argument("server", nargs="*", metavar="-- CMD ...", help="the server command, or its URL")


def _add_project(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--project",
        metavar="DIR",
        help="the project {project} names (default: MCPWRAP_PROJECT, else Claude Code's "
        "CLAUDE_PROJECT_DIR, else the repository holding a .mcpwrap/ profile, else the "
        "current directory); never /, your home directory or a parent of it, a system or a "
        "shared temporary directory",
    )


def _add_timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_seconds,
        default=120.0,
        help="how long the server may take to list its tools (default 120, at most 86400)",
    )


def _seconds(text: str) -> float:
    """A wait in seconds that the run can use: "nan", "inf" or 1e12 broke the wait on the
    server (select takes no more than ~292 years)."""
    import math

    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= 86_400:
        raise argparse.ArgumentTypeError(f"expected seconds from 0 to 86400, got {text!r}")
    return seconds


def _add_lock(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lock = sub.add_parser(
        "lock",
        help="pin a server's artifacts and tool definitions",
        description="Resolve the server command (npx/uvx: fetch the exact version once, into "
        "mcpwrap's store, without install scripts or source builds; uvx: and compile its "
        "Python byte code once, for the jail to read), hash what will run, "
        "start the server in its jail to read its instructions and tool definitions, and "
        "write NAME.lock beside "
        "the profile. With a lock, `mcpwrap run` starts the pinned version offline, refuses "
        "to start when an artifact changed, and hides and refuses new or changed tools. For "
        "a remote server's URL: pin its server key (after a verified handshake) and its "
        "tool definitions, read over a connection pinned to that key.",
        epilog=_LOCK_EXAMPLE,
        formatter_class=_RawHelp,
    )
    approve = sub.add_parser(
        "approve",
        help="review what changed since the lock, and accept it",
        description="Hash the locked server's artifacts again and read its tool definitions "
        "in its jail; show what differs from the lock (artifacts, instructions, a diff per "
        "tool) and update the lock once you say yes. A uvx server's byte code is compiled "
        "again if it is missing or changed. For a remote server: read its key and tool "
        "definitions again at the locked URL, and show a new key's pin beside the old one.",
        epilog=_LOCK_EXAMPLE,
        formatter_class=_RawHelp,
    )
    sync = sub.add_parser(
        "sync",
        help="install and verify what a lock pins, on this machine",
        description="Make this machine's store match the profile's lock: install exactly "
        "the locked package versions (npx/uvx) with the same installers as `lock` (uv pip "
        "install --require-hashes, npm ci; no install scripts, no source builds), verify "
        "every hash the lock holds, compile a uvx server's Python byte code from the verified "
        "files (unless it is there, as compiled from them), and record that this machine "
        "verified it. Run it after "
        "cloning a project with a lock, and after a pull that changed one. The only step "
        "that downloads for a lock; `mcpwrap run` never does. The lock is never changed.",
        epilog=_LOCK_EXAMPLE,
        formatter_class=_RawHelp,
    )
    for p in (lock, approve, sync):
        p.add_argument(
            "--profile",
            "-p",
            metavar="NAME|PATH",
            help="the capability profile (name or .toml path)",
        )
        if p is not sync:
            p.add_argument(
                "--yes", "-y", action="store_true", help="accept the changes without asking"
            )
        _add_project(p)
        if p is not sync:
            _add_timeout(p)
        p.add_argument(
            "server",
            nargs=argparse.REMAINDER,
            metavar="-- CMD ...",
            help="the server command or a remote server's https URL, after `--` (or "
            "[server] command or url in the profile; or, for sync and approve, the locked one)",
        )


def _add_secret(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "secret",
        help="store secrets for [server] secrets in the OS keyring",
        description="Store, list and delete the secrets profiles name as keyring:SERVICE/USER. "
        "Values go to the OS keyring (the Secret Service) and are read from a prompt or "
        "stdin, never from the command line; no plain-text fallback.",
        epilog=_KEYRING_EXAMPLE,
        formatter_class=_RawHelp,
    )
    ssub = p.add_subparsers(dest="keyring_action", metavar="ACTION", required=True)
    for action, text in (
        ("set", "store a value (from a prompt or stdin)"),
        ("delete", "remove a value"),
    ):
        q = ssub.add_parser(
            action,
            help=text,
            epilog=_KEYRING_EXAMPLE,
            formatter_class=_RawHelp,
        )
        q.add_argument("ref", metavar="keyring:SERVICE/USER", help="the reference")
    ssub.add_parser(
        "list",
        help="the references stored with `secret set`, and whether each is in the keyring",
        epilog=_KEYRING_EXAMPLE,
        formatter_class=_RawHelp,
    )


def _add_doctor(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "doctor",
        help="check that every sandbox layer works on this machine",
        description="Probe each layer of the jail (namespaces, Landlock, seccomp), start the "
        "jail once end to end, and with --profile say what the profile needs, whether its "
        "last run was sandboxed and whether it is locked. Exit status 1 if a layer is missing. "
        "Where user namespaces are unavailable, or the profile accepts the reduced jail, it "
        "also lists what holds in the reduced jail on this kernel and what is weaker. For a "
        "remote server's profile ([server] url) no jail applies, by design: doctor checks the "
        "URL, that the host resolves, and one TLS handshake verified with the profile's "
        "[server.tls], instead of the jail's layers.",
        epilog=_DOCTOR_EXAMPLE,
        formatter_class=_RawHelp,
    )
    p.add_argument("--profile", "-p", metavar="NAME|PATH", help="also report on this profile")
    p.add_argument(
        "--fix",
        action="store_true",
        help="as root, first install the jail's own copy of this Python interpreter "
        "(/usr/local/libexec/mcpwrap/jail-python) and the AppArmor profile that lets it "
        "alone create user namespaces (/etc/apparmor.d/mcpwrap-jail), and load it "
        "(apparmor_parser -r): for Ubuntu 23.10+, where AppArmor restricts user namespaces",
    )
    _add_project(p)


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub.add_parser(
        "demo",
        help="show mcpwrap at work on a bundled server, offline",
        description="Run a small bundled MCP server under a bundled profile, drive it with the MCP "
        "SDK's client, and show what was allowed, what was refused and why, a call stopped at its "
        "deadline, the jail stopping an allowed tool's own code from listing ~/.ssh and "
        "connecting out, and the audit records. Needs no network and writes only to a "
        "temporary directory.",
        epilog=_DEMO_EXAMPLE,
        formatter_class=_RawHelp,
    )
