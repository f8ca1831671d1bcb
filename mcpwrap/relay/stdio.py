"""The client side over a stdin/stdout pair: one JSON-RPC message per line (ends.Front)."""

from __future__ import annotations

import threading

from mcpwrap.basics.pipes import widen_pipe
from mcpwrap.relay.ends import Deliver
from mcpwrap.relay.framing import LineReader, write_line


class StdioFront:
    """The client's stdin and stdout. The fds are the caller's: close() stops sending but
    leaves stdout open (the process's exit closes it), so nothing else that writes there
    finds it gone."""

    def __init__(self, fd_in: int, fd_out: int, *, max_message: int) -> None:
        self._in, self._out = fd_in, fd_out
        self._max = max_message
        # Results of several MB cross to the client in a few wake-ups, not one per 64 KiB.
        widen_pipe(fd_out)
        self._write = threading.Lock()
        self._open = True

    def run(self, deliver: Deliver) -> None:
        reader = LineReader(self._in, self._max)
        while (item := reader.read()) is not None:
            deliver(item)

    def send(self, line: bytes) -> bool:
        with self._write:
            if not self._open:
                return False
            try:
                write_line(self._out, line)
            except BrokenPipeError:
                # A client that left shows up as EOF on its stdin, which ends the run; each
                # later message tries again, as a pipe costs nothing to try.
                return False
            return True

    def close(self) -> None:
        with self._write:
            self._open = False
