"""The ends of a relay: what the core (core.Core) needs of a client side and a server side.

The core decides; an end moves bytes. A `Front` is the client side (today one stdin/stdout
pair, stdio.StdioFront; later one HTTP session each); an `Upstream` is one server (today
the jailed child's pipes, process.ProcessUpstream; later a remote HTTP server, or one
instance among several). Each end keeps to this contract:

Framing. `run(deliver)` reads until end of input and calls `deliver` once per message, in
the order the peer sent them: the bytes of one complete JSON-RPC message (no newline, never
empty), or a `framing.Oversize` for a message over the end's `max_message` limit (its size
and first bytes: the core still answers the right id). The core never sees a partial
message, and never a framing detail (newlines, HTTP chunks, SSE events). `deliver` does not
raise (the core handles each message's own faults); `run` returns at end of input (the peer
closed its side, or the end was closed) and raises only on a fault of the end itself.

Back-pressure. `send(line)` takes one complete message (without newline) and may block
while the peer does not read: the core sends from its own threads, never from one that
must not block (the deadline thread hands its cancels to a sender thread). `send` is
thread-safe: several core threads send at once, and one message is never interleaved with
another.

Closing. `send` after the peer went away returns False and drops the message; it never
raises BrokenPipeError (nor, for a peer that is gone, any other error). True means the
message was handed to the transport, not that the peer read it. `close()` means "no more
messages to you": for a process, its stdin is closed so that it sees EOF; later sends
return False. Closing is idempotent, and the reading side ends on its own: `run` returns
when the peer's output ends. An end owns no policy: it never answers, drops or rewrites a
message by itself.

Resources (Upstream only). `usage()` reports the CPU time and peak memory of what serves
the upstream (a process tree for a local child), or None where nothing can be measured
(a remote server). `reset_peaks()` starts a new peak-memory window (the core calls it when
a tool call starts with no other call in flight, so the peak belongs to that call).
`name` names the upstream in records and messages.

Ends are compared and hashed by identity: the core keys its tables by the upstream object.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol, runtime_checkable

from mcpwrap.relay.framing import Oversize

Deliver = Callable[[bytes | Oversize], None]


class Usage(NamedTuple):
    """What an upstream's server used so far: CPU milliseconds of its whole tree since it
    started, and the largest resident set (KiB) since the last reset_peaks() (None when
    not read: see Upstream.usage)."""

    cpu_ms: float
    peak_rss_kb: int | None


@runtime_checkable
class Front(Protocol):
    """The client side: one client session."""

    def run(self, deliver: Deliver) -> None:
        """Deliver each message from the client until its input ends."""

    def send(self, line: bytes) -> bool:
        """One message to the client; False (dropped) once the client is gone."""

    def close(self) -> None:
        """No more messages to the client."""


@runtime_checkable
class Upstream(Protocol):
    """The server side: one MCP server the core routes requests to."""

    name: str

    def run(self, deliver: Deliver) -> None:
        """Deliver each message from the server until its output ends."""

    def send(self, line: bytes) -> bool:
        """One message to the server; False (dropped) once the server is gone."""

    def close(self) -> None:
        """No more messages to the server (a process: its stdin is closed)."""

    def usage(self, *, full: bool = True) -> Usage | None:
        """The server's figures, or None when it cannot be measured. full=False reads
        only the CPU time of the processes known at the last full reading (peak_rss_kb
        None): the cheap reading the core takes as a call starts."""

    def reset_peaks(self) -> None:
        """Start a new peak-memory window; a no-op where nothing is measured."""
