"""`mcpwrap wrap` / `unwrap`: real client config files, edited in place and put back
byte for byte; the JSONC parser under them; secrets moved into a real Secret Service."""

from __future__ import annotations

import argparse
import json
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpwrap.clients import configfile as clientconfig
from mcpwrap.clients.configfile import ConfigError, Object, Wrapping, parse, plain
from mcpwrap.commands import wrap as wrapcmd
from mcpwrap.config import paths

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "clients"
# The project path inside the ~/.claude.json fixture; tests put a real directory there.
FIXTURE_PROJECT = "/home/alice/src/webapp"


@dataclass(frozen=True)
class Case:
    client: str
    fixture: str
    plain_json: bool  # no comments or trailing commas: json.loads must read it too
    stdio: tuple[str, ...]  # pointers of the entries wrap changes ("{project}" = cwd)
    others: tuple[str, ...]  # entries it must leave byte for byte (not stdio, other scope)
    crlf: bool = False

    @property
    def id(self) -> str:
        return self.fixture + (" (CRLF)" if self.crlf else "")


CASES = [
    Case(
        "claude-desktop",
        "claude_desktop_config.json",
        True,
        ("/mcpServers/filesystem", "/mcpServers/github"),
        (),
    ),
    Case(
        "claude-code",
        "mcp.json",
        True,
        ("/mcpServers/time", "/mcpServers/db"),
        ("/mcpServers/sentry",),
    ),
    Case(
        "claude-code",
        "claude.json",
        True,
        ("/mcpServers/memory", "/projects/{project}/mcpServers/playwright"),
        ("/mcpServers/linear", "/projects/~1home~1alice~1src~1other/mcpServers/memory"),
    ),
    Case(
        "cursor",
        "cursor_mcp.json",
        False,
        ("/mcpServers/fetch", "/mcpServers/postgres"),
        ("/mcpServers/linear",),
    ),
    Case(
        "vscode",
        "vscode_mcp.json",
        False,
        ("/servers/filesystem", "/servers/perplexity", "/servers/python-tools"),
        ("/servers/github",),
    ),
    Case(
        "cursor",
        "cursor_mcp.json",
        False,
        ("/mcpServers/fetch", "/mcpServers/postgres"),
        ("/mcpServers/linear",),
        crlf=True,
    ),
]
CASE_IDS = [c.id for c in CASES]


# ---------------------------------------------------------------------------- helpers


@dataclass
class Config:
    """A fixture copied into the test's directory (the cwd is its project)."""

    case: Case
    path: Path
    original: bytes

    def text(self) -> str:
        return self.path.read_bytes().decode("utf-8")

    def pointers(self, which: tuple[str, ...]) -> list[str]:
        project = str(Path.cwd()).replace("~", "~0").replace("/", "~1")
        return [p.replace("{project}", project) for p in which]


