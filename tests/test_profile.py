"""mcpwrap.config.profile: loading, validation and placeholders."""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
import threading
import time
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpwrap.basics.errors import ProfileError, UsageError
from mcpwrap.basics.units import Rate
from mcpwrap.config import profile as profile_module
from mcpwrap.config import remote
from mcpwrap.config.profile import (
    Access,
    ArgumentsMode,
    AuditSpec,
    AuthSpec,
    Constraint,
    Descriptions,
    JailKind,
    Network,
    Placeholders,
    PolicySpec,
    Profile,
    SandboxSpec,
    Selection,
    ServerSpec,
    Syscalls,
    ToolClass,
    ToolSpec,
    load_profile,
    parse_profile,
)
from mcpwrap.policy import constraints
from mcpwrap.policy import decisions as policy
from mcpwrap.relay.ratelimit import take
from mcpwrap.sandbox import spec

PLACES = Placeholders(project="/proj", home="/home/u", cwd="/work", state="/state")

# PROFILE.md's example with every documented key, plus the other constraint kinds it lists.
# Two changes make it valid: network is "allowlist" (egress needs it) and write_file has
# the class every tool must have.
FULL = """\
version = 1
name = "filesystem"            # server name in audit records; default: file stem

[server]
command = ["npx", "@modelcontextprotocol/server-filesystem", "{project}"]
cwd = "{project}"
env = { LOG_LEVEL = "info" }   # the child's whole environment is built from env,
passthrough = ["LANG"]         # these names copied from mcpwrap's own environment,
secrets = { API_TOKEN = "keyring:svc/user" }   # and these, from the OS keyring

[sandbox]
enforce = true                 # false: runs unsandboxed, loudly
network = "allowlist"          # "none" | "allowlist" | "host"
egress = ["api.github.com:443", "*.githubusercontent.com:443", "tcp:127.0.0.1:5432"]
read = ["{project}"]           # read-only grants on top of the runtime's own files
write = ["{project}/build"]    # read-write grants
memory = "1GiB"
cpu = "300s"                   # CPU seconds of the whole process tree
processes = 128
open_files = 512
file_size = "256MiB"
syscalls = "default"           # "default" (deny-list) | "strict" (allow-list)
jail = "any"                   # "full" (needs user namespaces) | "any" | "reduced"
egress_connections = 32        # the egress proxy's limits (network = "allowlist")
egress_idle = "120s"
egress_bytes = "100MiB"

[policy]
default = "deny"               # tools not named under [tools] are hidden and refused
timeout = "60s"                # per call, unless the tool sets its own
sampling = "deny"              # server -> client requests: "deny" | "allow"
elicitation = "allow"
roots = "allow"
resources = "deny"             # "deny" | "allow" | list of URI globs
prompts = "allow"              # "deny" | "allow" | list of names
descriptions = "block"         # poisoned tool definitions: "warn" | "block"

[tools.read_file]
class = "read"                 # "read" | "write" | "admin"
timeout = "10s"
rate = "120/min"               # token bucket, shared by all mcpwrap processes of this user
concurrency = 4
effects = []                   # declared side effects, e.g. "network:api.github.com:443"

[tools.read_file.args]
path = { within = ["{project}"] }          # resolved, normalised path inside these roots

[tools.write_file]
class = "write"

[tools.write_file.args]
path = { within = ["{project}/build"] }
content = { max_length = 1_000_000 }

[tools.fetch]
class = "read"
effects = ["network:api.github.com:443"]
args.url = { hosts = ["*.example.com", "Example.ORG."] }
args.method = { one_of = ["GET", "HEAD"] }

[tools.sleep]
class = "admin"
args.seconds = { min = 0, max = 30.5 }
args.label = { pattern = "[a-z]+", max_length = 10 }

[audit]
path = "{state}/audit.jsonl"   # default
arguments = "digest"           # "digest" (sha256 of canonical JSON) | "full" | "none"

[auth]
required = true                # every call needs a valid token
tenants = ["acme", "globex"]   # whose tokens this profile serves; default: any
"""


def parse(text: str, *, tenant: str | None = None) -> Profile:
    places = PLACES._replace(tenant=tenant)
    return parse_profile(text, source="p.toml", places=places)


def fails(text: str, *, tenant: str | None = None) -> str:
    with pytest.raises(ProfileError) as info:
        parse(text, tenant=tenant)
    return str(info.value)


def expected_full(project: str, state: str) -> Profile:
    """What FULL loads as, with {project} and {state} as given."""
    return Profile(
        version=1,
        name="filesystem",
        source="",  # compared separately
        digest="",
        project=project,
        server=ServerSpec(
            command=("npx", "@modelcontextprotocol/server-filesystem", project),
            cwd=project,
            env={"LOG_LEVEL": "info"},
            passthrough=("LANG",),
            secrets={"API_TOKEN": "keyring:svc/user"},
        ),
        sandbox=SandboxSpec(
            enforce=True,
            network=Network.ALLOWLIST,
            egress=("api.github.com:443", "*.githubusercontent.com:443", "tcp:127.0.0.1:5432"),
            read=(project,),
            write=(f"{project}/build",),
            memory=2**30,
            cpu=300.0,
            processes=128,
            open_files=512,
            file_size=256 * 2**20,
            syscalls=Syscalls.DEFAULT,
            jail=JailKind.ANY,
            egress_connections=32,
            egress_idle=120.0,
            egress_bytes=100 * 2**20,
        ),
        policy=PolicySpec(
            default=Access.DENY,
            timeout=60.0,
            sampling=Access.DENY,
            elicitation=Access.ALLOW,
            roots=Access.ALLOW,
            resources=Selection(False),
            prompts=Selection(True),
            descriptions=Descriptions.BLOCK,
        ),
        tools={
            "read_file": ToolSpec(
                name="read_file",
                cls=ToolClass.READ,
                timeout=10.0,
                rate=Rate(120, 60.0),
                concurrency=4,
                effects=(),
                args={"path": Constraint(within=(project,))},
            ),
            "write_file": ToolSpec(
                name="write_file",
                cls=ToolClass.WRITE,
                timeout=None,
                rate=None,
                concurrency=None,
                effects=(),
                args={
                    "path": Constraint(within=(f"{project}/build",)),
                    "content": Constraint(max_length=1_000_000),
                },
            ),
            "fetch": ToolSpec(
                name="fetch",
                cls=ToolClass.READ,
                timeout=None,
                rate=None,
                concurrency=None,
                effects=("network:api.github.com:443",),
                args={
                    "url": Constraint(hosts=("*.example.com", "example.org")),
                    "method": Constraint(one_of=("GET", "HEAD")),
                },
            ),
            "sleep": ToolSpec(
                name="sleep",
                cls=ToolClass.ADMIN,
                timeout=None,
                rate=None,
                concurrency=None,
                effects=(),
                args={
                    "seconds": Constraint(min=0.0, max=30.5),
                    "label": Constraint(pattern=re.compile("[a-z]+"), max_length=10),
                },
            ),
        },
        audit=AuditSpec(path=f"{state}/audit.jsonl", arguments=ArgumentsMode.DIGEST),
        auth=AuthSpec(required=ToolClass.READ, tenants=("acme", "globex")),
        uses_project=True,
    )


# --- the full example --------------------------------------------------------------------


def test_full_example_loads_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    project = tmp_path / "proj"
    (project / ".git").mkdir(parents=True)
    file = project / ".mcpwrap" / "filesystem.toml"
    file.parent.mkdir()
    file.write_text(FULL, encoding="utf-8")

    loaded = load_profile(file, cwd=str(tmp_path), state_dir=str(tmp_path / "state"))

    assert loaded.source == str(file)
    assert loaded.digest == "sha256:" + hashlib.sha256(file.read_bytes()).hexdigest()
    want = expected_full(str(project), str(tmp_path / "state"))
    assert loaded._replace(source="", digest="") == want


def test_full_example_covers_every_documented_key() -> None:
    doc = tomllib.loads(FULL)
    assert set(doc) == set(profile_module._TOP_KEYS)
    remote_keys = set(remote.KEYS)  # a remote server's, tested in REMOTE below
    for section, known in [
        ("server", tuple(set(profile_module._SERVER_KEYS) - remote_keys)),
        ("sandbox", profile_module._SANDBOX_KEYS),
        ("policy", profile_module._POLICY_KEYS),
        ("audit", profile_module._AUDIT_KEYS),
        ("auth", profile_module._AUTH_KEYS),
    ]:
        assert set(doc[section]) == set(known)
    assert set(doc["tools"]["read_file"]) == set(profile_module._TOOL_KEYS)
    kinds = {
        kind for tool in doc["tools"].values() for arg in tool["args"].values() for kind in arg
    }
    assert kinds == set(profile_module._CONSTRAINT_KEYS) - {"sql"}


