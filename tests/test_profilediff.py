"""mcpwrap.policy.profilediff: which capabilities a profile change widens or narrows."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from mcpwrap.config.profile import (
    AuditSpec,
    Constraint,
    Placeholders,
    PolicySpec,
    Profile,
    SandboxSpec,
    Selection,
    ServerSpec,
    ToolSpec,
    parse_profile,
)
from mcpwrap.policy import profilediff
from mcpwrap.policy.profilediff import narrowed, widened

PLACES = Placeholders(project="/proj", home="/home/u", cwd="/work", state="/state")


def load(body: str) -> Profile:
    return parse_profile("version = 1\n" + body, source="p.toml", places=PLACES)


class Case(NamedTuple):
    old: str
    new: str
    wider: list[str]
    narrower: list[str]
    # False for changes that cannot be ordered (a new regex, a moved log): they count as
    # widened both ways, so swapping old and new does not swap the lists.
    orderable: bool = True


ALLOWLIST = '[sandbox]\nnetwork = "allowlist"\n'
FETCH = '[tools.fetch]\nclass = "read"\n'
WRITE = '[tools.w]\nclass = "write"\n'

CASES: dict[str, Case] = {
    # --- [server]
    "command changed": Case(
        '[server]\ncommand = ["a"]\n',
        '[server]\ncommand = ["b", "{project}"]\n',
        ['server.command: changed from ["a"] to ["b", "/proj"]'],
        [],
        orderable=False,
    ),
    "command set": Case(
        "",
        '[server]\ncommand = ["a"]\n',
        ['server.command: changed from unset to ["a"]'],
        [],
        orderable=False,
    ),
    "cwd changed": Case(
        '[server]\ncwd = "{project}"\n',
        '[server]\ncwd = "{home}"\n',
        ['server.cwd: changed from "/proj" to "/home/u"'],
        [],
        orderable=False,
    ),
    "env added and changed, names only": Case(
        '[server]\nenv = { A = "1", C = "3" }\n',
        '[server]\nenv = { A = "hunter2", B = "s3cret" }\n',
        ["server.env: changed A", "server.env: added B"],
        ["server.env: removed C"],
        orderable=False,
    ),
    "env added": Case(
        '[server]\nenv = { A = "1" }\n',
        '[server]\nenv = { A = "1", B = "2" }\n',
        ["server.env: added B"],
        [],
    ),
    "passthrough added": Case(
        '[server]\npassthrough = ["LANG"]\n',
        '[server]\npassthrough = ["LANG", "HOME"]\n',
        ['server.passthrough: added "HOME"'],
        [],
    ),
    "secrets added": Case(
        "",
        '[server]\nsecrets = { TOKEN = "keyring:svc/user" }\n',
        ["server.secrets: added TOKEN"],
        [],
    ),
    "secret reference changed": Case(
        '[server]\nsecrets = { TOKEN = "keyring:svc/user" }\n',
        '[server]\nsecrets = { TOKEN = "keyring:svc/admin" }\n',
        ['server.secrets: changed TOKEN ("keyring:svc/user" -> "keyring:svc/admin")'],
        [],
        orderable=False,
    ),
    # --- [server] of a remote server
    "another remote server": Case(
        '[server]\nurl = "https://a.example/mcp"\n',
        '[server]\nurl = "https://b.example/mcp"\n',
        ['server.url: changed from "https://a.example/mcp" to "https://b.example/mcp"'],
        [],
        orderable=False,
    ),
    "a remote server instead of none": Case(
        "",
        '[server]\nurl = "https://a.example/mcp"\n',
        ['server.url: unset -> "https://a.example/mcp" (a remote server)'],
        [],
        orderable=False,
    ),
    "pins removed": Case(
        '[server]\nurl = "https://a.example/mcp"\n[server.tls]\npins = ["sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]\n',
        '[server]\nurl = "https://a.example/mcp"\n',
        ["server.tls.pins: removed: any key the CA vouches for is accepted"],
        [],
        orderable=False,
    ),
    "a backup pin added": Case(
        '[server]\nurl = "https://a.example/mcp"\n[server.tls]\npins = ["sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]\n',
        '[server]\nurl = "https://a.example/mcp"\n[server.tls]\npins = ["sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "sha256/BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB="]\n',
        ['server.tls.pins: added "sha256/BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB="'],
        [],
    ),
    "another trust root": Case(
        '[server]\nurl = "https://a.example/mcp"\n',
        '[server]\nurl = "https://a.example/mcp"\n[server.tls]\nca = "/etc/ca.pem"\n',
        ['server.tls.ca: changed from unset to "/etc/ca.pem"'],
        [],
        orderable=False,
    ),
    "another bearer, a header and the transport": Case(
        '[server]\nurl = "https://a.example/mcp"\nbearer = "keyring:a/t"\n',
        '[server]\nurl = "https://a.example/mcp"\nbearer = "keyring:b/t"\n'
        'transport = "sse"\nheaders = { X-Team = "blue" }\n',
        ['server.bearer: changed from "keyring:a/t" to "keyring:b/t"'],
        ["server.transport: auto -> sse", "server.headers: added X-Team"],
        orderable=False,
    ),
    # --- [sandbox]
    "enforce off": Case(
        "[sandbox]\nenforce = true\n",
        "[sandbox]\nenforce = false\n",
        ["sandbox.enforce: true -> false"],
        [],
    ),
    "network none to allowlist": Case(
        "",
        ALLOWLIST,
        ['sandbox.network: "none" -> "allowlist"'],
        [],
    ),
    "network allowlist to host": Case(
        ALLOWLIST,
        '[sandbox]\nnetwork = "host"\n',
        ['sandbox.network: "allowlist" -> "host"'],
        [],
    ),
    "egress gained": Case(
        ALLOWLIST + 'egress = ["api.x.test:443"]\n',
        ALLOWLIST + 'egress = ["api.x.test:443", "api.evil.test:443"]\n',
        ['sandbox.egress: added "api.evil.test:443"'],
        [],
    ),
    "egress under an old wildcard": Case(
        ALLOWLIST + 'egress = ["*.x.test:443"]\n',
        ALLOWLIST + 'egress = ["api.x.test:443", "*.a.x.test:443"]\n',
        [],
        ['sandbox.egress: removed "*.x.test:443"'],
    ),
    "egress wildcard does not cover its own name": Case(
        ALLOWLIST + 'egress = ["*.x.test:443"]\n',
        ALLOWLIST + 'egress = ["*.x.test:443", "x.test:443"]\n',
        ['sandbox.egress: added "x.test:443"'],
        [],
    ),
    "egress other port, tcp forward": Case(
        ALLOWLIST + 'egress = ["*.x.test:443", "127.0.0.1:5432"]\n',
        ALLOWLIST + 'egress = ["*.x.test:443", "api.x.test:80", "tcp:127.0.0.1:5432"]\n',
        ['sandbox.egress: added "api.x.test:80"', 'sandbox.egress: added "tcp:127.0.0.1:5432"'],
        ['sandbox.egress: removed "127.0.0.1:5432"'],
    ),
    "read grant added": Case(
        '[sandbox]\nread = ["{project}"]\n',
        '[sandbox]\nread = ["{project}", "{home}"]\n',
        ['sandbox.read: added "/home/u"'],
        [],
    ),
    "read grant to a subdirectory": Case(
        '[sandbox]\nread = ["{project}"]\n',
        '[sandbox]\nread = ["{project}/sub", "{project}/sub/deeper"]\n',
        [],
        ['sandbox.read: removed "/proj"'],
    ),
    "read grant to a parent": Case(
        '[sandbox]\nread = ["{project}/sub"]\n',
        '[sandbox]\nread = ["{project}"]\n',
        ['sandbox.read: added "/proj"'],
        [],
    ),
    "read grant to a sibling with a common prefix": Case(
        '[sandbox]\nread = ["/proj"]\n',
        '[sandbox]\nread = ["/projx"]\n',
        ['sandbox.read: added "/projx"'],
        ['sandbox.read: removed "/proj"'],
    ),
    "read grant of the root": Case(
        '[sandbox]\nread = ["/"]\n',
        '[sandbox]\nread = ["/", "/etc"]\n',
        [],
        [],
    ),
    "write grant made read-only": Case(
        '[sandbox]\nwrite = ["{project}"]\n',
        '[sandbox]\nread = ["{project}/src"]\n',
        [],
        ['sandbox.write: removed "/proj"'],
    ),
    "write grant added over a read grant": Case(
        '[sandbox]\nread = ["{project}"]\n',
        '[sandbox]\nread = ["{project}"]\nwrite = ["{project}/build"]\n',
        ['sandbox.write: added "/proj/build"'],
        [],
    ),
    "memory raised": Case(
        '[sandbox]\nmemory = "512MiB"\n',
        '[sandbox]\nmemory = "1GiB"\n',
        ['sandbox.memory: "512MiB" -> "1GiB"'],
        [],
    ),
    "memory removed": Case(
        '[sandbox]\nmemory = "1GiB"\n',
        "",
        ['sandbox.memory: "1GiB" -> unlimited'],
        [],
    ),
    "rlimits": Case(
        '[sandbox]\ncpu = "300s"\nprocesses = 64\nopen_files = 512\nfile_size = "1GB"\n',
        '[sandbox]\ncpu = "10m"\nprocesses = 32\nfile_size = "1500MB"\n',
        [
            'sandbox.cpu: "5m" -> "10m"',
            "sandbox.open_files: 512 -> unlimited",
            'sandbox.file_size: "1GB" -> "1500MB"',
        ],
        ["sandbox.processes: 64 -> 32"],
    ),
    "odd sizes and durations": Case(
        '[sandbox]\nmemory = 1000\ncpu = "1500ms"\n',
        "[sandbox]\nmemory = 1025\ncpu = 90\n",
        ['sandbox.memory: "1kB" -> "1025B"', 'sandbox.cpu: "1500ms" -> "90s"'],
        [],
    ),
    "syscalls": Case(
        '[sandbox]\nsyscalls = "strict"\n',
        '[sandbox]\nsyscalls = "default"\n',
        ['sandbox.syscalls: "strict" -> "default"'],
        [],
    ),
    "jail": Case(
        '[sandbox]\njail = "any"\n',
        '[sandbox]\njail = "reduced"\n',
        ['sandbox.jail: "any" -> "reduced"'],
        [],
    ),
    "jail narrowed": Case(
        '[sandbox]\njail = "any"\n',
        "[sandbox]\n",
        [],
        ['sandbox.jail: "any" -> "full"'],
    ),
    "egress proxy limits": Case(
        ALLOWLIST + 'egress_connections = 16\negress_idle = "60s"\negress_bytes = "100MiB"\n',
        ALLOWLIST + 'egress_connections = 8\negress_idle = "1h"\n',
        ['sandbox.egress_idle: "1m" -> "1h"', 'sandbox.egress_bytes: "100MiB" -> "1GiB"'],
        ["sandbox.egress_connections: 16 -> 8"],
    ),
    # --- [policy]
    "policy switches": Case(
        '[policy]\ndefault = "deny"\nsampling = "deny"\nelicitation = "allow"\nroots = "deny"\n',
        '[policy]\ndefault = "allow"\nsampling = "allow"\nelicitation = "deny"\nroots = "allow"\n',
        [
            'policy.default: "deny" -> "allow"',
            'policy.sampling: "deny" -> "allow"',
            'policy.roots: "deny" -> "allow"',
        ],
        ['policy.elicitation: "allow" -> "deny"'],
    ),
    "policy timeout": Case(
        '[policy]\ntimeout = "60s"\n',
        '[policy]\ntimeout = "5m"\n',
        ['policy.timeout: "1m" -> "5m"'],
        [],
    ),
    "resources deny to a list": Case(
        '[policy]\nresources = "deny"\n',
        '[policy]\nresources = ["file:///a/*"]\n',
        ['policy.resources: "deny" -> ["file:///a/*"]'],
        [],
    ),
    "resources list to allow": Case(
        '[policy]\nresources = ["file:///a/*"]\n',
        '[policy]\nresources = "allow"\n',
        ['policy.resources: ["file:///a/*"] -> "allow"'],
        [],
    ),
    "resources patterns": Case(
        '[policy]\nresources = ["a*", "b"]\n',
        '[policy]\nresources = ["a*", "c?"]\n',
        ['policy.resources: added "c?"'],
        ['policy.resources: removed "b"'],
    ),
    "empty list is deny": Case(
        "[policy]\nresources = []\n",
        '[policy]\nresources = "deny"\n',
        [],
        [],
    ),
    "prompts allow to deny": Case(
        "",
        '[policy]\nprompts = "deny"\n',
        [],
        ['policy.prompts: "allow" -> "deny"'],
    ),
    "descriptions": Case(
        '[policy]\ndescriptions = "block"\n',
        '[policy]\ndescriptions = "warn"\n',
        ['policy.descriptions: "block" -> "warn"'],
        [],
    ),
    # --- [auth]
    "auth no longer required": Case(
        "[auth]\nrequired = true\n",
        "",
        ["auth.required: true -> false"],
        [],
    ),
    "auth: reads no longer need a token": Case(
        "[auth]\nrequired = true\n",
        '[auth]\nrequired = "write"\n',
        ['auth.required: true -> "write"'],
        [],
    ),
    "auth: writes now need a token": Case(
        "",
        '[auth]\nrequired = "write"\n',
        [],
        ['auth.required: false -> "write"'],
    ),
    "auth tenants opened to any": Case(
        '[auth]\ntenants = ["acme"]\n',
        "",
        ['auth.tenants: ["acme"] -> any tenant'],
        [],
    ),
    "auth tenant added": Case(
        '[auth]\ntenants = ["acme"]\n',
        '[auth]\ntenants = ["acme", "globex"]\n',
        ['auth.tenants: added "globex"'],
        [],
    ),
    # --- [tools]
    "tool added": Case(
        FETCH,
        FETCH + '[tools.delete_file]\nclass = "write"\n',
        ["tools.delete_file: added (class write)"],
        [],
    ),
    "tool name that needs quotes": Case(
        "",
        '[tools."my.tool"]\nclass = "read"\n',
        ['tools."my.tool": added (class read)'],
        [],
    ),
    "class raised": Case(
        '[tools.t]\nclass = "read"\n',
        '[tools.t]\nclass = "admin"\n',
        ['tools.t.class: "read" -> "admin"'],
        [],
    ),
    "effects": Case(
        FETCH + 'effects = ["fs:tmp", "network:*.x.test:443"]\n',
        FETCH + 'effects = ["network:api.x.test:443", "network:y.test:443", "fs:home"]\n',
        [
            'tools.fetch.effects: added "network:y.test:443"',
            'tools.fetch.effects: added "fs:home"',
        ],
        [
            'tools.fetch.effects: removed "fs:tmp"',
            'tools.fetch.effects: removed "network:*.x.test:443"',
        ],
    ),
    "rate raised": Case(
        FETCH + 'rate = "10/min"\n',
        FETCH + 'rate = "100/min"\n',
        ['tools.fetch.rate: "10/min" -> "100/min"'],
        [],
    ),
    "rate removed": Case(
        FETCH + 'rate = "5/day"\n',
        FETCH,
        ['tools.fetch.rate: "5/day" -> unlimited'],
        [],
    ),
    "rate: bigger burst, slower refill": Case(
        FETCH + 'rate = "10/s"\n',
        FETCH + 'rate = "100/hour"\n',
        ['tools.fetch.rate: "10/s" -> "100/hour"'],
        [],
        orderable=False,
    ),
    "concurrency removed, timeout raised": Case(
        FETCH + 'concurrency = 4\ntimeout = "10s"\n',
        FETCH + 'timeout = "30s"\n',
        ['tools.fetch.timeout: "10s" -> "30s"', "tools.fetch.concurrency: 4 -> unlimited"],
        [],
    ),
    "tool timeout dropped for a longer policy timeout": Case(
        FETCH + 'timeout = "10s"\n',
        FETCH,
        ['tools.fetch.timeout: "10s" -> "1m" (policy.timeout)'],
        [],
    ),
    "tool timeout dropped for a shorter policy timeout": Case(
        '[policy]\ntimeout = "5s"\n' + FETCH + 'timeout = "10s"\n',
        '[policy]\ntimeout = "5s"\n' + FETCH,
        [],
        ['tools.fetch.timeout: "10s" -> "5s" (policy.timeout)'],
    ),
    "policy timeout alone speaks for tools without one": Case(
        '[policy]\ntimeout = "5s"\n' + FETCH,
        '[policy]\ntimeout = "50s"\n' + FETCH,
        ['policy.timeout: "5s" -> "50s"'],
        [],
    ),
    "args constraint removed": Case(
        WRITE + 'args.path = { within = ["{project}"] }\nargs.mode = { one_of = ["a"] }\n',
        WRITE + 'args.mode = { one_of = ["a"] }\n',
        ["tools.w.args.path: constraint removed"],
        [],
    ),
    "within gains a root": Case(
        WRITE + 'args.path = { within = ["{project}"] }\n',
        WRITE + 'args.path = { within = ["{project}", "/x", "{project}/sub"] }\n',
        ['tools.w.args.path.within: added "/x"'],
        [],
    ),
    "within to a subdirectory": Case(
        WRITE + 'args.path = { within = ["{project}"] }\n',
        WRITE + 'args.path = { within = ["{project}/build"] }\n',
        [],
        ['tools.w.args.path.within: removed "/proj"'],
    ),
    "a constraint kind removed": Case(
        WRITE + 'args.path = { within = ["{project}"], max_length = 100 }\n',
        WRITE + "args.path = { max_length = 100 }\n",
        ['tools.w.args.path.within: ["/proj"] -> unset'],
        [],
    ),
    "max_length raised": Case(
        WRITE + "args.content = { max_length = 100 }\n",
        WRITE + "args.content = { max_length = 1000 }\n",
        ["tools.w.args.content.max_length: 100 -> 1000"],
        [],
    ),
    "min and max loosened": Case(
        WRITE + "args.n = { min = 0, max = 30.5 }\n",
        WRITE + "args.n = { min = -5, max = 60 }\n",
        ["tools.w.args.n.min: 0 -> -5", "tools.w.args.n.max: 30.5 -> 60"],
        [],
    ),
    "min dropped, max tightened": Case(
        WRITE + "args.n = { min = 0, max = 30 }\n",
        WRITE + "args.n = { max = 10 }\n",
        ["tools.w.args.n.min: 0 -> unset"],
        ["tools.w.args.n.max: 30 -> 10"],
    ),
    "one_of gains values, type-strict": Case(
        WRITE + 'args.m = { one_of = ["GET", 1] }\n',
        WRITE + 'args.m = { one_of = ["GET", 1, "POST", true, 1.5] }\n',
        [
            'tools.w.args.m.one_of: added "POST"',
            "tools.w.args.m.one_of: added true",
            "tools.w.args.m.one_of: added 1.5",
        ],
        [],
    ),
    "pattern changed": Case(
        WRITE + 'args.label = { pattern = "[a-z]+" }\n',
        WRITE + 'args.label = { pattern = ".*" }\n',
        ['tools.w.args.label.pattern: changed from "[a-z]+" to ".*"'],
        [],
        orderable=False,
    ),
    "pattern added": Case(
        WRITE + "args.label = { max_length = 5 }\n",
        WRITE + 'args.label = { max_length = 5, pattern = "[a-z]+" }\n',
        [],
        ['tools.w.args.label.pattern: unset -> "[a-z]+"'],
    ),
    "hosts": Case(
        WRITE + 'args.url = { hosts = ["*.example.com"] }\n',
        WRITE + 'args.url = { hosts = ["*.api.example.com", "example.com", "evil.test"] }\n',
        [
            'tools.w.args.url.hosts: added "example.com"',
            'tools.w.args.url.hosts: added "evil.test"',
        ],
        ['tools.w.args.url.hosts: removed "*.example.com"'],
    ),
    # An unlisted tool under default "allow" is class "write" without limits, so dropping
    # a listed one lifts its constraints.
    "listed tool dropped under default allow": Case(
        '[policy]\ndefault = "allow"\n'
        + '[tools.w]\nclass = "read"\nconcurrency = 2\nargs.path = { within = ["/p"] }\n',
        '[policy]\ndefault = "allow"\n',
        [
            'tools.w.class: "read" -> "write"',
            "tools.w.concurrency: 2 -> unlimited",
            "tools.w.args.path: constraint removed",
        ],
        [],
    ),
    "tool listed as it was implied": Case(
        '[policy]\ndefault = "allow"\n',
        '[policy]\ndefault = "allow"\n[tools.w]\nclass = "write"\n',
        [],
        [],
    ),
    "default allow and the listed tool dropped": Case(
        '[tools.r]\nclass = "read"\n',
        '[policy]\ndefault = "allow"\n',
        ['policy.default: "deny" -> "allow"', 'tools.r.class: "read" -> "write"'],
        [],
    ),
    # --- [audit]
    "audit path moved": Case(
        "",
        '[audit]\npath = "/tmp/x.jsonl"\n',
        ['audit.path: changed from "/state/audit.jsonl" to "/tmp/x.jsonl"'],
        [],
        orderable=False,
    ),
    "audit arguments are not a capability": Case(
        "",
        '[audit]\narguments = "full"\n',
        [],
        [],
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_changes(case: Case) -> None:
    old, new = load(case.old), load(case.new)
    assert widened(old, new) == case.wider
    assert narrowed(old, new) == case.narrower


@pytest.mark.parametrize(
    "case",
    [c for c in CASES.values() if c.orderable],
    ids=[k for k, c in CASES.items() if c.orderable],
)
def test_swapping_old_and_new_swaps_the_lists(case: Case) -> None:
    # Swapped, each sentence reads the other way ("added" for "removed", "b -> a" for
    # "a -> b"), about the same keys in the same order.
    old, new = load(case.old), load(case.new)
    assert keys(widened(new, old)) == keys(case.narrower)
    assert keys(narrowed(new, old)) == keys(case.wider)


def keys(items: list[str]) -> list[str]:
    return [item.split(": ", 1)[0] for item in items]


def test_unorderable_changes_widen_both_ways() -> None:
    old = load(WRITE + 'args.label = { pattern = "[a-z]+" }\n')
    new = load(WRITE + 'args.label = { pattern = ".*" }\n')
    assert widened(new, old) == ['tools.w.args.label.pattern: changed from ".*" to "[a-z]+"']
    assert narrowed(new, old) == []


def test_env_values_never_shown() -> None:
    old = load('[server]\nenv = { A = "old-secret" }\n')
    new = load('[server]\nenv = { A = "new-secret", B = "other-secret" }\n')
    for text in widened(old, new) + narrowed(old, new) + widened(new, old):
        assert "secret" not in text


FULL = """\
name = "everything"

