"""The curated profiles of four real servers, each started by `mcpwrap run --profile NAME`
(found by name among the built-in profiles) in a project directory the test made:

- @modelcontextprotocol/server-filesystem (npm, tests/node), profile server-filesystem;
- mcp-server-git, mcp-server-sqlite, mcp-server-fetch (PyPI, each in its own venv that
  scripts/test builds), profiles of the same names.

For each: tools/list is exactly the allowed set; the allowed tools work against the real
server; a hidden tool is refused; an argument outside its constraint is refused before
the server sees it (the audit record says which rule, and what it would have changed is
unchanged). For filesystem and git, a copy of the profile whose argument constraints are
too wide, run against a server told to allow more than the project, still cannot reach a
canary outside the project: the jail does not hold it. Fetch talks only to loopback and
to the test host of tests/nethosts.py (a network namespace at documentation-range
addresses); names reach it through MCPWRAP_TEST_HOSTS.

server-filesystem at the root of a git repository (a sealed root, mcpwrap's seal broker
making the server's new names) runs in both jail kinds: the reduced one (no namespaces)
as tests/test_escape.py has it, user namespaces blocked by tests/nouserns.py.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nethosts
import pytest
from egress_harness import hello_server
from nethosts import NetHost
from wrapped import MCPWRAP, REPO, Wrapped, audit_records, py_peer

FS_TOOLS = [
    "create_directory",
    "directory_tree",
    "edit_file",
    "get_file_info",
    "list_allowed_directories",
    "list_directory",
    "list_directory_with_sizes",
    "move_file",
    "read_media_file",
    "read_multiple_files",
    "read_text_file",
    "search_files",
    "write_file",
]
GIT_TOOLS = [
    "git_add",
    "git_branch",
    "git_checkout",
    "git_commit",
    "git_create_branch",
    "git_diff",
    "git_diff_staged",
    "git_diff_unstaged",
    "git_log",
    "git_show",
    "git_status",
]
SQLITE_TOOLS = ["create_table", "describe_table", "list_tables", "read_query", "write_query"]
CANARY = "canary: this must never reach the server\n"
NOUSERNS = [sys.executable, str(REPO / "tests" / "nouserns.py")]


# --- helpers --------------------------------------------------------------------------


def listed(w: Wrapped) -> list[str]:
    return sorted(t["name"] for t in w.recv_id(w.request("tools/list"))["result"]["tools"])


def text(reply: dict[str, Any]) -> str:
    assert "result" in reply, reply
    return "\n".join(str(c.get("text", "")) for c in reply["result"]["content"])


def ok(reply: dict[str, Any]) -> str:
    """The text of a successful tool result."""
    assert "result" in reply and not reply["result"].get("isError"), reply
    return text(reply)


def audit() -> list[dict[str, Any]]:
    """The audit log of a built-in profile: {state}/audit.jsonl, in the per-test XDG
    state dir that conftest's autouse fixture sets."""
    return audit_records(Path(os.environ["XDG_STATE_HOME"]) / "mcpwrap" / "audit.jsonl")


def record_of(reply: dict[str, Any]) -> dict[str, Any]:
    """The audit record of the call answered by `reply` (written before the reply)."""
    found = [r for r in audit() if r.get("event") == "call" and r.get("request_id") == reply["id"]]
    assert found, reply
    return found[-1]


def refused(w: Wrapped, tool: str, arguments: dict[str, Any], rule: str) -> None:
    """The call is answered by mcpwrap, naming the rule; the server never got it."""
    reply = w.call(tool, arguments)
    assert f"(rule: {rule})" in text(reply), reply
    record = record_of(reply)
    assert (record["decision"], record["rule"], record["outcome"]) == ("refuse", rule, "refused")


def reached_server(reply: dict[str, Any]) -> None:
    record = record_of(reply)
    assert record["decision"] == "allow" and record["outcome"] in ("ok", "isError"), record


def hidden(w: Wrapped, tool: str, arguments: dict[str, Any] | None = None) -> None:
    reply = w.call(tool, arguments)
    assert "Unknown tool" in reply["error"]["message"], reply
    assert record_of(reply)["decision"] == "refuse"


