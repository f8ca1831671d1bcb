"""basics.memory: after the first large message, freed multi-MB buffers are reused, not
faulted in again page by page; and the line reader asks for it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mcpwrap.relay import framing

# Copies a 4 MiB line the way the relay does (pieces read, joined, a string decoded; all
# three alive at once) in a thread, as the relay's pump threads do, and prints the page
# faults per line.
_PATTERN = """
import resource, sys, threading
from mcpwrap.basics import memory
if sys.argv[1] == "keep":
    memory.keep_large_buffers()
piece = b"x" * (1 << 20)
def faults():
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
def lines(n):
    first = faults()
    for _ in range(n):
        parts = [bytes(memoryview(piece)) for _ in range(4)]
        line = b"".join(parts)
        text = str(memoryview(line)[1:], "ascii")
        del parts, line, text
    out.append((faults() - first) / n)
out = []
for _ in range(2):  # the first round may grow the heap: the second is what is kept
    t = threading.Thread(target=lines, args=(20,))
    t.start()
    t.join()
print(out[-1])
"""


def _faults_per_line(mode: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _PATTERN, mode], capture_output=True, text=True, check=True
    )
    return float(done.stdout)


def test_kept_buffers_are_not_faulted_in_again() -> None:
    """A 4 MiB line is 3 x 1,024 pages: without the setting each line faults most of
    them in again, with it a few."""
    assert _faults_per_line("default") > 1000
    assert _faults_per_line("keep") < 100


def test_the_line_reader_asks_for_it_on_a_large_line(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(framing, "keep_large_buffers", lambda: calls.append(1))
    reader = framing.LineReader(-1, max_line=8 << 20)
    reader.feed(b"x" * 1000 + b"\n")
    assert not calls  # small lines never load ctypes
    for _ in range(3):
        reader.feed(b"x" * (1 << 19))
    reader.feed(b"\n")
    assert calls
    assert [len(line) for line in reader.drain_ready()] == [1000, 3 << 19]
