"""The server side over a child process's stdin/stdout pipes (ends.Upstream), jailed or not;
its process tree gives the resource figures of each call."""

from __future__ import annotations

import os
import threading

from mcpwrap.relay.ends import Deliver, Usage
from mcpwrap.relay.framing import LineReader, write_line
from mcpwrap.sandbox.proctree import ProcessTree


class ProcessUpstream:
    """The server's stdin (ours to close) and stdout, and its process tree (or None: no
    figures). Figures are read under a lock of their own: the tree's member table is
    shared by every thread that asks."""

    def __init__(
        self,
        fd_in: int,
        fd_out: int,
        *,
        max_message: int,
        tree: ProcessTree | None,
        name: str = "server",
    ) -> None:
        self.name = name
        self._in, self._out = fd_in, fd_out
        self._max = max_message
        self._tree = tree
        self._write = threading.Lock()
        self._stdin_open = True
        self._tree_lock = threading.Lock()

    def run(self, deliver: Deliver) -> None:
        reader = LineReader(self._out, self._max)
        while (item := reader.read()) is not None:
            deliver(item)

    def send(self, line: bytes) -> bool:
        with self._write:
            if not self._stdin_open:
                return False
            try:
                write_line(self._in, line)
            except BrokenPipeError:
                self._stdin_open = False  # the server exited; its EOF ends the run
                return False
            return True

    def close(self) -> None:
        """Close the server's stdin: it sees EOF."""
        with self._write:
            if self._stdin_open:
                self._stdin_open = False
                os.close(self._in)

    def usage(self, *, full: bool = True) -> Usage | None:
        tree = self._tree
        if tree is None:
            return None
        with self._tree_lock:
            if not full:
                # Members were refreshed when the last call ended; a process the server
                # starts during this call is found at its end, and its CPU time still
                # counts in full.
                return Usage(tree.cpu_ms(), None)
            cpu_ms, peak_rss_kb = tree.usage()
            return Usage(cpu_ms, peak_rss_kb)

    def reset_peaks(self) -> None:
        if self._tree is not None:
            with self._tree_lock:
                self._tree.reset_peaks()
