"""The command line as a person meets it: help, errors, the demo, the audit commands."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from wrapped import MCPWRAP, RAW_SERVER, Wrapped, write_profile


def mcpwrap(
    *args: str, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MCPWRAP, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "command",
    [["run"], ["audit"], ["audit", "verify"], ["audit", "tail"], ["check"], ["doctor"], ["demo"]],
)
def test_every_subcommand_has_help_with_an_example(command: list[str]) -> None:
    out = mcpwrap(*command, "--help")
    assert out.returncode == 0
    assert "example" in out.stdout


def test_demo_runs_offline_and_shows_decisions_and_the_audit_log() -> None:
    out = mcpwrap("demo", timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert (
        "upload_ssh_keys" not in text.split("tools/list as the client sees it")[1].split("\n\n")[0]
    )
    for expected in (
        "ALLOWED  read a file in the project",
        "REFUSED  read through a symlink",
        "(rule: tools.write_note.rate)",
        "Unknown tool: upload_ssh_keys",
        # the call list and the audit log tell one story about the deadline
        "STOPPED  a call still running at its 1 s deadline",
        "allowed, then stopped: tool 'slow' timed out after 1 s",
        "ALLOW  slow  (tools.slow.timeout)  timeout",
        # the jail stops what an allowed tool's own code tries on the side
        "ALLOW  count_words  (tools.count_words)  ok",
        "its code also tried to list ",
        "/.ssh: stopped by the jail (",
        "its code also tried to connect to 192.0.2.1:443: stopped by the jail (",
        "hash chain intact",
        "15 calls: 8 allowed by the profile (1 of them stopped at its deadline), 7 refused",
    ):
        assert expected in text, expected
    assert "NOT STOPPED" not in text and "WARNING" not in text


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("version = 1\n[policy]\ndefualt = 'deny'\n", ":3: policy.defualt"),
        ("version = 1\n[tools.x]\nclass = 'reader'\n", "tools.x.class"),
        ("version = 1\n[sandbox]\nmemory = 'lots'\n", "sandbox.memory"),
        ("version = 2\n", "version"),
        ("version = 1\n[policy\n", "bad.toml:2:8: invalid TOML"),
    ],
)
def test_a_bad_profile_stops_the_run_with_file_line_and_key(
    tmp_path: Path, body: str, expected: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body)
    out = mcpwrap("run", "--profile", str(path), "--", *RAW_SERVER)
    assert out.returncode == 2
    assert (
        out.stderr.startswith("mcpwrap: error: ")
        and str(path) in out.stderr
        and expected in out.stderr
    )
    assert "Traceback" not in out.stderr


def test_a_missing_profile_says_where_it_looked_and_how_to_make_one(tmp_path: Path) -> None:
    out = mcpwrap("run", "--profile", "nosuch", "--", "python3", "x.py", cwd=tmp_path)
    assert out.returncode == 2
    assert "nosuch" in out.stderr and "mcpwrap init" in out.stderr


def test_profile_discovery_by_name_from_the_project(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".mcpwrap").mkdir()
    write_profile(tmp_path / ".mcpwrap", '[policy]\ndefault = "allow"\n', name="raw")
    sub = tmp_path / "src" / "deep"
    sub.mkdir(parents=True)
    with Wrapped(Path("raw"), RAW_SERVER, cwd=sub) as w:
        w.initialize()
        assert w.call("echo", {"text": "found"})["result"]["isError"] is False


@pytest.mark.parametrize("size", ["lots", "-1KiB", "0", "1000"])
def test_bad_max_message_is_a_usage_error(tmp_path: Path, size: str) -> None:
    path = write_profile(tmp_path, "")
    out = mcpwrap("run", "--profile", str(path), "--max-message", size, "--", *RAW_SERVER)
    assert out.returncode == 2 and "--max-message" in out.stderr


@pytest.mark.parametrize("seconds", ["nan", "inf", "1e12", "0", "-5", "soon"])
@pytest.mark.parametrize("command", ["init", "lock"])
def test_a_timeout_the_wait_cannot_take_is_a_usage_error(
    tmp_path: Path, command: str, seconds: str
) -> None:
    """--timeout nan, inf or 1e12 passed argparse's float and broke the wait for the
    server's tools with a traceback."""
    out = mcpwrap(command, "--timeout", seconds, "x", "--", *RAW_SERVER, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "--timeout: expected seconds from 0 to 86400" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("option", "value"), [("--expires", "9" * 20 + "d"), ("--not-before", "99999d")]
)
def test_a_token_lifetime_past_what_a_timestamp_holds_is_a_usage_error(
    tmp_path: Path, option: str, value: str
) -> None:
    """A huge --expires was stored, then crashed printing its expiry (time.gmtime)."""
    args = ["--tenant", "t", "--tool", "x", "--expires", "1d", option, value]
    out = mcpwrap("token", "issue", *args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert f"{option}: {value}" in out.stderr and "3650d" in out.stderr
    assert "Traceback" not in out.stderr


def test_audit_verify_and_tail(tmp_path: Path) -> None:
    path = write_profile(tmp_path, '[policy]\ndefault = "allow"\n')
    with Wrapped(path, RAW_SERVER) as w:
        w.initialize()
        w.call("echo", {"text": "one"})
        w.close()
    log = tmp_path / "audit.jsonl"
    good = mcpwrap("audit", "verify", "--log", str(log))
    assert good.returncode == 0 and "3 records, chain ok" in good.stdout
    tail = mcpwrap("audit", "tail", "-n", "1", "--log", str(log))
    assert "STOP" in tail.stdout and len(tail.stdout.splitlines()) == 1
    lines = log.read_text().splitlines()
    record = json.loads(lines[1])
    record["outcome"] = "forged"
    lines[1] = json.dumps(record, separators=(",", ":"))
    log.write_text("\n".join(lines) + "\n")
    bad = mcpwrap("audit", "verify", "--log", str(log))
    assert bad.returncode == 1 and "BROKEN" in bad.stdout and ":2: changed" in bad.stdout


def test_a_broken_audit_log_refuses_every_later_call(tmp_path: Path) -> None:
    # /dev/full accepts the open and fails every write with ENOSPC: a full disk.
    path = write_profile(tmp_path, '[policy]\ndefault = "allow"\n[audit]\npath = "/dev/full"\n')
    with Wrapped(path, RAW_SERVER) as w:
        w.initialize()
        reply = w.call("echo", {"text": "x"})
        assert reply["result"]["isError"] is True
        assert "audit log cannot be written" in reply["result"]["content"][0]["text"]


def _parser_surface() -> list[str]:
    """Every subcommand and long option the parser knows."""
    import argparse

    from mcpwrap.commands.parser import build_parser

    found: list[str] = []

    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            found.extend(o for o in action.option_strings if o.startswith("--") and o != "--help")
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found.append(name)
                    walk(sub)

    walk(build_parser())
    return found


@pytest.mark.parametrize("word", _parser_surface())
def test_the_man_page_covers_every_command_and_option(repo_root: Path, word: str) -> None:
    page = (repo_root / "man" / "mcpwrap.1").read_text()
    assert word.replace("-", r"\-") in page or word in page, (
        f"{word} is in --help but not in mcpwrap.1"
    )


@pytest.mark.parametrize("page", ["mcpwrap.1", "mcpwrap-profile.5"])
def test_man_pages_render_without_warnings(repo_root: Path, page: str) -> None:
    out = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(repo_root / "man" / page)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0 and out.stderr == ""


def test_the_run_only_parser_is_the_whole_parsers_run() -> None:
    """`mcpwrap run` builds only its own parser (a start-up saving): same help, same
    parse, and what the whole parser rejects is rejected too."""
    from mcpwrap.commands.parser import build_parser

    def run_help(parser: object) -> str:
        sub = next(a for a in parser._actions if a.dest == "command")  # type: ignore[attr-defined]
        return str(sub.choices["run"].format_help())

    whole, fast = build_parser(), build_parser("run")
    assert run_help(fast) == run_help(whole)
    args = ["run", "--profile", "p", "--max-message", "1MiB", "x", "y"]
    assert fast.parse_args(args) == whole.parse_args(args)
    done = subprocess.run([*MCPWRAP, "run", "--bogus"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "unrecognized arguments: --bogus" in done.stderr
    assert done.stderr.startswith("usage: mcpwrap ")


_QUICK = [
    ["run", "--profile", "p", "--", "srv", "-x", "--profile", "q"],
    ["run", "-p", "p", "--project", "/tmp/x", "--", "srv"],
    ["run", "--profile=p", "--max-message=1MiB", "--token-name", "t", "--", "srv"],
    ["run", "--profile", "a=b", "--profile", "last", "--", "srv"],
    ["run", "--profile=", "--", "srv"],
    ["run", "--", "srv"],
    ["run", "--profile", "p"],
    ["run"],
]
_ARGPARSE = [
    ["run", "--prof", "p", "--", "srv"],  # an abbreviation
    ["run", "-pp", "--", "srv"],
    ["run", "-p=p", "--", "srv"],
    ["run", "--profile", "-x", "--", "srv"],
    ["run", "--profile=-x", "--", "srv"],
    ["run", "--profile", "p", "srv", "arg"],  # the command without `--`
    ["run", "--profile"],
    ["run", "--help"],
    ["run", "-h"],
    ["run", "--bogus", "--", "srv"],
    ["audit", "verify"],
]


@pytest.mark.parametrize("argv", _QUICK)
def test_the_quick_parse_of_run_is_argparses(argv: list[str]) -> None:
    """`mcpwrap run` as clients start it skips argparse (a start-up saving): the same
    arguments as argparse finds in it."""
    from mcpwrap.commands import cli

    head, server = cli._split_server(argv)
    quick = cli._quick_run(head, server)
    assert quick is not None
    assert vars(quick) == vars(cli._parse(head, server))


@pytest.mark.parametrize("argv", _ARGPARSE)
def test_anything_else_goes_to_argparse(argv: list[str]) -> None:
    from mcpwrap.commands import cli

    assert cli._quick_run(*cli._split_server(argv)) is None