def test_defaults() -> None:
    loaded = parse("version = 1\n")
    assert loaded.name == "p"
    assert loaded.version == 1
    assert loaded.project == "/proj"
    assert loaded.server == ServerSpec(None, None, {}, (), {})
    assert loaded.sandbox == SandboxSpec()
    assert loaded.policy == PolicySpec()
    assert loaded.policy.timeout == 60.0
    assert loaded.policy.resources == Selection(False)
    assert loaded.policy.prompts == Selection(True)
    assert dict(loaded.tools) == {}
    assert loaded.audit == AuditSpec("/state/audit.jsonl", ArgumentsMode.DIGEST)


def test_digest_is_of_the_text() -> None:
    text = "version = 1\n"
    assert parse(text).digest == "sha256:" + hashlib.sha256(text.encode()).hexdigest()


# --- TOML syntax and version -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("version = 1\nname = \n", "p.toml:2:8: invalid TOML: Invalid value"),
        ("version = 1\n[a]\nb = 1\n[a]\n", "p.toml:4:3: invalid TOML: Cannot declare"),
        ('version = 1\nname = "x', "p.toml:2: invalid TOML: Unterminated string"),
    ],
)
def test_toml_syntax_error_names_file_line_and_column(text: str, where: str) -> None:
    assert fails(text).startswith(where)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "x"\n', "p.toml:1: version: missing; add `version = 1`"),
        (
            "version = 2\n",
            "p.toml:1: version: this mcpwrap reads profile format version 1 only, got 2",
        ),
        (
            "version = 0\n",
            "p.toml:1: version: this mcpwrap reads profile format version 1 only, got 0",
        ),
        ('version = "1"\n', 'p.toml:1: version: expected 1, got "1"'),
        ("version = true\n", "p.toml:1: version: expected 1, got true"),
        ('name = "x"\nversion = 2\n', "p.toml:2: version: this mcpwrap reads"),
    ],
)
def test_version(text: str, message: str) -> None:
    assert fails(text).startswith(message)


def test_version_is_checked_before_unknown_keys() -> None:
    assert "version 1 only, got 2" in fails("version = 2\nnew_key = 1\n")


# --- unknown keys ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            'nmae = "x"',
            'p.toml:2: nmae: unknown key; did you mean "name"? known keys at the top level: '
            "version, name, server",
        ),
        (
            "[server]\ncomand = []",
            'p.toml:3: server.comand: unknown key; did you mean "command"? known keys in '
            "[server]: command, cwd, env, passthrough, secrets",
        ),
        (
            '[sandbox]\nmemmory = "1GiB"',
            'p.toml:3: sandbox.memmory: unknown key; did you mean "memory"?',
        ),
        (
            '[policy]\ndefualt = "deny"',
            'p.toml:3: policy.defualt: unknown key; did you mean "default"?',
        ),
        (
            '[tools.read_file]\nclas = "read"',
            'p.toml:3: tools.read_file.clas: unknown key; did you mean "class"? known keys in '
            "[tools.read_file]: class, timeout, rate, concurrency, effects, args",
        ),
        (
            '[tools.t]\nclass = "read"\nargs.p = { withn = ["/a"] }',
            'p.toml:4: tools.t.args.p.withn: unknown key; did you mean "within"? known keys in '
            "[tools.t.args.p]: within, one_of",
        ),
        (
            '[tools.t]\nclass = "read"\n[tools.t.args.p]\nmax_len = 3',
            'p.toml:5: tools.t.args.p.max_len: unknown key; did you mean "max_length"?',
        ),
        (
            'tools.t.class = "read"\ntools.t.timeuot = "1s"',
            'p.toml:3: tools.t.timeuot: unknown key; did you mean "timeout"?',
        ),
        (
            '[audit]\narguments = "full"\npaht = "x"',
            'p.toml:4: audit.paht: unknown key; did you mean "path"?',
        ),
        (
            '[tools."my.tool"]\nclass = "read"\nconcurency = 2',
            'p.toml:4: tools."my.tool".concurency: unknown key; did you mean "concurrency"?',
        ),
        (
            '[tools.t]\nclass = "read"\nargs.p = { within = [\n  "/a",\n], xyz = 1 }',
            "p.toml:6: tools.t.args.p.xyz: unknown key; known keys",
        ),
        ("[server]\n[server.extra]\nx = 1", "p.toml:3: server.extra: unknown key"),
    ],
)
def test_unknown_keys_name_file_line_path_and_known_keys(body: str, message: str) -> None:
    assert fails("version = 1\n" + body + "\n").startswith(message)


# --- wrong types and bad values ----------------------------------------------------------


def tool(body: str) -> str:
    """A tool section whose `body` starts on line 4."""
    return f'[tools.t]\nclass = "read"\n{body}'


def arg(body: str) -> str:
    """An args entry `p = { body }` on line 5."""
    return f'[tools.t]\nclass = "read"\n[tools.t.args]\np = {{ {body} }}'


def section(name: str, body: str) -> str:
    """[name] on line 2, `body` from line 3."""
    return f"[{name}]\n{body}"


