"""Client requests in flight: the table of what was forwarded and not answered yet.

The table keeps, beside the requests themselves, what is counted from them (calls in flight
per tool and per upstream, for the concurrency limits and peak-memory windows), the
progress tokens an upstream may report on, the ids mcpwrap answered itself (a late cancel
or reply for one is recognised), and the deadline heap the deadline thread waits on.

It has no lock of its own: every method and attribute is used with the relay's lock held
(core.Core._lock), as one step of a larger decision taken under that lock.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from mcpwrap.config.profile import ToolSpec
from mcpwrap.relay.ends import Upstream

Key = tuple[bool, object]  # (is_string, id): JSON ids 1 and "1" are different requests
REMEMBERED = 4096  # ids answered locally, kept to swallow a later cancel for them


def key_of(msg_id: object) -> Key:
    return (isinstance(msg_id, str), msg_id)


def valid_id(msg_id: object) -> bool:
    return isinstance(msg_id, str) or (isinstance(msg_id, int) and not isinstance(msg_id, bool))


def trim(table: OrderedDict[Any, str]) -> None:
    """Forget the oldest entries of a table of remembered ids beyond REMEMBERED."""
    while len(table) > REMEMBERED:
        table.popitem(last=False)


class Pending:
    """A client request forwarded to an upstream and not answered yet."""

    __slots__ = (
        "arguments",
        "bytes_in",
        "cpu_start",
        "deadline",
        "method",
        "modern",
        "msg_id",
        "prefix",
        "progress",
        "started",
        "tool",
        "upstream",
    )

    def __init__(
        self,
        msg_id: object,
        method: str,
        started: float,
        bytes_in: int,
        tool: ToolSpec | None = None,
    ) -> None:
        self.upstream: Upstream | None = None  # set when it is forwarded
        self.msg_id = msg_id
        self.method = method
        self.started = started
        self.bytes_in = bytes_in
        self.tool = tool
        self.deadline: float | None = None
        self.progress: object = None
        self.cpu_start = 0.0
        self.arguments: object = None
        self.prefix = b""  # the call record's fixed fields, encoded ahead of the reply
        self.modern = False  # sent in the 2026-07-28 generation: our answers need resultType


class PendingTable:
    """The requests in flight and what is counted from them. The caller holds the relay's
    lock for every use; the attributes are read there too, and changed only here."""

    __slots__ = (
        "_deadline_seq",
        "_deadlines",
        "calls",
        "calls_on",
        "in_flight",
        "local",
        "on_call_end",
        "pending",
        "progress",
    )

    def __init__(self) -> None:
        self.pending: dict[Key, Pending] = {}
        self.in_flight: dict[str, int] = {}  # tools/call in flight for each tool
        self.calls = 0  # tools/call in flight in all
        self.calls_on: dict[Upstream, int] = {}  # tools/call in flight on each upstream
        self.progress: dict[Key, Upstream] = {}  # progress token -> who may report on it
        self.local: OrderedDict[Key, str] = OrderedDict()  # answered by us, never forwarded
        self._deadlines: list[tuple[float, int, Key]] = []
        self._deadline_seq = itertools.count()
        # Told the id of each tools/call that ends (see Core.on_call_end); must not block.
        self.on_call_end: Callable[[object], None] | None = None

    def register(self, key: Key, pending: Pending) -> bool:
        """Add a forwarded request (pending.upstream set, key not in the table). True when
        its deadline is now the earliest: the deadline thread must be woken."""
        upstream = pending.upstream
        assert upstream is not None
        self.pending[key] = pending
        if pending.progress is not None:
            self.progress[key_of(pending.progress)] = upstream
        if pending.tool is not None:
            self.in_flight[pending.tool.name] = self.in_flight.get(pending.tool.name, 0) + 1
            self.calls += 1
            calls = self.calls_on[upstream] = self.calls_on.get(upstream, 0) + 1
            if calls == 1:
                upstream.reset_peaks()  # only when alone: a reset would cut a running call's peak
            usage = upstream.usage(full=False)
            if usage is not None:
                pending.cpu_start = usage.cpu_ms
        if pending.deadline is None:
            return False
        self._prune()
        earliest = self._deadlines[0][0] if self._deadlines else None
        heapq.heappush(self._deadlines, (pending.deadline, next(self._deadline_seq), key))
        # Wake the deadline thread only if it now has to wake sooner: a wake per call
        # costs a thread switch and a fight for the GIL on the hot path.
        return earliest is None or pending.deadline < earliest

    def _prune(self) -> None:
        """Drop deadline entries of requests that ended.

        Entries stay in the heap when their request ends (removal from a heap is costly),
        so a busy session would keep one per request until its deadline; once they
        outnumber the live requests (every forwarded request has a deadline), the heap is
        rebuilt from the live ones.
        """
        if len(self._deadlines) <= 64 + 2 * len(self.pending):
            return
        live = [e for e in self._deadlines if self.pending.get(e[2]) is not None]
        heapq.heapify(live)
        self._deadlines = live

    def unregister(self, key: Key) -> Pending | None:
        """Remove a request: answered, cancelled, timed out or failed."""
        pending = self.pending.pop(key, None)
        if pending is None:
            return None
        if pending.progress is not None:
            self.progress.pop(key_of(pending.progress), None)
        if pending.tool is not None:
            self.in_flight[pending.tool.name] -= 1
            self.calls -= 1
            if pending.upstream is not None:  # always: set when forwarded
                self.calls_on[pending.upstream] -= 1
            if self.on_call_end is not None:
                self.on_call_end(pending.msg_id)
        return pending

    def unregister_from(self, upstream: Upstream, key: Key) -> Pending | None:
        """Remove a request if `upstream` holds it (a reply from another is to an unknown
        id)."""
        pending = self.pending.get(key)
        if pending is None or pending.upstream is not upstream:
            return None
        return self.unregister(key)

    def remember(self, key: Key, why: str) -> None:
        """An id mcpwrap answered itself (`why`: refused, cancelled, timed out)."""
        self.local[key] = why
        trim(self.local)

    def take_expired(self, now: float) -> list[Pending]:
        """Unregister every request past its deadline."""
        expired = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, key = heapq.heappop(self._deadlines)
            pending = self.pending.get(key)
            if pending is not None and pending.deadline is not None and pending.deadline <= now:
                self.unregister(key)
                self.remember(key, "timed out")
                expired.append(pending)
        return expired

    def next_deadline(self) -> float | None:
        """The earliest deadline in the heap (perhaps of a request that ended), or None."""
        return self._deadlines[0][0] if self._deadlines else None
