"""`mcpwrap wrap` and `mcpwrap unwrap`: point a client's stdio MCP servers at mcpwrap, and
back.

parser.py adds the subcommands with `add_wrap_parsers(sub)`; cli.py calls
`main_wrap(args)` and turns errors (MCPWrapError subclasses) into messages. Building the
parsers imports nothing beyond argparse, so mcpwrap.clients.configfile is imported only
when wrap or unwrap actually runs.
"""

from __future__ import annotations

import argparse
import os
import sys

# The same names as mcpwrap.clients.configfile.CLIENTS (a test holds the two together).
CLIENTS = ("claude-desktop", "claude-code", "cursor", "vscode")

_WHERE = """\
where each client keeps its servers (the project's file first, where there is one):
  claude-desktop  ~/.config/Claude/claude_desktop_config.json
                  (macOS: ~/Library/Application Support/Claude/claude_desktop_config.json)
  claude-code     ./.mcp.json, else ~/.claude.json ("mcpServers", and this directory's
                  "projects" entry)
  cursor          ./.cursor/mcp.json, else ~/.cursor/mcp.json
  vscode          ./.vscode/mcp.json ("servers"), else the user profile's mcp.json
"""

_WRAP_EXAMPLES = f"""\
examples:
  mcpwrap wrap claude-code          # every stdio server of ./.mcp.json (else ~/.claude.json)
  mcpwrap wrap vscode --dry-run     # say what would change; change, lock and start nothing
  mcpwrap wrap claude-desktop --project ~/src/app
      # the project for the profiles that grant one (Claude Desktop starts servers in /
      # and names none)
  mcpwrap wrap cursor --server clock --profile mcp-server-time
      # one entry, under a profile its command does not name
  mcpwrap wrap cursor --init        # write a profile (mcpwrap init) for entries with none
  mcpwrap wrap claude-code --move-secrets
      # also move env values named like TOKEN, KEY, SECRET, PASSWORD, PAT or CREDENTIAL
      # into the keyring, and print the profile line they need

For each stdio entry, the profile is chosen by what it runs, the first found of: the
one --server NAME --profile P names, .mcpwrap/KEY.toml from the project up (KEY: the
entry's name), then ~/.config/mcpwrap/profiles/KEY.toml; the same for the package it runs
(npx -y @modelcontextprotocol/server-filesystem . -> server-filesystem, uvx
mcp-server-time -> mcp-server-time), then the built-in profile of that name; with
--init, the one `mcpwrap init KEY -- CMD` writes. An entry with none is left as it was.
"command" becomes the absolute path of this mcpwrap (a desktop app has no shell PATH).
Where the profile grants {{project}}, "--project" is written as each client needs: nothing
for Claude Code (it sets CLAUDE_PROJECT_DIR), ${{workspaceFolder}} for Cursor and
.vscode/mcp.json, --project DIR for Claude Desktop and VS Code's user file. An npx or
uvx entry is locked first (an existing lock is never replaced).

Then each wrapped entry is started once as its client would start it (its working
directory, its variables replaced, Claude Desktop's PATH /usr/bin:/bin:/usr/sbin:/sbin)
and asked for its tools: "ready (N tools)", or "not ready" and why. Exit status 1 when
an entry is not wrapped or not ready; --no-check skips the start.

A remote server's entry (a "url", VS Code's and Claude Code's "type": "http" or "sse";
or a stdio entry running mcp-remote: npx -y mcp-remote URL --header "X-Team: blue")
becomes `run --profile P -- URL`, under the profile named like the entry or, with --init,
the one `mcpwrap init KEY -- URL` writes (into the project, else ~/.config/mcpwrap/
profiles/), which holds its transport and headers. A credential is never copied: for an
"Authorization: Bearer" header wrap names the `mcpwrap secret set
keyring:mcpwrap-KEY/bearer` to run, and wraps the entry once the keyring holds it. A
Cookie header, and mcp-remote options with no counterpart in mcpwrap, refuse the entry.

Only the "command" and "args" of each entry change, textually (and a "url" entry's url,
type and headers): comments, trailing commas, layout and every other entry stay as they
were. Entries of another non-stdio "type" are left alone. The first change keeps the
original as FILE.mcpwrap-backup; running wrap again changes nothing, and starts the
wrapped entries again.

{_WHERE}"""

_UNWRAP_EXAMPLES = f"""\
examples:
  mcpwrap unwrap claude-desktop     # put every wrapped entry back as it was
  mcpwrap unwrap cursor --server clock

An entry comes back byte for byte from the record `wrap` kept. One whose command or args
were edited since is left alone (exit status 1); one wrapped by hand, with no record, is
unwrapped from the part of its args after "--".

{_WHERE}"""


