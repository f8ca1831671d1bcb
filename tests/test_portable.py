"""mcpwrap.supply.portable: a lock's paths mean the same in every clone, on every machine.

Pure functions, tested as tables: the command as the lock records it (path arguments
relative to {project} or {home}, whatever the spelling), back again, and the part of a
command's artifacts a lock can pin for other machines.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mcpwrap.supply import portable
from mcpwrap.supply.artifacts import Artifacts, FileArtifact, Package, Tree, installer_made

PROJECT = "/home/ann/src/app"
HOME = "/home/ann"

NORMALIZED = [
    # (word, cwd, recorded)
    (".", PROJECT, "{project}"),
    (PROJECT, "/", "{project}"),
    (PROJECT + "/", "/tmp", "{project}"),
    ("./docs", PROJECT, "{project}/docs"),
    ("../app/docs/../data", PROJECT, "{project}/data"),
    (".", PROJECT + "/docs", "{project}/docs"),
    ("..", PROJECT + "/docs", "{project}"),
    ("--root=.", PROJECT, "--root={project}"),
    ("--root=/home/ann/src/app/x", "/", "--root={project}/x"),
    ("~/notes", PROJECT, "{home}/notes"),
    ("~", PROJECT, "{home}"),
    ("/home/ann/notes", PROJECT, "{home}/notes"),
    ("/srv/data", PROJECT, "/srv/data"),
    ("/home/bob/x", PROJECT, "/home/bob/x"),
    ("/home/ann-other", PROJECT, "/home/ann-other"),  # not under /home/ann
    # Not paths: the same on every machine, as they are.
    ("docs", PROJECT, "docs"),
    ("@modelcontextprotocol/server-filesystem", PROJECT, "@modelcontextprotocol/server-filesystem"),
    ("https://example.org/a/b", PROJECT, "https://example.org/a/b"),
    ("--local-timezone", PROJECT, "--local-timezone"),
    ("--flag=value", PROJECT, "--flag=value"),
    ("-y", PROJECT, "-y"),
]


@pytest.mark.parametrize(("word", "cwd", "recorded"), NORMALIZED)
def test_a_path_argument_is_recorded_relative_to_the_project_or_home(
    word: str, cwd: str, recorded: str
) -> None:
    got = portable.normalize_command(["npx", word], cwd=cwd, project=PROJECT, home=HOME)
    assert got == ("npx", recorded)


def test_dot_and_the_absolute_project_path_are_one_command() -> None:
    """The spelling that sent `run` to `approve` and `approve` back to `lock`."""
    one = portable.normalize_command(
        ["npx", "-y", "pkg", "."], cwd=PROJECT, project=PROJECT, home=HOME
    )
    two = portable.normalize_command(
        ["npx", "-y", "pkg", PROJECT], cwd="/", project=PROJECT, home=HOME
    )
    assert one == two == ("npx", "-y", "pkg", "{project}")


def test_a_project_reached_through_a_symlink_is_the_same_project(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "docs").mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    link = str(tmp_path / "link")
    got = portable.normalize_command(
        [str(real / "docs"), "./docs"], cwd=link, project=link, home="/nonexistent"
    )
    assert got == ("{project}/docs", "{project}/docs")


def test_another_clone_expands_the_recorded_command_to_its_own_paths() -> None:
    recorded = ("npx", "{project}", "--root={project}/x", "{home}/notes", "/srv", "{projects}")
    assert portable.expand_command(recorded, project="/home/bob/app", home="/home/bob") == [
        "npx",
        "/home/bob/app",
        "--root=/home/bob/app/x",
        "/home/bob/notes",
        "/srv",
        "{projects}",  # not a placeholder: left as it is
    ]


def test_home_at_the_root_is_no_base() -> None:
    assert portable.normalize_command(["/x"], cwd="/", project="/p", home="/") == ("/x",)


INSTALLER_MADE = [
    ("venv", "pyvenv.cfg", True),
    ("venv", "bin/python", True),
    ("venv", "bin/mcp-server-time", True),
    ("venv", "lib64", True),
    ("venv", "include/site/x.h", True),
    ("venv", "lib/python3.11/site-packages/x-1.dist-info/RECORD", True),
    ("venv", "lib/python3.11/site-packages/x-1.dist-info/INSTALLER", True),
    ("venv", "lib/python3.11/site-packages/x-1.dist-info/direct_url.json", True),
    ("venv", "lib/python3.11/site-packages/x-1.dist-info/METADATA", False),
    ("venv", "lib/python3.11/site-packages/x/RECORD", False),  # a module's own file
    ("venv", "lib/python3.11/site-packages/x/__init__.py", False),
    ("venv", "lib/python3.11/site-packages/zzz.pth", False),
    ("node_modules", ".package-lock.json", True),
    ("node_modules", ".bin/server", True),
    ("node_modules", "a/node_modules/.bin/x", True),
    ("node_modules", "@s/p/node_modules/.bin/x", True),
    ("node_modules", "a/.bin/x", False),  # inside a package: the package's own file
    ("node_modules", "a/index.js", False),
    ("node_modules", "a/.package-lock.json", False),
]


@pytest.mark.parametrize(("kind", "rel", "made"), INSTALLER_MADE)
def test_what_an_installer_writes_for_its_machine(kind: str, rel: str, made: bool) -> None:
    assert installer_made(kind, rel) is made


def test_the_view_keeps_what_is_in_the_project_and_the_install_at_symbolic_paths() -> None:
    install = "/home/ann/.cache/mcpwrap/store/uv/srv-1.0-abc"
    pkg = Package("srv", "1.0", "sha256:" + "1" * 64, "sha256:" + "9" * 64)
    found = Artifacts(
        (
            FileArtifact("executable", "/usr/bin/python3.11", "a" * 64),
            FileArtifact("script", f"{install}/bin/srv", "b" * 64),
            FileArtifact("script", f"{PROJECT}/server.py", "c" * 64),
        ),
        (
            Tree("venv", install, "sha256:" + "2" * 64, (pkg,), "sha256:" + "3" * 64),
            Tree("node_modules", "/usr/lib/node_modules", "sha256:" + "4" * 64, ()),
        ),
    )
    bases = [(portable.INSTALL, install), (portable.PROJECT, PROJECT)]
    assert portable.view(found, bases) == Artifacts(
        # The runtime is this machine's, and the console script its installer's.
        (FileArtifact("script", "{project}/server.py", "c" * 64),),
        # The digest over what the archives hold; a venv package's RECORD hash is dropped.
        (Tree("venv", "{install}", "sha256:" + "3" * 64, (pkg._replace(integrity=""),)),),
    )


def test_select_and_under() -> None:
    found = Artifacts(
        (FileArtifact("script", "/a/b", "0" * 64), FileArtifact("script", "/ab", "0" * 64)),
        (),
    )
    assert [f.path for f in portable.select(found, portable.under("/a")).files] == ["/a/b"]
    assert portable.under("/a/")("/a") and not portable.under("/a")(os.sep + "ab")