BAD = [
    # name
    ('name = ""', 'p.toml:2: name: expected a non-empty printable name without "/", got ""'),
    ('name = "a/b"', 'p.toml:2: name: expected a non-empty printable name without "/", got "a/b"'),
    ('name = "a\\tb"', "p.toml:2: name: expected a non-empty printable name"),
    ("name = 5", "p.toml:2: name: expected a string, got 5"),
    # sections of the wrong type
    ('server = "npx"', 'p.toml:2: server: expected a table, got "npx"'),
    ("tools = 5", "p.toml:2: tools: expected a table, got 5"),
    ('[[tools]]\nclass = "read"', "p.toml:2: tools: expected a table, got an array"),
    ("tools.t = 5", "p.toml:2: tools.t: expected a table, got 5"),
    # [tools.NAME]
    (
        '[tools.t]\ntimeout = "10s"',
        'p.toml:2: tools.t: missing class; add class = "read", "write" or "admin"',
    ),
    (
        '[tools.t]\nclass = "super"',
        'p.toml:3: tools.t.class: expected one of "read", "write", "admin", got "super"',
    ),
    (
        tool('timeout = "0s"'),
        'p.toml:4: tools.t.timeout: expected a duration greater than zero, got "0s"',
    ),
    (
        tool("timeout = -1"),
        "p.toml:4: tools.t.timeout: expected a duration greater than zero, got -1",
    ),
    (
        tool('timeout = "soon"'),
        'p.toml:4: tools.t.timeout: expected a duration like "500ms", "10s"',
    ),
    (tool("timeout = []"), 'p.toml:4: tools.t.timeout: expected a duration like "500ms"'),
    (tool("concurrency = 0"), "p.toml:4: tools.t.concurrency: expected an integer >= 1, got 0"),
    (
        tool("concurrency = true"),
        "p.toml:4: tools.t.concurrency: expected an integer >= 1, got true",
    ),
    (tool("concurrency = 2.0"), "p.toml:4: tools.t.concurrency: expected an integer >= 1, got 2.0"),
    (
        tool('rate = "0/min"'),
        'p.toml:4: tools.t.rate: expected a rate of 1 to 1,000,000 calls per period, got "0/min"',
    ),
    # Issue 15, item 7: values that load must be values the run can use.
    (
        tool('timeout = "1000000d"'),
        'p.toml:4: tools.t.timeout: expected a duration of at most "24h", got "1000000d"',
    ),
    (
        tool("timeout = 86401"),
        'p.toml:4: tools.t.timeout: expected a duration of at most "24h", got 86401',
    ),
    (
        tool(f"timeout = {10**400}"),
        'p.toml:4: tools.t.timeout: expected a duration like "500ms", "10s"',
    ),
    (
        section("policy", 'timeout = "25h"'),
        'p.toml:3: policy.timeout: expected a duration of at most "24h", got "25h"',
    ),
    (
        section("sandbox", 'network = "allowlist"\negress_idle = "2d"'),
        'p.toml:4: sandbox.egress_idle: expected a duration of at most "24h", got "2d"',
    ),
    (
        section("sandbox", 'cpu = "366d"'),
        'p.toml:3: sandbox.cpu: expected a duration of at most "365d", got "366d"',
    ),
    (
        section("sandbox", 'memory = "1025TiB"'),
        'p.toml:3: sandbox.memory: expected a size of at most "1024TiB", got "1025TiB"',
    ),
    (
        section("sandbox", f"file_size = {2**64}"),
        f'p.toml:3: sandbox.file_size: expected a size of at most "1024TiB", got {2**64}',
    ),
    (
        section("sandbox", "processes = 4194305"),
        "p.toml:3: sandbox.processes: expected an integer of at most 4,194,304, got 4194305",
    ),
    (
        section("sandbox", "open_files = 1048577"),
        "p.toml:3: sandbox.open_files: expected an integer of at most 1,048,576, got 1048577",
    ),
    (
        tool('rate = "1000001/s"'),
        'p.toml:4: tools.t.rate: expected a rate of 1 to 1,000,000 calls per period, got "1000',
    ),
    (
        arg(f"max = {10**400}"),
        "p.toml:5: tools.t.args.p.max: expected an integer from -2**53 to 2**53 (compared "
        "exactly), got 1000",
    ),
    (
        arg(f"min = {-(2**53) - 1}"),
        "p.toml:5: tools.t.args.p.min: expected an integer from -2**53 to 2**53",
    ),
    (tool('rate = "fast"'), 'p.toml:4: tools.t.rate: expected a rate like "10/s", "120/min"'),
    (tool("rate = 5"), 'p.toml:4: tools.t.rate: expected a rate like "10/s"'),
    (
        tool('effects = "net"'),
        'p.toml:4: tools.t.effects: expected an array of non-empty strings, got "net"',
    ),
    (
        tool('effects = ["a",\n  1]'),
        "p.toml:5: tools.t.effects[1]: expected a non-empty string, got 1",
    ),
    (tool('args = "x"'), 'p.toml:4: tools.t.args: expected a table, got "x"'),
    # constraints
    (
        tool("args.p = {}"),
        "p.toml:4: tools.t.args.p: no constraint given; use one or more of within, one_of, "
        "pattern, max_length, min, max, hosts",
    ),
    (tool('args.p = "within"'), 'p.toml:4: tools.t.args.p: expected a table, got "within"'),
    (
        arg('within = "/x"'),
        'p.toml:5: tools.t.args.p.within: expected a non-empty array of paths, got "/x"',
    ),
    (
        arg("within = []"),
        "p.toml:5: tools.t.args.p.within: expected a non-empty array of paths, got an array",
    ),
    (arg("within = [1]"), "p.toml:5: tools.t.args.p.within[0]: expected a string, got 1"),
    (arg('within = [""]'), 'p.toml:5: tools.t.args.p.within[0]: expected a path, got ""'),
    (
        arg("one_of = []"),
        "p.toml:5: tools.t.args.p.one_of: expected a non-empty array, got an array",
    ),
    (arg('one_of = "a"'), 'p.toml:5: tools.t.args.p.one_of: expected a non-empty array, got "a"'),
    (
        arg("one_of = [[1]]"),
        "p.toml:5: tools.t.args.p.one_of[0]: expected a string, number or boolean, got an array",
    ),
    (
        arg("one_of = [{a = 1}]"),
        "p.toml:5: tools.t.args.p.one_of[0]: expected a string, number or boolean, got a table",
    ),
    (
        arg("one_of = [nan]"),
        "p.toml:5: tools.t.args.p.one_of[0]: expected a finite number, got nan",
    ),
    (
        arg("one_of = [1979-05-27]"),
        "p.toml:5: tools.t.args.p.one_of[0]: expected a string, number or boolean, got a date",
    ),
    (
        arg('pattern = "("'),
        "p.toml:5: tools.t.args.p.pattern: not a valid regular expression: missing ), "
        "unterminated subpattern",
    ),
    (arg("pattern = 5"), "p.toml:5: tools.t.args.p.pattern: expected a string, got 5"),
    (
        arg("max_length = -1"),
        "p.toml:5: tools.t.args.p.max_length: expected an integer >= 0, got -1",
    ),
    (
        arg("max_length = 1.5"),
        "p.toml:5: tools.t.args.p.max_length: expected an integer >= 0, got 1.5",
    ),
    (arg('min = "ten"'), 'p.toml:5: tools.t.args.p.min: expected a number, got "ten"'),
    (arg("max = true"), "p.toml:5: tools.t.args.p.max: expected a number, got true"),
    (arg("min = -inf"), "p.toml:5: tools.t.args.p.min: expected a finite number, got -inf"),
    (arg("min = 5, max = 1"), "p.toml:5: tools.t.args.p.min: min (5) is greater than max (1)"),
    (
        arg('hosts = "example.com"'),
        "p.toml:5: tools.t.args.p.hosts: expected a non-empty array of host names, got "
        '"example.com"',
    ),
    (arg("hosts = []"), "p.toml:5: tools.t.args.p.hosts: expected a non-empty array of host names"),
    (
        arg('hosts = ["*"]'),
        'p.toml:5: tools.t.args.p.hosts[0]: "*": "*" may only be the whole left-most label',
    ),
    (
        arg('hosts = ["a.*.com"]'),
        'p.toml:5: tools.t.args.p.hosts[0]: "a.*.com": "*" may only be the whole left-most label',
    ),
    (arg('hosts = ["foo*.com"]'), 'p.toml:5: tools.t.args.p.hosts[0]: "foo*.com": "*" may only be'),
    (
        arg('hosts = ["*example.com"]'),
        'p.toml:5: tools.t.args.p.hosts[0]: "*example.com": "*" may only be',
    ),
    (arg('hosts = ["*.*.com"]'), 'p.toml:5: tools.t.args.p.hosts[0]: "*.*.com": "*" may only be'),
    (
        arg('hosts = ["ex ample.com"]'),
        'p.toml:5: tools.t.args.p.hosts[0]: "ex ample.com" is not a host name',
    ),
    (arg('hosts = ["a..b"]'), 'p.toml:5: tools.t.args.p.hosts[0]: "a..b" is not a host name'),
    (arg('hosts = [""]'), 'p.toml:5: tools.t.args.p.hosts[0]: "" is not a host name'),
    (arg('hosts = ["-a.com"]'), 'p.toml:5: tools.t.args.p.hosts[0]: "-a.com" is not a host name'),
    (
        arg('sql = "write"'),
        'p.toml:5: tools.t.args.p.sql: expected "read-only" (the only SQL constraint), got "write"',
    ),
    (
        arg('sql = "read-only", min = 1'),
        "p.toml:5: tools.t.args.p.min: min needs a number and sql a string",
    ),
    (
        arg('within = ["/a"], min = 1'),
        "p.toml:5: tools.t.args.p.min: min needs a number and within a string: no value passes "
        "both",
    ),
    (
        arg('max = 3, pattern = "a"'),
        "p.toml:5: tools.t.args.p.max: max needs a number and pattern a string",
    ),
    (
        arg("max_length = 3, min = 1"),
        "p.toml:5: tools.t.args.p.min: min needs a number and max_length a string",
    ),
    (
        arg('hosts = ["a.com"], max = 1'),
        "p.toml:5: tools.t.args.p.max: max needs a number and hosts a string",
    ),
    (
        arg('pattern = "a+", one_of = ["a", 1]'),
        "p.toml:5: tools.t.args.p.one_of[1]: 1 can never pass pattern, which needs a string",
    ),
    (
        arg('min = 0, one_of = [1, "2"]'),
        'p.toml:5: tools.t.args.p.one_of[1]: "2" can never pass min, which needs a number',
    ),
    (
        arg("max = 1, one_of = [true]"),
        "p.toml:5: tools.t.args.p.one_of[0]: true can never pass max, which needs a number",
    ),
    # [policy]
    (
        section("policy", 'default = "maybe"'),
        'p.toml:3: policy.default: expected one of "allow", "deny", got "maybe"',
    ),
    (
        section("policy", 'timeout = "0s"'),
        'p.toml:3: policy.timeout: expected a duration greater than zero, got "0s"',
    ),
    (
        section("policy", 'timeout = "1 fortnight"'),
        "p.toml:3: policy.timeout: expected a duration like",
    ),
    (
        section("policy", 'sampling = "yes"'),
        'p.toml:3: policy.sampling: expected one of "allow", "deny", got "yes"',
    ),
    (
        section("policy", "elicitation = true"),
        'p.toml:3: policy.elicitation: expected one of "allow", "deny", got true',
    ),
    (
        section("policy", "roots = 1"),
        'p.toml:3: policy.roots: expected one of "allow", "deny", got 1',
    ),
    (
        section("policy", 'resources = "some"'),
        'p.toml:3: policy.resources: expected "allow", "deny" or an array of names and globs, got '
        '"some"',
    ),
    (
        section("policy", "prompts = 5"),
        'p.toml:3: policy.prompts: expected "allow", "deny" or an array of names and globs, got 5',
    ),
    (
        section("policy", 'resources = ["file:///*", ""]'),
        'p.toml:3: policy.resources[1]: expected a non-empty string, got ""',
    ),
    (
        section("policy", "prompts = [1]"),
        "p.toml:3: policy.prompts[0]: expected a non-empty string, got 1",
    ),
    (
        section("policy", 'descriptions = "ignore"'),
        'p.toml:3: policy.descriptions: expected one of "warn", "block", got "ignore"',
    ),
    # [sandbox]
    (
        section("sandbox", 'enforce = "yes"'),
        'p.toml:3: sandbox.enforce: expected true or false, got "yes"',
    ),
    (
        section("sandbox", 'network = "open"'),
        'p.toml:3: sandbox.network: expected one of "none", "allowlist", "host", got "open"',
    ),
    (
        section("sandbox", 'egress = ["a.com:443"]'),
        'p.toml:3: sandbox.egress: egress applies only with network = "allowlist", and network is '
        '"none"',
    ),
    (
        section("sandbox", 'network = "host"\negress = ["a.com:443"]'),
        'p.toml:4: sandbox.egress: egress applies only with network = "allowlist", and network is '
        '"host"',
    ),
    (
        section("sandbox", 'egress_idle = "10s"'),
        'p.toml:3: sandbox.egress_idle: egress_idle applies only with network = "allowlist", '
        'and network is "none": set network = "allowlist" or remove egress_idle',
    ),
    (
        section("sandbox", 'network = "host"\negress_connections = 4'),
        "p.toml:4: sandbox.egress_connections: egress_connections applies only with network = "
        '"allowlist", and network is "host"',
    ),
    (
        section("sandbox", 'network = "allowlist"\negress_connections = 0'),
        "p.toml:4: sandbox.egress_connections: expected an integer >= 1, got 0",
    ),
    (
        section("sandbox", 'network = "allowlist"\negress_bytes = "much"'),
        "p.toml:4: sandbox.egress_bytes: expected a size like",
    ),
    (
        section("sandbox", 'network = "allowlist"\negress_idle = "0s"'),
        'p.toml:4: sandbox.egress_idle: expected a duration greater than zero, got "0s"',
    ),
    (
        section("sandbox", 'egress = "a.com:443"'),
        "p.toml:3: sandbox.egress: expected an array of HOST:PORT",
    ),
    (
        section("sandbox", 'network = "allowlist"\negress = ["api.github.com"]'),
        'p.toml:4: sandbox.egress[0]: "api.github.com" has no port from 1 to 65535; expected '
        "HOST:PORT",
    ),
    (
        section("sandbox", 'network = "allowlist"\negress = ["a.com:0"]'),
        'p.toml:4: sandbox.egress[0]: "a.com:0" has no port',
    ),
    (
        section("sandbox", 'network = "allowlist"\negress = ["a.com:65536"]'),
        'p.toml:4: sandbox.egress[0]: "a.com:65536" has no port',
    ),
    (
        section("sandbox", 'network = "allowlist"\negress = ["a.com:https"]'),
        'p.toml:4: sandbox.egress[0]: "a.com:https" has no port',
    ),
    (
        section("sandbox", 'network = "allowlist"\negress = ["*:443"]'),
        'p.toml:4: sandbox.egress[0]: "*": "*" may only be',
    ),
    (
        section("sandbox", 'network = "allowlist"\negress = ["tcp:localhost:5432"]'),
        'p.toml:4: sandbox.egress[0]: "tcp:localhost:5432" does not hold an IPv4 address',
    ),
    (
        section("sandbox", 'network = "allowlist"\negress = ["tcp:[::1:5432"]'),
        'p.toml:4: sandbox.egress[0]: "tcp:[::1:5432" does not hold an IPv4 address or an IPv6',
    ),
    (
        section("sandbox", 'network = "allowlist"\negress = ["tcp:::1:5432"]'),
        'p.toml:4: sandbox.egress[0]: "tcp:::1:5432" does not hold an IPv4 address',
    ),
    (
        section("sandbox", 'read = "/x"'),
        'p.toml:3: sandbox.read: expected an array of paths, got "/x"',
    ),
    (section("sandbox", "read = [1]"), "p.toml:3: sandbox.read[0]: expected a string, got 1"),
    (
        section("sandbox", 'write = ["/a",\n  ""]'),
        'p.toml:4: sandbox.write[1]: expected a path, got ""',
    ),
    (
        section("sandbox", 'memory = "lots"'),
        'p.toml:3: sandbox.memory: expected a size like "64B", "512KiB", "256MiB", "1GiB", "1GB" '
        'or a number of bytes, got "lots"',
    ),
    (
        section("sandbox", "memory = 0"),
        "p.toml:3: sandbox.memory: expected a size greater than zero, got 0",
    ),
    (
        section("sandbox", 'memory = "0B"'),
        'p.toml:3: sandbox.memory: expected a size greater than zero, got "0B"',
    ),
    (section("sandbox", "memory = 1.5"), "p.toml:3: sandbox.memory: expected a size like"),
    (
        section("sandbox", 'file_size = "-1MiB"'),
        'p.toml:3: sandbox.file_size: expected a size greater than zero, got "-1MiB"',
    ),
    (
        section("sandbox", 'cpu = "0s"'),
        'p.toml:3: sandbox.cpu: expected a duration greater than zero, got "0s"',
    ),
    (section("sandbox", 'cpu = "fast"'), "p.toml:3: sandbox.cpu: expected a duration like"),
    (
        section("sandbox", "processes = 0"),
        "p.toml:3: sandbox.processes: expected an integer >= 1, got 0",
    ),
    (
        section("sandbox", 'open_files = "many"'),
        'p.toml:3: sandbox.open_files: expected an integer >= 1, got "many"',
    ),
    (
        section("sandbox", 'syscalls = "paranoid"'),
        'p.toml:3: sandbox.syscalls: expected one of "default", "strict", got "paranoid"',
    ),
    (
        section("sandbox", 'jail = "none"'),
        'p.toml:3: sandbox.jail: expected one of "full", "any", "reduced", got "none"',
    ),
    (
        section("sandbox", "jail = true"),
        'p.toml:3: sandbox.jail: expected one of "full", "any", "reduced", got true',
    ),
    # [server]
    (
        section("server", "command = []"),
        "p.toml:3: server.command: expected a non-empty array of strings, got an array",
    ),
    (
        section("server", 'command = "npx server"'),
        'p.toml:3: server.command: expected a non-empty array of strings, got "npx server"',
    ),
    (
        section("server", 'command = ["npx", 1]'),
        "p.toml:3: server.command[1]: expected a string, got 1",
    ),
    (
        section("server", 'command = ["", "x"]'),
        'p.toml:3: server.command[0]: expected a program name, got ""',
    ),
    (section("server", "cwd = 1"), "p.toml:3: server.cwd: expected a string, got 1"),
    (section("server", 'env = "A=1"'), 'p.toml:3: server.env: expected a table, got "A=1"'),
    (section("server", "env = { A = 1 }"), "p.toml:3: server.env.A: expected a string, got 1"),
    (
        section("server", 'env = { "1A" = "x" }'),
        "p.toml:3: server.env.1A: expected an environment variable name",
    ),
    (
        section("server", 'env = { "A=B" = "x" }'),
        'p.toml:3: server.env."A=B": expected an environment variable name',
    ),
    (
        section("server", 'passthrough = "LANG"'),
        'p.toml:3: server.passthrough: expected an array of environment variable names, got "LANG"',
    ),
    (
        section("server", 'passthrough = ["LANG", "BAD-NAME"]'),
        "p.toml:3: server.passthrough[1]: expected an environment variable name "
        '([A-Za-z_][A-Za-z0-9_]*), got "BAD-NAME"',
    ),
    (
        section("server", 'secrets = { T = "vault:x/y" }'),
        'p.toml:3: server.secrets.T: expected a keyring reference "keyring:SERVICE/USER", got '
        '"vault:x/y"',
    ),
    (
        section("server", 'secrets = { T = "keyring:svc" }'),
        "p.toml:3: server.secrets.T: expected a keyring reference",
    ),
    (
        section("server", 'secrets = { T = "keyring:/user" }'),
        "p.toml:3: server.secrets.T: expected a keyring reference",
    ),
    (
        section("server", 'secrets = { T = "keyring:svc/" }'),
        "p.toml:3: server.secrets.T: expected a keyring reference",
    ),
    (
        section("server", "secrets = { T = 1 }"),
        "p.toml:3: server.secrets.T: expected a keyring reference",
    ),
    (
        section("server", 'env = { T = "x" }\nsecrets = { T = "keyring:s/u" }'),
        "p.toml:4: server.secrets.T: T is also in server.env; each variable comes from one of "
        "env, passthrough and secrets",
    ),
    (
        section("server", 'env = { LANG = "C" }\npassthrough = ["PATH",\n  "LANG"]'),
        "p.toml:5: server.passthrough[1]: LANG is also in server.env",
    ),
    (
        section("server", 'passthrough = ["T"]\nsecrets = { T = "keyring:s/u" }'),
        "p.toml:4: server.secrets.T: T is also in server.passthrough",
    ),
    # [audit]
    (
        section("audit", 'arguments = "some"'),
        'p.toml:3: audit.arguments: expected one of "digest", "full", "none", got "some"',
    ),
    (section("audit", "path = 5"), "p.toml:3: audit.path: expected a string, got 5"),
    (section("audit", 'path = ""'), 'p.toml:3: audit.path: expected a path, got ""'),
    # placeholders
    (
        section("server", 'cwd = "{nope}/x"'),
        "p.toml:3: server.cwd: unknown placeholder {nope}; known placeholders: {project}, {home}, "
        "{cwd}, {state}, {tenant}",
    ),
    (
        section("server", 'cwd = "{ project }"'),
        "p.toml:3: server.cwd: unknown placeholder { project }",
    ),
    (
        section("server", 'cwd = "/data/{tenant}"'),
        "p.toml:3: server.cwd: {tenant} needs a tenant, and none is known: run with a token that "
        "carries a tenant",
    ),
    (
        section("server", 'command = ["x", "a{b"]'),
        'p.toml:3: server.command[1]: unmatched "{"; write "{{" for a literal brace',
    ),
    (
        section("server", 'env = { A = "}" }'),
        'p.toml:3: server.env.A: unmatched "}"; write "}}" for a literal brace',
    ),
]


