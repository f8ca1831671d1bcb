"""Every example in README.md, the --help epilogs and the man pages, run as written.

The examples are read from the documents themselves: the README's fenced code blocks,
the indented blocks under "example(s):" in every parser's epilog, and the .EX/.EE (or
.nf/.fi) blocks of mcpwrap(1) and mcpwrap-profile(5). Each is a shell command (run with
bash in a project: exit status 0), a client's server entry (JSON: started and driven by
the MCP SDK's client, initialize and tools/list, then ended), a profile (TOML: it passes
`mcpwrap check`) or a sample of output (reproduced). They run in a world of their own: a
temporary HOME with its XDG directories, git projects outside /tmp, the offline npm and
uv caches for every npx/uvx lock (tests/offline.py) and a real Secret Service.

An example that cannot run exactly as written is listed below with the reason; one that
is neither run nor listed fails test_every_example_is_run_or_listed.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from offline import offline_env
from wrapped import REPO

from mcpwrap.commands.parser import build_parser

# --- what cannot run exactly as written, and why -------------------------------------------

# Shell examples (without their trailing comment) run as something else, or not at all.
SUBSTITUTED: dict[str, tuple[str | None, str]] = {
    "pip install . && mcpwrap demo": (
        "mcpwrap demo",
        "the package is installed already (the test venv); pip would need the network for "
        "its build backend",
    ),
    "scripts/test": (None, "the project's test command: it runs this very test"),
    'sudo "$(command -v mcpwrap)" doctor --fix': (
        'MCPWRAP_APPARMOR_ROOT="$PWD/aa-root" mcpwrap doctor --fix',
        "installs into / as root: the test installs into a directory of its own instead "
        "(MCPWRAP_APPARMOR_ROOT, for tests only), as root already, without sudo",
    ),
    "pass show github | mcpwrap secret set keyring:github/token": (
        "printf 'ghp-example\\n' | mcpwrap secret set keyring:github/token",
        "needs pass(1) holding an entry named github",
    ),
}
# Shell examples that read their input: what the test types.
INPUTS: dict[str, tuple[str, str]] = {
    "mcpwrap secret set keyring:github/token": (
        "ghp-example\n",
        "asks for the value; the example's comment says stdin works too",
    ),
}
# Long-running shell examples (besides `mcpwrap run`, driven by a client): they must print
# a line, then stop on Ctrl-C.
FOLLOWERS = {"mcpwrap audit tail -f": "follows the log until Ctrl-C"}
# Paths on the reader's machine, as the examples spell them: the test's own instead.
READER_PATHS = {
    "/home/me/src/app": "the project a Claude Desktop entry names",
    "/home/me/proj": "the project in the sample of an error",
}
# The absolute mcpwrap a written entry names, on the reader's machine: the one on PATH here.
READER_MCPWRAP = {"/home/me/.local/bin/mcpwrap": "mcpwrap"}  # uv tool install / pipx
# Where each document's profile example goes (documents have at most one); None: a
# fragment of a profile, checked with the `version = 1` line a whole profile starts with.
PROFILES: dict[str, str | None] = {
    "README.md": ".mcpwrap/time.toml",  # the file its sample error names
    "mcpwrap-profile.5": ".mcpwrap/files.toml",  # the file its text names
    "mcpwrap secret --help": None,
}
# Blocks that are not commands, by their first line.
NOT_COMMANDS = {
    "client --stdin/stdout--> front --> core (policy, gate, records) --> upstream --pipes--> the MCP server": "a diagram",
    "claude-desktop  ~/.config/Claude/claude_desktop_config.json": (
        "where each client keeps its servers: paths, not a command"
    ),
}
# Samples of output, by their first words: how the test reproduces them (_REPRODUCE).
OUTPUTS = {
    "mcpwrap: error: /home/me/proj/.mcpwrap/time.toml:4: policy.defualt": (
        "the README's profile, `default` misspelled on its line 4, given to run"
    ),
    "profile.toml:12: sandbox.memory": 'a profile whose line 12 is memory = "lots", checked',
    "profile.toml:7: tools.search.timeout": (
        'a profile whose line 7 is the timeout "1000000d" of tool search, checked'
    ),
    'profile.toml:9: tools.read_file.args."pa\\u200bth"': (
        "a profile whose line 9 constrains an argument named with a zero-width space, checked"
    ),
    "audit.jsonl:5: reordered": "a log of 30 records, lines 5 and 10 swapped, verified",
}
# The order the help examples run in: each parser's builds on those before it.
HELP_ORDER = [
    "mcpwrap init",
    "mcpwrap lock",
    "mcpwrap run",
    "mcpwrap check",
    "mcpwrap doctor",
    "mcpwrap audit",
    "mcpwrap secret",
    "mcpwrap token",
    "mcpwrap wrap",
    "mcpwrap unwrap",
    "mcpwrap demo",
]


# --- reading the examples ------------------------------------------------------------------


class Example(NamedTuple):
    where: str  # "README.md:12", "mcpwrap lock --help", "mcpwrap.1:633 (EXAMPLES)"
    kind: str  # "sh", "entry" (JSON), "toml", "text"
    text: str  # as written


def readme_examples() -> list[Example]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    fence = re.compile(r"^(?P<i> *)```(?P<lang>\w*)\n(?P<body>.*?)^(?P=i)```[ \t]*$", re.M | re.S)
    out: list[Example] = []
    for m in fence.finditer(text):
        where = f"README.md:{text.count(chr(10), 0, m.start()) + 1}"
        lines = [line.removeprefix(m["i"]) for line in m["body"].splitlines()]
        if m["lang"] in ("sh", "json"):
            out += _block_examples(where, lines)
        else:
            out.append(Example(where, m["lang"] or "text", "\n".join(lines)))
    return out


def _parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    def walk(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        yield parser.prog, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from walk(sub)

    yield from walk(build_parser())


def help_examples() -> dict[str, list[Example]]:
    """Each epilog's examples, under the first parser that has that epilog."""
    seen: set[str] = set()
    out: dict[str, list[Example]] = {}
    for prog, parser in _parsers():
        if parser.epilog and parser.epilog not in seen:
            seen.add(parser.epilog)
            out[prog] = _epilog_examples(f"{prog} --help", parser.epilog)
    return out


