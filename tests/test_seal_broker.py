"""The seal broker: new names in a sealed directory are made by mcpwrap, protected ones never.

A write grant on a project root where .mcp.json, .vscode/ ... do not exist seals the root
(Landlock: no make rights). The jail's last seccomp filter stops every creating call and
mcpwrap's broker answers (mcpwrap/sandbox/broker.py). Here: the broker's pure rules as
tables, the filter program run through a small BPF interpreter, then raw calls from inside
the real jail (tests/fixtures/seal_probe.py): every kind of creation works for an ordinary
name, none for a protected one, threads flipping the path buffer gain nothing, and
without its broker the jail creates less, never more. Each refusal has a control: the
same call succeeds once the name is not protected (the broker is given a list without
it), or, for what Landlock alone refuses, with Landlock off. The real server-filesystem
on a git repository is in tests/test_curated_servers.py. Runs as root and, in CI, as an
ordinary user.

Every test in the jail runs in both kinds ([full] and [reduced], the `jail_kind`
fixture), the reduced one had as tests/test_escape.py has it: the profile says
`jail = "any"` and user namespaces are blocked for the thread that starts it
(tests/nouserns.py). The reduced jail's seals are read-only (no mounts), so its broker
also answers removals and renames out of a seal ("removals and moves out of a seal"
below). Where the kinds differ, the test says how.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nouserns import in_blocked_thread

from mcpwrap.config.profile import load_profile
from mcpwrap.sandbox import broker, landlock, launch, sealrules, unotify
from mcpwrap.sandbox import spec as jail_spec
from mcpwrap.sandbox.sealrules import AT_FDCWD, Action, Call, End, Facts, Kind

PROBE = str(Path(__file__).parent / "fixtures" / "seal_probe.py")
FULL, REDUCED = "full", "reduced"

# --- the rules, as tables -------------------------------------------------------------------

SEALED = End(sealed=True, forbidden=False, exists=False)
OPEN_DIR = End(sealed=False, forbidden=False, exists=False)
PROTECTED = End(sealed=True, forbidden=True, exists=False)
SOURCE = End(sealed=False, forbidden=False, exists=True)
P, R, X = Action.PERFORM, Action.REFUSE, Action.PROCEED

# (what, facts, action, errno)
DECIDE = [
    ("open outside a seal", Facts(Kind.OPEN, 0, b"a", False, OPEN_DIR), X, 0),
    ("a new file", Facts(Kind.OPEN, 0, b"a", False, SEALED), P, 0),
    ("a new directory", Facts(Kind.MKDIR, 0, b"a", False, SEALED), P, 0),
    ("a protected file", Facts(Kind.OPEN, 0, b".mcp.json", False, PROTECTED), R, errno.EACCES),
    ("a protected dir", Facts(Kind.MKDIR, 0, b".vscode", False, PROTECTED), R, errno.EACCES),
    (
        "an existing file is opened, not made",
        Facts(Kind.OPEN, 0, b"a", False, End(True, False, True)),
        X,
        0,
    ),
    (
        "an existing protected name: a read-only mount",
        Facts(Kind.OPEN, 0, b".envrc", False, End(True, True, True, mountpoint=True)),
        X,
        0,
    ),
    (
        "mkdir of what exists: EEXIST",
        Facts(Kind.MKDIR, 0, b"a", False, End(True, False, True)),
        X,
        0,
    ),
    ("dot", Facts(Kind.MKDIR, 0, b".", False, End(True, False, True)), X, 0),
    ("dotdot", Facts(Kind.OPEN, 0, b"..", False, End(True, False, True)), X, 0),
    ("a file name with a slash", Facts(Kind.OPEN, 0, b"a", True, SEALED), X, 0),
    ("a directory with a slash", Facts(Kind.MKDIR, 0, b"a", True, SEALED), P, 0),
    ("rename into a seal", Facts(Kind.RENAME, 0, b"a", False, SEALED, SOURCE), P, 0),
    (
        "rename onto an existing file (the temp-file-and-rename write)",
        Facts(Kind.RENAME, 0, b"README.md", False, End(True, False, True), SOURCE),
        P,
        0,
    ),
    (
        "rename outside a seal",
        Facts(Kind.RENAME, 0, b".mcp.json", False, OPEN_DIR, SOURCE),
        X,
        0,
    ),
    (
        "rename onto a protected name",
        Facts(Kind.RENAME, 0, b".envrc", False, PROTECTED, SOURCE),
        R,
        errno.EACCES,
    ),
    (
        "rename onto an existing protected name",
        Facts(Kind.RENAME, 0, b".git", False, End(True, True, True), SOURCE),
        R,
        errno.EACCES,
    ),
    (
        "NOREPLACE is honoured, not refused",
        Facts(Kind.RENAME, sealrules.RENAME_NOREPLACE, b"a", False, SEALED, SOURCE),
        P,
        0,
    ),
    (
        "an exchange into a seal",
        Facts(Kind.RENAME, sealrules.RENAME_EXCHANGE, b"a", False, End(True, False, True), SOURCE),
        R,
        errno.EACCES,
    ),
    (
        "a whiteout",
        Facts(Kind.RENAME, sealrules.RENAME_WHITEOUT, b"a", False, SEALED, SOURCE),
        R,
        errno.EACCES,
    ),
    ("unknown rename flags", Facts(Kind.RENAME, 8, b"a", False, SEALED, SOURCE), X, 0),
    (
        "no source",
        Facts(Kind.RENAME, 0, b"a", False, SEALED, End(False, False, False)),
        X,
        0,
    ),
    (
        "a mount point as source",
        Facts(Kind.RENAME, 0, b"a", False, SEALED, End(False, False, True, mountpoint=True)),
        R,
        errno.EBUSY,
    ),
    (
        "a mount point as target",
        Facts(Kind.RENAME, 0, b"a", False, End(True, False, True, mountpoint=True), SOURCE),
        R,
        errno.EBUSY,
    ),
    (
        "a sealed directory as source",
        Facts(Kind.RENAME, 0, b"a", False, SEALED, End(True, False, True, sealed_dir=True)),
        R,
        errno.EACCES,
    ),
    (
        "a sealed directory as target",
        Facts(Kind.RENAME, 0, b"a", False, End(True, False, True, sealed_dir=True), SOURCE),
        R,
        errno.EACCES,
    ),
    (
        "a protected source",
        Facts(Kind.RENAME, 0, b"a", False, SEALED, End(True, True, True)),
        R,
        errno.EACCES,
    ),
    (
        "a source outside every write grant",
        Facts(Kind.RENAME, 0, b"a", False, SEALED, End(False, False, True, writable=False)),
        R,
        errno.EACCES,
    ),
]


@pytest.mark.parametrize(
    ("facts", "action", "err"), [r[1:] for r in DECIDE], ids=[r[0] for r in DECIDE]
)
def test_decide(facts: Facts, action: Action, err: int) -> None:
    verdict = sealrules.decide(facts)
    assert (verdict.action, verdict.errno) == (action, err), verdict.reason


def test_every_action_occurs_in_the_table() -> None:
    assert {row[2] for row in DECIDE} == set(Action)


def _args(*values: int) -> tuple[int, ...]:
    return (*values, *([0] * (6 - len(values))))


AT = AT_FDCWD & 0xFFFFFFFFFFFFFFFF  # as the kernel hands it over: a 64-bit register
PARSE = [
    (unotify.NR_OPEN, _args(10, 0o101, 0o644), Call(Kind.OPEN, "open", AT_FDCWD, 10, 0o101, 0o644)),
    (
        unotify.NR_CREAT,
        _args(10, 0o600),
        Call(Kind.OPEN, "creat", AT_FDCWD, 10, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
    ),
    (
        unotify.NR_OPENAT,
        _args(AT, 10, 0o100, 0o644),
        Call(Kind.OPEN, "openat", AT_FDCWD, 10, 0o100, 0o644),
    ),
    (unotify.NR_OPENAT, _args(5, 10, 0o100, 0), Call(Kind.OPEN, "openat", 5, 10, 0o100, 0)),
    (
        unotify.NR_OPENAT2,
        _args(5, 10, 20, 24),
        Call(Kind.OPEN, "openat2", 5, 10, how=20, how_size=24),
    ),
    (unotify.NR_MKDIR, _args(10, 0o755), Call(Kind.MKDIR, "mkdir", AT_FDCWD, 10, mode=0o755)),
    (unotify.NR_MKDIRAT, _args(7, 10, 0o700), Call(Kind.MKDIR, "mkdirat", 7, 10, mode=0o700)),
    (unotify.NR_RENAME, _args(10, 20), Call(Kind.RENAME, "rename", AT_FDCWD, 20, src_path=10)),
    (
        unotify.NR_RENAMEAT,
        _args(3, 10, 4, 20),
        Call(Kind.RENAME, "renameat", 4, 20, src_dirfd=3, src_path=10),
    ),
    (
        unotify.NR_RENAMEAT2,
        _args(3, 10, AT, 20, 1),
        Call(Kind.RENAME, "renameat2", AT_FDCWD, 20, 1, src_dirfd=3, src_path=10),
    ),
    # the high half of a 32-bit argument is not the kernel's to read: ignored here too
    (
        unotify.NR_OPEN,
        _args(10, 1 << 32 | 0o100, 0o644),
        Call(Kind.OPEN, "open", AT_FDCWD, 10, 0o100, 0o644),
    ),
    (0, _args(), None),
]


@pytest.mark.parametrize(("nr", "args", "call"), PARSE)
def test_parse(nr: int, args: tuple[int, ...], call: Call | None) -> None:
    assert sealrules.parse(nr, args) == call


SPLIT = [
    (b"a", (b"", b"a", False)),
    (b"/a", (b"/", b"a", False)),
    (b"/p/a", (b"/p", b"a", False)),
    (b"p/a/", (b"p", b"a", True)),
    (b"p//a//", (b"p/", b"a", True)),
    (b"/", None),
    (b"", None),
    (b"..", (b"", b"..", False)),
]


@pytest.mark.parametrize(("path", "parts"), SPLIT)
def test_split(path: bytes, parts: tuple[bytes, bytes, bool] | None) -> None:
    assert sealrules.split(path) == parts


PROTECT = ["/p/.mcp.json", "/p/.git/hooks", "/p/.git/config", "/p/.vscode", "/h/.ssh", "/p2/x"]
FORBIDDEN = [
    ("/p", {".mcp.json", ".git", ".vscode"}),
    ("/p/", {".mcp.json", ".git", ".vscode"}),
    ("/p/.git", {"hooks", "config"}),
    ("/p/src", set()),
    ("/", {"p", "h", "p2"}),
]


@pytest.mark.parametrize(("directory", "names"), FORBIDDEN)
def test_forbidden_names(directory: str, names: set[str]) -> None:
    assert sealrules.forbidden_names(directory, PROTECT) == names


@pytest.mark.parametrize(
    ("name", "forbidden"),
    [
        (b".mcp.json", True),
        (b".MCP.JSON", True),
        (b".VSCode", True),
        (b"mcp.json", False),
        (b"\xff", False),
    ],
)
def test_forbidden_ignores_case(name: bytes, forbidden: bool) -> None:
    assert sealrules.is_forbidden(name, sealrules.forbidden_names("/p", PROTECT)) is forbidden


CREATES = [
    (Call(Kind.OPEN, "openat", AT_FDCWD, 1, os.O_CREAT | os.O_WRONLY), True),
    (Call(Kind.OPEN, "openat", AT_FDCWD, 1, os.O_RDONLY), False),
    (Call(Kind.OPEN, "openat", AT_FDCWD, 1, os.O_CREAT | sealrules.O_PATH), False),
    (Call(Kind.OPEN, "openat", AT_FDCWD, 1, os.O_CREAT | sealrules.O_DIRECTORY), False),
    (Call(Kind.MKDIR, "mkdir", AT_FDCWD, 1), True),
    (Call(Kind.RENAME, "rename", AT_FDCWD, 1), True),
]


@pytest.mark.parametrize(("call", "creates"), CREATES)
def test_creates(call: Call, creates: bool) -> None:
    assert sealrules.creates(call) is creates


def test_seals_from_the_jails_report() -> None:
    """Rights on one inode add up; a seal is write rights without the make rights."""
    full = 0b11111111111110  # every right but execute
    sealed = full & ~landlock.MAKE
    report = [
        ("/p", 1, 10, sealed),
        ("/p", 1, 10, 0b1101),  # the project is also an execute grant (its runtime)
        ("/p/src", 1, 11, full),
        ("/usr", 2, 5, 0b1101),
        ("/p/.git", 1, 12, sealed),
    ]
    found = broker.seals(report, ["/p/.mcp.json", "/p/.git/hooks"])
    assert found.rules == {
        (1, 10): broker.Rule.SEAL,
        (1, 11): broker.Rule.WRITE,
        (2, 5): broker.Rule.OTHER,
        (1, 12): broker.Rule.SEAL,
    }
    assert found.forbidden == {(1, 10): {".mcp.json", ".git"}, (1, 12): {"hooks"}}


# --- the filter program, through a tiny classic-BPF interpreter -----------------------------


def run_bpf(program: bytes, nr: int, args: tuple[int, ...], arch: int = 0xC000003E) -> int:
    """Run the four instructions unotify.program() uses (ld abs, jeq, jge, jset, ret) on
    a struct seccomp_data; return the action."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, *args)
    insns = [struct.unpack_from("<HBBI", program, i) for i in range(0, len(program), 8)]
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x06:
            return k
        if code == 0x20:
            acc = struct.unpack_from("<I", data, k)[0]
            pc += 1
            continue
        taken = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
        pc += 1 + (jt if taken else jf)