@pytest.mark.parametrize(("body", "message"), BAD)
def test_bad_values_name_file_line_path_expected_and_found(body: str, message: str) -> None:
    assert fails("version = 1\n" + body + "\n").startswith(message)


# --- values that load --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "get", "value"),
    [
        ('name = "my server"', lambda p: p.name, "my server"),
        (
            tool('timeout = 2.5\nrate = "10/s"\nconcurrency = 1'),
            lambda p: (p.tools["t"].timeout, p.tools["t"].rate, p.tools["t"].concurrency),
            (2.5, Rate(10, 1.0), 1),
        ),
        (
            tool('effects = ["network:a.com:443", "fs:write"]'),
            lambda p: p.tools["t"].effects,
            ("network:a.com:443", "fs:write"),
        ),
        (
            arg('within = ["src", "/abs/./x/../y", "{home}/z"]'),
            lambda p: p.tools["t"].args["p"].within,
            ("/proj/src", "/abs/y", "/home/u/z"),
        ),
        (
            arg('one_of = [1, 2.5, true, "a"]'),
            lambda p: p.tools["t"].args["p"].one_of,
            (1, 2.5, True, "a"),
        ),
        (arg('one_of = ["{project}"]'), lambda p: p.tools["t"].args["p"].one_of, ("{project}",)),
        (
            arg('pattern = "{project}|[a-z]{2}"'),
            lambda p: p.tools["t"].args["p"].pattern.pattern,
            "{project}|[a-z]{2}",
        ),
        (arg("max_length = 0"), lambda p: p.tools["t"].args["p"].max_length, 0),
        (
            arg("min = 1, max = 1"),
            lambda p: (p.tools["t"].args["p"].min, p.tools["t"].args["p"].max),
            (1.0, 1.0),
        ),
        (
            arg("min = -5"),
            lambda p: (p.tools["t"].args["p"].min, p.tools["t"].args["p"].max),
            (-5.0, None),
        ),
        (
            arg('pattern = "[a-z]+", one_of = ["ab"]'),
            lambda p: p.tools["t"].args["p"].one_of,
            ("ab",),
        ),
        (
            arg('hosts = ["*.Example.COM", "bücher.example", "example.com.", "127.0.0.1"]'),
            lambda p: p.tools["t"].args["p"].hosts,
            ("*.example.com", "xn--bcher-kva.example", "example.com", "127.0.0.1"),
        ),
        (tool('effects = ["{cwd}"]'), lambda p: p.tools["t"].effects, ("{cwd}",)),
        (
            section("policy", 'resources = ["file:///docs/*"]\nprompts = "deny"'),
            lambda p: (p.policy.resources, p.policy.prompts),
            (Selection(False, ("file:///docs/*",)), Selection(False)),
        ),
        (
            section("policy", 'resources = "allow"\nprompts = []'),
            lambda p: (p.policy.resources, p.policy.prompts),
            (Selection(True), Selection(False)),
        ),
        (section("policy", 'timeout = "500ms"'), lambda p: p.policy.timeout, 0.5),
        (
            section(
                "sandbox",
                'network = "allowlist"\negress = ["API.GitHub.com:443", "bücher.example:443", '
                '"example.com.:80", "tcp:[::1]:5432", "[::1]:8080", "tcp:10.0.0.1:22"]',
            ),
            lambda p: p.sandbox.egress,
            (
                "api.github.com:443",
                "xn--bcher-kva.example:443",
                "example.com:80",
                "tcp:[::1]:5432",
                "[::1]:8080",
                "tcp:10.0.0.1:22",
            ),
        ),
        (section("sandbox", 'network = "none"\negress = []'), lambda p: p.sandbox.egress, ()),
        (
            section("sandbox", 'read = ["docs", "{home}/.config/x/"]\nwrite = ["/tmp//out"]'),
            lambda p: (p.sandbox.read, p.sandbox.write),
            (("/proj/docs", "/home/u/.config/x"), ("/tmp/out",)),
        ),
        (
            section("sandbox", 'memory = 1048576\ncpu = 1.5\nfile_size = "1kB"'),
            lambda p: (p.sandbox.memory, p.sandbox.cpu, p.sandbox.file_size),
            (1048576, 1.5, 1000),
        ),
        (section("sandbox", "enforce = false"), lambda p: p.sandbox.enforce, False),
        (
            section("server", 'command = ["{home}/bin/srv", "--root={project}", "{{x}}"]'),
            lambda p: p.server.command,
            ("/home/u/bin/srv", "--root=/proj", "{x}"),
        ),
        (section("server", 'cwd = "sub"'), lambda p: p.server.cwd, "/proj/sub"),
        (
            section("server", 'env = { A = "{state}/a", B = "{cwd}" }'),
            lambda p: dict(p.server.env),
            {"A": "/state/a", "B": "/work"},
        ),
        (
            section("server", 'passthrough = ["LANG", "_X1"]'),
            lambda p: p.server.passthrough,
            ("LANG", "_X1"),
        ),
        (
            section("audit", 'path = "logs/a.jsonl"\narguments = "none"'),
            lambda p: (p.audit.path, p.audit.arguments),
            ("/proj/logs/a.jsonl", ArgumentsMode.NONE),
        ),
        (
            section("audit", 'path = "{home}/audit.jsonl"'),
            lambda p: p.audit.path,
            "/home/u/audit.jsonl",
        ),
    ],
)
def test_good_values(body: str, get: Callable[[Profile], object], value: object) -> None:
    assert get(parse("version = 1\n" + body + "\n")) == value


