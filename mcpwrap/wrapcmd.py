"""`mcpwrap wrap` and `mcpwrap unwrap`: point a client's stdio MCP servers at mcpwrap, and
back.

cli.py adds the subcommands with `add_wrap_parsers(sub)` and calls `main_wrap(args)`;
errors are MCPWrapError subclasses, which cli.py turns into messages. Building the
parsers imports nothing beyond argparse: cli.py builds every parser on each `mcpwrap
run`, so mcpwrap.clientconfig is imported only when wrap or unwrap actually runs.
"""

from __future__ import annotations

import argparse
import sys

# The same names as mcpwrap.clientconfig.CLIENTS (a test holds the two together).
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
  mcpwrap wrap claude-desktop       # every stdio server, each under the profile named like
                                    # its entry (an entry "time" gets --profile time)
  mcpwrap wrap cursor --server github --profile gh
  mcpwrap wrap vscode --dry-run     # say what would change; change nothing
  mcpwrap wrap claude-code --move-secrets
      # also move env values named like TOKEN, KEY, SECRET, PASSWORD, PAT or CREDENTIAL
      # into the keyring, and print the profile line they need

Only the "command" and "args" of each entry change, textually: comments, trailing commas,
layout and every other entry stay as they were. Entries with a "url" or a non-stdio "type"
are left alone. The first change keeps the original as FILE.mcpwrap-backup; running wrap
again changes nothing.

{_WHERE}"""

_UNWRAP_EXAMPLES = f"""\
examples:
  mcpwrap unwrap claude-desktop     # put every wrapped entry back as it was
  mcpwrap unwrap cursor --server github

An entry comes back byte for byte from the record `wrap` kept. One whose command or args
were edited since is left alone (exit status 1); one wrapped by hand, with no record, is
unwrapped from the part of its args after "--".

{_WHERE}"""


def add_wrap_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `wrap CLIENT ...` and `unwrap CLIENT ...` to mcpwrap's subcommands."""
    wrap = sub.add_parser(
        "wrap",
        help="make a client start its stdio MCP servers through mcpwrap",
        description="Rewrite the stdio server entries of an MCP client's config so that the "
        'client starts `mcpwrap run --profile P -- CMD ARGS...` instead of CMD: "command" '
        'becomes mcpwrap and the original command and args move behind "--".',
        epilog=_WRAP_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(wrap)
    wrap.add_argument(
        "--profile",
        "-p",
        metavar="NAME|PATH",
        help="the profile every wrapped entry runs under (default: the entry's own name)",
    )
    wrap.add_argument(
        "--dry-run", action="store_true", help="print what would change; write nothing"
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
    """Run `wrap` or `unwrap` (args.command); one line per entry on stdout."""
    from mcpwrap import clientconfig, paths

    interactive = sys.stdin.isatty() and sys.stderr.isatty()
    options = clientconfig.Options(
        client=args.client,
        config=args.config,
        server=args.server,
        profile=getattr(args, "profile", None),
        dry_run=args.dry_run,
        move_secrets=getattr(args, "move_secrets", False),
        ask=_ask if interactive else None,
    )
    act = clientconfig.wrap if args.command == "wrap" else clientconfig.unwrap
    outcome = act(options, paths.state_dir())
    for line in outcome.lines:
        print(line)
    if not outcome.lines:
        print(f"{outcome.path}: no server entries")
    return outcome.status


def _ask(question: str) -> bool:
    """A yes/no question on the terminal (stderr: stdout may be a pipe)."""
    sys.stderr.write(question)
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")