NOTIFY, ALLOW = 0x7FC00000, 0x7FFF0000
FILTER = [
    ("open O_CREAT", unotify.NR_OPEN, _args(1, os.O_CREAT | os.O_WRONLY), NOTIFY),
    ("open to read", unotify.NR_OPEN, _args(1, os.O_RDONLY), ALLOW),
    ("openat O_CREAT", unotify.NR_OPENAT, _args(AT, 1, os.O_CREAT), NOTIFY),
    ("openat to write", unotify.NR_OPENAT, _args(AT, 1, os.O_WRONLY | os.O_TRUNC), ALLOW),
    ("openat, O_CREAT in the wrong arg", unotify.NR_OPENAT, _args(os.O_CREAT, 1, 0), ALLOW),
    ("creat", unotify.NR_CREAT, _args(1, 0o644), NOTIFY),
    ("openat2 always", unotify.NR_OPENAT2, _args(AT, 1, 2, 24), NOTIFY),
    ("mkdir", unotify.NR_MKDIR, _args(1, 0o755), NOTIFY),
    ("mkdirat", unotify.NR_MKDIRAT, _args(AT, 1, 0o755), NOTIFY),
    ("rename", unotify.NR_RENAME, _args(1, 2), NOTIFY),
    ("renameat", unotify.NR_RENAMEAT, _args(AT, 1, AT, 2), NOTIFY),
    ("renameat2", unotify.NR_RENAMEAT2, _args(AT, 1, AT, 2, 0), NOTIFY),
    ("read", 0, _args(0, 0, 0), ALLOW),
    ("link: Landlock's to refuse", 86, _args(1, 2), ALLOW),
    (
        "x32 number: the main filters kill it",
        0x40000000 | unotify.NR_OPEN,
        _args(1, os.O_CREAT),
        ALLOW,
    ),
]