@pytest.mark.parametrize(
    ("text", "get", "value"),
    [
        ('[server]\ncwd = "/t/{tenant}"', lambda p: p.server.cwd, "/t/acme"),
        ('[sandbox]\nwrite = ["/t/{tenant}"]', lambda p: p.sandbox.write, ("/t/acme",)),
        (
            '[sandbox]\nnetwork = "allowlist"\negress = ["{tenant}.api.example.com:443"]',
            lambda p: p.sandbox.egress,
            ("acme.api.example.com:443",),
        ),
        ('[audit]\npath = "{state}/{tenant}.jsonl"', lambda p: p.audit.path, "/state/acme.jsonl"),
    ],
)
def test_tenant_placeholder_with_a_tenant(
    text: str, get: Callable[[Profile], object], value: object
) -> None:
    assert get(parse("version = 1\n" + text + "\n", tenant="acme")) == value


ENUM_KEYS: list[tuple[str, str, type[enum.Enum], Callable[[Profile], object]]] = [
    ("policy", "default", Access, lambda p: p.policy.default),
    ("policy", "sampling", Access, lambda p: p.policy.sampling),
    ("policy", "elicitation", Access, lambda p: p.policy.elicitation),
    ("policy", "roots", Access, lambda p: p.policy.roots),
    ("sandbox", "network", Network, lambda p: p.sandbox.network),
    ("sandbox", "syscalls", Syscalls, lambda p: p.sandbox.syscalls),
    ("sandbox", "jail", JailKind, lambda p: p.sandbox.jail),
    ("audit", "arguments", ArgumentsMode, lambda p: p.audit.arguments),
    ("tools.t", "class", ToolClass, lambda p: p.tools["t"].cls),
]