def _epilog_examples(where: str, epilog: str) -> list[Example]:
    """Indented blocks: commands under a heading that starts with "example", else a
    profile fragment or text."""
    out: list[Example] = []
    heading, block = "", []
    for line in [*epilog.splitlines(), ""]:
        if line.startswith("  "):
            block.append(line)
            continue
        if block:
            out += _classify(where, heading.startswith("example"), block)
            block = []
        if line.strip():
            heading = line.strip()
    return out


def man_examples(page: str) -> list[Example]:
    lines = (REPO / "man" / page).read_text(encoding="utf-8").splitlines()
    out: list[Example] = []
    section, block, start = "", None, 0
    for number, line in enumerate(lines, 1):
        if line.startswith(".SH "):
            section = line[4:].strip('"')
        elif line in (".EX", ".nf"):
            block, start = [], number
        elif line in (".EE", ".fi") and block is not None:
            out += _classify(f"{page}:{start} ({section})", section.startswith("EXAMPLE"), block)
            block = None
        elif block is not None and not line.startswith("."):
            block.append(_unescape(line))
    return out


def _unescape(line: str) -> str:
    for roff, text in (("\\-", "-"), ("\\(dq", '"'), ("\\(aq", "'"), ("\\&", "")):
        line = line.replace(roff, text)
    return line.replace("\\e", "\\")


def _classify(where: str, examples: bool, block: list[str]) -> list[Example]:
    lines = _dedent(block)
    first = next((line for line in lines if line.strip()), "")
    if first.startswith("[") or first.startswith("version = "):
        return [Example(where, "toml", "\n".join(lines))]
    if examples:
        return _block_examples(where, lines)
    return [Example(where, "text", "\n".join(lines))]


def _dedent(lines: list[str]) -> list[str]:
    indent = min((len(x) - len(x.lstrip()) for x in lines if x.strip()), default=0)
    return [x[indent:] for x in lines]