def widened(name: str, where: Path, replace: dict[str, str]) -> Path:
    """A copy of the curated profile NAME with some text replaced (each must occur):
    how a test makes the policy wrong on purpose, to show the jail holds on its own."""
    body = (REPO / "profiles" / f"{name}.toml").read_text()
    for old, new in replace.items():
        assert old in body, old
        body = body.replace(old, new)
    path = where / f"{name}-widened.toml"
    path.write_text(body)
    return path


def lift_seal(project: Path) -> None:
    """Create the paths no server may create, as the profiles' comments tell users to.
    With them all there the jail keeps them read-only and need not seal the project root
    (a sealed root works too: see the git repository tests below)."""
    for directory in (".mcpwrap", ".vscode", ".cursor", ".claude", ".git/hooks"):
        (project / directory).mkdir(parents=True, exist_ok=True)
    for file in (".mcp.json", ".envrc", ".git/config"):
        (project / file).touch()


@pytest.fixture
def layout(var_tmp_path: Path) -> tuple[Path, Path]:
    """(project, canary file in a sibling directory). Under /var/tmp (conftest's
    var_tmp_path), not pytest's /tmp: filesystem and git grant write on the project root,
    and outside the jail's private /tmp, Landlock too keeps the protected paths read-only."""
    project, outside = var_tmp_path / "project", var_tmp_path / "outside"
    project.mkdir()
    outside.mkdir()
    (outside / "canary.txt").write_text(CANARY)
    return project, outside / "canary.txt"


# --- server-filesystem -------------------------------------------------------------------


@pytest.fixture(scope="module")
def fs_script() -> str:
    script = (REPO / "tests" / "node" / "node_modules" / ".bin" / "mcp-server-filesystem").resolve()
    if not script.is_file():
        pytest.fail(f"{script} is missing: npm ci --prefix tests/node", pytrace=False)
    return str(script)


def test_filesystem_tools_work_inside_the_project(
    layout: tuple[Path, Path], node_exe: str, fs_script: str
) -> None:
    project, _ = layout
    lift_seal(project)
    (project / "notes.txt").write_text("first line\nsecond line\n")
    (project / "src").mkdir()
    with Wrapped(Path("server-filesystem"), [node_exe, fs_script, "."], cwd=project) as w:
        w.initialize()
        assert listed(w) == FS_TOOLS
        assert ok(w.call("read_text_file", {"path": "notes.txt"})) == "first line\nsecond line\n"
        assert "[FILE] notes.txt" in ok(w.call("list_directory", {"path": str(project)}))
        ok(w.call("write_file", {"path": "src/new.txt", "content": "written in the jail"}))
        edit = {"path": "notes.txt", "edits": [{"oldText": "second", "newText": "2nd"}]}
        ok(w.call("edit_file", edit))
        ok(w.call("create_directory", {"path": "src/sub"}))
        ok(w.call("move_file", {"source": "src/new.txt", "destination": "src/sub/new.txt"}))
        hidden(w, "read_file", {"path": "notes.txt"})  # the deprecated alias
        # Inside the project, so the policy lets them through; the jail keeps them read-only.
        for protected in (".mcp.json", ".git/hooks/pre-commit", ".vscode/settings.json"):
            planted = w.call("write_file", {"path": protected, "content": "#!/bin/sh\n"})
            reached_server(planted)
            assert planted["result"].get("isError"), planted
    assert (project / "src" / "sub" / "new.txt").read_text() == "written in the jail"
    assert (project / "notes.txt").read_text() == "first line\n2nd line\n"
    assert (project / ".mcp.json").read_text() == ""
    assert not (project / ".git" / "hooks" / "pre-commit").exists()
    assert not (project / ".vscode" / "settings.json").exists()


