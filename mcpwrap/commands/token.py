"""`mcpwrap token`: issue, list, show, revoke and rotate runtime tokens.

parser.py adds the subcommand with `add_token_parser(sub)`; cli.py calls `main_token(args)`;
errors are MCPWrapError subclasses, which cli.py turns into messages. No action prints
the signing key; only `issue` and `rotate` of an unnamed token print a token's text, on
stdout and nothing else there, so it can be piped.
"""

from __future__ import annotations

import argparse
import sys
import time

from mcpwrap.basics.errors import UsageError

_EXAMPLES = """\
examples:
  mcpwrap token issue --tenant acme --tool read_file --tool 'list_*' --expires 30d --name acme-ro
      # a read-only token for 30 days, kept in the keyring as acme-ro
  mcpwrap token issue --tenant ci --tool 'git_*' --class read --class write \\
      --rate 60/min --concurrency 2 --expires 12h > ci.token
      # the token text on stdout (only): hand it to the client
  mcpwrap token list                 # every token: id, name, scope, times, state
  mcpwrap token show acme-ro         # one token's fields (by name or id)
  mcpwrap token rotate acme-ro       # a successor with the same scope, stored as acme-ro
  mcpwrap token revoke acme-ro       # running wrappers refuse it within seconds

Tokens are permission containers, not identity markers: a tenant, the tools (names or
globs), the classes read/write (never admin), optional limits, and an expiry. The
signing key and named tokens live in the OS keyring; `list` and `show` never print
token text or the key.
"""