@pytest.mark.parametrize(
    ("table", "key", "member", "get"),
    [(t, k, m, g) for t, k, kind, g in ENUM_KEYS for m in kind],
)
def test_every_enum_member_loads(
    table: str, key: str, member: enum.Enum, get: Callable[[Profile], object]
) -> None:
    assert get(parse(f'version = 1\n[{table}]\n{key} = "{member.value}"\n')) is member


# --- the model -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selection", "name", "allowed"),
    [
        (Selection(True), "anything", True),
        (Selection(False), "anything", False),
        (Selection(False, ("file:///docs/*",)), "file:///docs/a.md", True),
        (Selection(False, ("file:///docs/*",)), "file:///etc/passwd", False),
        (Selection(False, ("greet", "sum?")), "sum2", True),
        (Selection(False, ("Greet",)), "greet", False),  # case-sensitive
    ],
)
def test_selection_allows(selection: Selection, name: str, allowed: bool) -> None:
    assert selection.allows(name) is allowed


@pytest.mark.parametrize(
    ("default", "name", "want"),
    [
        ("deny", "t", ToolClass.READ),
        ("deny", "other", None),
        ("allow", "t", ToolClass.READ),
        ("allow", "other", ToolClass.WRITE),
    ],
)
def test_profile_tool(default: str, name: str, want: ToolClass | None) -> None:
    loaded = parse(f'version = 1\n[policy]\ndefault = "{default}"\n{tool("")}\n')
    spec = loaded.tool(name)
    assert (spec.cls if spec else None) is want
    if spec is not None and name == "other":
        assert spec == ToolSpec("other", ToolClass.WRITE, None, None, None, (), {})


def test_everything_is_frozen() -> None:
    loaded = parse(FULL)
    fetch = loaded.tools["fetch"]
    values: list[object] = [loaded, loaded.server, loaded.sandbox, loaded.policy, loaded.audit]
    values += [loaded.policy.prompts, fetch, fetch.args["url"], PLACES, Rate(1, 1.0)]
    for value in values:
        field = "count" if isinstance(value, Rate) else value._fields[0]  # type: ignore[attr-defined]
        assert hasattr(value, field)
        with pytest.raises(AttributeError):
            setattr(value, field, None)
    server = loaded.server
    mappings: list[Mapping[str, object]] = [loaded.tools, fetch.args, server.env, server.secrets]
    for mapping in mappings:
        with pytest.raises(TypeError):
            mapping["X"] = "1"  # type: ignore[index]


# --- loading files -----------------------------------------------------------------------


def test_project_is_the_nearest_parent_holding_git(tmp_path: Path) -> None:
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    file = tmp_path / "repo" / "a" / "b" / "x.toml"
    file.parent.mkdir(parents=True)
    file.write_text('version = 1\n[sandbox]\nread = ["docs"]\n', encoding="utf-8")
    loaded = load_profile(file, cwd="/", state_dir=str(tmp_path))
    assert loaded.project == str(tmp_path / "repo")
    assert loaded.sandbox.read == (str(tmp_path / "repo" / "docs"),)
    assert loaded.name == "x"


def test_project_is_the_profiles_directory_without_git(tmp_path: Path) -> None:
    file = tmp_path / "x.toml"
    file.write_text('version = 1\n[server]\ncwd = "{project}"\n', encoding="utf-8")
    loaded = load_profile(str(file), cwd="/", state_dir=str(tmp_path))
    assert loaded.project == str(tmp_path)
    assert loaded.server.cwd == str(tmp_path)


def test_placeholders_of_a_loaded_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    monkeypatch.chdir(tmp_path)
    file = tmp_path / "x.toml"
    file.write_text(
        'version = 1\n[server]\ncommand = ["{home}", "{cwd}", "{state}"]\n', encoding="utf-8"
    )
    loaded = load_profile(file, state_dir="st")
    assert loaded.server.command == (str(tmp_path / "h"), str(tmp_path), str(tmp_path / "st"))


def test_builtin_profile_uses_the_current_directory_as_project(tmp_path: Path) -> None:
    builtin = tmp_path / "builtin"
    builtin.mkdir()
    (builtin / "time.toml").write_text(
        'version = 1\n[server]\ncwd = "{project}"\n', encoding="utf-8"
    )
    here = tmp_path / "work"
    loaded = load_profile(
        builtin / "time.toml", cwd=str(here), state_dir=str(tmp_path), builtin_dir=str(builtin)
    )
    assert (loaded.source, loaded.name, loaded.project, loaded.server.cwd) == (
        "<builtin:time>",
        "time",
        str(here),
        str(here),
    )


def test_errors_of_a_loaded_file_name_it(tmp_path: Path) -> None:
    file = tmp_path / "x.toml"
    file.write_text('version = 1\n\n[sandbox]\nmemory = "lots"\n', encoding="utf-8")
    with pytest.raises(
        ProfileError,
        match=rf'^{re.escape(str(file))}:4: sandbox.memory: expected a size like .*, got "lots"$',
    ):
        load_profile(file, state_dir=str(tmp_path))


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    file = tmp_path / "x.toml"
    file.write_bytes(b'version = 1\nname = "\xff"\n')
    with pytest.raises(ProfileError, match=rf"^{re.escape(str(file))}:2: not valid UTF-8"):
        load_profile(file, state_dir=str(tmp_path))


def test_a_file_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read the profile: No such file"):
        load_profile(tmp_path / "missing.toml", state_dir=str(tmp_path))


def test_enums_have_the_documented_values() -> None:
    assert [m.value for m in Access] == ["allow", "deny"]
    assert [m.value for m in ToolClass] == ["read", "write", "admin"]
    assert [m.value for m in Network] == ["none", "allowlist", "host"]
    assert [m.value for m in Syscalls] == ["default", "strict"]
    assert [m.value for m in ArgumentsMode] == ["digest", "full", "none"]


@pytest.mark.parametrize(
    ("effects", "message"),
    [
        ('["network:api.github.com"]', "has no port from 1 to 65535"),
        ('["network:tcp:db:5432"]', "does not hold an IPv4 address"),
    ],
)
def test_a_network_effect_is_checked_like_an_egress_entry(
    tmp_path: Path, effects: str, message: str
) -> None:
    path = tmp_path / "p.toml"
    path.write_text(f'version = 1\n[tools.t]\nclass = "read"\neffects = {effects}\n')
    with pytest.raises(ProfileError, match=rf"p\.toml:4: tools\.t\.effects\[0\]: .*{message}"):
        load_profile(str(path), state_dir=str(tmp_path))


def test_network_effects_are_kept_in_canonical_form(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        'version = 1\n[tools.t]\nclass = "read"\neffects = ["network:API.GitHub.com:443", "fs"]\n'
    )
    tool = load_profile(str(path), state_dir=str(tmp_path)).tools["t"]
    assert tool.effects == ("network:api.github.com:443", "fs")


def test_the_token_variable_never_reaches_the_server() -> None:
    message = fails('version = 1\n[server]\npassthrough = ["LANG", "MCPWRAP_TOKEN"]\n')
    assert "p.toml:3: server.passthrough[1]: MCPWRAP_TOKEN is mcpwrap's own token" in message


def test_auth_defaults_and_bad_values() -> None:
    assert parse("version = 1\n").auth == AuthSpec(required=None, tenants=())
    assert 'p.toml:3: auth.required: expected true, false, "read" or "write", got "yes"' in (
        fails('version = 1\n[auth]\nrequired = "yes"\n')
    )
    assert "auth.required: expected true, false" in fails(
        'version = 1\n[auth]\nrequired = ["write"]\n'
    )
    assert 'auth.required: "admin" changes nothing' in fails(
        'version = 1\n[auth]\nrequired = "admin"\n'
    )
    assert "auth.tenants[0]: expected a non-empty string" in fails(
        'version = 1\n[auth]\ntenants = [""]\n'
    )