def test_filesystem_paths_outside_the_project_are_refused_before_the_server(
    layout: tuple[Path, Path], node_exe: str, fs_script: str
) -> None:
    """The server is told to allow the whole parent directory, so its own check would
    pass: each refusal here is mcpwrap's, recorded as such, and the canary is unchanged."""
    project, canary = layout
    (project / "link.txt").symlink_to(canary)  # inside by name, outside in fact
    parent = str(project.parent)
    with Wrapped(Path("server-filesystem"), [node_exe, fs_script, parent], cwd=project) as w:
        w.initialize()
        rule = "tools.read_text_file.args.path"
        for path in (str(canary), "../outside/canary.txt", "link.txt", f"file://{canary}"):
            refused(w, "read_text_file", {"path": path}, rule)
        paths = ["notes.txt", str(canary)]
        refused(w, "read_multiple_files", {"paths": paths}, "tools.read_multiple_files.args.paths")
        write = {"path": str(canary), "content": "overwritten"}
        refused(w, "write_file", write, "tools.write_file.args.path")
        move = {"source": str(canary), "destination": "stolen.txt"}
        refused(w, "move_file", move, "tools.move_file.args.source")
    assert canary.read_text() == CANARY
    assert not (project / "stolen.txt").exists()


def test_filesystem_jail_holds_when_the_profile_allows_too_much(
    layout: tuple[Path, Path], node_exe: str, fs_script: str
) -> None:
    """A copy of the profile whose `within` covers the parent directory, and a server
    allowed the parent too: the calls reach the server, which still finds no canary
    (the jail binds the project only) and can create nothing beside it."""
    project, canary = layout
    parent = project.parent
    (project / "notes.txt").write_text("inside\n")
    profile = widened(
        "server-filesystem",
        parent,
        {'within = ["{project}"]': f'within = ["{parent}"]', '"{project}"]': f'"{project}"]'},
    )
    with Wrapped(profile, [node_exe, fs_script, str(parent)], cwd=project) as w:
        w.initialize()
        assert ok(w.call("read_text_file", {"path": str(project / "notes.txt")})) == "inside\n"
        read = w.call("read_text_file", {"path": str(canary)})
        reached_server(read)
        assert read["result"].get("isError") and CANARY.strip() not in text(read), read
        planted = parent / "outside" / "planted.txt"
        write = w.call("write_file", {"path": str(planted), "content": "x"})
        reached_server(write)
        assert write["result"].get("isError"), write
    assert not planted.exists()
    assert canary.read_text() == CANARY


@pytest.fixture(params=["full", "reduced"])
def fs_jail(request: pytest.FixtureRequest, layout: tuple[Path, Path]) -> dict[str, Any]:
    """How server-filesystem is started at a repository root, in each jail kind: "full" is
    the curated profile; "reduced" a copy of it that accepts the reduced jail
    (jail = "any"), run by mcpwrap with user namespaces blocked (tests/nouserns.py), as
    tests/test_escape.py has it."""
    if request.param == "full":
        return {"profile": Path("server-filesystem"), "kind": "full"}
    where = layout[0].parent
    profile = widened("server-filesystem", where, {'jail = "full"': 'jail = "any"'})
    return {"profile": profile, "mcpwrap": [*NOUSERNS, *MCPWRAP], "kind": "reduced"}


def fs_wrapped(fs_jail: dict[str, Any], server: list[str], project: Path) -> Wrapped:
    """--project: the reduced copy lives beside the project, not in it (where it would be
    a protected path of its own), so {project} is named rather than found."""
    extra = ["--project", str(project)]
    return Wrapped(
        fs_jail["profile"], server, extra=extra, cwd=project, mcpwrap=fs_jail.get("mcpwrap")
    )


def jail_kind_of_the_session() -> str:
    sessions = [r for r in audit() if r.get("event") == "session" and "jail" in r]
    assert sessions, audit()
    return str(sessions[-1]["jail"])