@pytest.fixture(params=CASES, ids=CASE_IDS)
def config(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Config:
    return _copy(request.param, tmp_path, monkeypatch)


def _copy(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    project = tmp_path / "webapp"
    project.mkdir()
    monkeypatch.chdir(project)
    text = (FIXTURES / case.fixture).read_text(encoding="utf-8")
    text = text.replace(FIXTURE_PROJECT, str(project))
    if case.crlf:
        text = text.replace("\n", "\r\n")
    path = tmp_path / case.fixture
    path.write_bytes(text.encode("utf-8"))
    return Config(case, path, path.read_bytes())


def parse_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mcpwrap")
    sub = parser.add_subparsers(dest="command", required=True)
    wrapcmd.add_wrap_parsers(sub)
    return parser.parse_args(argv)


def mcpwrap(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run `mcpwrap wrap|unwrap ARGV` in process, through the real argument parser."""
    status = wrapcmd.main_wrap(parse_args(*argv))
    captured = capsys.readouterr()
    return status, captured.out + captured.err


# What these tests wrap with: the editing layer takes the command and the words before the
# original command as given. Which profile, which project and which mcpwrap are decided by
# mcpwrap.commands.wrapplan, with real profiles, locks and servers: tests/test_wrap_start.py.
MCPWRAP_EXE = "/opt/mcpwrap/bin/mcpwrap"


def by_name(path: str, entry: clientconfig.Entry, values: dict[str, object]) -> Wrapping:
    return Wrapping(MCPWRAP_EXE, ("run", "--profile", entry.name, "--"), entry.name)


def wrap(capsys: pytest.CaptureFixture[str], config: Config, *extra: str) -> tuple[int, str]:
    return wrap_at(capsys, config.case.client, config.path, *extra)


def wrap_at(
    capsys: pytest.CaptureFixture[str], client: str, path: Path, *extra: str
) -> tuple[int, str]:
    """`mcpwrap wrap CLIENT --config FILE EXTRA` through the real parser and editing
    layer, each entry wrapped by `by_name`."""
    args = parse_args("wrap", client, "--config", str(path), *extra)
    options = clientconfig.Options(
        client=args.client,
        config=args.config,
        server=args.server,
        dry_run=args.dry_run,
        move_secrets=args.move_secrets,
        prepare=by_name,
    )
    outcome = clientconfig.wrap(options, paths.state_dir())
    print("\n".join(outcome.lines))
    captured = capsys.readouterr()
    return outcome.status, captured.out + captured.err


def unwrap(capsys: pytest.CaptureFixture[str], config: Config, *extra: str) -> tuple[int, str]:
    return mcpwrap(capsys, "unwrap", config.case.client, "--config", str(config.path), *extra)


def node_at(text: str, pointer: str) -> clientconfig.Node:
    keys = [k.replace("~1", "/").replace("~0", "~") for k in pointer.split("/")[1:]]
    node = clientconfig.walk(parse(text, "<test>"), tuple(keys))
    assert node is not None, pointer
    return node


def source_at(text: str, pointer: str) -> str:
    node = node_at(text, pointer)
    return text[node.start : node.end]


def argv_at(text: str, pointer: str) -> list[object]:
    entry = plain(node_at(text, pointer))
    assert isinstance(entry, dict)
    return [entry["command"], *entry.get("args", [])]


def name_of(pointer: str) -> str:
    return pointer.rsplit("/", 1)[1]


# ---------------------------------------------------------------------------- the parser

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(json_values, st.sampled_from([None, 0, 2, "\t"]), st.booleans())
def test_the_parser_reads_what_json_reads(
    value: object, indent: int | str | None, ascii_only: bool
) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only)
    node = parse(text, "<value>")
    assert plain(node) == json.loads(text)
    assert (node.start, node.end) == (0, len(text))


def _spans(node: clientconfig.Node) -> Iterator[clientconfig.Node]:
    yield node
    if isinstance(node, Object):
        for member in node.members:
            yield from _spans(member.value)
    elif isinstance(node, clientconfig.Array):
        for item in node.items:
            yield from _spans(item)


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.iterdir()))
def test_every_span_is_the_source_of_its_value(fixture: str) -> None:
    text = (FIXTURES / fixture).read_text(encoding="utf-8")
    for node in _spans(parse(text, fixture)):
        assert plain(parse(text[node.start : node.end], "<span>")) == plain(node)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"a": 1, // one\n "b": [2, 3,], /* c */}', {"a": 1, "b": [2, 3]}),
        ("/* lead */ [ ] // tail", []),
        ('\ufeff{"k": "v"}', {"k": "v"}),
        (
            '{"s": "a//b /* not a comment */", "u": "\\u00e9\\ud83d\\ude00"}',
            {"s": "a//b /* not a comment */", "u": "é😀"},
        ),
        ('{"dup": 1, "dup": 2}', {"dup": 2}),
        ("[-0.5e+3, 0, true, false, null]", [-500.0, 0, True, False, None]),
    ],
)
def test_the_parser_reads_jsonc(text: str, value: object) -> None:
    assert plain(parse(text, "<jsonc>")) == value


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ('{\n  "a": 1\n  "b": 2\n}', 3, 3, 'expected "," or "}"'),
        ('{\n  "a": [1, 2\n}', 3, 1, 'expected "," or "]"'),
        ('{"a": tru}', 1, 7, "expected a value"),
        ("{\n  a: 1\n}", 2, 3, "quoted"),
        ('{"a": "line\nbreak"}', 1, 12, "control character"),
        ('{"a": "\\x"}', 1, 8, "invalid escape"),
        ('{"a": "open', 1, 7, "never closed"),
        ('{"a": 1} /* open', 1, 10, "never closed"),
        ('{"a": 01}', 1, 7, "expected a value"),
        ('{"a": 1}}', 1, 9, "after the end"),
        ("", 1, 1, "end of file"),
        ("{,}", 1, 2, "quoted"),
        ("[1,,2]", 1, 4, "expected a value"),
    ],
)
def test_parse_errors_name_line_and_column(text: str, line: int, column: int, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text, "/x/mcp.json")
    assert f"/x/mcp.json:{line}:{column}: " in str(caught.value)
    assert words in str(caught.value)


# ---------------------------------------------------------------------------- wrap, unwrap


def test_wrap_then_unwrap_restores_every_byte(
    config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = wrap(capsys, config)
    assert status == 0
    assert config.path.read_bytes() != config.original
    for pointer in config.pointers(config.case.stdio):
        assert f": server {name_of(pointer)}" in out
    status, out = unwrap(capsys, config)
    assert status == 0, out
    assert config.path.read_bytes() == config.original
    assert out.count(": unwrapped") == len(config.case.stdio)


def test_wrap_twice_is_wrap_once(config: Config, capsys: pytest.CaptureFixture[str]) -> None:
    wrap(capsys, config)
    once = config.path.read_bytes()
    stat_once = config.path.stat()
    status, out = wrap(capsys, config)
    assert status == 0
    assert config.path.read_bytes() == once
    assert config.path.stat().st_ino == stat_once.st_ino  # not even rewritten
    assert out.count("already wrapped") == len(config.case.stdio)
    assert ": wrapped" not in out


def test_a_wrapped_entry_runs_mcpwrap_then_the_original(
    config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    before = config.text()
    wrap(capsys, config)
    after = config.text()
    loads = [json.loads] if config.case.plain_json else []
    for pointer in config.pointers(config.case.stdio):
        name = name_of(pointer)
        expected = [MCPWRAP_EXE, "run", "--profile", name, "--", *argv_at(before, pointer)]
        assert argv_at(after, pointer) == expected
        for load in loads:  # the file is still plain JSON
            entry = load(after)
            for key in pointer.split("/")[1:]:
                entry = entry[key.replace("~1", "/").replace("~0", "~")]
            assert [entry["command"], *entry["args"]] == expected


def test_entries_not_wrapped_keep_their_bytes(
    config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    before = config.text()
    _, out = wrap(capsys, config)
    after = config.text()
    for pointer in config.pointers(config.case.others):
        assert source_at(after, pointer) == source_at(before, pointer)
    for pointer in config.case.others:
        if "projects" not in pointer:  # another project's servers are not even listed
            assert f"server {name_of(pointer)}: skipped (not stdio" in out


def _targets() -> list[tuple[Case, str]]:
    return [(case, pointer) for case in CASES if not case.crlf for pointer in case.stdio]


@pytest.mark.parametrize(
    ("case", "pointer"), _targets(), ids=[f"{c.id}:{p}" for c, p in _targets()]
)
def test_server_changes_that_entry_only(
    case: Case,
    pointer: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = _copy(case, tmp_path, monkeypatch)
    (pointer,) = config.pointers((pointer,))
    name = name_of(pointer)
    before = config.text()
    status, out = wrap(capsys, config, "--server", name)
    assert status == 0
    after = config.text()
    old, new = node_at(before, pointer), node_at(after, pointer)
    assert before[: old.start] == after[: new.start]
    assert before[old.end :] == after[new.end :]
    assert argv_at(after, pointer)[:5] == [MCPWRAP_EXE, "run", "--profile", name, "--"]
    label = f"server {name}" + (f" (project {Path.cwd()})" if "/projects/" in pointer else "")
    assert [line for line in out.splitlines() if ": server " in line and "secrets" not in line] == [
        f"{config.path}: {label}: wrapped (profile {name})"
    ]
    unwrap(capsys, config, "--server", name)
    assert config.path.read_bytes() == config.original


def test_server_that_is_not_there_names_the_ones_that_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _copy(CASES[0], tmp_path, monkeypatch)
    with pytest.raises(
        ConfigError, match="no server named 'gitlab'; its servers: filesystem, github"
    ):
        wrap(capsys, config, "--server", "gitlab")
    assert config.path.read_bytes() == config.original


def test_invalid_jsonc_is_refused_with_line_and_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _copy(CASES[3], tmp_path, monkeypatch)
    broken = config.original.replace(b'"command": "uvx",', b'"command": "uvx"', 1)
    config.path.write_bytes(broken)
    with pytest.raises(ConfigError) as caught:
        wrap(capsys, config)
    assert f'{config.path}:6:7: expected "," or "}}"' in str(caught.value)
    assert config.path.read_bytes() == broken
    assert not Path(str(config.path) + ".mcpwrap-backup").exists()


def test_the_backup_is_written_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _copy(CASES[0], tmp_path, monkeypatch)
    backup = Path(str(config.path) + ".mcpwrap-backup")
    _, out = wrap(capsys, config)
    assert backup.read_bytes() == config.original
    assert f"the original is kept in {backup}" in out
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    unwrap(capsys, config)
    config.path.write_bytes(config.original.replace(b'"Alt+Space"', b'"Ctrl+Space"'))
    _, out = wrap(capsys, config)
    assert backup.read_bytes() == config.original
    assert "the original is kept" not in out


def test_unwrap_leaves_an_edited_entry_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _copy(CASES[0], tmp_path, monkeypatch)
    wrap(capsys, config)
    edited = config.text().replace(
        '"/Users/alice/Downloads"', '"/Users/alice/Downloads",\n        "/Users/alice/Music"'
    )
    config.path.write_text(edited, encoding="utf-8")
    status, out = unwrap(capsys, config)
    assert status == 1
    assert (
        "server filesystem: not unwrapped: its command or args changed since `mcpwrap wrap`" in out
    )
    assert "server github: unwrapped" in out
    after = config.text()
    assert source_at(after, "/mcpServers/filesystem") == source_at(edited, "/mcpServers/filesystem")
    assert source_at(after, "/mcpServers/github") == source_at(
        config.original.decode(), "/mcpServers/github"
    )


def test_unwrap_says_when_an_entry_is_no_longer_wrapped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _copy(CASES[1], tmp_path, monkeypatch)
    wrap(capsys, config, "--server", "db")
    entry = source_at(config.text(), "/mcpServers/db")
    by_hand = config.text().replace(entry, entry.replace(json.dumps(MCPWRAP_EXE), '"node"', 1))
    config.path.write_text(by_hand, encoding="utf-8")
    status, out = unwrap(capsys, config)
    assert status == 0
    assert "server db: not wrapped; it changed since `mcpwrap wrap`, left alone" in out
    assert config.text() == by_hand


@pytest.mark.parametrize(
    ("entry", "command", "args"),
    [
        (
            '{\n      "command": "/usr/local/bin/mcpwrap",\n      "args": [\n        "run",\n        "-p",\n        "fs",\n        "--",\n        "npx",\n        "-y",\n        "pkg"\n      ]\n    }',
            '"npx"',
            '[\n        "-y",\n        "pkg"\n      ]',
        ),
        (
            '{"command": "mcpwrap", "args": ["run", "--", "uvx", "mcp-server-time"]}',
            '"uvx"',
            '["mcp-server-time"]',
        ),
        ('{"command": "mcpwrap", "args": ["run", "--", "my-server"]}', '"my-server"', "[]"),
    ],
)
def test_unwrap_without_a_record_splits_at_the_double_dash(
    entry: str, command: str, args: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "claude_desktop_config.json"
    path.write_text('{\n  "mcpServers": {\n    "fs": ' + entry + "\n  }\n}\n", encoding="utf-8")
    status, out = mcpwrap(capsys, "unwrap", "claude-desktop", "--config", str(path))
    assert status == 0
    assert 'server fs: unwrapped from the part after "--" in its args (no record of a wrap' in out
    text = path.read_text(encoding="utf-8")
    assert source_at(text, "/mcpServers/fs/command") == command
    assert source_at(text, "/mcpServers/fs/args") == args
    json.loads(text)


def test_unwrap_reads_records_from_before_the_absolute_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Records written when wrap wrote a bare "mcpwrap" have no "wrapped_command"."""
    config = _copy(CASES[1], tmp_path, monkeypatch)

    def bare(path: str, entry: clientconfig.Entry, values: dict[str, object]) -> Wrapping:
        return Wrapping("mcpwrap", ("run", "--profile", entry.name, "--"), entry.name)

    options = clientconfig.Options("claude-code", config=str(config.path), prepare=bare)
    clientconfig.wrap(options, paths.state_dir())
    records_file = Path(paths.state_dir(), "wrapped.json")
    records = json.loads(records_file.read_text())
    for record in next(iter(records["files"].values())).values():
        del record["wrapped_command"]
    records_file.write_text(json.dumps(records))
    status, out = unwrap(capsys, config)
    assert status == 0, out
    assert config.path.read_bytes() == config.original


def test_unwrap_without_a_record_or_a_double_dash_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mcp.json"
    text = '{"mcpServers": {"x": {"command": "mcpwrap", "args": ["run", "-p", "x"]}}}'
    path.write_text(text, encoding="utf-8")
    status, out = mcpwrap(capsys, "unwrap", "cursor", "--config", str(path))
    assert status == 1
    assert 'server x: not unwrapped: no record of its wrap and its args have no "--"' in out
    assert path.read_text(encoding="utf-8") == text


def test_unwrap_after_the_client_rewrote_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Claude Code rewrites ~/.claude.json in its own layout: the meaning still matches."""
    config = _copy(CASES[2], tmp_path, monkeypatch)
    wrap(capsys, config)
    config.path.write_text(json.dumps(json.loads(config.text()), indent=4), encoding="utf-8")
    status, out = unwrap(capsys, config)
    assert status == 0, out
    assert json.loads(config.text()) == json.loads(config.original)


def test_dry_run_writes_nothing(config: Config, capsys: pytest.CaptureFixture[str]) -> None:
    status, out = wrap(capsys, config, "--dry-run")
    assert status == 0
    assert out.count(": would wrap (profile") == len(config.case.stdio)
    assert config.path.read_bytes() == config.original
    assert sorted(p.name for p in config.path.parent.iterdir()) == sorted(
        [config.path.name, "webapp", "xdg"]
    )
    assert not Path(paths.state_dir(), "wrapped.json").exists()


def test_mode_and_symlink_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _copy(CASES[3], tmp_path, monkeypatch)
    config.path.chmod(0o640)
    link = tmp_path / "link.json"
    link.symlink_to(config.path)
    status, _ = wrap_at(capsys, "cursor", link)
    assert status == 0
    assert link.is_symlink()
    assert stat.S_IMODE(config.path.stat().st_mode) == 0o640
    assert config.path.read_bytes() != config.original
    assert Path(str(config.path) + ".mcpwrap-backup").exists()
    mcpwrap(capsys, "unwrap", "cursor", "--config", str(link))
    assert config.path.read_bytes() == config.original


def test_records_live_in_the_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _copy(CASES[2], tmp_path, monkeypatch)
    wrap(capsys, config)
    records = json.loads(Path(paths.state_dir(), "wrapped.json").read_text())
    (entries,) = records["files"].values()
    assert sorted(entries) == sorted(config.pointers(config.case.stdio))
    memory = entries["/mcpServers/memory"]
    assert (memory["command"], memory["args"]) == ('"mcp-server-memory"', None)
    unwrap(capsys, config)
    assert json.loads(Path(paths.state_dir(), "wrapped.json").read_text())["files"] == {}


@pytest.mark.parametrize(
    ("text", "index", "expected"),
    [
        ('{\n  "A": "1",\n  "B": "2"\n}', 0, '{\n  "B": "2"\n}'),
        ('{\n  "A": "1",\n  "B": "2"\n}', 1, '{\n  "A": "1"\n}'),
        ('{\n  "A": "1",\n  "B": "2",\n}', 1, '{\n  "A": "1",\n}'),
        ('{\n  "A": "1", // the token\n  "B": "2"\n}', 0, '{\n  "B": "2"\n}'),
        ('{"A": "1", "B": "2", "C": "3"}', 1, '{"A": "1", "C": "3"}'),
        ('{"A": "1", "B": "2"}', 1, '{"A": "1"}'),
        ('{\n  "A": "1"\n}', 0, "{}"),
        ('{\r\n\t"A": "1",\r\n\t"B": "2"\r\n}', 0, '{\r\n\t"B": "2"\r\n}'),
    ],
)
def test_removing_a_member_keeps_the_layout(text: str, index: int, expected: str) -> None:
    obj = parse(text, "<env>")
    assert isinstance(obj, Object)
    assert clientconfig.apply(text, [clientconfig.remove_member(text, obj, index)]) == expected


@pytest.mark.parametrize(
    ("name", "value", "secret"),
    [
        ("GITHUB_PERSONAL_ACCESS_TOKEN", "x1", True),
        ("OPENAI_API_KEY", "sk-1", True),
        ("PGPASSWORD", "p", True),
        ("GITLAB_PAT", "p", True),
        ("client_secret", "s", True),
        ("AWS_CREDENTIALS", "c", True),
        ("PATH", "/usr/bin", False),
        ("PGUSER", "app", False),
        ("API_KEY", "${input:api-key}", False),
        ("API_KEY", "${env:API_KEY}", False),
        ("API_KEY", "", False),
    ],
)
def test_secret_names(name: str, value: str, secret: bool) -> None:
    entry = parse(json.dumps({"command": "x", "env": {name: value}}), "<entry>")
    assert isinstance(entry, Object)
    assert clientconfig.secret_names(entry) == ([name] if secret else [])


def test_client_names_agree() -> None:
    assert wrapcmd.CLIENTS == clientconfig.CLIENTS


def test_the_project_file_comes_before_the_users(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, project = tmp_path / "home", tmp_path / "project"
    (home / ".cursor").mkdir(parents=True)
    (project / ".cursor").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(
        ConfigError,
        match=r"no cursor MCP config found; looked in:\n  .*project/.cursor/mcp.json\n  .*home/.cursor/mcp.json",
    ):
        clientconfig.find_config("cursor", None, str(project))
    (home / ".cursor" / "mcp.json").write_text("{}")
    assert clientconfig.find_config("cursor", None, str(project)) == str(
        home / ".cursor" / "mcp.json"
    )
    (project / ".cursor" / "mcp.json").write_text("{}")
    assert clientconfig.find_config("cursor", None, str(project)) == str(
        project / ".cursor" / "mcp.json"
    )
    assert clientconfig.candidates("vscode", str(project))[0] == str(
        project / ".vscode" / "mcp.json"
    )
    assert clientconfig.candidates("claude-code", str(project)) == [
        str(project / ".mcp.json"),
        str(home / ".claude.json"),
    ]


# ---------------------------------------------------------------------------- secrets

SECRET_CASES = [
    (
        CASES[0],
        "github",
        "GITHUB_PERSONAL_ACCESS_TOKEN",
        "fake-pat-0123456789abcdef0123456789abcdef",
    ),
    (CASES[3], "postgres", "PGPASSWORD", "fake-password-for-tests"),
]


@pytest.mark.parametrize(
    ("case", "server", "name", "value"), SECRET_CASES, ids=[c[1] for c in SECRET_CASES]
)
def test_move_secrets_puts_them_in_the_keyring(
    keyring_env: dict[str, str],
    case: Case,
    server: str,
    name: str,
    value: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import keyring

    config = _copy(case, tmp_path, monkeypatch)
    pointer = f"/mcpServers/{server}"
    env_before = plain(node_at(config.text(), pointer + "/env"))
    assert value in config.text()
    status, out = wrap(capsys, config, "--move-secrets")
    assert status == 0
    assert value not in out
    assert keyring.get_password(f"mcpwrap-{server}", name) == value
    text = config.text()
    assert value not in text
    assert isinstance(env_before, dict)
    assert plain(node_at(text, pointer + "/env")) == {
        k: v for k, v in env_before.items() if k != name
    }
    ref = f"keyring:mcpwrap-{server}/{name}"
    assert f'server {server}: add to its profile: [server] secrets = {{ {name} = "{ref}" }}' in out
    assert "still holds the secrets' values" in out
    assert value not in Path(paths.state_dir(), "wrapped.json").read_text()
    if case.plain_json:
        json.loads(text)
    # unwrap gives back the command and args; the secret stays in the keyring
    status, out = unwrap(capsys, config)
    assert status == 0
    assert value not in config.text() + out
    assert argv_at(config.text(), pointer) == argv_at(config.original.decode(), pointer)


def test_without_the_option_only_names_are_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _copy(CASES[0], tmp_path, monkeypatch)
    value = SECRET_CASES[0][3]
    status, out = wrap(capsys, config)  # stdin is not a terminal under pytest: no question
    assert status == 0
    assert value not in out
    assert (
        "server github: env holds secrets in plain text: GITHUB_PERSONAL_ACCESS_TOKEN (values not shown)"
        in out
    )
    assert "--server github --move-secrets" in out
    assert value in config.text()


def test_a_no_at_the_question_moves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _copy(CASES[3], tmp_path, monkeypatch)
    questions: list[str] = []

    def answer(question: str) -> bool:
        questions.append(question)
        return False

    options = clientconfig.Options("cursor", config=str(config.path), ask=answer, prepare=by_name)
    outcome = clientconfig.wrap(options, paths.state_dir())
    assert questions == [
        f"{config.path}: server postgres: move PGPASSWORD from its env into the keyring? [y/N] "
    ]
    assert "fake-password-for-tests" in config.text()
    assert "fake-password-for-tests" not in "".join(outcome.lines)
