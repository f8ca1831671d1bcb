"""Command line: parse arguments, call one function per subcommand, turn errors into
messages and exit codes. Nothing else in mcpwrap prints errors or exits.

Imports stay inside the subcommands: `run` sits between a desktop client and its server,
and every millisecond of start-up is paid on each launch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, NoReturn

from mcpwrap.basics.errors import MCPWrapError

if TYPE_CHECKING:
    import argparse


def main(argv: Sequence[str] | None = None) -> int:
    head, server = _split_server(list(sys.argv[1:] if argv is None else argv))
    args = _quick_run(head, server) or _parse(head, server)
    try:
        return _dispatch(args)
    except MCPWrapError as exc:
        _fatal(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return 130


def _parse(head: list[str], server: list[str] | None) -> argparse.Namespace:
    from mcpwrap.commands.parser import build_parser

    parser = build_parser("run" if head[:1] == ["run"] else None)
    args = parser.parse_args(head)
    if server is not None:
        if not hasattr(args, "server"):
            parser.error(f"unrecognized arguments: -- {' '.join(server)}")
        args.server = [*args.server, "--", *server]
    return args


# `mcpwrap run` as clients start it, parsed without argparse: each option spelled in full
# (or -p), its value in the next word or after "=". Anything else (help, an abbreviation,
# a value that starts with "-", a word before `--`) goes to argparse, which parses or
# refuses it as it always did; tests/test_cli.py holds the two to the same result.
_RUN_OPTIONS = {
    "--profile": "profile",
    "-p": "profile",
    "--project": "project",
    "--max-message": "max_message",
    "--token-name": "token_name",
}


def _quick_run(head: list[str], server: list[str] | None) -> argparse.Namespace | None:
    """The arguments of a plain `mcpwrap run [OPTIONS] [-- CMD ...]`, as argparse would
    give them, or None for argparse to parse."""
    if head[:1] != ["run"]:
        return None
    values: dict[str, str | None] = dict.fromkeys(("profile", "project", "token_name"))
    values["max_message"] = "64MiB"  # parser.py's default
    words = iter(head[1:])
    for word in words:
        name, equals, value = word.partition("=")
        if equals and name.startswith("--"):
            dest = _RUN_OPTIONS.get(name)
        else:
            dest, value = _RUN_OPTIONS.get(word), next(words, "-")
        if dest is None or value.startswith("-"):
            return None
        values[dest] = value
    command = [] if server is None else ["--", *server]
    return SimpleNamespace(command="run", server=command, **values)  # type: ignore[return-value]


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        return _run(args)
    if args.command == "audit":
        return _audit(args)
    if args.command == "doctor":
        return _doctor(args)
    if args.command == "secret":
        return _secret(args)
    if args.command in ("wrap", "unwrap"):
        from mcpwrap.commands.wrap import main_wrap

        return main_wrap(args)
    if args.command == "token":
        from mcpwrap.commands.token import main_token

        return main_token(args)
    if args.command == "init":
        from mcpwrap.commands.init import InitOptions, init

        command = _server_command(args)
        return init(InitOptions(args.name, tuple(command), args.force, args.timeout, args.project))
    if args.command in ("lock", "approve"):
        from mcpwrap.commands.lock import LockOptions, lock

        command = _server_command(args)
        return lock(
            LockOptions(
                profile=args.profile,
                command=tuple(command),
                approve=args.command == "approve",
                yes=args.yes,
                timeout=args.timeout,
                project=args.project,
            )
        )
    if args.command == "sync":
        from mcpwrap.commands.sync import SyncOptions, sync

        return sync(SyncOptions(args.profile, tuple(_server_command(args)), args.project))
    if args.command == "check":
        from mcpwrap.commands.check import check_paths

        text, status = check_paths(
            args.profiles, as_json=args.format == "json", project=args.project
        )
        sys.stdout.write(text)
        return status
    from mcpwrap.commands.demo import run_demo

    return run_demo()


def _run(args: argparse.Namespace) -> int:
    from mcpwrap.basics.errors import UsageError
    from mcpwrap.basics.units import parse_size
    from mcpwrap.commands.run import RunOptions, run

    command = _server_command(args)
    try:
        max_message = parse_size(args.max_message)
    except ValueError as exc:
        raise UsageError(f"--max-message: {exc}") from exc
    if max_message < 1024:
        raise UsageError(
            f"--max-message: {args.max_message} is below 1KiB, too small for initialize"
        )
    return run(
        RunOptions(
            profile=args.profile,
            command=tuple(command),
            max_message=max_message,
            token_name=args.token_name,
            project=args.project,
        )
    )


def _split_server(words: list[str]) -> tuple[list[str], list[str] | None]:
    """mcpwrap's own arguments, and the server command after the first `--` (None without
    one). Split before argparse: after a positional such as init's NAME, argparse would
    take options like --force for part of the command."""
    if "--" not in words:
        return words, None
    at = words.index("--")
    return words[:at], words[at + 1 :]


def _server_command(args: argparse.Namespace) -> list[str]:
    """The server command after `--` (argparse keeps the separator in REMAINDER)."""
    command = list(args.server)
    return command[1:] if command and command[0] == "--" else command


def _audit(args: argparse.Namespace) -> int:
    from mcpwrap.audit import read as auditread
    from mcpwrap.config import paths

    log = args.log or os.path.join(paths.state_dir(), "audit.jsonl")
    if args.audit_command == "tail":
        auditread.tail(log, args.n, follow=args.follow)
        return 0
    report = auditread.verify(log)
    for problem in report.problems:
        print(f"{log}:{problem.line}: {problem.kind}: {problem.message}")
    state = "ok" if report.ok else f"BROKEN ({len(report.problems)} problems)"
    print(f"{log}: {report.records} records, chain {state}; last hash {report.last_hash or '-'}")
    return 0 if report.ok else 1


def _secret(args: argparse.Namespace) -> int:
    from mcpwrap.config import paths
    from mcpwrap.identity import secrets as secretstore

    state = paths.state_dir()
    if args.keyring_action == "list":
        for ref, present in secretstore.listing(state):
            print(f"{ref}\t{'stored' if present else 'MISSING from the keyring'}")
        return 0
    if args.keyring_action == "delete":
        found = secretstore.delete(args.ref, state)
        print(f"{args.ref}: {'deleted' if found else 'was not in the keyring'}")
        return 0
    secretstore.parse_ref(args.ref)  # a bad reference fails before the value is asked for
    if sys.stdin.isatty():
        import getpass

        value = getpass.getpass(f"value for {args.ref} (not shown): ")
    else:
        value = sys.stdin.read().removesuffix("\n")
    secretstore.store(args.ref, value, state)
    print(f"{args.ref}: stored in the keyring")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from mcpwrap.commands.doctor import run_doctor
    from mcpwrap.config import paths

    profile = None
    if args.profile:
        # Unguarded: doctor reports a project no server may have as a failure of its own.
        profile = paths.load(args.profile, project=args.project, guard=False)
    if args.fix:
        from mcpwrap.sandbox import usernsfix

        usernsfix.fix(sys.stdout)
        print()
    return run_doctor(profile)


def _fatal(message: str, code: int) -> NoReturn:
    sys.stderr.write(f"mcpwrap: error: {message}\n")
    raise SystemExit(code)


if __name__ == "__main__":
    sys.exit(main())
