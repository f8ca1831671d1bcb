"""mcpwrap.sandbox.proctree: CPU time and peak memory of a real process tree, read from /proc.

The tree is a python parent (the root) whose child obeys commands on the shared stdin
and answers each on the shared stdout, so the test waits on answers, never on sleeps.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from mcpwrap.sandbox.proctree import ProcessTree

ALLOC_MB = 50

_CHILD = f"""
import os, sys, time
print(os.getpid(), flush=True)
held = None
for line in sys.stdin:
    command = line.strip()
    if command == "burn":  # 0.3 s of CPU, then back to waiting
        end = time.process_time() + 0.3
        while time.process_time() < end:
            pass
    elif command == "alloc":  # bytes * n writes every page: resident, not just mapped
        held = b"x" * ({ALLOC_MB} << 20)
    elif command == "free":
        held = None
    elif command == "exit":
        break
    print("done", command, flush=True)
"""

_PARENT = f"""
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", {_CHILD!r}])
child.wait()
print("reaped", flush=True)
sys.stdin.read()  # the root stays until the test closes stdin
"""


class Tree:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _PARENT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.child = int(self._line())
        self.tree = ProcessTree(self.proc.pid)

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the process tree exited early"
        return line.strip()

    def do(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        assert self._line() == ("reaped" if command == "exit" else f"done {command}")

    def close(self) -> None:
        self.tree.close()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()


@pytest.fixture
def tree() -> Iterator[Tree]:
    t = Tree()
    try:
        yield t
    finally:
        t.close()


def test_refresh_finds_root_and_child(tree: Tree) -> None:
    assert tree.tree.refresh() == sorted([tree.proc.pid, tree.child])


def test_cpu_grows_across_a_burn(tree: Tree) -> None:
    tree.tree.refresh()
    before = tree.tree.cpu_ms()
    tree.do("burn")
    after = tree.tree.cpu_ms()
    assert after - before >= 200, (before, after)
    assert after - before < 2000, (before, after)


def test_peak_memory_and_reset(tree: Tree) -> None:
    tree.tree.refresh()
    tree.tree.reset_peaks()
    baseline = tree.tree.peak_rss_kb()
    assert baseline > 0
    tree.do("alloc")
    peak = tree.tree.peak_rss_kb()
    assert peak >= baseline + (ALLOC_MB - 5) * 1024, (baseline, peak)
    tree.do("free")
    # A high-water mark stays up until reset (the kernel's RSS counters are approximate
    # by a few pages, hence the slack).
    assert tree.tree.peak_rss_kb() >= peak - 1024
    tree.tree.reset_peaks()
    lowered = tree.tree.peak_rss_kb()
    assert lowered < peak - (ALLOC_MB - 10) * 1024, (peak, lowered)


def test_dead_member_disappears_and_keeps_its_cpu(tree: Tree) -> None:
    tree.tree.refresh()
    tree.do("burn")
    burnt = tree.tree.cpu_ms()
    assert burnt >= 200
    open_fds = len(os.listdir("/proc/self/fd"))
    tree.do("exit")  # the child exits and the root reaps it
    assert tree.tree.refresh() == [tree.proc.pid]
    # Its /proc files (stat, status, children, clear_refs) are closed, not leaked.
    assert len(os.listdir("/proc/self/fd")) <= open_fds - 3
    # The reaped child's time now sits in the root's cutime/cstime.
    assert tree.tree.cpu_ms() >= burnt - 20, burnt


def test_tree_of_a_gone_root_is_empty() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    tree = ProcessTree(proc.pid)
    try:
        assert tree.refresh() == []
        assert tree.cpu_ms() == 0
        assert tree.peak_rss_kb() == 0
        tree.reset_peaks()
    finally:
        tree.close()


# A root that starts children on command, each burning 0.3 s of CPU: one that stays alive
# after, and one that exits and stays unreaped (a zombie: its time is in no one's cutime
# yet, only in its own stat).
_SPAWNER = """
import os, sys, time
def burn():
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
for line in sys.stdin:
    command = line.strip()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        burn()
        os.write(w, b"x")
        if command == "live":
            time.sleep(60)
        os._exit(0)
    os.read(r, 1)
    os.close(r)
    os.close(w)
    if command == "zombie":  # wait for it to exit, without reaping it
        while open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
            time.sleep(0.01)
    print(pid, flush=True)
"""


@pytest.fixture
def spawner() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SPAWNER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    try:
        yield proc
    finally:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        proc.kill()
        proc.wait()
        proc.stdout.close()


def _spawn(proc: subprocess.Popen[str], command: str) -> int:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(command + "\n")
    proc.stdin.flush()
    return int(proc.stdout.readline())


@pytest.mark.parametrize("command", ["live", "zombie"])
def test_a_child_started_during_a_call_counts_in_it(
    spawner: subprocess.Popen[str], command: str
) -> None:
    tree = ProcessTree(spawner.pid)
    try:
        tree.usage()
        tree.usage()  # settled: nothing changed since the scan before
        start = tree.cpu_ms()  # a call starts (Pending's reading: no refresh)
        pid = _spawn(spawner, command)
        end, _ = tree.usage()  # the call ends
        assert end - start >= 200, (start, end)
        assert pid in tree.refresh()
    finally:
        tree.close()
        if command == "live":
            os.kill(pid, 9)


def test_usage_is_cpu_and_peak_of_a_refresh(tree: Tree) -> None:
    cpu, peak = tree.tree.usage()
    assert tree.tree.refresh() == sorted([tree.proc.pid, tree.child])
    assert cpu <= tree.tree.cpu_ms() < cpu + 100
    assert peak > 0
    assert abs(tree.tree.peak_rss_kb() - peak) < 1024


THREAD_FORKS = """
import subprocess, sys, threading
burn = "import time\\nend = time.time() + 20\\nwhile time.time() < end: pass"
threading.Thread(target=lambda: subprocess.run([sys.executable, "-c", burn])).start()
sys.stdin.readline()  # then the main thread forks too, which changes its children file
subprocess.Popen(["sleep", "20"])
print("forked", flush=True)
sys.stdin.readline()
"""


def test_a_child_of_another_thread_keeps_counting_between_full_scans() -> None:
    """A process forked by a thread other than the main one is found by the full scan
    (once a second); the quicker scan between two full ones follows main threads only and
    must not drop it, or its CPU time leaves the sum and a call's cpu_ms goes negative."""
    proc = subprocess.Popen(
        [sys.executable, "-c", THREAD_FORKS],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        tree = ProcessTree(proc.pid)
        deadline = time.monotonic() + 10
        while len(tree.refresh()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the first refresh is a full scan: it finds the burner
        time.sleep(0.6)  # the burner runs up CPU time
        before, _ = tree.usage()
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "forked\n"
        after, _ = tree.usage()  # within the second: the quick scan
        assert after >= before, f"CPU of the tree went from {before} ms to {after} ms"
    finally:
        for pid in tree.refresh():
            if pid != proc.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
        proc.kill()
        proc.wait()