def add_token_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `token ACTION ...` to mcpwrap's subcommands (dest: token_action)."""
    p = sub.add_parser(
        "token",
        help="issue, list, revoke and rotate runtime tokens",
        description="Runtime tokens limit what a client may do through a wrapper: a tenant, "
        "tools by name or glob, the classes read and write (admin tools are never reachable "
        "with a token), optional rate and concurrency limits, and a validity window. Every "
        "token expires. The signing key stays in the OS keyring.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tsub = p.add_subparsers(dest="token_action", metavar="ACTION", required=True)
    _add_issue(tsub)
    for action, text, metavar in (
        ("show", "print one token's fields (never its text)", "ID|NAME"),
        (
            "revoke",
            "revoke a token (by name: the current one); wrappers refuse it within seconds",
            "ID|NAME",
        ),
        (
            "rotate",
            "issue a successor with the same scope and lifetime, valid from now; "
            "the old one stays valid until it expires or is revoked",
            "NAME|ID",
        ),
    ):
        q = _action(tsub, action, text)
        q.add_argument("ref", metavar=metavar, help="a token id, or a name given at issue")
    _action(
        tsub,
        "list",
        "one line per token: id, name, tenant, classes, tools, not-before, expires, state",
    )


def _action(
    tsub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str
) -> argparse.ArgumentParser:
    return tsub.add_parser(
        name,
        help=text,
        description=text[0].upper() + text[1:] + ".",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_issue(tsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    q = _action(
        tsub, "issue", "sign a new token; print its text, or store it in the keyring with --name"
    )
    q.add_argument("--tenant", required=True, metavar="TENANT", help="whom the token is for")
    q.add_argument(
        "--tool",
        dest="tools",
        action="append",
        required=True,
        metavar="NAME|GLOB",
        help="a tool it may call, or a glob like 'read_*' (repeat for more; at least one)",
    )
    q.add_argument(
        "--class",
        dest="classes",
        action="append",
        metavar="read|write",
        help="a class of tools it may call (repeat for both; default read; admin is refused)",
    )
    q.add_argument("--rate", metavar="RATE", help="a call rate limit, like 10/min or 1000/hour")
    q.add_argument("--concurrency", type=int, metavar="N", help="at most N calls in flight at once")
    q.add_argument(
        "--expires",
        metavar="DURATION",
        help="required: how long it is valid, from when it becomes valid (e.g. 30d, 12h; "
        "at most 3650d)",
    )
    q.add_argument(
        "--not-before",
        metavar="DURATION",
        help="valid only from this long from now (e.g. 1h; default: at once; at most 3650d)",
    )
    q.add_argument(
        "--name",
        metavar="NAME",
        help="store it in the OS keyring under NAME instead of printing it",
    )


def main_token(args: argparse.Namespace) -> int:
    from mcpwrap.config import paths

    state_dir = paths.state_dir()
    action = args.token_action
    if action == "issue":
        return _issue(args, state_dir)
    if action == "list":
        return _list(state_dir)
    if action == "show":
        return _show(args.ref, state_dir)
    if action == "revoke":
        return _revoke(args.ref, state_dir)
    return _rotate(args.ref, state_dir)


_MAX_LIFETIME = 3650 * 86400.0


def _issue(args: argparse.Namespace, state_dir: str) -> int:
    from mcpwrap.identity import tokens  # not at import: `run` builds this parser too

    if not args.expires or args.expires.strip().lower() in ("0", "never", "none", "inf"):
        raise UsageError("a token without expiry is refused: give --expires (e.g. 30d, 12h)")
    lifetime = _duration("--expires", args.expires)
    if lifetime <= 0:
        raise UsageError(f"--expires: {args.expires} is not a positive duration")
    if lifetime > _MAX_LIFETIME:
        # A long-lived token is the failure rotation exists to prevent; past this one is
        # also past what a timestamp can print.
        raise UsageError(f"--expires: {args.expires} is over the maximum of 3650d")
    now = time.time()
    not_before = None
    if args.not_before is not None:
        delay = _duration("--not-before", args.not_before)
        if not 0 <= delay <= _MAX_LIFETIME:
            raise UsageError(f"--not-before: {args.not_before} is in the past or over 3650d")
        not_before = now + delay
    if args.rate is not None:
        from mcpwrap.basics.units import parse_rate

        try:
            parse_rate(args.rate)
        except ValueError as exc:
            raise UsageError(f"--rate: {exc}") from exc
    if args.concurrency is not None and args.concurrency < 1:
        raise UsageError(f"--concurrency: {args.concurrency} is below 1")
    scope = tokens.Scope(
        tenant=args.tenant,
        tools=tuple(args.tools),
        classes=frozenset(args.classes or ["read"]),
        rate=args.rate,
        concurrency=args.concurrency,
    )
    token, text = tokens.issue(
        scope,
        lifetime=lifetime,
        not_before=not_before,
        name=args.name,
        state_dir=state_dir,
        now=now,
    )
    if lifetime > tokens.LONG_LIFE_SECONDS:
        sys.stderr.write(
            f"mcpwrap: warning: token {token.id} lives {int(lifetime // 86400)} days, beyond "
            f"{tokens.LONG_LIFE_SECONDS // 86400}: prefer a short life and `mcpwrap token "
            "rotate`\n"
        )
    if args.name:
        print(f"stored as {args.name} (id {token.id}, expires {tokens.iso(token.expires)})")
    else:
        print(text)
    return 0


def _list(state_dir: str) -> int:
    from mcpwrap.identity import tokens  # not at import: `run` builds this parser too

    reg = tokens.registry(state_dir)
    now = time.time()
    try:
        for token in reg.all():
            fields = (
                token.id,
                token.name or "-",
                token.scope.tenant,
                ",".join(sorted(token.scope.classes)),
                ",".join(token.scope.tools),
                tokens.iso(token.not_before),
                tokens.iso(token.expires),
                tokens.state(token, now, reg.revoked(token.id)),
            )
            print("\t".join(fields))
    finally:
        reg.close()
    return 0


def _show(ref: str, state_dir: str) -> int:
    from mcpwrap.identity import tokens  # not at import: `run` builds this parser too

    reg = tokens.registry(state_dir)
    now = time.time()
    try:
        token = tokens.lookup(reg, ref)
        revoked_at = reg.revoked_at(token.id)
        successor = reg.successor(token.id)
    finally:
        reg.close()
    scope = token.scope
    state = tokens.state(token, now, revoked_at is not None)
    if state == "valid" and tokens.needs_rotation(token, now):
        state += " (due for rotation: `mcpwrap token rotate`)"
    rows = (
        ("id", token.id),
        ("name", token.name or "-"),
        ("tenant", scope.tenant),
        ("tools", " ".join(scope.tools)),
        ("classes", " ".join(sorted(scope.classes))),
        ("rate", scope.rate or "-"),
        ("concurrency", str(scope.concurrency or "-")),
        ("issued", tokens.iso(token.issued)),
        ("not before", tokens.iso(token.not_before)),
        ("expires", tokens.iso(token.expires)),
        ("revoked", tokens.iso(revoked_at) if revoked_at is not None else "-"),
        ("predecessor", token.predecessor or "-"),
        ("successor", successor or "-"),
        ("state", state),
    )
    for label, value in rows:
        print(f"{label + ':':12} {value}")
    return 0


def _revoke(ref: str, state_dir: str) -> int:
    from mcpwrap.identity import tokens  # not at import: `run` builds this parser too

    token, changed = tokens.revoke(ref, state_dir=state_dir)
    label = f"{token.id}" + (f" ({token.name})" if token.name else "")
    if changed:
        print(f"revoked {label}: running wrappers refuse it within seconds")
    else:
        print(f"{label} was already revoked")
    return 0


def _rotate(ref: str, state_dir: str) -> int:
    from mcpwrap.identity import tokens  # not at import: `run` builds this parser too

    token, text = tokens.rotate(ref, state_dir=state_dir)
    if token.name:
        print(
            f"stored as {token.name} (id {token.id}, replaces {token.predecessor}, expires "
            f"{tokens.iso(token.expires)}); the old token stays valid until it expires or "
            "is revoked"
        )
    else:
        # An unnamed token's text exists nowhere else: it has to be printed.
        print(text)
        sys.stderr.write(f"mcpwrap: token {token.id} replaces {token.predecessor}\n")
    return 0


def _duration(option: str, text: str) -> float:
    from mcpwrap.basics.units import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from exc