@pytest.mark.parametrize(
    ("written", "read", "write", "admin"),
    [
        ("true", True, True, True),
        ('"read"', True, True, True),
        ('"write"', False, True, True),
        ("false", False, False, False),
    ],
)
def test_auth_required_is_the_lowest_class_that_needs_a_token(
    written: str, read: bool, write: bool, admin: bool
) -> None:
    auth = parse(f"version = 1\n[auth]\nrequired = {written}\n").auth
    needs = [auth.needs_token(c) for c in (ToolClass.READ, ToolClass.WRITE, ToolClass.ADMIN)]
    assert needs == [read, write, admin]


# --- every value that loads is one the run can use (issue 15, item 7) ----------------------

# setrlimit's argument is a C long long: 2**63 raises OverflowError (measured on Linux x86-64).
_RLIMIT_MAX = 2**63 - 1
_DURATION_KEYS = {
    "tools.t.timeout": ('[tools.t]\nclass = "read"\ntimeout = {}', lambda p: p.tools["t"].timeout),
    "policy.timeout": ("[policy]\ntimeout = {}", lambda p: p.policy.timeout),
    "sandbox.egress_idle": (
        '[sandbox]\nnetwork = "allowlist"\negress_idle = {}',
        lambda p: p.sandbox.egress_idle,
    ),
    "sandbox.cpu": ("[sandbox]\ncpu = {}", lambda p: p.sandbox.cpu),
}
_NUMBER_TEXT = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**420).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.from_regex(r"[0-9]{1,30}\.[0-9]{0,12}", fullmatch=True),
)


def _toml_float(value: float) -> str:
    return "nan" if math.isnan(value) else repr(value)  # repr gives "inf" and "-inf" as TOML


_UNITS = st.sampled_from(["", "ms", "s", "sec", "m", "min", "h", "d", " s", " d", "x"])
_DURATION_TOML = st.one_of(
    st.tuples(_NUMBER_TEXT, _UNITS).map(lambda t: f'"{t[0]}{t[1]}"'),
    st.integers(min_value=-5, max_value=10**420).map(str),
    st.floats().map(_toml_float),
)


def _loaded_or_refused(text: str) -> Profile | None:
    try:
        return parse("version = 1\n" + text + "\n")
    except ProfileError:
        return None


@settings(max_examples=400, deadline=None, database=None)
@given(st.sampled_from(sorted(_DURATION_KEYS)), _DURATION_TOML)
def test_property_a_duration_that_loads_can_be_waited_for(key: str, value: str) -> None:
    """`timeout = "1000000d"` loaded, and at run time the deadline thread died with
    OverflowError (a 1 s tool then ran 6 s). Every wait, Timer and deadline of the run
    ends in a lock acquire with that timeout, which checks it before blocking: on a free
    lock it returns at once when the value is usable and raises OverflowError when not."""
    template, get = _DURATION_KEYS[key]
    loaded = _loaded_or_refused(template.format(value))
    if loaded is None:
        return
    seconds = get(loaded)
    assert seconds is not None and 0 < seconds <= threading.TIMEOUT_MAX
    lock = threading.Lock()
    assert lock.acquire(True, seconds)
    lock.release()
    deadline = time.monotonic() + seconds
    assert deadline - time.monotonic() <= threading.TIMEOUT_MAX  # the relay's deadline wait
    if key == "sandbox.cpu":
        assert 1 <= spec.rlimits(loaded)["RLIMIT_CPU"] <= _RLIMIT_MAX


_LIMIT_KEYS = {
    "memory": "RLIMIT_DATA",
    "file_size": "RLIMIT_FSIZE",
    "processes": "RLIMIT_NPROC",
    "open_files": "RLIMIT_NOFILE",
}
_SIZE_TOML = st.one_of(
    st.integers(min_value=-5, max_value=10**30).map(str),
    st.tuples(
        st.integers(min_value=0, max_value=10**12),
        st.sampled_from(["B", "kB", "KiB", "MB", "MiB", "GB", "GiB", "TB", "TiB"]),
    ).map(lambda t: f'"{t[0]}{t[1]}"'),
)


@settings(max_examples=300, deadline=None, database=None)
@given(st.sampled_from(sorted(_LIMIT_KEYS)), _SIZE_TOML)
def test_property_a_limit_that_loads_fits_setrlimit(key: str, value: str) -> None:
    """A size or count past 2**63 - 1 loaded and then raised OverflowError in the jail,
    which caught only OSError and ValueError."""
    loaded = _loaded_or_refused(f"[sandbox]\n{key} = {value}")
    if loaded is None:
        return
    assert 1 <= spec.rlimits(loaded)[_LIMIT_KEYS[key]] <= _RLIMIT_MAX


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.one_of(
        st.integers(min_value=-5, max_value=10**40).map(str),
        st.from_regex(r"[0-9]{1,12}", fullmatch=True),
    ),
    st.sampled_from(["s", "min", "hour", "day"]),
)
def test_property_a_rate_that_loads_can_be_taken(count: str, unit: str) -> None:
    """A count past 1e308 overflowed the bucket's float arithmetic, and one past 2**53 is
    a bucket that a take no longer empties by exactly one token (int == float compares
    exactly here)."""
    loaded = _loaded_or_refused(f'[tools.t]\nclass = "read"\nrate = "{count}/{unit}"')
    if loaded is None:
        return
    rate = loaded.tools["t"].rate
    assert rate is not None
    left, wait = take(float(rate.count), 0.0, 0.0, rate)
    assert left == rate.count - 1
    assert wait == 0.0
    assert take(0.0, 0.0, 0.0, rate)[1] == rate.per_seconds / rate.count


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.sampled_from(["min", "max"]),
    st.one_of(
        st.integers(min_value=-(10**400), max_value=10**400).map(str),
        st.floats().map(_toml_float),
    ),
)
def test_property_min_and_max_that_load_compare_exactly(kind: str, value: str) -> None:
    """An integer past 1e308 raised OverflowError while loading (math.isfinite), and one
    past 2**53 was rounded: `max = 9007199254740993` became 9007199254740992."""
    loaded = _loaded_or_refused(arg(f"{kind} = {value}"))
    if loaded is None:
        return
    bound = getattr(loaded.tools["t"].args["p"], kind)
    assert math.isfinite(bound)
    assert bound == tomllib.loads(f"v = {value}")["v"]  # exactly the number written


# --- invisible characters in rules (issue 15, item 10) ------------------------------------