def test_filesystem_edits_the_root_of_a_git_repository(
    layout: tuple[Path, Path], node_exe: str, fs_script: str, fs_jail: dict[str, Any]
) -> None:
    """An ordinary repository: .git exists, .mcp.json, .vscode/ and the like do not, so the
    root is sealed. The server writes a temporary file beside its target and renames it
    over; mcpwrap's broker makes those new names, so every write tool works at the root.
    The same in both jail kinds (the reduced one's broker also moves names out of the
    read-only root)."""
    project, _ = layout
    make_repo(project, "first commit")
    (project / "README").chmod(0o640)
    with fs_wrapped(fs_jail, [node_exe, fs_script, "."], project) as w:
        w.initialize()
        ok(w.call("write_file", {"path": "README", "content": "# demo\nrewritten\n"}))
        edit = {"path": "README", "edits": [{"oldText": "rewritten", "newText": "edited"}]}
        ok(w.call("edit_file", edit))
        ok(w.call("write_file", {"path": "NOTES.md", "content": "notes\n"}))
        ok(w.call("create_directory", {"path": "docs"}))
        ok(w.call("write_file", {"path": "docs/guide.md", "content": "guide\n"}))
        ok(w.call("move_file", {"source": "NOTES.md", "destination": "docs/NOTES.md"}))
        ok(w.call("move_file", {"source": "docs", "destination": "manual"}))
        ok(w.call("move_file", {"source": "manual/NOTES.md", "destination": "TODO.md"}))
        stderr = w.stderr_now()
    assert (project / "README").read_text() == "# demo\nedited\n"
    assert (project / "README").stat().st_mode & 0o777 == 0o640, "the server keeps the mode"
    assert (project / "manual" / "guide.md").read_text() == "guide\n"
    assert (project / "TODO.md").read_text() == "notes\n"
    assert sorted(p.name for p in project.iterdir()) == [".git", "README", "TODO.md", "manual"]
    if fs_jail["kind"] == "full":
        assert f"so {project} is sealed" in stderr, stderr
    else:  # no mounts: .git, on the way to .git/config and .git/hooks, is sealed too
        assert f"so {project}, {project}/.git are sealed" in stderr, stderr
    calls = [r for r in audit() if r.get("event") == "call"]
    assert [r["outcome"] for r in calls] == ["ok"] * 8, calls
    assert not [r for r in audit() if r.get("event") == "seal"]
    assert jail_kind_of_the_session() == fs_jail["kind"]


def test_filesystem_cannot_make_a_protected_name_at_the_root(
    layout: tuple[Path, Path], node_exe: str, fs_script: str, fs_jail: dict[str, Any]
) -> None:
    """The policy lets these calls through (every path is inside the project); the jail
    refuses each and the audit log says so. Control: the same calls with names that are
    not protected succeed, in the same session. The same in both jail kinds; what exists
    (.git and its config, hooks) the full jail keeps by read-only mounts, the reduced one
    by its broker, whose refusals are recorded as well."""
    project, _ = layout
    make_repo(project, "first commit")
    (project / "draft.md").write_text("draft\n")
    (project / "dir").mkdir()
    attempts: list[tuple[str, dict[str, str]]] = [
        ("move_file", {"source": "draft.md", "destination": ".mcp.json"}),
        ("write_file", {"path": ".mcp.json", "content": "{}"}),
        ("write_file", {"path": ".envrc", "content": "export X=1\n"}),
        ("write_file", {"path": ".vscode", "content": "{}"}),
        ("create_directory", {"path": ".cursor/rules"}),
        ("create_directory", {"path": ".mcpwrap"}),
        ("move_file", {"source": "dir", "destination": ".claude"}),
    ]
    existing: list[tuple[str, dict[str, str]]] = [  # read-only mounts: refused by the kernel
        ("write_file", {"path": ".git/hooks/pre-commit", "content": "#!/bin/sh\n"}),
        ("write_file", {"path": ".git/config", "content": "[core]\n"}),
        ("move_file", {"source": ".git", "destination": "git-moved"}),
    ]
    config = (project / ".git" / "config").read_text()
    with fs_wrapped(fs_jail, [node_exe, fs_script, "."], project) as w:
        w.initialize()
        for tool, arguments in attempts + existing:
            reply = w.call(tool, arguments)
            reached_server(reply)
            assert reply["result"].get("isError"), (tool, arguments, reply)
        for tool, arguments in attempts:  # the control: the same without the dot
            ok(w.call(tool, {k: v.lstrip(".") for k, v in arguments.items()}))
    names = {".mcp.json", ".envrc", ".vscode", ".cursor", ".claude", ".mcpwrap", "git-moved"}
    assert not names & {p.name for p in project.iterdir()}
    assert not (project / ".git" / "hooks" / "pre-commit").exists()
    assert (project / ".git" / "config").read_text() == config
    assert (project / "mcp.json").read_text() == "{}" and not (project / "draft.md").exists()
    assert (project / "claude").is_dir() and not (project / "dir").exists()
    for made in ("envrc", "vscode", "cursor/rules", "mcpwrap"):
        assert (project / made).exists(), made
    refusals = [r for r in audit() if r.get("event") == "seal"]
    assert {(r["decision"], r["rule"]) for r in refusals} == {("refuse", "sandbox.seal")}
    refused = {Path(r["path"]).name for r in refusals}
    assert {".mcp.json", ".envrc", ".vscode", ".cursor", ".claude", ".mcpwrap"} <= refused
    assert any(r["call"] == "rename" and r.get("source") for r in refusals), refusals
    assert jail_kind_of_the_session() == fs_jail["kind"]