def _block_examples(where: str, lines: list[str]) -> list[Example]:
    """Commands (a trailing backslash continues one; `#` lines are comments) and client
    entries (JSON: lines that start with `"` or `{`, or a whole block of them)."""
    out: list[Example] = []
    entry: list[str] = []
    command = ""
    for raw in [*lines, ""]:
        line = raw.strip()
        if command:
            command += "\n" + raw
        elif line.startswith(('"', "{", "}")) or (entry and line and line[0] in "[]"):
            entry.append(raw)
            continue
        elif line and not line.startswith("#"):
            command = line
        if entry:
            out.append(Example(where, "entry", "\n".join(entry)))
            entry = []
        if command and not command.endswith("\\"):
            out.append(Example(where, "sh", command))
            command = ""
    return out


def all_examples() -> list[Example]:
    found = readme_examples()
    for examples in help_examples().values():
        found += examples
    return found + man_examples("mcpwrap.1") + man_examples("mcpwrap-profile.5")


def bare(command: str) -> str:
    """A command without its trailing comments."""
    return "\n".join(re.sub(r"\s+#.*$", "", line) for line in command.splitlines()).strip()


def entry_commands(text: str) -> list[list[str]]:
    """The argv of each server in a client's entry: a whole config or "command"/"args"."""
    doc = json.loads(text if text.lstrip().startswith("{") else "{" + text + "}")
    servers = doc.get("mcpServers") or doc.get("servers") or {"": doc}
    argvs = [[s["command"], *s.get("args", [])] for s in servers.values()]
    return [[READER_MCPWRAP.get(a[0], a[0]), *a[1:]] for a in argvs]


def _doc(where: str) -> str:
    return re.split(r"[:]| \(", where)[0]


# --- the tables hold: everything is run or listed, nothing listed is gone ------------------


def how(example: Example) -> str:
    """How the example is run, or why not: the test's plan, without running anything."""
    if example.kind == "entry":
        argv = entry_commands(example.text)
        assert all(a[:2] == ["mcpwrap", "run"] for a in argv), example
        return "driven by a client"
    if example.kind == "toml":
        assert _doc(example.where) in PROFILES, f"{example.where}: a profile no table names"
        return "checked"
    if example.kind == "text":
        first = example.text.splitlines()[0]
        if first in NOT_COMMANDS:
            return NOT_COMMANDS[first]
        key = next((k for k in OUTPUTS if first.startswith(k)), None)
        assert key is not None, f"{example.where}: neither run nor listed:\n{example.text}"
        return f"reproduced: {OUTPUTS[key]}"
    assert example.kind == "sh", f"{example.where}: a {example.kind} block, neither run nor listed"
    command = bare(example.text)
    if command in SUBSTITUTED:
        return f"substituted: {SUBSTITUTED[command][1]}"
    assert command.startswith("mcpwrap ") or " | mcpwrap " in command, (
        f"{example.where}: a command that is not mcpwrap's, neither run nor listed: {command}"
    )
    return "run"


def test_every_example_is_run_or_listed() -> None:
    examples = all_examples()
    assert len(examples) > 40  # the extraction found them
    for example in examples:
        assert how(example)
    texts = [e.text for e in examples]
    commands = {bare(e.text) for e in examples if e.kind == "sh"}
    firsts = {t.splitlines()[0] for t in texts}
    stale = [c for c in [*SUBSTITUTED, *INPUTS, *FOLLOWERS] if c not in commands]
    stale += [t for t in NOT_COMMANDS if t not in firsts]
    stale += [t for t in OUTPUTS if not any(f.startswith(t) for f in firsts)]
    stale += [p for p in READER_PATHS if not any(p in t for t in texts)]
    stale += [d for d in PROFILES if not any(_doc(e.where) == d for e in examples)]
    assert not stale, f"listed, but no longer in the documents: {stale}"
    with_examples = [p for p, found in help_examples().items() if found]
    assert sorted(with_examples) == sorted(HELP_ORDER)
    assert sorted(_REPRODUCE) == sorted(OUTPUTS)