@pytest.mark.parametrize(
    ("nr", "args", "action"), [r[1:] for r in FILTER], ids=[r[0] for r in FILTER]
)
def test_the_filter_stops_creating_calls_only(nr: int, args: tuple[int, ...], action: int) -> None:
    assert run_bpf(unotify.program(), nr, args) == action


def test_the_filter_lets_other_architectures_through_to_the_main_filters() -> None:
    assert run_bpf(unotify.program(), unotify.NR_MKDIR, _args(1, 0), arch=0x40000003) == ALLOW


# --- in the jail ---------------------------------------------------------------------------


@dataclass
class Project:
    root: Path
    profile: Path
    tmp: Path
    kind: str = FULL

    @property
    def reduced(self) -> bool:
        return self.kind == REDUCED


@pytest.fixture(params=[FULL, REDUCED])
def jail_kind(request: pytest.FixtureRequest) -> str:
    """Which jail the project's tests run in (not `kind`: that names the call tried)."""
    return str(request.param)


@pytest.fixture
def project(var_tmp_path: Path, jail_kind: str) -> Project:
    """A project whose root is sealed: write granted on it, no protected path there.
    Under /var/tmp: the jail's private /tmp would pass its rights down to it. REDUCED:
    the profile accepts the reduced jail (jail = "any") and start() runs it where user
    namespaces are blocked, as tests/test_escape.py does."""
    root = var_tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "out").mkdir()
    (root / "README.md").write_text("original\n")
    profile = root / "p.toml"
    profile.write_text(
        'version = 1\n[sandbox]\nread = ["{project}"]\nwrite = ["{project}"]\n'
        + ('jail = "any"\n' if jail_kind == REDUCED else "")
        + f'[audit]\npath = "{var_tmp_path}/audit.jsonl"\n'
    )
    return Project(root, profile, var_tmp_path, jail_kind)