[server]
command = ["npx", "server", "{project}"]
cwd = "{project}"
env = { LOG_LEVEL = "info" }
passthrough = ["LANG"]
secrets = { API_TOKEN = "keyring:svc/user" }

[sandbox]
network = "allowlist"
egress = ["api.github.com:443", "*.githubusercontent.com:443", "tcp:127.0.0.1:5432"]
read = ["{project}"]
write = ["{project}/build"]
memory = "1GiB"
cpu = "300s"
processes = 128
open_files = 512
file_size = "256MiB"
syscalls = "strict"
egress_connections = 32
egress_idle = "120s"
egress_bytes = "100MiB"

[policy]
timeout = "30s"
sampling = "allow"
resources = ["file:///docs/*"]
prompts = ["p*"]
descriptions = "block"

[tools.read_file]
class = "read"
timeout = "10s"
rate = "120/min"
concurrency = 4
effects = ["network:api.github.com:443"]
args.path = { within = ["{project}"] }

[tools.sleep]
class = "admin"
args.seconds = { min = 0, max = 30.5 }
args.label = { pattern = "[a-z]+", max_length = 10 }
args.url = { hosts = ["*.example.com"] }
args.mode = { one_of = ["a", "b"] }

[audit]
arguments = "full"
"""


def test_identical_profiles() -> None:
    assert widened(load(FULL), load(FULL)) == []
    assert narrowed(load(FULL), load(FULL)) == []
    assert widened(load(""), load("")) == []


def test_order_follows_the_profile() -> None:
    old = load(FULL)
    new = load(
        FULL.replace('name = "everything"', 'name = "renamed"')
        .replace('LOG_LEVEL = "info"', 'LOG_LEVEL = "debug"')
        .replace('memory = "1GiB"', 'memory = "2GiB"')
        .replace('sampling = "allow"', 'sampling = "deny"')
        .replace('class = "admin"', 'class = "read"')
        .replace('rate = "120/min"', 'rate = "1/s"')
        .replace('arguments = "full"', 'path = "/elsewhere.jsonl"')
        + '[tools.alpha]\nclass = "write"\n'
    )
    assert widened(old, new) == [
        "server.env: changed LOG_LEVEL",
        'sandbox.memory: "1GiB" -> "2GiB"',
        "tools.alpha: added (class write)",
        'audit.path: changed from "/state/audit.jsonl" to "/elsewhere.jsonl"',
    ]
    assert narrowed(old, new) == [
        'policy.sampling: "allow" -> "deny"',
        'tools.read_file.rate: "120/min" -> "1/s"',
        'tools.sleep.class: "admin" -> "read"',
    ]


# --- every field of every spec is compared or ignored for a reason --------------------------

SPECS = [Profile, ServerSpec, SandboxSpec, PolicySpec, ToolSpec, Constraint, AuditSpec]


@pytest.mark.parametrize("spec", SPECS, ids=[s.__name__ for s in SPECS])
def test_every_field_is_handled(spec: type) -> None:
    compared = set(profilediff.COMPARED[spec])
    ignored = set(profilediff.IGNORED.get(spec, {}))
    fields: tuple[str, ...] = spec._fields  # type: ignore[attr-defined]
    unhandled = [f for f in fields if f not in compared | ignored]
    assert not unhandled, (
        f"{spec.__name__} fields {unhandled} are neither compared nor ignored: add a "
        f"comparer to profilediff.COMPARED[{spec.__name__}] (or a reason to IGNORED)"
    )
    assert not compared & ignored
    assert compared | ignored <= set(fields), "stale entries in profilediff's tables"
    assert all(profilediff.IGNORED.get(spec, {}).values()), "every ignored field needs a reason"


def test_selection_fields_are_known() -> None:
    # _selection_change reads allow_all and patterns; a new field needs it taught.
    assert Selection._fields == ("allow_all", "patterns")


class _Future(NamedTuple):
    token: str


def test_an_unknown_field_still_reports_a_change_without_its_value() -> None:
    changes = list(profilediff._unknown("x.token", "token", _Future("a"), _Future("b")))
    assert changes == [profilediff.Change(True, "x.token: changed")]
    assert list(profilediff._unknown("x.token", "token", _Future("a"), _Future("a"))) == []