def test_the_extraction_reads_each_kind_of_block() -> None:
    """A control for the reader itself: it finds what a person sees."""
    token = help_examples()["mcpwrap token"]
    assert [e.kind for e in token] == ["sh"] * 6
    assert token[1].text.startswith("mcpwrap token issue --tenant ci")  # one command, two lines
    assert token[1].text.endswith("--expires 12h > ci.token")
    run = help_examples()["mcpwrap run"]
    assert [e.kind for e in run] == ["sh", "sh", "entry"]
    assert entry_commands(run[2].text) == [
        ["mcpwrap", "run", "--profile", "mcp-server-time", "--", "uvx", "mcp-server-time"]
    ]
    assert [e.kind for e in help_examples()["mcpwrap secret"]] == ["sh"] * 4 + ["toml"]
    man = man_examples("mcpwrap.1")
    kinds = [e.kind for e in man if "EXAMPLES" in e.where]
    assert kinds == ["sh", "sh", "entry", "sh", "sh", "sh"]
    readme = [e.kind for e in readme_examples()]
    assert readme.count("entry") == 3 and readme.count("toml") == 1


NAMES = re.compile(r'--profile(?: |", ")"?([^\s",)`\]]+)')


def test_every_profile_name_in_the_documents_is_one_that_exists() -> None:
    """The name a person types, everywhere: a built-in profile, one an example makes
    (init, the profile examples), a path, or a placeholder."""
    builtin = {p.stem for p in (REPO / "profiles").glob("*.toml")}
    made = {"time", "files"}  # `mcpwrap init time` and the README's; mcpwrap-profile(5)'s
    placeholders = {"P", "P]", "NAME", "NAME|PATH"}
    wrap_only: set[str] = set()  # names `wrap --profile` writes into a config, not found here
    texts = [(REPO / "README.md").read_text(), *(p.read_text() for p in (REPO / "man").iterdir())]
    texts += [parser.epilog or "" for _, parser in _parsers()]
    names = {_unescape(n) for t in texts for n in NAMES.findall(t)}
    unknown = names - builtin - made - placeholders - wrap_only
    assert not {n for n in unknown if "/" not in n and not n.endswith(".toml")}, unknown


def test_every_npx_example_says_yes() -> None:
    """npx asks before it installs a package; a client has no terminal to answer it."""
    argvs = []
    for e in all_examples():
        if e.kind == "entry":
            argvs += entry_commands(e.text)
        elif e.kind == "sh":
            argvs.append(shlex.split(bare(e.text).replace("\\\n", " ")))
        elif e.kind == "toml":
            argvs.append(tomllib.loads(e.text).get("server", {}).get("command", []))
    npx = [a for a in argvs if "npx" in a]
    assert len(npx) >= 4
    assert all(a[a.index("npx") + 1] == "-y" for a in npx), npx


# --- running them --------------------------------------------------------------------------


@dataclass
class World:
    env: dict[str, str]
    home: Path
    project: Path
    done: set[str] = field(default_factory=set)  # command lines run already, in any project
    failures: list[str] = field(default_factory=list)

    def at(self, project: Path) -> World:
        return World(self.env, self.home, project, self.done)


@pytest.fixture(scope="module")
def world(bus: dict[str, str]) -> Iterator[World]:
    base = Path(tempfile.mkdtemp(prefix="mcpwrap-examples-", dir="/var/tmp"))
    home = base / "home"
    env = {
        k: v
        for k, v in offline_env().items()
        if k not in ("MCPWRAP_PROJECT", "CLAUDE_PROJECT_DIR", "MCPWRAP_TOKEN")
    }
    env.update(bus)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
    )
    for key in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
        Path(env[key]).mkdir(parents=True)
    try:
        yield World(env, home, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _project(world: World, name: str) -> World:
    project = world.project / name
    project.mkdir()
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    return world.at(project)


def _clients(world: World) -> None:
    """The reader's client configs as they were before mcpwrap: what `wrap` rewrites.
    Servers the offline caches hold, so that wrap can lock and start each one."""
    time_server = {"command": "uvx", "args": ["mcp-server-time"]}
    files = {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "."]}
    configs = {
        world.home / ".config" / "Claude" / "claude_desktop_config.json": {
            "mcpServers": {"time": time_server}
        },
        world.project / ".cursor" / "mcp.json": {
            "mcpServers": {"files": files, "clock": time_server}
        },
        world.project / ".vscode" / "mcp.json": {"servers": {"time": time_server}},
        world.project / ".mcp.json": {
            "mcpServers": {"time": {**time_server, "env": {"TIME_API_KEY": "example-key"}}}
        },
    }
    for path, doc in configs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2) + "\n")
    app = world.home / "src" / "app"  # the README's ~/src/app
    if not app.exists():
        app.mkdir(parents=True)
        subprocess.run(["git", "init", "-q", str(app)], check=True)