def add_wrap_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `wrap CLIENT ...` and `unwrap CLIENT ...` to mcpwrap's subcommands."""
    wrap = sub.add_parser(
        "wrap",
        help="make a client start its MCP servers (stdio and remote) through mcpwrap",
        description="Rewrite the stdio server entries of an MCP client's config so that the "
        'client starts `mcpwrap run --profile P -- CMD ARGS...` instead of CMD ("command" '
        "becomes the absolute path of mcpwrap; the original command and args move behind "
        '"--"), and its remote entries ("url", or mcp-remote) to `mcpwrap run --profile P '
        "-- URL`; then start each wrapped entry once, as its client would, to see that it "
        "answers.",
        epilog=_WRAP_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(wrap)
    wrap.add_argument(
        "--profile",
        "-p",
        metavar="NAME|PATH",
        help="the profile of the one entry --server names (default: chosen by what it runs)",
    )
    wrap.add_argument(
        "--project",
        metavar="DIR",
        help="the project of entries whose profile grants one, written as an absolute path "
        "(needed for Claude Desktop and VS Code's user file, which name none)",
    )
    wrap.add_argument(
        "--init",
        action="store_true",
        help="for an entry with no profile, write one with `mcpwrap init` into the project",
    )
    wrap.add_argument(
        "--no-check",
        action="store_true",
        help="do not start the wrapped entries once to see that they answer",
    )
    wrap.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=float,
        default=120.0,
        help="how long a server may take to list its tools, when locked and when started "
        "(default 120)",
    )
    wrap.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would change; write, lock and start nothing",
    )
    wrap.add_argument(
        "--move-secrets",
        action="store_true",
        help="move literal secrets in an entry's env into the keyring without asking "
        "(at a terminal, wrap asks; otherwise it only names them)",
    )
    unwrap = sub.add_parser(
        "unwrap",
        help="restore the entries `mcpwrap wrap` changed",
        description="Put back the command and args `mcpwrap wrap` replaced, exactly as they were.",
        epilog=_UNWRAP_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(unwrap)
    unwrap.add_argument(
        "--dry-run", action="store_true", help="print what would change; write nothing"
    )


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("client", choices=CLIENTS, metavar="CLIENT", help=" | ".join(CLIENTS))
    p.add_argument("--server", "-s", metavar="NAME", help="only this server entry")
    p.add_argument(
        "--config",
        metavar="PATH",
        help="the client's config file, instead of the one it would read from here",
    )


def main_wrap(args: argparse.Namespace) -> int:
    """Run `wrap` or `unwrap` (args.command); lines per entry on stdout."""
    from mcpwrap.clients import configfile as clientconfig
    from mcpwrap.config import paths

    if args.command == "wrap":
        return _wrap(args)
    options = clientconfig.Options(
        client=args.client, config=args.config, server=args.server, dry_run=args.dry_run
    )
    outcome = clientconfig.unwrap(options, paths.state_dir())
    for line in outcome.lines:
        print(line)
    if not outcome.lines:
        print(f"{outcome.path}: no server entries")
    return outcome.status


def _wrap(args: argparse.Namespace) -> int:
    from mcpwrap.basics.errors import UsageError
    from mcpwrap.clients import configfile as clientconfig
    from mcpwrap.clients import executable
    from mcpwrap.commands import wrapplan
    from mcpwrap.config import paths

    if args.profile and not args.server:
        raise UsageError(
            "--profile names the profile of one entry: give --server NAME too (without "
            "both, each entry gets the profile for what it runs)"
        )
    home = os.path.expanduser("~")
    here = os.getcwd()
    planner = wrapplan.Planner(
        client=args.client,
        mcpwrap=executable.installed(sys.argv[0], sys.executable, os.environ, home),
        here=here,
        home=home,
        environ=os.environ,
        config=args.config,
        profile=args.profile,
        project=_project(args.project),
        init=args.init,
        dry_run=args.dry_run,
        timeout=args.timeout,
    )
    interactive = sys.stdin.isatty() and sys.stderr.isatty()
    options = clientconfig.Options(
        client=args.client,
        config=args.config,
        server=args.server,
        dry_run=args.dry_run,
        move_secrets=args.move_secrets,
        project_dir=here,
        ask=_ask if interactive else None,
        prepare=planner,
        echo=_say,
    )
    outcome = clientconfig.wrap(options, paths.state_dir())
    if not outcome.lines:
        _say(f"{outcome.path}: no server entries")
    if args.dry_run:
        return outcome.status
    status = outcome.status
    for entry, values in outcome.wrapped:
        where = f"{outcome.path}: {entry.label}"
        if args.no_check:
            _say(f"{where}: not started (--no-check)")
            continue
        started = wrapplan.first_start(
            args.client,
            outcome.path,
            entry,
            values,
            here=here,
            home=home,
            environ=os.environ,
            timeout=args.timeout,
        )
        if started.ready:
            _say(f"{where}: ready ({started.tools} tools)")
            continue
        status = 1
        _say(
            f"{where}: not ready: "
            + "\n    ".join(started.explained())
            + f"\n  (`{_unwrap_command(args, entry.name)}` puts it back as it was)"
        )
    return status


def _unwrap_command(args: argparse.Namespace, name: str) -> str:
    import shlex

    config = ["--config", args.config] if args.config else []
    return shlex.join(["mcpwrap", "unwrap", args.client, *config, "--server", name])


def _project(given: str | None) -> str | None:
    """--project DIR, absolute, once it is a directory mcpwrap may grant."""
    if given is None:
        return None
    from mcpwrap.basics.errors import UsageError
    from mcpwrap.config import project as projects

    if "${" in given:
        raise UsageError(
            f"--project {given}: give a directory; wrap writes ${{workspaceFolder}} itself "
            "where the client replaces it"
        )
    full = os.path.abspath(os.path.expanduser(given))
    if not os.path.isdir(full):
        raise UsageError(f"--project {given}: not a directory")
    why = projects.refusal(full)
    if why is not None:
        raise UsageError(f"--project {given}: that is {why}; mcpwrap will not grant it")
    return full


def _say(line: str) -> None:
    print(line, flush=True)


def _ask(question: str) -> bool:
    """A yes/no question on the terminal (stderr: stdout may be a pipe)."""
    sys.stderr.write(question)
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")