def jail(
    p: Project, *args: str, drop: tuple[str, ...] = (), landlock_on: bool = True
) -> dict[str, Any]:
    """The spec mcpwrap would give the probe; `drop` leaves protected paths out of the list
    the broker gets (not the seal), landlock_on=False drops the kind's Landlock rules (and
    with them the broker's map of rules: it then lets every call through)."""
    loaded = load_profile(str(p.profile), state_dir=str(p.tmp / "state"))
    argv = [sys.executable, PROBE, *args]
    spec = jail_spec.build(
        loaded, argv, {"PATH": os.environ["PATH"]}, str(p.root), state_dir=str(p.tmp / "state")
    )
    sealed = spec["reduced"]["sealed"] if p.reduced else spec["sealed"]
    assert str(p.root) in sealed, "the project root must be sealed for these tests"
    gone = [str(p.root / d) for d in drop]
    spec["protect"] = [
        x for x in spec["protect"] if not any(x == g or x.startswith(f"{g}/") for g in gone)
    ]
    if not landlock_on:
        if p.reduced:
            spec["reduced"]["landlock"] = None
        else:
            spec["landlock"] = None
    return spec


def start(spec: dict[str, Any]) -> launch.Jailed:
    """Start the jail and check its kind: jail = "any" (the reduced project) starts where
    user namespaces are blocked (tests/nouserns.py), so it must be the reduced one."""
    if spec["jail"] == "any":
        child = in_blocked_thread(launch.start_jailed, spec)
    else:
        child = launch.start_jailed(spec)
    child.wait_ready()
    assert child.kind == (FULL if spec["jail"] == FULL else REDUCED), child.note
    return child


def run(spec: dict[str, Any], stdin: bytes = b"") -> dict[str, Any]:
    child = start(spec)
    out, err = child.process.communicate(stdin, timeout=60)
    lines = out.decode().strip().splitlines()
    assert lines, err.decode()
    result: dict[str, Any] = json.loads(lines[-1])
    result["broker"] = child.broker.counts if child.broker else None
    records: list[dict[str, Any]] = []
    if child.broker:
        child.broker.attach(records.append)
    result["records"] = records
    return result


def made(
    p: Project, kind: str, target: Path, source: Path | str = "", **options: Any
) -> dict[str, Any]:
    return run(jail(p, "make", kind, str(target), str(source), **options))


NEW_NAMES = ["open", "creat", "openat", "openat2", "mkdir", "mkdirat", "rename", "renameat2"]