def run_all(world: World, examples: list[Example]) -> None:
    for example in examples:
        try:
            _run(world, example)
        except Exception as exc:  # every broken example is reported, not just the first
            world.failures.append(f"{example.where}: {example.text}\n  {exc}")


def _run(world: World, example: Example) -> None:
    if example.kind == "entry":
        for argv in entry_commands(_reader_paths(world, example.text)):
            _drive(world, argv)
    elif example.kind == "toml":
        _profile_example(world, example)
    elif example.kind == "text":
        first = example.text.splitlines()[0]
        if first not in NOT_COMMANDS:
            key = next(k for k in OUTPUTS if first.startswith(k))
            _REPRODUCE[key](world, _reader_paths(world, example.text))
    else:
        _shell(world, example.text)


def _reader_paths(world: World, text: str) -> str:
    for path in READER_PATHS:
        text = text.replace(path, str(world.project))
    return text


def _shell(world: World, text: str) -> None:
    command = bare(text)
    if command in SUBSTITUTED:
        command = SUBSTITUTED[command][0] or ""
    # A built-in profile that serves a project keeps its lock in that project: `lock`
    # runs once in each project; anything else once in all.
    key = f"{world.project}: {command}" if command.startswith("mcpwrap lock ") else command
    if not command or key in world.done:
        # Not runnable here (SUBSTITUTED says why), or run already: a second `lock` of the
        # same server fetches it again, and a changed lock is written only on a yes.
        return
    if command.startswith("mcpwrap run "):
        _drive(world, shlex.split(command))
    elif command in FOLLOWERS:
        _follow(world, command)
    else:
        stdin = INPUTS.get(command, ("", ""))[0]
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=world.project,
            env=world.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}{done.stderr}"
        assert "Traceback" not in done.stderr, done.stderr
    world.done.add(key)


def _drive(world: World, argv: list[str]) -> None:
    """Start the server command as a client would, list its tools, and end it (once for
    each command line: a client entry and a shell line may start the same one)."""
    if shlex.join(argv) in world.done:
        return
    errors = world.project.parent / "stderr.log"

    async def session() -> list[str]:
        params = StdioServerParameters(
            command=argv[0], args=argv[1:], cwd=str(world.project), env=world.env
        )
        with open(errors, "w") as errlog, anyio.fail_after(60):
            async with (
                stdio_client(params, errlog=errlog) as (read, write),
                ClientSession(read, write) as client,
            ):
                await client.initialize()
                return [t.name for t in (await client.list_tools()).tools]

    try:
        tools = anyio.run(session)
    except BaseException as exc:
        raise AssertionError(f"{argv}: {exc!r}\n{errors.read_text()}") from None
    assert tools, f"{argv}: no tools listed"
    world.done.add(shlex.join(argv))