# --- mcp-server-git ----------------------------------------------------------------------


def git(repo: Path, *args: str) -> str:
    """git on the host, for the test's own repositories: no user or system config."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(repo.parent),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    done = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def make_repo(repo: Path, message: str) -> None:
    """A repository with one commit; the user is in its own .git/config, which the jailed
    server reads (the jail gives it a private, empty HOME)."""
    repo.mkdir(exist_ok=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Test")
    git(repo, "config", "user.email", "test@example.test")
    (repo / "README").write_text("hello\n")
    git(repo, "add", "README")
    git(repo, "commit", "-q", "-m", message)


def test_git_tools_work_on_the_project_repository(layout: tuple[Path, Path]) -> None:
    project, _ = layout
    make_repo(project, "first commit")
    (project / "README").write_text("hello\nchanged\n")
    (project / "new.txt").write_text("new file\n")
    server = [str(py_peer("mcp-server-git")), "--repository", "."]
    repo = {"repo_path": str(project)}
    with Wrapped(Path("mcp-server-git"), server, cwd=project) as w:
        w.initialize()
        assert listed(w) == GIT_TOOLS
        status = ok(w.call("git_status", repo))
        assert "README" in status and "new.txt" in status
        assert "+changed" in ok(w.call("git_diff_unstaged", repo))
        assert "Message: first commit" in ok(w.call("git_log", repo))
        assert "staged" in ok(w.call("git_add", {**repo, "files": ["README", "new.txt"]}))
        assert "+new file" in ok(w.call("git_diff_staged", repo))
        hidden(w, "git_reset", repo)
        assert git(project, "diff", "--cached", "--name-only").split() == ["README", "new.txt"]
        assert "committed" in ok(w.call("git_commit", {**repo, "message": "second commit"}))
        ok(w.call("git_create_branch", {**repo, "branch_name": "feature"}))
        assert "feature" in ok(w.call("git_checkout", {**repo, "branch_name": "feature"}))
        assert "feature" in ok(w.call("git_branch", {**repo, "branch_type": "local"}))
        assert "second commit" in ok(w.call("git_show", {**repo, "revision": "HEAD"}))
        assert "+new file" in ok(w.call("git_diff", {**repo, "target": "HEAD~1"}))
    assert git(project, "log", "--format=%s").split("\n")[:2] == ["second commit", "first commit"]
    assert git(project, "branch", "--show-current").strip() == "feature"


def test_git_checkout_adds_and_removes_files_at_a_sealed_root(layout: tuple[Path, Path]) -> None:
    """The repository's root is sealed (no .mcp.json, .vscode/ ...): a checkout that adds a
    root file gets it made by mcpwrap's broker, and one that removes it removes it."""
    project, _ = layout
    make_repo(project, "first commit")
    git(project, "checkout", "-q", "-b", "feature")
    (project / "added.txt").write_text("on feature\n")
    git(project, "add", "added.txt")
    git(project, "commit", "-q", "-m", "add a root file")
    git(project, "checkout", "-q", "main")
    assert not (project / "added.txt").exists()
    server = [str(py_peer("mcp-server-git")), "--repository", "."]
    repo = {"repo_path": str(project)}
    with Wrapped(Path("mcp-server-git"), server, cwd=project) as w:
        w.initialize()
        assert "feature" in ok(w.call("git_checkout", {**repo, "branch_name": "feature"}))
        assert (project / "added.txt").read_text() == "on feature\n"
        assert "main" in ok(w.call("git_checkout", {**repo, "branch_name": "main"}))
        assert not (project / "added.txt").exists()
        assert f"so {project} is sealed" in w.stderr_now()
    assert git(project, "status", "--porcelain") == ""