@pytest.mark.parametrize("kind", NEW_NAMES)
def test_a_new_name_is_made_in_a_sealed_directory(project: Project, kind: str) -> None:
    """Each creating call of an ordinary name at the sealed root works, made by mcpwrap."""
    source = project.root / "out" / "moved.txt"
    source.write_text("moved\n")
    target = project.root / f"new-{kind}"
    result = made(project, kind, target, source)
    assert result["escaped"] is True, result
    assert result["broker"]["perform"] == 1, result
    assert target.exists()
    if kind.startswith("rename"):
        assert target.read_text() == "moved\n" and not source.exists()
    elif not kind.startswith("mkdir"):
        st = target.stat()
        assert (st.st_uid, st.st_mode & 0o7777) == (os.getuid(), 0o644), "the jail's umask"


def test_the_broker_works_under_the_strict_allow_list(project: Project) -> None:
    """syscalls = "strict" stacks an allow-list under the deny-list: the notifying filter
    still installs, hands over its listener, and stops the same calls."""
    text = project.profile.read_text().replace("[sandbox]\n", '[sandbox]\nsyscalls = "strict"\n')
    project.profile.write_text(text)
    assert jail(project, "make")["seccomp"] == "strict"
    assert made(project, "open", project.root / "new.txt")["escaped"] is True
    refused = made(project, "mkdir", project.root / ".vscode")
    assert (refused["escaped"], refused["detail"]) == (False, "EACCES"), refused
    assert made(project, "mkdir", project.root / ".vscode", drop=(".vscode",))["escaped"] is True


def test_a_write_through_a_temporary_file_replaces_a_root_file(project: Project) -> None:
    """What server-filesystem does: write README.md.<random>.tmp beside it, rename it over."""
    tmp = project.root / "README.md.1234.tmp"
    assert made(project, "open", tmp)["escaped"] is True
    assert made(project, "rename", project.root / "README.md", tmp)["escaped"] is True
    assert (project.root / "README.md").read_text() == "made\n"
    assert not tmp.exists()


def test_a_new_directory_at_the_root_takes_new_names_too(project: Project) -> None:
    """A directory made in a sealed one inherits the seal (Landlock rights come from the
    ancestors): the broker makes names there too, with no name protected."""
    docs = project.root / "docs"
    result = run(jail(project, "each", "mkdir", str(docs), "open", str(docs / ".mcp.json")))
    assert result["escaped"] is True and result["broker"]["perform"] == 2, result
    assert (docs / ".mcp.json").read_text() == "made\n"


def test_a_relative_path_that_climbs_is_resolved_in_the_jail(project: Project) -> None:
    """From the probe's cwd (the project), `src/../../project/x` climbs above it: resolved
    again from the jail's root along the cwd's own path."""
    result = made(project, "open", Path(f"src/../../{project.root.name}/climbed"))
    assert result["escaped"] is True, result
    assert (project.root / "climbed").exists()


def test_a_caller_without_a_free_fd_gets_emfile_and_no_file(project: Project) -> None:
    """The broker made the file but cannot install its fd in the caller: it takes the file
    back and answers EMFILE, rather than leave the caller stopped. Control: "open" above."""
    target = project.root / "new.txt"
    result = made(project, "open_without_a_free_fd", target)
    assert (result["escaped"], result["detail"]) == (False, "EMFILE"), result
    assert not target.exists()


def test_outside_a_seal_the_broker_lets_the_kernel_decide(project: Project) -> None:
    result = made(project, "open", project.root / "src" / "new.txt")
    assert result["escaped"] is True and result["broker"] == {"proceed": 1}, result


PROTECTED_NAMES = [
    ".mcp.json",
    ".envrc",
    ".mcpwrap",
    ".vscode",
    ".cursor",
    ".claude",
    ".git",
    "p.lock",
]
BROKERED = ["open", "creat", "openat", "openat2", "mkdir", "mkdirat", "rename", "renameat2"]
LANDLOCK_ONLY = ["link", "symlink", "mknod", "mkfifo"]


def test_the_names_tested_are_every_protected_path_of_the_project(project: Project) -> None:
    spec = jail(project, "make")
    inside = {
        x[len(str(project.root)) + 1 :].split("/")[0]
        for x in spec["protect"]
        if x.startswith(f"{project.root}/")
    }
    assert inside == {*PROTECTED_NAMES, "p.toml"}  # the profile exists: a read-only mount


@pytest.mark.parametrize("name", PROTECTED_NAMES)
@pytest.mark.parametrize("kind", BROKERED)
def test_a_protected_name_is_never_made(project: Project, name: str, kind: str) -> None:
    """Refused by the broker (and recorded); the control gives the broker a list without
    that name: the very same call then makes it, so the refusal is the name's."""
    source = project.root / "out" / "source"
    source.write_text("planted\n")
    target = project.root / name
    result = made(project, kind, target, source)
    assert result["escaped"] is False and result["detail"] == "EACCES", result
    assert result["broker"]["refuse"] == 1, result
    assert not target.exists() and source.exists()
    control = made(project, kind, target, source, drop=(name,))
    assert control["escaped"] is True, control
    assert target.exists()