def _follow(world: World, command: str) -> None:
    proc = subprocess.Popen(
        ["bash", "-c", "exec " + command],
        cwd=world.project,
        env=world.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline(), "printed nothing"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, (proc.returncode, err)


def _mcpwrap(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["mcpwrap", *args],
        cwd=world.project,
        env=world.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _profile_example(world: World, example: Example) -> None:
    """A whole profile is put where its document says and checked by name; one with a
    server command is locked and run, as mcpwrap-profile(5) says. A fragment is checked
    with the line a whole profile starts with."""
    place = PROFILES[_doc(example.where)]
    text = example.text + "\n"
    if place is None:
        place, text = "fragment.toml", "version = 1\n" + text
    path = world.project / place
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    name = path.stem if place.startswith(".mcpwrap/") else str(path)
    checked = _mcpwrap(world, "check", name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    if "[server]\ncommand" in text:
        locked = _mcpwrap(world, "lock", "--profile", name)
        assert locked.returncode == 0, locked.stdout + locked.stderr
        _drive(world, ["mcpwrap", "run", "--profile", name])


def _readme_error(world: World, sample: str) -> None:
    """The README's profile with its `default` misspelled on line 4."""
    profile = world.project / ".mcpwrap" / "time.toml"
    good = profile.read_text()
    lines = good.splitlines(keepends=True)
    lines[3] = lines[3].replace("default", "defualt")
    profile.write_text("".join(lines))
    try:
        out = _mcpwrap(world, "run", "--profile", "time", "--", "uvx", "mcp-server-time")
    finally:
        profile.write_text(good)
    assert out.returncode == 2 and out.stderr.strip() == sample.strip(), out.stderr


def _profile_error(world: World, sample: str) -> None:
    """A profile whose line 12 sets a memory limit of "lots"."""
    path = world.project / "profile.toml"
    path.write_text("version = 1\n" + "#\n" * 9 + '[sandbox]\nmemory = "lots"\n')
    out = _mcpwrap(world, "check", "profile.toml")
    assert out.returncode == 2 and sample.strip() in out.stdout, out.stdout


def _checked(world: World, text: str, sample: str) -> None:
    (world.project / "profile.toml").write_text(text)
    out = _mcpwrap(world, "check", "profile.toml")
    assert out.returncode == 2 and sample.strip() in out.stdout, out.stdout


def _timeout_error(world: World, sample: str) -> None:
    """A profile whose line 7 sets a tool's timeout past the maximum."""
    text = 'version = 1\n#\n#\n#\n[tools.search]\nclass = "read"\ntimeout = "1000000d"\n'
    _checked(world, text, sample)


def _invisible_error(world: World, sample: str) -> None:
    """A profile whose line 9 names an argument `pa<U+200B>th`."""
    text = (
        'version = 1\n#\n#\n#\n#\n[tools.read_file]\nclass = "read"\n'
        '[tools.read_file.args]\n"pa\\u200bth" = { max_length = 9 }\n'
    )
    _checked(world, text, sample)


def _swapped_log(world: World, sample: str) -> None:
    """30 records, lines 5 and 10 swapped. The last hash depends on the records' times:
    the sample's is cut short ("3f1c..."), so only what comes before it is compared."""
    from mcpwrap.audit.writer import AuditWriter

    log = world.project / "audit.jsonl"
    with AuditWriter(str(log), session="example") as writer:
        for n in range(30):
            writer.write({"event": "call", "tool": f"t{n}"})
    lines = log.read_bytes().splitlines(keepends=True)
    lines[4], lines[9] = lines[9], lines[4]
    log.write_bytes(b"".join(lines))
    out = _mcpwrap(world, "audit", "verify", "--log", "audit.jsonl")
    got, want = out.stdout.splitlines(), sample.strip().splitlines()
    assert out.returncode == 1 and got[:2] == want[:2], out.stdout
    assert len(got) == 3 and got[2].startswith(want[2].split("last hash ")[0] + "last hash ")


_REPRODUCE = {
    "mcpwrap: error: /home/me/proj/.mcpwrap/time.toml:4: policy.defualt": _readme_error,
    "profile.toml:12: sandbox.memory": _profile_error,
    "profile.toml:7: tools.search.timeout": _timeout_error,
    'profile.toml:9: tools.read_file.args."pa\\u200bth"': _invisible_error,
    "audit.jsonl:5: reordered": _swapped_log,
}


def _report(world: World) -> None:
    assert not world.failures, "examples that do not run as written:\n\n" + "\n\n".join(
        world.failures
    )


def test_readme_and_man_page_examples_run_as_written(world: World) -> None:
    docs = _project(world, "docs")
    _clients(docs)
    run_all(docs, readme_examples())
    run_all(docs, man_examples("mcpwrap.1") + man_examples("mcpwrap-profile.5"))
    _report(docs)


def test_help_examples_run_as_written(world: World) -> None:
    project = _project(world, "help")
    _clients(project)
    found = help_examples()
    for prog in HELP_ORDER:
        run_all(project, found[prog])
    _report(project)