def test_git_repo_path_outside_and_option_values_are_refused_before_the_server(
    layout: tuple[Path, Path],
) -> None:
    """The server runs without --repository, so it would open any repository it is
    given: each refusal here is mcpwrap's, and the outside repository is unchanged (a
    change is staged there, so a commit that got through would show)."""
    project, canary = layout
    make_repo(project, "project commit")
    other = canary.parent
    make_repo(other, "canary commit")
    (other / "README").write_text("staged outside\n")
    git(other, "add", "README")
    head = git(other, "rev-parse", "HEAD")
    with Wrapped(Path("mcp-server-git"), [str(py_peer("mcp-server-git"))], cwd=project) as w:
        w.initialize()
        refused(w, "git_log", {"repo_path": str(other)}, "tools.git_log.args.repo_path")
        refused(w, "git_status", {"repo_path": "../outside"}, "tools.git_status.args.repo_path")
        commit = {"repo_path": str(other), "message": "through the wrapper"}
        refused(w, "git_commit", commit, "tools.git_commit.args.repo_path")
        add = {"repo_path": str(project), "files": ["README", "../outside/canary.txt"]}
        refused(w, "git_add", add, "tools.git_add.args.files")
        # git reads a value starting with "-" as an option: --output writes a file.
        diff = {"repo_path": str(project), "target": f"--output={project}/planted.diff"}
        refused(w, "git_diff", diff, "tools.git_diff.args.target")
        branch = {"repo_path": str(project), "branch_name": "--orphan"}
        refused(w, "git_checkout", branch, "tools.git_checkout.args.branch_name")
    assert git(other, "rev-parse", "HEAD") == head
    assert git(project, "diff", "--cached", "--name-only") == ""
    assert not (project / "planted.diff").exists()


def test_git_jail_holds_when_the_profile_allows_too_much(layout: tuple[Path, Path]) -> None:
    """A copy of the profile whose repo_path may be anywhere under the parent directory,
    and a server without --repository: the call reaches the server, which cannot open the
    repository outside the project (the jail does not hold it) and shows none of it."""
    project, canary = layout
    make_repo(project, "project commit")
    make_repo(canary.parent, "canary commit")
    profile = widened(
        "mcp-server-git",
        project.parent,
        {
            'within = ["{project}"]': f'within = ["{project.parent}"]',
            '"{project}"]': f'"{project}"]',
        },
    )
    with Wrapped(profile, [str(py_peer("mcp-server-git"))], cwd=project) as w:
        w.initialize()
        assert "project commit" in ok(w.call("git_log", {"repo_path": str(project)}))
        for tool in ("git_log", "git_status"):
            reply = w.call(tool, {"repo_path": str(canary.parent)})
            reached_server(reply)
            assert reply["result"].get("isError") and "canary commit" not in text(reply), reply


# --- mcp-server-sqlite -------------------------------------------------------------------


@pytest.fixture
def sqlite_project(tmp_path: Path) -> Path:
    """A project with its db/ directory, the only place the profile lets the server write."""
    (tmp_path / "project" / "db").mkdir(parents=True)
    return tmp_path / "project"


def sqlite_server(db_path: str = "db/test.sqlite") -> list[str]:
    return [str(py_peer("mcp-server-sqlite")), "--db-path", db_path]


def rows(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute("SELECT id, body FROM notes ORDER BY id"))


def test_sqlite_tools_work_on_the_database_in_db(sqlite_project: Path) -> None:
    with Wrapped(Path("mcp-server-sqlite"), sqlite_server(), cwd=sqlite_project) as w:
        w.initialize()
        assert listed(w) == SQLITE_TOOLS
        table = "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)"
        ok(w.call("create_table", {"query": table}))
        insert = "INSERT INTO notes (body) VALUES ('one'), ('two')"
        assert "'affected_rows': 2" in ok(w.call("write_query", {"query": insert}))
        update = "UPDATE notes SET body = 'uno' WHERE id = 1"
        ok(w.call("write_query", {"query": update}))
        got = ok(w.call("read_query", {"query": "SELECT body FROM notes ORDER BY id"}))
        assert got == "[{'body': 'uno'}, {'body': 'two'}]"
        assert "'notes'" in ok(w.call("list_tables"))
        assert "'body'" in ok(w.call("describe_table", {"table_name": "notes"}))
        hidden(w, "append_insight", {"insight": "feeds a resource this profile denies"})
    assert rows(sqlite_project / "db" / "test.sqlite") == [(1, "uno"), (2, "two")]


