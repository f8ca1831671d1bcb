"""Newline-delimited JSON-RPC framing over raw file descriptors.

MCP's stdio transport is one UTF-8 JSON message per line, split on b"\\n" only (U+2028 and
U+0085 do occur inside messages, so no str.splitlines). Messages of several MB are normal,
so the reader works on large os.read() chunks and never decodes bytes it only forwards.
A line over the cap is not buffered: its first bytes are kept so the caller can still find
the request id, the rest is counted and dropped. A line is held as its pieces until its
newline, and pieces under SMALL_PIECE bytes (a peer writing a byte at a time) go into one
growing buffer: a list of a million one-byte objects, and bytes.join's bookkeeping of
them, would cost tens of times the cap.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
from collections import deque
from typing import NamedTuple

from mcpwrap.basics.memory import keep_large_buffers

DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024
READ_CHUNK = 1 << 20
PEEK_BYTES = 4096
SMALL_PIECE = 64 * 1024
LARGE_LINE = 1 << 20  # from this size on, freed buffers are kept for the next one (memory.py)


class Oversize(NamedTuple):
    """A line longer than the cap: its length and first PEEK_BYTES bytes."""

    size: int
    head: bytes


class LineReader:
    """Yields complete lines (without b"\\n") or Oversize markers from a file descriptor.

    A final line without a newline at EOF is returned as a line: a peer that exits right
    after its last message must not lose it.
    """

    def __init__(self, fd: int, max_line: int = DEFAULT_MAX_MESSAGE) -> None:
        self._fd = fd
        self._max = max_line
        self._parts: list[bytes | bytearray] = []
        self._size = 0
        self._skipping = False
        self._head = b""
        self._ready: deque[bytes | Oversize] = deque()
        self._eof = False
        # One buffer for every read: os.read(fd, 1 MiB) would allocate (and map) a fresh
        # megabyte per call, about 14 us each on the relay's hot path; this costs 1 us.
        # An anonymous mapping, not a bytearray: a bytearray is zero-filled, so all of its
        # pages would be resident from the start; these become resident as data arrives.
        self._buf = mmap.mmap(-1, READ_CHUNK)
        self._view = memoryview(self._buf)

    def read(self) -> bytes | Oversize | None:
        """The next line, an Oversize marker, or None at end of input."""
        while not self._ready:
            if self._eof:
                return None
            self._fill()
        return self._ready.popleft()

    def _fill(self) -> None:
        size = _read_retry(self._fd, self._buf)
        if not size:
            self._eof = True
            self._finish()
            return
        # The common case, one whole message per read, skips the splitting machinery; never
        # while a line over the cap is being dropped (its tail ends in a newline too).
        fresh = not self._parts and not self._skipping
        if fresh and size <= self._max and self._buf.find(b"\n", 0, size) == size - 1:
            if size > 1:
                self._ready.append(bytes(self._view[: size - 1]))
            return
        self.feed(bytes(self._view[:size]))

    def feed(self, chunk: bytes) -> None:
        """Split one chunk into lines; kept public so framing is testable without fds."""
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            if nl < 0:
                self._add(chunk[start:] if start else chunk)
                return
            self._add(chunk[start:nl])
            self._finish()
            start = nl + 1

    def _add(self, piece: bytes) -> None:
        if not piece:
            return
        self._size += len(piece)
        if self._skipping:
            return
        if self._size > LARGE_LINE:
            keep_large_buffers()
        if self._size > self._max:
            # Cut the head from the parts as they are: joining them first would hold the
            # whole line twice, and the piece that crosses the cap is never kept.
            self._head = _head(self._parts, piece)
            self._parts = []
            self._skipping = True
        elif len(piece) >= SMALL_PIECE:
            self._parts.append(piece)
        elif self._parts and isinstance(self._parts[-1], bytearray):
            self._parts[-1] += piece
        else:
            self._parts.append(bytearray(piece))

    def _finish(self) -> None:
        if self._skipping:
            self._ready.append(Oversize(self._size, self._head))
        elif self._parts:  # an empty line between messages carries nothing: skipped
            parts = self._parts
            one = parts[0] if len(parts) == 1 else None
            self._ready.append(one if isinstance(one, bytes) else b"".join(parts))
        self._parts, self._size, self._skipping, self._head = [], 0, False, b""

    def drain_ready(self) -> list[bytes | Oversize]:
        """Take every complete item that feed() produced (for tests and tools)."""
        ready = list(self._ready)
        self._ready.clear()
        return ready


def _head(parts: list[bytes | bytearray], last: bytes) -> bytes:
    """The first PEEK_BYTES bytes of the parts followed by `last`."""
    head = bytearray()
    for part in (*parts, last):
        head += part[: PEEK_BYTES - len(head)]
        if len(head) >= PEEK_BYTES:
            break
    return bytes(head)


def _read_retry(fd: int, buf: mmap.mmap) -> int:
    """Bytes read into `buf`; 0 at end of input."""
    while True:
        try:
            return os.readv(fd, [buf])
        except InterruptedError:
            continue
        except OSError as exc:
            # A peer that vanished (EIO on a pty, ECONNRESET on a socket) is end of input.
            if exc.errno in (errno.EIO, errno.ECONNRESET, errno.EBADF):
                return 0
            raise


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte; os.write may write less than asked on pipes."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_line(fd: int, line: bytes) -> None:
    """Write one message and its newline without copying a multi-MB line to append b"\\n"."""
    total = len(line) + 1
    written = os.writev(fd, (line, b"\n"))
    if written < total:
        write_all(fd, (line + b"\n")[written:])


_WS = b" \t\r\n"


def peek_id(head: bytes) -> int | str | None:
    """The top-level "id" of a JSON object whose first bytes are `head`, if it is complete.

    Used only for a message too large to parse, so that its sender still gets an answer to
    the right request. A tiny scanner: strings, nesting depth, and the value after "id" at
    depth 1. Anything it cannot be sure of gives None.
    """
    try:
        return _IdScanner(head).scan()
    except (IndexError, ValueError):
        return None


class _IdScanner:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def scan(self) -> int | str | None:
        self._skip_ws()
        if self.data[self.pos : self.pos + 1] != b"{":
            return None
        self.pos += 1
        while True:
            self._skip_ws()
            key = self._string()
            self._skip_ws()
            if self.data[self.pos : self.pos + 1] != b":":
                return None
            self.pos += 1
            self._skip_ws()
            if key == "id":
                return self._scalar_id()
            self._skip_value()
            self._skip_ws()
            if self.data[self.pos : self.pos + 1] != b",":
                return None
            self.pos += 1

    def _skip_ws(self) -> None:
        while self.data[self.pos] in _WS:
            self.pos += 1

    def _string(self) -> str:
        if self.data[self.pos : self.pos + 1] != b'"':
            raise ValueError("not a string")
        end = self.pos + 1
        while True:
            c = self.data[end]
            if c == 0x5C:  # backslash: skip the escaped byte
                end += 2
                continue
            if c == 0x22:
                break
            end += 1
        text = json.loads(self.data[self.pos : end + 1])
        self.pos = end + 1
        return str(text)

    def _scalar_id(self) -> int | str | None:
        if self.data[self.pos : self.pos + 1] == b'"':
            return self._string()
        end = self.pos
        while end < len(self.data) and self.data[end] in b"-0123456789":
            end += 1
        if end == self.pos or self.data[end] not in b",} \t\r\n":
            return None
        value = json.loads(self.data[self.pos : end])
        return value if isinstance(value, int) else None

    def _skip_value(self) -> None:
        depth = 0
        while True:
            c = self.data[self.pos]
            if c == 0x22:
                self._string()
                if depth == 0:
                    return
                continue
            if c in b"{[":
                depth += 1
            elif c in b"}]":
                if depth == 0:
                    return
                depth -= 1
            elif c == 0x2C and depth == 0:
                return
            self.pos += 1