INVISIBLE = [
    ("\u200b", "U+200B (ZERO WIDTH SPACE)"),
    ("\u200d", "U+200D (ZERO WIDTH JOINER)"),
    ("\u202e", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
    ("\u2066", "U+2066 (LEFT-TO-RIGHT ISOLATE)"),
    ("\u2062", "U+2062 (INVISIBLE TIMES)"),
    ("\ufeff", "U+FEFF (ZERO WIDTH NO-BREAK SPACE)"),
    ("\U000e0041", "U+E0041 (TAG LATIN CAPITAL LETTER A)"),
    ("\U000e0002", "U+E0002 (a tag or format character)"),  # unassigned, in the tag block
    ("\u00ad", "U+00AD (SOFT HYPHEN)"),  # another Cf
]
# (profile text with X where the character goes, where the error points)
PLACES_OF_X = [
    ('[tools."reXad_file"]\nclass = "read"', 'p.toml:2: tools."reXad_file"'),
    (
        '[tools.t]\nclass = "read"\n[tools.t.args]\n"paXth" = { max_length = 3 }',
        'p.toml:5: tools.t.args."paXth"',
    ),
    (arg('pattern = "^[a-z]+X$"'), "p.toml:5: tools.t.args.p.pattern"),
    (arg('one_of = ["read", "wriXte"]'), "p.toml:5: tools.t.args.p.one_of[1]"),
    (arg('hosts = ["api.exXample.com"]'), "p.toml:5: tools.t.args.p.hosts[0]"),
    (arg('within = ["{project}/srXc"]'), "p.toml:5: tools.t.args.p.within[0]"),
    (section("sandbox", 'read = ["/daXta"]'), "p.toml:3: sandbox.read[0]"),
    (section("sandbox", 'write = ["out", "tmXp"]'), "p.toml:3: sandbox.write[1]"),
    (
        section("sandbox", 'network = "allowlist"\negress = ["apiX.github.com:443"]'),
        "p.toml:4: sandbox.egress[0]",
    ),
    (tool('effects = ["network:aX.example.com:443"]'), "p.toml:4: tools.t.effects[0]"),
    (section("server", 'cwd = "/srXv"'), "p.toml:3: server.cwd"),
    (section("audit", 'path = "/var/log/aXudit.jsonl"'), "p.toml:3: audit.path"),
]


@pytest.mark.parametrize(("char", "shown"), INVISIBLE, ids=[s.split(" ")[0] for _, s in INVISIBLE])
@pytest.mark.parametrize(("text", "where"), PLACES_OF_X, ids=[w for _, w in PLACES_OF_X])
def test_an_invisible_character_in_a_rule_is_an_error(
    text: str, where: str, char: str, shown: str
) -> None:
    """`pa\\u200bth` reads as `path` and constrains an argument no client sends; a bidi
    override makes a pattern or a host read backwards. Each is refused, naming the key and
    the code point."""
    message = fails("version = 1\n" + text.replace("X", char) + "\n")
    # A key that holds the character is shown escaped: the message itself stays legible.
    assert message.startswith(where.replace("X", json.dumps(char)[1:-1])), message
    assert f"holds the invisible character {shown} at position" in message
    assert message.isprintable()


@pytest.mark.parametrize(
    ("text", "get", "value"),
    [
        (
            arg('pattern = "^[a-zé]+$"'),
            lambda p: p.tools["t"].args["p"].pattern.pattern,
            "^[a-zé]+$",
        ),
        (
            arg('one_of = ["naïve", "日本"]'),
            lambda p: p.tools["t"].args["p"].one_of,
            ("naïve", "日本"),
        ),
        (section("sandbox", 'read = ["/données"]'), lambda p: p.sandbox.read, ("/données",)),
        ('[tools."lire_fichier_é"]\nclass = "read"', lambda p: list(p.tools), ["lire_fichier_é"]),
        (
            tool('effects = ["fs:écrit \u200b"]'),
            lambda p: p.tools["t"].effects,
            ("fs:écrit \u200b",),
        ),
    ],
    ids=["pattern", "one_of", "path", "tool-name", "effect-text"],
)
def test_visible_non_ascii_text_loads(
    text: str, get: Callable[[Profile], object], value: object
) -> None:
    """The control: letters of any script pass; only what shows as nothing is refused (an
    effect that is not a network endpoint is a label in the audit log, not a rule)."""
    assert get(parse("version = 1\n" + text + "\n")) == value


@settings(max_examples=200, deadline=None, database=None)
@given(st.integers(min_value=-3, max_value=10**400))
def test_property_counts_without_a_maximum_work_at_any_size(n: int) -> None:
    """concurrency, max_length and egress_connections have no maximum: each is only
    compared with Python integers (or sizes a semaphore), which any integer survives."""
    text = (
        f'[tools.t]\nclass = "read"\nconcurrency = {n}\nargs.p = {{ max_length = {n} }}\n'
        f'[sandbox]\nnetwork = "allowlist"\negress_connections = {n}'
    )
    loaded = _loaded_or_refused(text)
    if loaded is None:
        assert n < 1
        return
    tool = loaded.tools["t"]
    assert policy.concurrency_verdict(tool, 10**6).allowed is (n > 10**6)
    reason = constraints.check_value("x" * 5, tool.args["p"], cwd="/", resolve=str)
    assert (reason is None) is (n >= 5)
    threading.BoundedSemaphore(loaded.sandbox.egress_connections).acquire()


# --- a remote server: [server] url, transport, headers, bearer -----------------------------

REMOTE = """
version = 1
[server]
url = "https://mcp.example.com/mcp"
transport = "streamable-http"
headers = { X-Team = "blue" }
bearer = "keyring:example/token"

[server.tls]
ca = "certs/ca.pem"
client_cert = "{home}/me.pem"
client_key = "keyring:example/client-key"
pins = ["sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]
"""


def test_remote_keys_load() -> None:
    loaded = parse(REMOTE)
    # `oauth` excludes `bearer`: its own test below
    assert set(tomllib.loads(REMOTE)["server"]) == set(remote.KEYS) - {"oauth"}
    assert set(tomllib.loads(REMOTE)["server"]["tls"]) == set(remote.TLS_KEYS)
    assert loaded.server.command is None
    assert loaded.server.remote == remote.RemoteSpec(
        url="https://mcp.example.com/mcp",
        transport="streamable-http",
        headers={"X-Team": "blue"},
        bearer="keyring:example/token",
        tls=remote.TlsSpec(
            ca="/proj/certs/ca.pem",  # relative: to the project, as every path
            client_cert="/home/u/me.pem",
            client_key="keyring:example/client-key",
            pins=("sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",),
        ),
    )
    assert parse("version = 1\n").server.remote is None  # a local server's profile


@pytest.mark.parametrize(
    ("server", "message"),
    [
        (
            'command = ["srv"]\nurl = "https://h/mcp"',
            "server.url: server.command and server.url are both given",
        ),
        (
            'command = ["srv"]\ntransport = "sse"',
            "server.transport: server.transport is for a remote",
        ),
        ('url = "http://192.0.2.1/mcp"', "plain http to 192.0.2.1"),
        ('url = "http://example.com/mcp"', "loopback"),
        ('url = "https://u:p@example.com/mcp"', "user name or password"),
        ('url = "ftp://example.com/"', "not an http(s) URL"),
        ('url = ""', 'expected a URL "https://HOST/PATH"'),
        ('url = "https://h/mcp"\ntransport = "websocket"', 'one of "auto", "streamable-http"'),
        ('url = "https://h/mcp"\nheaders = { Authorization = "Bearer x" }', "keyring"),
        ('url = "https://h/mcp"\nheaders = { cookie = "a=b" }', "carries a credential"),
        ('url = "https://h/mcp"\nheaders = { "X Y" = "a" }', "not an HTTP header name"),
        ('url = "https://h/mcp"\nheaders = { X-A = "a\\r\\nX-B: b" }', "on one line"),
        ('url = "https://h/mcp"\nbearer = "s3cr3t-token"', "never the token itself"),
        ('command = ["srv"]\n[server.tls]\nca = "/ca.pem"', "server.tls is for a remote"),
        ('url = "https://h/mcp"\n[server.tls]\npins = ["abc"]', 'expected "sha256/"'),
        ('url = "https://h/mcp"\n[server.tls]\npins = []', "a non-empty array of pins"),
        ('url = "https://h/mcp"\n[server.tls]\nclient_key = "keyring:x"', "keyring reference"),
        ('url = "https://h/mcp"\n[server.tls]\nverify = false', "verify"),
        (
            'bearer = "keyring:a/b"\n[server.oauth]',
            "server.oauth: server.bearer and [server.oauth]",
        ),
        ('command = ["srv"]\n[server.oauth]', "server.oauth is for a remote"),
        ("[server.oauth]\nredirect_port = -1", "server.oauth.redirect_port: expected a port"),
        ("[server.oauth]\nclient_secret = 'x'", "server.oauth.client_secret: unknown key"),
    ],
)
def test_remote_keys_refused(server: str, message: str) -> None:
    error = fails(f"version = 1\n[server]\n{server}\n")
    assert message in error and error.startswith("p.toml:"), error


def test_remote_oauth_loads() -> None:
    loaded = parse(
        'version = 1\n[server]\nurl = "https://mcp.example.com/mcp"\n[server.oauth]\n'
        'scopes = ["read"]\nclient_id = "mcpwrap-desktop"\n'
        'client_metadata_url = "https://example.com/mcpwrap.json"\nredirect_port = 8765\n'
    )
    assert loaded.server.remote is not None
    assert loaded.server.remote.oauth == remote.OAuthSpec(
        ("read",), "mcpwrap-desktop", "https://example.com/mcpwrap.json", 8765
    )
    assert set(remote.OAUTH_KEYS) == set(remote.OAuthSpec._fields)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/mcp", "http://127.9.9.9/", "http://[::1]:1/", "http://LOCALHOST/"],
)
def test_plain_http_to_loopback_is_allowed(url: str) -> None:
    assert parse(f'version = 1\n[server]\nurl = "{url}"\n').server.remote is not None


def test_command_line_url_and_profile() -> None:
    """One URL after `--`: the same as [server] url; the two must agree, and a profile's
    command and a URL exclude each other."""
    spec = remote.RemoteSpec("", "sse")
    assert remote.target(spec, None, ["https://h/mcp"], "p.toml") == spec._replace(
        url="https://h/mcp"
    )
    assert remote.target(None, ["srv"], [], "p.toml") is None
    assert remote.target(None, None, ["srv", "--flag"], "p.toml") is None
    for args in [
        (remote.RemoteSpec("https://a/mcp"), None, ["https://b/mcp"]),
        (None, ("srv",), ["https://b/mcp"]),
        (None, None, ["https://b/mcp", "extra"]),
        (None, None, ["http://192.0.2.1/mcp"]),
        (remote.RemoteSpec("https://a/mcp"), None, ["srv"]),
    ]:
        with pytest.raises(UsageError):
            remote.target(*args, source="p.toml")