def test_sqlite_statements_outside_their_constraints_are_refused_before_the_server(
    sqlite_project: Path,
) -> None:
    db = sqlite_project / "db" / "test.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        conn.execute("INSERT INTO notes (body) VALUES ('kept')")
    with Wrapped(Path("mcp-server-sqlite"), sqlite_server(), cwd=sqlite_project) as w:
        w.initialize()
        for query in (
            "DELETE FROM notes",
            "SELECT 1; DELETE FROM notes",
            "WITH gone AS (DELETE FROM notes RETURNING *) SELECT * FROM gone",
            "SELECT * FROM notes FOR UPDATE",
            # SQLite-only syntax does not parse as PostgreSQL: refused, even if harmless.
            "PRAGMA table_info(notes)",
        ):
            refused(w, "read_query", {"query": query}, "tools.read_query.args.query")
        for query in (
            "DROP TABLE notes",
            "VACUUM INTO 'db/copy.sqlite'",
            "ATTACH DATABASE 'db/copy.sqlite' AS copy",
        ):
            refused(w, "write_query", {"query": query}, "tools.write_query.args.query")
        refused(w, "create_table", {"query": "DROP TABLE notes"}, "tools.create_table.args.query")
        inject = {"table_name": "notes); DROP TABLE notes; --"}
        refused(w, "describe_table", inject, "tools.describe_table.args.table_name")
        assert "kept" in ok(w.call("read_query", {"query": "SELECT body FROM notes"}))
    assert rows(db) == [(1, "kept")]
    assert sorted(p.name for p in db.parent.iterdir()) == ["test.sqlite"]


def test_sqlite_database_outside_db_cannot_be_created(var_tmp_path: Path) -> None:
    """The jail writes db/ only: a --db-path elsewhere in the project or beside it stops
    the server, and nothing appears on the host. Under /var/tmp: inside the jail's
    private /tmp the file would land in the jail's own tmpfs, not on the host."""
    project = var_tmp_path / "project"
    (project / "db").mkdir(parents=True)
    (project / "data").mkdir()
    for db_path in ("data/escape.sqlite", "../escape.sqlite"):
        with Wrapped(Path("mcp-server-sqlite"), sqlite_server(db_path), cwd=project) as w:
            reply = w.initialize()
            assert "exited" in reply["error"]["message"], reply
    assert sorted(p.name for p in var_tmp_path.rglob("*")) == ["data", "db", "project"]


# --- mcp-server-fetch --------------------------------------------------------------------


def test_fetch_refuses_unlisted_hosts_loopback_and_private_addresses_before_the_server(
    tmp_path: Path,
) -> None:
    """The curated profile as it is: no network needed, every refusal is mcpwrap's. A
    listener on the host's loopback stands in for what such a URL would reach."""
    server = [str(py_peer("mcp-server-fetch")), "--allow-private-ips"]  # its own guard off
    with hello_server() as loopback, Wrapped(Path("mcp-server-fetch"), server, cwd=tmp_path) as w:
        w.initialize()
        assert listed(w) == ["fetch"]
        for url in (
            "https://api.example.test/",  # a name not in the list
            f"http://127.0.0.1:{loopback.port}/",
            "https://127.0.0.1/",
            "https://localhost/",
            "https://[::1]/",
            "https://169.254.169.254/latest/meta-data/",  # cloud metadata
            "https://10.0.0.1/",
            "https://docs.python.org@127.0.0.1/",  # the listed name as a user name
            "https://docs.python.org.evil.example/",
            "https://docs.python.org:8443/",  # listed name, another port
            "http://docs.python.org/",  # plain http: the effects name port 443 only
        ):
            refused(w, "fetch", {"url": url}, "tools.fetch.args.url")
        # The server's fetch prompt fetches any URL, unchecked: prompts are denied.
        url = f"http://127.0.0.1:{loopback.port}/prompt"
        get = w.recv_id(w.request("prompts/get", {"name": "fetch", "arguments": {"url": url}}))
        assert "error" in get, get
        (prompt,) = [r for r in audit() if r.get("method") == "prompts/get"]
        assert prompt["decision"] == "refuse", prompt
    assert loopback.hits == []


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetHost]:
    with nethosts.build(tmp_path_factory.mktemp("nethost")) as built:
        yield built


