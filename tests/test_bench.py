"""The benchmark still runs and prints its table. It asserts no figure: speed is measured
by bench/run.py and reported, never asserted in a timed test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _bench(repo_root: Path, *more: str) -> list[str]:
    out = subprocess.run(
        [
            sys.executable,
            str(repo_root / "bench" / "run.py"),
            "--calls",
            "30",
            "--starts",
            "1",
            "--blobs",
            "1",
            *more,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    return out.stdout.splitlines()


def test_the_benchmark_runs_every_path(repo_root: Path) -> None:
    lines = _bench(repo_root)
    assert "baseline" not in lines[1]
    assert "load average" in lines[0]
    head = [cell.strip() for cell in lines[1].strip("|").split("|")]
    paths = ["direct", "floor relay", "sandbox-runtime", "mcpwrap", "mcpwrap+jail"]
    paths += ["reduced jail", "jail+lock"]
    assert head[1:8] == paths, head
    # Every mcpwrap figure is read against a peer measured in the same run.
    for column in (
        "mcpwrap vs direct",
        "mcpwrap vs floor relay",
        "jail vs mcpwrap",
        "jail vs sandbox-runtime",
        "reduced vs mcpwrap",
        "lock vs jail",
    ):
        assert column in head, column
    for line in lines[3:8]:  # a figure in every column, the peers' included
        assert line.count("|") == lines[1].count("|"), line
    assert "sandbox-runtime srt's node" in lines[-2]
    for measure in (
        "start to first reply",
        "round trip p50",
        "round trip p99",
        "throughput",
        "peak RSS",
    ):
        assert any(measure in line for line in lines), measure
    reduced = lines[-1]
    assert reduced.startswith("reduced jail's added start over mcpwrap: ")
    assert "target <= 30 ms: " in reduced and reduced.endswith(("met", "not met"))


def test_a_baseline_checkout_takes_its_turns_beside_the_current_code(repo_root: Path) -> None:
    """Before and after a change in one run: here the checkout is its own baseline."""
    lines = _bench(repo_root, "--baseline", str(repo_root))
    head = lines[1]
    for column in (
        "| baseline |",
        "| baseline+jail |",
        "mcpwrap vs baseline",
        "jail vs baseline+jail",
    ):
        assert column in head, column
    start = next(line for line in lines if line.startswith("| start to first reply"))
    assert start.count("|") == head.count("|")


def test_the_egress_benchmark_runs_all_three_paths(repo_root: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(repo_root / "bench" / "egress.py"),
            "--mb",
            "2",
            "--connects",
            "10",
            "--rounds",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = out.stdout.splitlines()
    assert "direct" in lines[1] and "HTTP proxy" in lines[1] and "tcp forward" in lines[1]
    for measure in ("download throughput", "connect + first byte p50", "first byte p95"):
        assert any(measure in line for line in lines), measure


def test_the_real_server_benchmark_locks_and_times_both_servers(repo_root: Path) -> None:
    """Offline, from the caches scripts/test fills (as tests/test_fetch.py)."""
    out = subprocess.run(
        [sys.executable, str(repo_root / "bench" / "servers.py"), "--starts", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    lines = out.stdout.splitlines()
    assert "direct" in lines[1] and "jail+lock" in lines[1] and "added" in lines[1]
    for server in ("mcp-server-time", "server-filesystem"):
        for reply in ("initialize", "tools/list"):
            assert any(f"| {server} | {reply} |" in line for line in lines), (server, reply)


def test_the_remote_benchmark_times_both_paths(repo_root: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(repo_root / "bench" / "remote.py"), "--calls", "5", "--starts", "1"],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
        cwd=tmp_path,
    )
    lines = out.stdout.splitlines()
    assert "load average" in lines[0]
    assert lines[1] == "| measure | direct (SDK client) | mcpwrap | added |"
    rows = [line.split("|")[1].strip() for line in lines[3:]]
    assert rows == [
        "start to first reply",
        "small call round trip p50",
        "small call round trip p99",
    ]


def test_the_baseline_is_the_other_checkouts_code_even_run_from_this_one(
    repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m` puts the working directory first on sys.path: without -P, a baseline
    run from this checkout would import this checkout's mcpwrap, not the baseline's."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_run", repo_root / "bench" / "run.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_run", bench)  # its dataclasses look it up
    spec.loader.exec_module(bench)
    stub = tmp_path / "mcpwrap"
    stub.mkdir()
    (stub / "__init__.py").write_text("")
    (stub / "__main__.py").write_text("print('the baseline')\n")
    command = bench.mcpwrap_cmd(module=True)
    out = subprocess.run(
        command[: command.index("run")],
        capture_output=True,
        text=True,
        cwd=repo_root,
        env={"PYTHONPATH": str(tmp_path)},
        timeout=60,
        check=True,
    )
    assert out.stdout == "the baseline\n"
