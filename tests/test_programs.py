"""programs.py stands in for shutil.which and shutil.get_terminal_size on `mcpwrap run`'s
path (shutil costs ~3 ms of each start): it must answer as they do."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mcpwrap.basics import programs


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """bin1: tool (executable), plain (not executable), sub/ (a directory, executable);
    bin2: tool and plain, both executable; a relative entry resolves from the cwd."""
    for d in ("bin1", "bin2", "bin1/sub", "rel"):
        (tmp_path / d).mkdir()
    for path, mode in (
        ("bin1/tool", 0o755),
        ("bin1/plain", 0o644),
        ("bin2/tool", 0o755),
        ("bin2/plain", 0o755),
        ("rel/local", 0o755),
    ):
        (tmp_path / path).write_text("#!/bin/sh\n")
        (tmp_path / path).chmod(mode)
    return tmp_path


@pytest.mark.parametrize("program", ["tool", "plain", "sub", "missing", "local", "sh"])
@pytest.mark.parametrize(
    "path",
    [
        "{t}/bin1:{t}/bin2",
        "{t}/bin2:{t}/bin1",
        "{t}/bin1:{t}/bin1:{t}/bin2",
        "rel:{t}/bin1",
        ":{t}/bin1",
        "",
        None,
    ],
)
def test_which_answers_as_shutil_does(
    tree: Path, program: str, path: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tree)
    given = None if path is None else path.format(t=tree)
    assert programs.which(program, path=given) == shutil.which(program, path=given)


@pytest.mark.parametrize("program", ["bin1/tool", "./bin1/plain", "{t}/bin2/plain", "{t}/bin1/sub"])
def test_which_takes_a_path_as_given(
    tree: Path, program: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tree)
    name = program.format(t=tree)
    assert programs.which(name, path="/nowhere") == shutil.which(name, path="/nowhere")


@pytest.mark.parametrize("environ", [{}, {"PATH": ""}, {"PATH": "/usr/bin:/bin"}])
def test_which_without_a_path_reads_the_environment(
    environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PATH", raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert programs.which("sh") == shutil.which("sh")


@pytest.mark.parametrize("columns", [None, "", "abc", "0", "-3", "1", "120"])
def test_terminal_columns_as_shutil_counts_them(
    columns: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    if columns is not None:
        monkeypatch.setenv("COLUMNS", columns)
    assert programs.terminal_columns() == shutil.get_terminal_size().columns


def test_terminal_columns_of_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setenv("LINES", "0")  # shutil asks the terminal only without both
    monkeypatch.setattr(os, "get_terminal_size", lambda fd: os.terminal_size((97, 30)))
    assert programs.terminal_columns() == shutil.get_terminal_size().columns == 97