def fetch_profile_for(host: NetHost, project: Path) -> None:
    """The curated profile, copied to the project's .mcpwrap/ (where --profile NAME looks
    before the built-in profiles) with what the test host needs, and nothing else: its
    names beside docs.python.org in both lists (internal.example.test resolves to a
    private address), and its test CA for httpx (SSL_CERT_FILE, and a read grant)."""
    body = (REPO / "profiles" / "mcp-server-fetch.toml").read_text()
    for anchor, inserted in (
        (
            '"network:docs.python.org:443",',
            '"network:api.example.test:443", "network:internal.example.test:443",',
        ),
        ('"docs.python.org",', '"api.example.test", "internal.example.test",'),
        ('network = "allowlist"', f'read = ["{host.files}"]'),
    ):
        assert body.count(anchor) == 1, anchor
        body = body.replace(anchor, f"{inserted}\n{anchor}")
    body += f'\n[server]\nenv = {{ SSL_CERT_FILE = "{host.ca}" }}\n'
    (project / ".mcpwrap").mkdir()
    (project / ".mcpwrap" / "mcp-server-fetch.toml").write_text(body)


def test_fetch_reaches_a_listed_host_through_the_calls_effects_never_a_private_address(
    host: NetHost, tmp_path: Path
) -> None:
    """Through the profile's effects: the listed name is fetched (robots.txt, then the
    page) through mcpwrap's proxy during the call; an unlisted name of the same host and
    the host's own addresses are refused before the server sees them; a listed name that
    resolves to a private address is refused by the proxy. The host's log shows which
    requests arrived: only the allowed ones."""
    project = tmp_path / "project"
    project.mkdir()
    fetch_profile_for(host, project)
    (tmp_path / "hosts").write_text(
        "".join(
            f"{a} {n}\n" for n, a in host.hosts(**{"internal.example.test": host.private}).items()
        )
    )
    env = {"MCPWRAP_TEST_HOSTS": str(tmp_path / "hosts")}
    server = [str(py_peer("mcp-server-fetch")), "--allow-private-ips"]  # its own guard off
    seen = nethosts.mark(host)
    with Wrapped(Path("mcp-server-fetch"), server, cwd=project, env=env) as w:
        w.initialize()
        assert listed(w) == ["fetch"]
        page = w.call("fetch", {"url": "https://api.example.test/docs/page"})
        assert '"path": "/docs/page"' in ok(page)
        for url in (
            "https://other.example.test/refused",
            f"https://{host.address}/refused",
            f"https://{host.private}/refused",
        ):
            refused(w, "fetch", {"url": url}, "tools.fetch.args.url")
        private = w.call("fetch", {"url": "https://internal.example.test/refused"})
        reached_server(private)
        assert private["result"].get("isError"), private
    requests = [(e["host"], e["path"], e["peer"]) for e in seen.new() if e["event"] == "request"]
    assert requests == [
        ("api.example.test", "/robots.txt", host.gateway),
        ("api.example.test", "/docs/page", host.gateway),
    ]
    egress = [r for r in audit() if r.get("event") == "egress"]
    allowed = [r for r in egress if r["decision"] == "allow"]
    assert allowed and {(r["endpoint"], r["rule"]) for r in allowed} == {
        ("api.example.test:443", "tools.fetch.effects")
    }, egress
    assert all(r["calls"] == [page["id"]] for r in allowed), allowed
    (refusal,) = [r for r in egress if r["decision"] == "refuse"]
    assert refusal["rule"] == "egress.address" and host.private in refusal["reason"], refusal
