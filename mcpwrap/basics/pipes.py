"""Pipe buffers: a wider pipe carries a large message in fewer wake-ups."""

from __future__ import annotations

import contextlib
import fcntl

# Big pipe buffers mean fewer syscalls per multi-MB message; 1 MiB is the unprivileged max.
PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = 1031


def widen_pipe(fd: int) -> None:
    """Raise a pipe's buffer to PIPE_SIZE where allowed; anything else keeps its default."""
    # ValueError: a negative fd (an end built without one, as in tests).
    with contextlib.suppress(OSError, ValueError):
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