@pytest.mark.parametrize("name", PROTECTED_NAMES)
@pytest.mark.parametrize("kind", LANDLOCK_ONLY)
def test_links_and_nodes_never_bring_a_protected_name_into_existence(
    project: Project, name: str, kind: str
) -> None:
    """Hard links, symlinks and fifo or device nodes are not brokered: Landlock's seal
    refuses them. The control runs without Landlock, and the very same call works."""
    target, source = project.root / name, project.root / "README.md"
    result = made(project, kind, target, source)
    assert (result["escaped"], result["detail"]) == (False, "EACCES"), result
    assert not os.path.lexists(target)
    assert made(project, kind, target, source, landlock_on=False)["escaped"] is True
    assert os.path.lexists(target)


@pytest.mark.parametrize("kind", LANDLOCK_ONLY)
def test_links_and_nodes_of_ordinary_names_are_refused_in_a_sealed_directory_too(
    project: Project, kind: str
) -> None:
    """The price of leaving them to Landlock: no link, symlink or node at a sealed root;
    in a subdirectory they work. Reduced: the root is read-only, so a hard link of its
    README.md into src/ is refused too (the file would gain write rights there: Landlock
    refuses with EXDEV); a file of src/ links there."""
    source = project.root / "README.md"
    assert made(project, kind, project.root / "ordinary", source)["escaped"] is False
    result = made(project, kind, project.root / "src" / "ordinary", source)
    if project.reduced and kind == "link":
        assert (result["escaped"], result["detail"]) == (False, "EXDEV"), result
        source = project.root / "src" / "file"
        source.write_text("in src\n")
        result = made(project, kind, project.root / "src" / "ordinary", source)
    assert result["escaped"] is True, result


def test_a_sealed_directory_below_the_root_keeps_its_place(project: Project) -> None:
    """.git without hooks/: .git is sealed too. Nothing protected appears in it, it cannot
    be moved aside (to plant a fresh one), nor swapped (RENAME_EXCHANGE) for a directory
    holding hooks; other new names in it are made."""
    git = project.root / ".git"
    (git / "objects").mkdir(parents=True)
    fake = project.root / "out" / "fake"
    (fake / "hooks").mkdir(parents=True)
    assert made(project, "mkdir", git / "hooks")["escaped"] is False
    assert made(project, "open", git / "config")["escaped"] is False
    assert made(project, "rename", project.root / "moved-git", git)["escaped"] is False
    assert made(project, "exchange", git, fake)["escaped"] is False
    assert sorted(p.name for p in git.iterdir()) == ["objects"]
    assert made(project, "open", git / "description")["escaped"] is True
    assert made(project, "exchange", git, fake, landlock_on=False)["escaped"] is True
    assert (git / "hooks").is_dir(), "the control: without the seal the swap plants hooks/"


def test_a_mount_point_is_never_moved_by_the_broker(project: Project) -> None:
    """Full: the profile is bound read-only onto itself: renaming it (or onto it) into the
    sealed root is refused with EBUSY, as the kernel would in the jail's own namespace.
    Reduced: no mounts; the profile is a protected name in the sealed root, so moving it
    is refused with EACCES (as renaming onto it is in both)."""
    src = project.root / "src" / "x"
    src.write_text("x\n")
    result = made(project, "rename", project.root / "p.toml", src)
    assert (result["escaped"], result["detail"]) == (False, "EACCES"), "protected: p.toml"
    result = made(project, "rename", project.root / "profile-moved", project.profile)
    refusal = "EACCES" if project.reduced else "EBUSY"
    assert (result["escaped"], result["detail"]) == (False, refusal), result
    assert project.profile.exists() and not (project.root / "profile-moved").exists()


# --- removals and moves out of a seal ----------------------------------------------------------
# The reduced jail's seals are read-only to Landlock (no mount keeps a protected path in
# place), so its broker answers unlink, unlinkat, rmdir and renames out of a sealed
# directory too. The full jail's seals keep the remove rights: the kernel answers these
# there, and read-only mounts keep the protected paths.

REMOVALS = ["unlink", "unlinkat", "rmdir", "rename_out"]


@pytest.mark.parametrize("kind", REMOVALS)
def test_an_ordinary_name_leaves_a_sealed_directory(project: Project, kind: str) -> None:
    """Full: the kernel removes (or moves out) the file, the broker sees nothing. Reduced:
    the broker does it. Control (reduced): with the broker's listener closed, the same call
    fails (ENOSYS) and the file stays, so the broker is what made it work."""
    target = project.root / ("gone" if kind == "rmdir" else "gone.txt")
    if kind == "rmdir":
        target.mkdir()
    else:
        target.write_text("bye\n")
    moved = project.root / "src" / "gone.txt"
    args = ("rename", str(moved), str(target)) if kind == "rename_out" else (kind, str(target))
    result = run(jail(project, "make", *args))
    assert result["escaped"] is True, result
    assert not target.exists() and moved.exists() is (kind == "rename_out")
    # full: the broker is asked about renames only, and lets this one through
    seen = {"proceed": 1} if kind == "rename_out" else {}
    assert result["broker"] == ({"perform": 1} if project.reduced else seen), result
    if project.reduced:
        if kind == "rmdir":
            target.mkdir()
        else:
            target.write_text("bye\n")
        if kind == "rename_out":
            moved.unlink()
        child = start(jail(project, "after_line", "make", *args))
        assert child.broker is not None
        child.broker.close()
        out, _ = child.process.communicate(b"go\n", timeout=60)
        assert json.loads(out) == {"escaped": False, "detail": "ENOSYS"}
        assert target.exists() and not moved.exists()


