"""StdioFront and ProcessUpstream keep to ends.py: they are Fronts and Upstreams, deliver
whole messages (or Oversize), and never raise when the peer went away."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from mcpwrap.relay.ends import Front, Upstream, Usage
from mcpwrap.relay.framing import Oversize
from mcpwrap.relay.process import ProcessUpstream
from mcpwrap.relay.stdio import StdioFront
from mcpwrap.sandbox.proctree import ProcessTree


@pytest.fixture
def pipes() -> Iterator[list[tuple[int, int]]]:
    made: list[tuple[int, int]] = []
    yield made
    for r, w in made:
        for fd in (r, w):
            with contextlib.suppress(OSError):
                os.close(fd)


def _pipe(made: list[tuple[int, int]]) -> tuple[int, int]:
    r, w = os.pipe()
    made.append((r, w))
    return r, w


def test_both_ends_satisfy_their_protocols(pipes: list[tuple[int, int]]) -> None:
    r, w = _pipe(pipes)
    front: Front = StdioFront(r, w, max_message=100)
    upstream: Upstream = ProcessUpstream(w, r, max_message=100, tree=None, name="srv")
    assert isinstance(front, Front)
    assert isinstance(upstream, Upstream)
    assert not isinstance(front, Upstream)  # no usage(), no name
    assert upstream.name == "srv"


@pytest.mark.parametrize("kind", ["front", "upstream"])
def test_run_delivers_whole_messages_and_oversize(kind: str, pipes: list[tuple[int, int]]) -> None:
    r, w = _pipe(pipes)
    end = (
        StdioFront(r, -1, max_message=10)
        if kind == "front"
        else ProcessUpstream(-1, r, max_message=10, tree=None)
    )
    os.write(w, b'{"a":1}\n\n' + b"x" * 30 + b'\n{"b"')
    os.write(w, b":2}")  # the last message's end, without a newline, then EOF
    os.close(w)
    got: list[bytes | Oversize] = []
    end.run(got.append)
    assert got[0] == b'{"a":1}'
    assert isinstance(got[1], Oversize) and got[1].size == 30
    assert got[2] == b'{"b":2}'
    assert len(got) == 3


def test_front_send_after_the_client_left_returns_false(pipes: list[tuple[int, int]]) -> None:
    r, w = _pipe(pipes)
    front = StdioFront(-1, w, max_message=100)
    assert front.send(b'{"x":1}') is True
    assert os.read(r, 100) == b'{"x":1}\n'
    os.close(r)
    assert front.send(b'{"x":2}') is False  # EPIPE: no BrokenPipeError
    assert front.send(b'{"x":3}') is False


def test_front_close_stops_sending_and_leaves_the_fd(pipes: list[tuple[int, int]]) -> None:
    r, w = _pipe(pipes)
    front = StdioFront(-1, w, max_message=100)
    front.close()
    front.close()
    assert front.send(b"{}") is False
    os.write(w, b"still open\n")  # the fd is the caller's
    assert os.read(r, 100) == b"still open\n"


def test_upstream_send_after_the_server_left_returns_false(
    pipes: list[tuple[int, int]],
) -> None:
    r, w = _pipe(pipes)
    up = ProcessUpstream(w, -1, max_message=100, tree=None)
    assert up.send(b"{}") is True
    os.close(r)
    assert up.send(b"{}") is False  # EPIPE marks stdin closed
    assert up.send(b"{}") is False
    up.close()  # closes the fd once; later closes are no-ops
    up.close()


def test_upstream_close_closes_the_servers_stdin(pipes: list[tuple[int, int]]) -> None:
    r, w = _pipe(pipes)
    up = ProcessUpstream(w, -1, max_message=100, tree=None)
    up.close()
    assert os.read(r, 10) == b""  # EOF: our write end is closed
    assert up.send(b"{}") is False
    with pytest.raises(OSError):
        os.fstat(w)


def test_sends_from_many_threads_never_interleave(pipes: list[tuple[int, int]]) -> None:
    r, w = _pipe(pipes)
    up = ProcessUpstream(w, -1, max_message=1 << 22, tree=None)
    lines = [bytes([ord("a") + i]) * 300_000 for i in range(4)]  # over a pipe's buffer
    got = bytearray()

    def drain() -> None:
        while chunk := os.read(r, 1 << 16):
            got.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    senders = [threading.Thread(target=up.send, args=(line,)) for line in lines]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    up.close()
    reader.join()
    assert sorted(bytes(got).split(b"\n")[:-1]) == lines


def test_upstream_usage_reads_the_process_tree() -> None:
    assert ProcessUpstream(-1, -1, max_message=1, tree=None).usage() is None
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        up = ProcessUpstream(-1, -1, max_message=1, tree=ProcessTree(child.pid))
        usage = up.usage()
        assert isinstance(usage, Usage)
        assert usage.cpu_ms >= 0 and usage.peak_rss_kb is not None and usage.peak_rss_kb > 0
        cheap = up.usage(full=False)
        assert cheap is not None and cheap.peak_rss_kb is None
        up.reset_peaks()
    finally:
        child.kill()
        child.wait()