def _existing_protected(p: Project) -> None:
    """.mcp.json, .git/config, .git/hooks/pre-commit and an empty .vscode/ exist; .envrc
    and others do not, so the root stays sealed in both kinds."""
    (p.root / ".git" / "hooks").mkdir(parents=True)
    (p.root / ".git" / "config").write_text("[core]\n")
    (p.root / ".git" / "hooks" / "pre-commit").write_text("#!/bin/sh\n")
    (p.root / ".mcp.json").write_text("{}\n")
    (p.root / ".vscode").mkdir()


# (what is removed, how, the full jail's refusal: its read-only mounts, the protected path)
PROTECTED_REMOVALS = [
    (".mcp.json", "unlink", "EBUSY", ".mcp.json"),
    (".mcp.json", "unlinkat", "EBUSY", ".mcp.json"),
    (".git/config", "unlink", "EBUSY", ".git/config"),
    (".git/hooks/pre-commit", "unlink", "EROFS", ".git/hooks"),  # reduced: by its inode
    (".vscode", "rmdir", "EBUSY", ".vscode"),
]


@pytest.mark.parametrize(("name", "kind", "full_errno", "listed"), PROTECTED_REMOVALS)
def test_a_protected_path_is_never_removed(
    project: Project, name: str, kind: str, full_errno: str, listed: str
) -> None:
    """Full: each is (or is in) a read-only mount, the kernel refuses. Reduced: the broker
    refuses (EACCES) and records it; control: given a list without that path (the seal
    stays), the broker makes the very same removal, so the refusal is the path's."""
    _existing_protected(project)
    target = project.root / name
    result = run(jail(project, "make", kind, str(target)))
    refusal = "EACCES" if project.reduced else full_errno
    assert (result["escaped"], result["detail"]) == (False, refusal), result
    assert target.exists()
    if not project.reduced:
        assert "refuse" not in result["broker"], "the kernel's refusal, not the broker's"
        return
    assert result["broker"] == {"refuse": 1}, result
    passed = target.name if kind == "unlinkat" else str(target)  # the path as the call has it
    assert [(r["decision"], r["call"], r["path"]) for r in result["records"]] == [
        ("refuse", kind, passed)
    ]
    control = run(jail(project, "make", kind, str(target), drop=(listed,)))
    assert control["escaped"] is True and control["broker"] == {"perform": 1}, control
    assert not target.exists()


def test_a_protected_directory_is_not_moved_aside(project: Project) -> None:
    """`mv .git git-moved` (then a fresh .git/hooks would be planted). Full: .git is pinned
    (bound onto itself): EBUSY; without the pins the broker refuses to move a protected
    name out (EACCES); control: without the pins and Landlock (so no broker map) it moves.
    Reduced: .git is sealed, the broker refuses (EACCES) and records it; control: without
    the seal (Landlock's and the broker's) it moves."""
    _existing_protected(project)
    git, moved = project.root / ".git", project.root / "git-moved"
    result = run(jail(project, "make", "rename", str(moved), str(git)))
    refusal = "EACCES" if project.reduced else "EBUSY"
    assert (result["escaped"], result["detail"]) == (False, refusal), result
    assert (git / "config").exists() and not moved.exists()
    if project.reduced:
        assert result["broker"] == {"refuse": 1}, result
        assert [r["source"] for r in result["records"]] == [str(git)]
        spec = jail(project, "make", "rename", str(moved), str(git), landlock_on=False)
        spec["reduced"]["sealed"] = {}
    else:
        spec = jail(project, "make", "rename", str(moved), str(git))
        spec["pins"] = []
        unpinned = run(spec)
        assert (unpinned["escaped"], unpinned["detail"]) == (False, "EACCES"), unpinned
        assert unpinned["broker"] == {"refuse": 1}, unpinned
        spec = jail(project, "make", "rename", str(moved), str(git), landlock_on=False)
        spec["pins"] = []
    control = run(spec)
    assert control["escaped"] is True, control
    assert (moved / "config").exists() and not git.exists()


# --- racing threads --------------------------------------------------------------------------


def _same_length(directory: Path, name: str, like: str) -> str:
    return str(directory / name.ljust(len(like), "x"))


@pytest.mark.parametrize("kind", ["open", "mkdir", "rename"])
def test_threads_flipping_the_path_never_make_a_protected_name(project: Project, kind: str) -> None:
    """One thread flips the path between an ordinary name and .mcp.json while another
    creates: the broker acts on its own copy, and what the kernel runs itself is still
    under Landlock's seal. Control: with .mcp.json not protected, the race does make it."""
    target = str(project.root / ".mcp.json")
    harmless = _same_length(project.root, "a", ".mcp.json")
    args = ("race", kind, harmless, target, "300", str(project.root / "out"))
    result = run(jail(project, *args))
    counts = json.loads(result["detail"])
    assert result["escaped"] is False, result
    assert not os.path.lexists(target)
    assert os.path.lexists(harmless) and counts["made"] > 0, result
    assert counts["errors"].get("EACCES", 0) > 0, f"the race must hit the protected name: {result}"
    control = run(jail(project, *args, drop=(".mcp.json",)))
    assert control["escaped"] is True, control


def test_a_call_let_through_cannot_be_turned_into_a_creation_in_the_seal(project: Project) -> None:
    """The flip is between a path outside the seal (the broker lets the kernel run it) and
    .mcp.json at the root: the kernel reads the path again, and Landlock refuses. Control:
    without Landlock the same race makes .mcp.json."""
    target = f"{project.root}/./.mcp.json"
    harmless = f"{project.root}/out/" + "b".ljust(len("./.mcp.json") - len("out/"), "x")
    assert len(harmless) == len(target)
    args = ("race", "open", harmless, target, "300")
    result = run(jail(project, *args))
    assert result["escaped"] is False and not (project.root / ".mcp.json").exists(), result
    refused = json.loads(result["detail"])["errors"].get("EACCES", 0)
    assert refused > result["broker"]["refuse"], (
        f"Landlock must have refused swapped calls: {result}"
    )
    assert run(jail(project, *args, landlock_on=False))["escaped"] is True


# --- without its broker -----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["new.txt", "src/new.txt"])
def test_without_its_broker_the_jail_creates_nothing(project: Project, where: str) -> None:
    """The listener closed (mcpwrap's thread gone): every stopped call fails with ENOSYS,
    in the seal and outside it alike. Control: the same probe with the broker serving."""
    target = project.root / where
    spec = jail(project, "after_line", "make", "open", str(target))
    child = start(spec)
    assert child.broker is not None
    child.broker.close()
    out, _ = child.process.communicate(b"go\n", timeout=60)
    assert json.loads(out) == {"escaped": False, "detail": "ENOSYS"}
    assert not target.exists()
    control = run(jail(project, "after_line", "make", "open", str(target)), stdin=b"go\n")
    assert control["escaped"] is True


def test_an_error_in_the_broker_refuses_the_call(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug while answering must not let the call through: EACCES, and a record. (The
    bug is injected: the broker runs in this test's process.) The control is the same call
    with the broker intact."""
    target = project.root / "new.txt"

    def broken(*_: object) -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(broker.Broker, "_gather", broken)
    result = made(project, "open", target)
    assert (result["escaped"], result["detail"], result["broker"]) == (
        False,
        "EACCES",
        {"error": 1},
    )
    assert not target.exists()
    monkeypatch.undo()
    assert made(project, "open", target)["escaped"] is True


def test_refusals_are_recorded(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    """mcpwrap run hands the broker's records to the audit log (event "seal"); attach()
    replays those made before it was called. Each is a line on stderr too."""
    spec = jail(project, "make", "mkdir", str(project.root / ".vscode"))
    child = start(spec)
    child.process.communicate(timeout=60)
    assert child.broker is not None
    records: list[dict[str, Any]] = []
    child.broker.attach(records.append)
    assert records == [
        {
            "decision": "refuse",
            "rule": "sandbox.seal",
            "call": "mkdir",
            "path": str(project.root / ".vscode"),
            "reason": ".vscode is protected: no server may create it there",
        }
    ]
    assert f"mcpwrap: refused mkdir '{project.root}/.vscode': .vscode is protected" in (
        capsys.readouterr().err
    )


def test_the_listener_stays_in_mcpwrap(project: Project) -> None:
    """Close-on-exec in mcpwrap: a program mcpwrap starts later must not be able to answer
    the jail's calls."""
    child = start(jail(project, "make", "open", str(project.root / "x")))
    assert child.broker is not None
    assert not os.get_inheritable(child.broker._listener.fd)
    child.process.communicate(timeout=60)


def test_no_broker_without_a_seal(project: Project) -> None:
    """Full: with every protected path there (each a read-only mount), nothing is sealed,
    nothing stopped: no filter, no thread, no cost. Reduced: no mounts, so the project
    stays sealed read-only to keep them so, and the broker makes the new file."""
    for sub in (".mcpwrap", ".vscode", ".cursor", ".claude", ".git/hooks"):
        (project.root / sub).mkdir(parents=True)
    for name in (".mcp.json", ".envrc", ".git/config", "p.lock"):
        (project.root / name).touch()
    loaded = load_profile(str(project.profile), state_dir=str(project.tmp / "state"))
    argv = [sys.executable, PROBE, "make", "open", str(project.root / "new")]
    spec = jail_spec.build(
        loaded,
        argv,
        {"PATH": os.environ["PATH"]},
        str(project.root),
        state_dir=str(project.tmp / "state"),
    )
    assert not spec["sealed"]
    assert bool(spec["reduced"] and spec["reduced"]["sealed"]) is project.reduced
    child = start(spec)
    out, _ = child.process.communicate(timeout=60)
    assert json.loads(out)["escaped"] is True
    if project.reduced:
        assert child.broker is not None and child.broker.counts == {"perform": 1}
    else:
        assert child.broker is None
