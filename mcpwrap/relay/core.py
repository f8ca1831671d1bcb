"""The relay's core: decoded messages in, decisions and routed messages out.

The core holds everything a relay decides with: the id tables, the pending calls and their
deadlines, listings and the tool gate, server-to-client requests, tallies. It never touches
an fd, a process or /proc: messages arrive through from_client / from_upstream (called by
each end's reader thread, see ends.py) and leave through the ends' send(); resource figures
come from Upstream.usage(); every record goes through a recorder.Recorder.

Every message is parsed (policy needs the method and id) but forwarded as the original
bytes unless policy rewrites it (capabilities, filtered listings, refused input requests).
Each direction has its own id space, so client requests and server requests live in
separate tables keyed by (type, id): 1 and "1" are different requests, and 0 is a valid id.

Routing. Each client request goes to the upstream `route` picks (default: the first);
its reply goes back to the client, and a reply from another upstream with that id is an
unknown id. Client notifications go to every upstream; a cancel only to the upstream that
holds the request. A server request from upstream U is answered back to U: the table is
keyed by (U, id), and with more than one upstream the id the client sees is rewritten to
one of mcpwrap's own (restored in the client's answer), so that two upstreams' ids never
collide. With one upstream no id is rewritten: the bytes are exactly the peers'.
mcpwrap's own tools/list (the tool gate's listing) goes to the first upstream.

Threads: each end's reader, one for deadlines, one per upstream for queued sends. Shared
tables sit behind one lock; the ends serialise their own writes.
"""

from __future__ import annotations

import heapq
import itertools
import os
import queue
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TextIO

from mcpwrap.audit.recorder import TALLY_WINDOW, Recorder, tool_fields
from mcpwrap.basics import jsontext
from mcpwrap.basics.errors import MCPWrapError
from mcpwrap.basics.units import Rate
from mcpwrap.config.profile import Profile, ToolSpec
from mcpwrap.identity import auth
from mcpwrap.policy import decisions as policy
from mcpwrap.policy.constraints import Resolver
from mcpwrap.policy.decisions import Refusal, Verdict
from mcpwrap.policy.sanitize import (
    clean_line,
    clean_prompt_result,
    clean_tool_result,
    clean_value,
    might_need_cleaning,
)
from mcpwrap.relay.ends import Front, Upstream
from mcpwrap.relay.framing import PEEK_BYTES, Oversize, peek_id
from mcpwrap.relay.ratelimit import RateLimiter
from mcpwrap.supply.toolgate import Alert, Gate, Status

Key = tuple[bool, object]  # (is_string, id): JSON ids 1 and "1" are different requests
Route = Callable[[dict[str, Any]], Upstream]  # the upstream that serves a client request
_REMEMBERED = 4096  # ids answered locally, kept to swallow a later cancel for them
_LISTING_ID = "mcpwrap-pins-"  # ids of mcpwrap's own tools/list requests to the server
_ALIAS_ID = "mcpwrap-up-"  # server request ids the client sees, with several upstreams
_LISTING_PAGES = 1000  # a server that pages forever does not hold calls forever
_MAX_WAIT = 3600.0  # the deadline thread wakes at least this often (threading caps waits)


def _key(msg_id: object) -> Key:
    return (isinstance(msg_id, str), msg_id)


def _valid_id(msg_id: object) -> bool:
    return isinstance(msg_id, str) or (isinstance(msg_id, int) and not isinstance(msg_id, bool))


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


class _Listing:
    """mcpwrap's own tools/list, page by page: calls wait for it when a tool's definition
    is not known yet (no listing since the start, or the server said its tools changed)."""

    __slots__ = ("msg_id", "names", "pages", "stale", "timer")

    def __init__(self) -> None:
        self.msg_id = ""
        self.names: list[str] = []
        self.pages = 0
        self.stale = False  # the tools changed again while this listing ran
        self.timer: threading.Timer | None = None


class RelayOptions(NamedTuple):
    max_message: int
    cwd: str
    resolve: Resolver = os.path.realpath
    clock: Callable[[], float] = time.monotonic


class _FromServer(NamedTuple):
    """A server request forwarded to the client, not answered yet."""

    upstream: Upstream
    msg_id: object  # as the upstream sent it
    method: str


class Core:
    """The relay between one client (`front`) and its upstreams (the first one is where
    mcpwrap's own requests go). Callers run front.run(core.from_client), one
    upstream.run(core.deliverer(upstream)) per upstream and run_deadlines(), each in a
    thread of its own."""

    def __init__(
        self,
        profile: Profile,
        *,
        front: Front,
        upstreams: Sequence[Upstream],
        recorder: Recorder,
        limiter: RateLimiter,
        options: RelayOptions,
        log: TextIO = sys.stderr,
        gate: Gate | None = None,
        redact: Callable[[str], str] = str,
        route: Route | None = None,
    ) -> None:
        if not upstreams:
            raise ValueError("the relay's core needs at least one upstream")
        self._redact = redact  # masks secret values in server text shown on stderr
        # The run's token; replaced by the session's watcher when it is revoked or rotated.
        self.tokens = auth.TokenState(None)
        self._auth_on = profile.auth.required is not None
        self.profile = profile
        self._front = front
        self._upstreams = tuple(upstreams)
        self._first = self._upstreams[0]
        self._route = route if len(self._upstreams) > 1 else None  # one: nothing to choose
        self._aliased = len(self._upstreams) > 1  # server request ids rewritten for the client
        self._rec = recorder
        self.agent = recorder.agent
        self._limiter = limiter
        self._opt = options
        self._log = log
        self._lock = threading.Lock()
        self._pending: dict[Key, Pending] = {}
        self._in_flight: dict[str, int] = {}
        self._calls_in_flight = 0
        self._calls_on: dict[Upstream, int] = {}  # tools/call in flight on each upstream
        self._progress: dict[Key, Upstream] = {}  # progress token -> who may report on it
        self._local: OrderedDict[Key, str] = OrderedDict()  # answered by us, never forwarded
        # Server requests forwarded to the client, by the id the client sees.
        self._from_server: dict[Key, _FromServer] = {}
        # With several upstreams: (upstream, the id it sent) -> the id the client sees.
        self._alias_of: dict[tuple[Upstream, Key], Key] = {}
        self._alias_seq = itertools.count(1)
        self._refused_server: OrderedDict[tuple[Upstream, Key], str] = OrderedDict()
        self._deadlines: list[tuple[float, int, Key]] = []
        self._deadline_seq = itertools.count()
        self._deadline_wake = threading.Condition(self._lock)
        self._closed = threading.Event()
        self._queues: dict[Upstream, queue.SimpleQueue[bytes]] = {}  # see _send_later
        self._gate = gate or Gate(None, profile.policy.descriptions)
        self._listing: _Listing | None = None
        self._listing_seq = itertools.count(1)
        self._held: list[tuple[dict[str, Any], object, bytes]] = []  # calls waiting for it
        self._notes: list[bytes] = []  # log notifications to send after the current reply
        self._protocol_meta: dict[str, Any] | None = None  # a 2026 client's _meta version
        # Told the id of each tools/call that ends, under the lock (the egress proxy
        # closes connections held open only by that call); must not block.
        self.on_call_end: Callable[[object], None] | None = None

    @property
    def audit_broken(self) -> str | None:
        """Why records cannot be written (every further call is refused), or None."""
        return self._rec.audit_broken

    # --- messages in ---------------------------------------------------------------------

    def from_client(self, item: bytes | Oversize) -> None:
        """One message from the client (Front.run's deliver): never raises."""
        try:
            if isinstance(item, Oversize):
                self._client_oversize(item)
            else:
                self._client_line(item)
        except Exception as exc:  # one message must never stop a direction
            self._unhandled("client", item, exc)

    def from_upstream(self, upstream: Upstream, item: bytes | Oversize) -> None:
        """One message from `upstream`: never raises."""
        try:
            if isinstance(item, Oversize):
                self._server_oversize(upstream, item)
            else:
                self._server_line(upstream, item)
        except Exception as exc:  # one message must never stop a direction
            self._unhandled("server", item, exc)

    def deliverer(self, upstream: Upstream) -> Callable[[bytes | Oversize], None]:
        """The `deliver` to give upstream.run()."""
        return lambda item: self.from_upstream(upstream, item)

    def _unhandled(self, side: str, item: bytes | Oversize, exc: BaseException) -> None:
        """A message that broke its handler: recorded; a client request that was not
        forwarded is answered, so that every request gets its one reply."""
        head = item.head if isinstance(item, Oversize) else item[:PEEK_BYTES]
        reason = f"mcpwrap could not handle this {side} message: {type(exc).__name__}: {exc}"
        reason = clean_text_short(reason)
        try:
            self._warn(reason)
            self._rec.record(
                "protocol", decision="drop", rule="protocol.internal", reason=reason, side=side
            )
            msg_id = peek_id(head)
            if side != "client" or not _valid_id(msg_id):
                return
            with self._lock:
                forwarded = _key(msg_id) in self._pending
            if not forwarded:
                self._remember_local(msg_id)
                self._front.send(_encode(_error(msg_id, policy.INTERNAL_ERROR, reason)))
        except Exception as again:  # the report itself failed: say so, keep pumping
            self._warn(f"{reason}; and reporting it failed: {again!r}")

    def run_deadlines(self) -> None:
        """Expire requests whose deadline passed, until close(). It never writes to an
        upstream (a server that stopped reading would hold it): cancels go through
        _send_later. It also writes the tallies of flooded drops once a second."""
        while True:
            with self._lock:
                if self._closed.is_set():
                    return
                expired = self._take_expired(self._opt.clock())
                if not expired:
                    self._deadline_wake.wait(self._next_wake())
            for pending in expired:
                try:
                    self._send_timeout(pending)
                except Exception as exc:  # one failed timeout must not end every deadline
                    self._warn(f"could not time out request {pending.msg_id!r}: {exc!r}")
            self._rec.flush(self._opt.clock())

    def _next_wake(self) -> float:
        """Seconds until the next deadline or tally flush; the caller holds the lock."""
        wake = _MAX_WAIT if not self._rec.tally_pending() else TALLY_WINDOW
        if self._deadlines:
            wake = min(wake, max(0.0, self._deadlines[0][0] - self._opt.clock()))
        return wake

    def _take_expired(self, now: float) -> list[Pending]:
        """Unregister every call past its deadline; the caller holds the lock."""
        expired = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, key = heapq.heappop(self._deadlines)
            pending = self._pending.get(key)
            if pending is not None and pending.deadline is not None and pending.deadline <= now:
                self._unregister(key)
                self._local[key] = "timed out"
                self._trim(self._local)
                expired.append(pending)
        return expired

    def close(self) -> None:
        with self._lock:
            self._closed.set()
            self._deadline_wake.notify_all()
        self._rec.flush(float("inf"))

    # --- client to server ----------------------------------------------------------------

    def _client_line(self, line: bytes) -> None:
        try:
            msg = _decode(line)
        except ValueError as exc:
            # The id, where it can be read before the fault: the client can match the reply.
            msg_id = peek_id(line[:PEEK_BYTES])
            self._protocol_refusal(
                msg_id if _valid_id(msg_id) else None,
                policy.PARSE_ERROR,
                f"Parse error: {exc}",
                "protocol.json",
                len(line),
            )
            return
        if not isinstance(msg, dict):
            reason = (
                "JSON-RPC batches are not supported (MCP removed them in 2025-06-18)"
                if isinstance(msg, list)
                else "a message must be a JSON object"
            )
            self._protocol_refusal(
                None, policy.INVALID_REQUEST, reason, "protocol.shape", len(line)
            )
            return
        method = msg.get("method")
        if method is None and "id" in msg:
            self._client_response(msg, line)
        elif not isinstance(method, str) or ("id" in msg and not _valid_id(msg["id"])):
            msg_id = msg.get("id") if _valid_id(msg.get("id")) else None
            self._protocol_refusal(
                msg_id, policy.INVALID_REQUEST, "Invalid Request", "protocol.shape", len(line)
            )
        elif "id" in msg:
            self._client_request(msg, method, line)
        else:
            self._client_notification(msg, method, line)

    def _client_request(self, msg: dict[str, Any], method: str, line: bytes) -> None:
        if isinstance(msg["id"], str) and msg["id"].startswith(_LISTING_ID):
            reason = f"request ids starting with {_LISTING_ID!r} are mcpwrap's own"
            self._protocol_refusal(
                msg["id"], policy.INVALID_REQUEST, reason, "protocol.reserved_id", len(line)
            )
            return
        params = msg.get("params")
        self._note_identity(method, params)
        if method == "tools/call":
            self._client_call(msg, params, line)
            return
        verdict = policy.decide_client_request(self.profile.policy, method, params)
        if not verdict.allowed:
            self._refuse_request(msg["id"], method, verdict, len(line))
            return
        line = self._edit_client_capabilities(msg, method, params) or line
        pending = Pending(msg["id"], method, self._opt.clock(), len(line))
        # A server that never answers (initialize included) must not hold the client.
        pending.deadline = pending.started + self.profile.policy.timeout
        self._forward(pending, msg, params, line)

    def _client_call(self, msg: dict[str, Any], params: object, line: bytes) -> None:
        decided = policy.decide_call(
            self.profile, params, cwd=self._opt.cwd, resolve=self._opt.resolve
        )
        tool, verdict = decided.tool, decided.verdict
        arguments = params.get("arguments") if isinstance(params, dict) else None
        broken = self._rec.audit_broken
        if verdict.allowed and broken is not None:
            verdict = policy.refuse_result("audit", f"the audit log cannot be written: {broken}")
        if verdict.allowed and tool is not None and self._auth_on:
            verdict = auth.call_verdict(self.profile.auth, self.tokens, tool, time.time())
        if verdict.allowed and tool is not None and self._gate.active:
            gated = self._gate_verdict(msg, params, line, tool.name)
            if gated is None:
                return  # held until mcpwrap's own listing says what the tool is now
            verdict = gated
        if verdict.allowed and tool is not None:
            verdict = self._limits_verdict(tool)
        if not verdict.allowed:
            self._refuse_call(
                msg_id=msg["id"],
                params=params,
                tool=tool,
                arguments=arguments,
                verdict=verdict,
                size=len(line),
            )
            return
        assert tool is not None
        line = self._edit_client_capabilities(msg, "tools/call", params) or line
        now = self._opt.clock()
        pending = Pending(msg["id"], "tools/call", now, len(line), tool)
        pending.deadline = now + policy.call_timeout(self.profile, tool)
        pending.arguments = arguments
        if self._forward(pending, msg, params, line):
            # While the server works: encode the record's fixed fields now, so the reply's
            # path only encodes the outcome. A reply that wins the race makes its own.
            pending.prefix = self._call_prefix(pending)

    def _gate_verdict(
        self, msg: dict[str, Any], params: object, line: bytes, name: str
    ) -> Verdict | None:
        """The lock's and the description checks' verdict, or None: the call is held."""
        start = None
        with self._lock:
            check = self._gate.check_call(name)
            if check.status is Status.UNKNOWN:
                self._held.append((msg, params, line))
                start = self._want_listing()
        if check.status is Status.OK:
            return policy.allow(f"tools.{name}")
        if check.status is not Status.UNKNOWN:
            return policy.refuse_result(check.rule, check.reason)
        if start is not None:
            self._send_listing(start, None)
        return None

    def _limits_verdict(self, tool: ToolSpec) -> Verdict:
        tokens = self.tokens
        with self._lock:
            verdict = policy.concurrency_verdict(tool, self._in_flight.get(tool.name, 0))
            if verdict.allowed:
                verdict = auth.concurrency_verdict(tokens, self._calls_in_flight)
        if verdict.allowed and tool.rate is not None:
            verdict = self._rate(f"{self.profile.name}/{tool.name}", tool.rate, tool)
        rate = auth.token_rate(tokens)
        if verdict.allowed and rate is not None and tokens.token is not None:
            verdict = self._rate(f"token/{tokens.token.id}", rate, None)
        return verdict

    def _rate(self, key: str, rate: Rate, tool: ToolSpec | None) -> Verdict:
        """A token from the shared bucket `key` (the tool's, or the run's token's)."""
        rule = f"tools.{tool.name}.rate" if tool is not None else "token.rate"
        try:
            wait = self._limiter.take(key, rate)
        except MCPWrapError as exc:
            return policy.refuse_result(rule, str(exc))
        if tool is not None:
            return policy.rate_verdict(tool, wait)
        if wait <= 0:
            return policy.allow(rule)
        return policy.refuse_result(rule, f"the token's rate is used up; retry in {wait:.1f} s")

    def _forward(self, pending: Pending, msg: dict[str, Any], params: object, line: bytes) -> bool:
        key = _key(pending.msg_id)
        upstream = self._first if self._route is None else self._route(msg)
        pending.upstream = upstream
        pending.progress = _progress_token(params)
        pending.modern = _is_modern(params)
        with self._lock:
            if key in self._pending:
                duplicate = True
            else:
                duplicate = False
                self._register(key, pending)
        if duplicate:
            reason = f"request id {pending.msg_id!r} is already in flight"
            self._protocol_refusal(
                pending.msg_id, policy.INVALID_REQUEST, reason, "protocol.duplicate_id", len(line)
            )
            return False
        upstream.send(line)
        return True

    def _register(self, key: Key, pending: Pending) -> None:
        """Add a pending request; the caller holds the lock."""
        upstream = pending.upstream
        assert upstream is not None
        self._pending[key] = pending
        if pending.progress is not None:
            self._progress[_key(pending.progress)] = upstream
        if pending.tool is not None:
            self._in_flight[pending.tool.name] = self._in_flight.get(pending.tool.name, 0) + 1
            self._calls_in_flight += 1
            calls = self._calls_on[upstream] = self._calls_on.get(upstream, 0) + 1
            if calls == 1:
                upstream.reset_peaks()  # only when alone: a reset would cut a running call's peak
            usage = upstream.usage(full=False)
            if usage is not None:
                pending.cpu_start = usage.cpu_ms
        if pending.deadline is not None:
            self._prune_deadlines()
            earliest = self._deadlines[0][0] if self._deadlines else None
            heapq.heappush(self._deadlines, (pending.deadline, next(self._deadline_seq), key))
            # Wake the deadline thread only if it now has to wake sooner: a wake per call
            # costs a thread switch and a fight for the GIL on the hot path.
            if earliest is None or pending.deadline < earliest:
                self._deadline_wake.notify()

    def _prune_deadlines(self) -> None:
        """Drop entries of requests that ended; the caller holds the lock.

        Entries stay in the heap when their request ends (removal from a heap is costly),
        so a busy session would keep one per request until its deadline; once they
        outnumber the live requests (every forwarded request has a deadline), the heap is
        rebuilt from the live ones.
        """
        if len(self._deadlines) <= 64 + 2 * len(self._pending):
            return
        live = [e for e in self._deadlines if self._pending.get(e[2]) is not None]
        heapq.heapify(live)
        self._deadlines = live

    def _unregister(self, key: Key) -> Pending | None:
        """Remove a pending request; the caller holds the lock."""
        pending = self._pending.pop(key, None)
        if pending is None:
            return None
        if pending.progress is not None:
            self._progress.pop(_key(pending.progress), None)
        if pending.tool is not None:
            self._in_flight[pending.tool.name] -= 1
            self._calls_in_flight -= 1
            if pending.upstream is not None:  # always: set by _forward
                self._calls_on[pending.upstream] -= 1
            if self.on_call_end is not None:
                self.on_call_end(pending.msg_id)
        return pending

    def _unregister_from(self, upstream: Upstream, key: Key) -> Pending | None:
        """Remove a pending request if `upstream` holds it (a reply from another is to an
        unknown id); the caller holds the lock."""
        pending = self._pending.get(key)
        if pending is None or pending.upstream is not upstream:
            return None
        return self._unregister(key)

    def _client_notification(self, msg: dict[str, Any], method: str, line: bytes) -> None:
        verdict = policy.decide_client_notification(self.profile.policy, method)
        if not verdict.allowed:
            self._drop_notification(method, verdict)
            return
        if method == "notifications/cancelled":
            holder = self._client_cancel(msg.get("params"))
            if holder is not None:
                holder.send(line)
            return
        for upstream in self._upstreams:
            upstream.send(line)

    def _client_cancel(self, params: object) -> Upstream | None:
        """The upstream the cancel should reach: only the one that has the request."""
        request_id = params.get("requestId") if isinstance(params, dict) else None
        key = _key(request_id)
        with self._lock:
            pending = self._unregister(key)
            if pending is None:
                return None  # answered by us, timed out, or unknown: nothing to stop
            self._local[key] = "cancelled"
            self._trim(self._local)
        if pending.tool is not None:
            self._record_call(
                pending,
                outcome="cancelled",
                bytes_out=0,
                rule="protocol.cancelled",
            )
        return pending.upstream

    def _client_response(self, msg: dict[str, Any], line: bytes) -> None:
        """The client's answer to a request the server made."""
        key = _key(msg.get("id"))
        with self._lock:
            asked = self._from_server.pop(key, None)
            if asked is not None and self._aliased:
                self._alias_of.pop((asked.upstream, _key(asked.msg_id)), None)
        if asked is None:
            self._rec.record(
                "protocol",
                decision="drop",
                rule="protocol.unknown_id",
                reason=f"client answered unknown server request id {msg.get('id')!r}",
            )
            return
        if self._aliased:  # the id the upstream sent, in place of the one the client saw
            line = _encode({**msg, "id": asked.msg_id})
        asked.upstream.send(line)

    def _note_identity(self, method: str, params: object) -> None:
        if not isinstance(params, dict):
            return
        meta = params.get("_meta")
        if isinstance(meta, dict) and policy.META_PROTOCOL_VERSION in meta:
            self._protocol_meta = {policy.META_PROTOCOL_VERSION: meta[policy.META_PROTOCOL_VERSION]}
        if method == "initialize":
            self.agent.note_client_info(params.get("clientInfo"))
            return
        meta = params.get("_meta")
        if isinstance(meta, dict) and policy.META_CLIENT_INFO in meta and not self.agent.client:
            self.agent.note_client_info(meta[policy.META_CLIENT_INFO])

    def _edit_client_capabilities(
        self, msg: dict[str, Any], method: str, params: object
    ) -> bytes | None:
        """The request re-encoded without denied client capabilities, or None if unchanged."""
        if not isinstance(params, dict):
            return None
        if method == "initialize" and isinstance(params.get("capabilities"), dict):
            caps = policy.client_capabilities(self.profile.policy, params["capabilities"])
            if caps is None:
                return None
            return _encode({**msg, "params": {**params, "capabilities": caps}})
        meta = params.get("_meta")
        if not isinstance(meta, dict) or not isinstance(meta.get(policy.META_CAPABILITIES), dict):
            return None
        caps = policy.client_capabilities(self.profile.policy, meta[policy.META_CAPABILITIES])
        if caps is None:
            return None
        new_meta = {**meta, policy.META_CAPABILITIES: caps}
        return _encode({**msg, "params": {**params, "_meta": new_meta}})

    # --- server to client ----------------------------------------------------------------

    def _server_line(self, upstream: Upstream, line: bytes) -> None:
        try:
            msg = _decode(line)
        except ValueError as exc:
            self._server_garbage(line, f"invalid JSON ({exc})")
            return
        if not isinstance(msg, dict):
            self._server_garbage(line, "not a JSON object")
            return
        method = msg.get("method")
        if method is None and _valid_id(msg.get("id")) and ("result" in msg or "error" in msg):
            self._server_response(upstream, msg, line)
        elif isinstance(method, str) and "id" in msg and _valid_id(msg["id"]):
            self._server_request(upstream, msg, method, line)
        elif isinstance(method, str) and "id" not in msg:
            self._server_notification(upstream, msg, method, line)
        else:
            self._server_garbage(line, "not a valid JSON-RPC message")

    def _server_response(self, upstream: Upstream, msg: dict[str, Any], line: bytes) -> None:
        ours = isinstance(msg["id"], str) and msg["id"].startswith(_LISTING_ID)
        if ours and upstream is self._first and self._listing_reply(msg):
            return
        key = _key(msg["id"])
        with self._lock:
            pending = self._unregister_from(upstream, key)
            answered = self._local.get(key)
        if pending is None:
            reason = (
                f"reply to a request that was {answered}"
                if answered
                else "reply to an unknown request id"
            )
            self._rec.drop(
                "protocol",
                decision="drop",
                rule="protocol.unknown_id",
                reason=f"{reason}: {msg['id']!r}",
                bytes_out=len(line),
            )
            return
        try:
            out = self._shape_response(pending, msg, line) or line
        except Exception as exc:  # the call left the table: it still gets a record and a reply
            reason = clean_text_short(f"mcpwrap could not relay the server's reply: {exc!r}")
            self._warn(reason)
            msg = _error(msg["id"], policy.INTERNAL_ERROR, reason)
            out = _encode(msg)
        if pending.tool is not None:
            self._finish_call(pending, msg, len(out))
        self._front.send(out)
        self._send_notes()

    def _shape_response(self, pending: Pending, msg: dict[str, Any], line: bytes) -> bytes | None:
        """The reply re-encoded where policy edits it, or None to forward it as it came."""
        result = msg.get("result")
        if not isinstance(result, dict):
            return None
        method = pending.method
        if method in ("initialize", "server/discover"):
            return self._server_info(msg, result)
        if method == "tools/list":
            return self._tools_page(msg, result)
        if method in ("resources/list", "resources/templates/list", "prompts/list"):
            return self._shape_listing(msg, result, method, might_need_cleaning(line))
        refused = self._input_requests(pending, msg, result)
        clean = _CLEANERS.get(method)
        if refused is not None or clean is None or not might_need_cleaning(line):
            return refused  # a reply with nothing to clean is not scanned twice, or at all
        cleaned = clean(result)
        return None if cleaned is result else _encode({**msg, "result": cleaned})

    def _shape_listing(
        self, msg: dict[str, Any], result: dict[str, Any], method: str, dirty: bool
    ) -> bytes | None:
        """resources, resource templates and prompts: filtered by the profile, their
        descriptive text cleaned."""
        pol = self.profile.policy
        if method == "resources/list":
            return self._filtered(
                msg,
                result,
                "resources",
                lambda i: policy.filter_listing(pol.resources, i, "uri"),
                dirty,
            )
        if method == "resources/templates/list":
            return self._filtered(
                msg,
                result,
                "resourceTemplates",
                lambda i: policy.filter_listing(pol.resources, i, "uriTemplate"),
                dirty,
            )
        if method == "prompts/list":
            return self._filtered(
                msg,
                result,
                "prompts",
                lambda i: policy.filter_listing(pol.prompts, i, "name"),
                dirty,
            )
        return None

    def _server_info(self, msg: dict[str, Any], result: dict[str, Any]) -> bytes | None:
        """initialize (or discover): denied capabilities removed; instructions checked
        against the lock and cleaned."""
        edited = result
        if isinstance(result.get("capabilities"), dict):
            caps = policy.server_capabilities(self.profile.policy, result["capabilities"])
            if caps is not None:
                edited = {**edited, "capabilities": caps}
        text = result.get("instructions")
        if isinstance(text, str):
            with self._lock:
                keep, alerts = self._gate.instructions(text)
            self._alert(alerts)
            if keep is None:
                edited = {k: v for k, v in edited.items() if k != "instructions"}
            elif keep != text:
                edited = {**edited, "instructions": keep}
        return None if edited is result else _encode({**msg, "result": edited})

    def _tools_page(self, msg: dict[str, Any], result: dict[str, Any]) -> bytes | None:
        """One page of the client's tools/list: hidden by the profile, then checked against
        the lock and for poisoning, and cleaned."""
        items = result.get("tools")
        if not isinstance(items, list):
            return None
        visible = policy.visible_tools(self.profile, items)
        if self._auth_on:
            visible = [t for t in visible if self._token_allows(t)]
        with self._lock:
            review = self._gate.review(visible, _names(items))
        self._alert(review.alerts)
        if len(visible) == len(items) and not review.changed:
            return None
        return _encode({**msg, "result": {**result, "tools": review.tools}})

    def _token_allows(self, tool: object) -> bool:
        name = tool.get("name") if isinstance(tool, dict) else None
        spec = self.profile.tool(name) if isinstance(name, str) else None
        if spec is None:
            return False
        return auth.visible(self.profile.auth, self.tokens, spec, time.time())

    def set_token(self, state: auth.TokenState) -> None:
        """The session's watcher: the token was given, revoked or rotated."""
        self.tokens = state
        self._rec.token = state.token.id if state.token is not None else None
        self._auth_on = self.profile.auth.required is not None or state.token is not None

    def _filtered(
        self,
        msg: dict[str, Any],
        result: dict[str, Any],
        key: str,
        keep: Callable[[list[Any]], list[Any]],
        dirty: bool,
    ) -> bytes | None:
        items = result.get(key)
        if not isinstance(items, list):
            return None
        kept = keep(items)
        cleaned = [_clean_descriptive(item) for item in kept] if dirty else kept
        if len(kept) == len(items) and all(a is b for a, b in zip(cleaned, kept, strict=True)):
            return None
        return _encode({**msg, "result": {**result, key: cleaned}})

    # --- mcpwrap's own tools/list ------------------------------------------------------------

    def _want_listing(self) -> _Listing | None:
        """A new listing to send, or None if one is running; the caller holds the lock."""
        if self._listing is not None:
            return None
        self._listing = _Listing()
        return self._listing

    def _send_listing(self, listing: _Listing, cursor: str | None) -> None:
        params: dict[str, Any] = {}
        if cursor is not None:
            params["cursor"] = cursor
        if self._protocol_meta is not None:
            params["_meta"] = dict(self._protocol_meta)
        with self._lock:
            listing.msg_id = f"{_LISTING_ID}{next(self._listing_seq)}"
            listing.pages += 1
            if listing.timer is None:
                listing.timer = threading.Timer(
                    self.profile.policy.timeout, self._listing_timeout, (listing,)
                )
                listing.timer.daemon = True
                listing.timer.start()
            request = {"jsonrpc": "2.0", "id": listing.msg_id, "method": "tools/list"}
        self._first.send(_encode({**request, "params": params}))

    def _listing_reply(self, msg: dict[str, Any]) -> bool:
        """True if `msg` answers mcpwrap's own listing (and was handled here)."""
        with self._lock:
            listing = self._listing
            if listing is None or listing.msg_id != msg["id"]:
                return False
        result = msg.get("result")
        tools = result.get("tools") if isinstance(result, dict) else None
        if not isinstance(tools, list):
            error = msg.get("error")
            what = error.get("message") if isinstance(error, dict) else "no tools array"
            self._end_listing(
                listing, f"the server did not list its tools ({clean_text_short(what)})"
            )
            return True
        assert isinstance(result, dict)
        names = _names(tools)
        with self._lock:
            review = self._gate.review(policy.visible_tools(self.profile, tools), names)
            listing.names += names
        self._alert(review.alerts)
        self._send_notes()
        cursor = result.get("nextCursor")
        if isinstance(cursor, str) and cursor and listing.pages < _LISTING_PAGES:
            self._send_listing(listing, cursor)
        else:
            self._end_listing(listing, None)
        return True

    def _listing_timeout(self, listing: _Listing) -> None:
        seconds = self.profile.policy.timeout
        self._end_listing(listing, f"the server did not list its tools within {seconds:g} s")

    def _end_listing(self, listing: _Listing, failure: str | None) -> None:
        """Release the held calls: checked again now that the tools are known, or refused."""
        with self._lock:
            if self._listing is not listing:
                return  # timed out, or ended by the server's exit
            self._listing = None
            if listing.timer is not None:
                listing.timer.cancel()
            restart = listing.stale and failure is None
            alerts = [] if failure or restart else self._gate.listing_complete(listing.names)
            held, self._held = ([], self._held) if restart else (self._held, [])
            again = self._want_listing() if restart else None
        if again is not None:
            self._send_listing(again, None)
            return
        self._alert(alerts)
        self._send_notes()
        if held and failure is not None:
            self._release(held, failure)
        elif held:
            # A thread of its own: the upstream's reader must not block sending to it.
            threading.Thread(target=self._release, args=(held, None), daemon=True).start()

    def _release(
        self, held: list[tuple[dict[str, Any], object, bytes]], failure: str | None
    ) -> None:
        for msg, params, line in held:
            if failure is None:
                self._client_call(msg, params, line)
                continue
            name = params.get("name") if isinstance(params, dict) else None
            self._refuse_call(
                msg_id=msg["id"],
                params=params,
                tool=self.profile.tool(name) if isinstance(name, str) else None,
                arguments=params.get("arguments") if isinstance(params, dict) else None,
                verdict=policy.refuse_result("pins.listing", failure),
                size=len(line),
            )

    def _tools_changed(self) -> None:
        """notifications/tools/list_changed: nothing seen so far is known any longer."""
        with self._lock:
            self._gate.invalidate()
            if self._listing is not None:
                self._listing.stale = True
            start = self._want_listing()
        if start is not None:
            self._send_listing(start, None)

    def _alert(self, alerts: list[Alert]) -> None:
        """Each alert: an audit record; and unless it is a note, a warning on stderr and a
        log notification to the client, sent after the reply being shaped."""
        for alert in alerts:
            event = "pins" if alert.rule.startswith("pins.") else "descriptions"
            self._rec.record(
                event,
                decision=alert.decision,
                rule=alert.rule,
                tool=alert.tool,
                reason=alert.reason,
                **alert.fields,
            )
            if alert.decision == "note":
                continue
            self._warn(alert.reason)
            note = {
                "jsonrpc": "2.0",
                "method": "notifications/message",
                "params": {"level": "warning", "logger": "mcpwrap", "data": alert.reason},
            }
            with self._lock:
                self._notes.append(_encode(note))

    def _send_notes(self) -> None:
        if not self._notes:  # the common case, read without the lock: a note added
            return  # meanwhile goes out after the reply that follows it
        with self._lock:
            notes, self._notes = self._notes, []
        for note in notes:
            self._front.send(note)

    def _input_requests(
        self, pending: Pending, msg: dict[str, Any], result: dict[str, Any]
    ) -> bytes | None:
        verdict = policy.decide_input_requests(self.profile.policy, result)
        if verdict.allowed:
            return None
        self._record_refusal("server_request", verdict, method=pending.method)
        if pending.method == "tools/call":
            return _encode(_tool_error(msg["id"], verdict, pending.modern))
        return _encode(_error(msg["id"], verdict.code, verdict.reason))

    def _finish_call(self, pending: Pending, msg: dict[str, Any], bytes_out: int) -> None:
        result = msg.get("result")
        if "error" in msg:
            outcome = "error"
        elif isinstance(result, dict) and result.get("resultType") == "input_required":
            outcome = "input_required"
        elif isinstance(result, dict) and result.get("isError") is True:
            outcome = "isError"
        else:
            outcome = "ok"
        self._record_call(
            pending,
            outcome=outcome,
            bytes_out=bytes_out,
            rule=f"tools.{pending.tool.name}" if pending.tool else "",
        )

    def _server_request(
        self, upstream: Upstream, msg: dict[str, Any], method: str, line: bytes
    ) -> None:
        key = _key(msg["id"])
        verdict = policy.decide_server_request(self.profile.policy, method)
        if not verdict.allowed:
            with self._lock:
                self._refused_server[(upstream, key)] = method
                self._trim(self._refused_server)
            self._record_refusal("server_request", verdict, method=method, bytes_in=len(line))
            upstream.send(_encode(_error(msg["id"], verdict.code, verdict.reason)))
            return
        asked = _FromServer(upstream, msg["id"], method)
        if not self._aliased:
            with self._lock:
                self._from_server[key] = asked
            self._front.send(line)
            return
        with self._lock:
            # An id of mcpwrap's own: two upstreams may both ask with id 1.
            alias = f"{_ALIAS_ID}{next(self._alias_seq)}"
            before = self._alias_of.pop((upstream, key), None)
            if before is not None:  # the upstream reused an id still open: the new one wins
                self._from_server.pop(before, None)
            self._alias_of[(upstream, key)] = _key(alias)
            self._from_server[_key(alias)] = asked
        self._front.send(_encode({**msg, "id": alias}))

    def _server_notification(
        self, upstream: Upstream, msg: dict[str, Any], method: str, line: bytes
    ) -> None:
        verdict = policy.decide_server_notification(self.profile.policy, method)
        params = msg.get("params")
        if verdict.allowed and method == "notifications/progress":
            token = params.get("progressToken") if isinstance(params, dict) else None
            with self._lock:
                known = self._progress.get(_key(token)) is upstream
            if not known:
                verdict = policy.refuse(
                    "protocol.progress", "progress for a request that is not in flight"
                )
        if verdict.allowed and method == "notifications/cancelled":
            request_id = params.get("requestId") if isinstance(params, dict) else None
            alias = self._server_cancel(upstream, request_id)
            if alias is None:
                return  # it cancels a request we refused: the client never saw it
            if self._aliased:
                assert isinstance(params, dict)  # it named a request: params is an object
                line = _encode({**msg, "params": {**params, "requestId": alias[1]}})
        if not verdict.allowed:
            self._drop_notification(method, verdict)
            return
        if method == "notifications/tools/list_changed" and self._gate.active:
            self._tools_changed()
        if method == "notifications/message" and might_need_cleaning(line):
            cleaned = clean_value(params)
            if cleaned is not params:
                line = _encode({**msg, "params": cleaned})
        self._front.send(line)

    def _server_cancel(self, upstream: Upstream, request_id: object) -> Key | None:
        """The id the client knows a server request by, now cancelled by `upstream`;
        None if the client never saw it."""
        key = _key(request_id)
        with self._lock:
            if self._aliased:
                alias = self._alias_of.pop((upstream, key), None)
                if alias is None:
                    return None
                return alias if self._from_server.pop(alias, None) is not None else None
            asked = self._from_server.pop(key, None)
            return key if asked is not None else None

    def _drop_notification(self, method: str, verdict: Verdict) -> None:
        self._rec.drop(
            "notification", decision="drop", method=method, rule=verdict.rule, reason=verdict.reason
        )

    def _server_garbage(self, line: bytes, what: str) -> None:
        written = self._rec.drop(
            "protocol",
            decision="drop",
            rule="protocol.server_output",
            reason=what,
            bytes_out=len(line),
        )
        if written:  # a flood is counted in the log, not repeated on the terminal
            shown = self._redact(clean_line(line[:200]))
            self._warn(f"dropped a server message that is {what}: {shown!r}")

    def _server_oversize(self, upstream: Upstream, item: Oversize) -> None:
        what = f"a {item.size}-byte message over the {self._opt.max_message}-byte limit"
        self._warn(f"dropped {what} from the server")
        msg_id = peek_id(item.head)
        with self._lock:
            pending = self._unregister_from(upstream, _key(msg_id)) if _valid_id(msg_id) else None
        self._rec.record(
            "protocol",
            decision="drop",
            rule="protocol.max_message",
            reason=what,
            bytes_out=item.size,
        )
        if pending is None:
            return
        if pending.tool is not None:
            self._record_call(
                pending,
                outcome="error",
                bytes_out=item.size,
                rule="protocol.max_message",
            )
        self._front.send(
            _encode(_error(pending.msg_id, policy.INTERNAL_ERROR, f"the server sent {what}"))
        )

    # --- answers we give ourselves -------------------------------------------------------

    def _client_oversize(self, item: Oversize) -> None:
        msg_id = peek_id(item.head)
        reason = (
            f"message of {item.size} bytes is over the limit of {self._opt.max_message} bytes "
            "(mcpwrap run --max-message)"
        )
        self._protocol_refusal(
            msg_id if _valid_id(msg_id) else None,
            policy.INVALID_REQUEST,
            reason,
            "protocol.max_message",
            item.size,
        )

    def _protocol_refusal(
        self, msg_id: object, code: int, reason: str, rule: str, size: int
    ) -> None:
        self._rec.record(
            "protocol",
            decision="refuse",
            rule=rule,
            reason=reason,
            bytes_in=size,
            outcome="refused",
        )
        if msg_id is not None:
            self._remember_local(msg_id)
        self._front.send(_encode(_error(msg_id, code, reason)))

    def _refuse_request(self, msg_id: object, method: str, verdict: Verdict, size: int) -> None:
        self._record_refusal("request", verdict, method=method, bytes_in=size, request_id=msg_id)
        self._remember_local(msg_id)
        self._front.send(_encode(_error(msg_id, verdict.code, verdict.reason)))

    def _refuse_call(
        self,
        *,
        msg_id: object,
        params: object,
        tool: ToolSpec | None,
        arguments: object,
        verdict: Verdict,
        size: int,
    ) -> None:
        name = params.get("name") if isinstance(params, dict) else None
        self._record_refusal(
            "call",
            verdict,
            tool=name,
            bytes_in=size,
            request_id=msg_id,
            **tool_fields(tool),
            **self._rec.arguments(arguments),
        )
        self._remember_local(msg_id)
        answer = (
            _tool_error(msg_id, verdict, _is_modern(params))
            if verdict.refusal is Refusal.RESULT
            else _error(msg_id, verdict.code, verdict.reason)
        )
        self._front.send(_encode(answer))

    def _remember_local(self, msg_id: object) -> None:
        with self._lock:
            self._local[_key(msg_id)] = "refused"
            self._trim(self._local)

    @staticmethod
    def _trim(table: OrderedDict[Any, str]) -> None:
        while len(table) > _REMEMBERED:
            table.popitem(last=False)

    def _send_timeout(self, pending: Pending) -> None:
        """The record and the client's answer at once; the server's cancel is queued, as
        the server may have stopped reading."""
        if pending.tool is not None:
            seconds = policy.call_timeout(self.profile, pending.tool)
            verdict = policy.refuse_result(
                f"tools.{pending.tool.name}.timeout",
                f"tool {pending.tool.name!r} timed out after {seconds:g} s",
            )
            self._record_call(pending, outcome="timeout", bytes_out=0, rule=verdict.rule)
            answer = _tool_error(pending.msg_id, verdict, pending.modern)
        else:
            seconds = self.profile.policy.timeout
            reason = f"the server did not answer {pending.method} within {seconds:g} s"
            self._rec.record(
                "request",
                decision="allow",
                rule="policy.timeout",
                method=pending.method,
                request_id=pending.msg_id,
                outcome="timeout",
                reason=reason,
            )
            answer = _error(pending.msg_id, policy.INTERNAL_ERROR, reason)
            verdict = policy.refuse("policy.timeout", reason)
        self._front.send(_encode(answer))
        cancel = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": pending.msg_id, "reason": verdict.reason},
        }
        assert pending.upstream is not None  # it was forwarded
        self._send_later(pending.upstream, _encode(cancel))

    def _send_later(self, upstream: Upstream, line: bytes) -> None:
        """Send to an upstream from a thread of its own: whoever queues never blocks."""
        with self._lock:
            later = self._queues.get(upstream)
            if later is None:
                later = self._queues[upstream] = queue.SimpleQueue()
                threading.Thread(
                    target=self._send_queued, args=(upstream, later), daemon=True
                ).start()
            later.put(line)

    def _send_queued(self, upstream: Upstream, later: queue.SimpleQueue[bytes]) -> None:
        while not self._closed.is_set():
            upstream.send(later.get())

    def fail_pending(self, reason: str, upstream: Upstream | None = None) -> None:
        """Answer every request still in flight at `upstream` (None: at every upstream):
        it is gone."""
        with self._lock:
            listing = self._listing if upstream in (None, self._first) else None
        if listing is not None:
            self._end_listing(listing, reason)
        with self._lock:
            pendings = [
                self._unregister(k)
                for k, p in list(self._pending.items())
                if upstream is None or p.upstream is upstream
            ]
        for pending in pendings:
            if pending is None:
                continue
            if pending.tool is not None:
                self._record_call(
                    pending,
                    outcome="error",
                    bytes_out=0,
                    rule="protocol.server_exit",
                )
            self._front.send(_encode(_error(pending.msg_id, policy.INTERNAL_ERROR, reason)))

    # --- records ------------------------------------------------------------------------

    def _call_prefix(self, pending: Pending) -> bytes:
        """The fixed fields of an allowed call's record, encoded."""
        return self._rec.call_prefix(
            tool=pending.tool,
            request_id=pending.msg_id,
            bytes_in=pending.bytes_in,
            arguments=pending.arguments,
        )

    def _record_call(self, pending: Pending, *, outcome: str, bytes_out: int, rule: str) -> None:
        duration = (self._opt.clock() - pending.started) * 1000.0
        usage = pending.upstream.usage() if pending.upstream is not None else None
        self._rec.call_end(
            pending.prefix or self._call_prefix(pending),
            rule=rule,
            outcome=outcome,
            duration_ms=round(duration, 3),
            bytes_out=bytes_out,
            cpu_ms=round(usage.cpu_ms - pending.cpu_start, 1) if usage is not None else None,
            peak_rss_kb=usage.peak_rss_kb if usage is not None else None,
        )

    def _record_refusal(self, event: str, verdict: Verdict, **fields: Any) -> None:
        """The record of a message mcpwrap answered (or dropped) instead of relaying."""
        self._rec.refusal(event, verdict.rule, verdict.reason, **fields)

    def calls_in_flight(self) -> list[tuple[str, object]]:
        """(tool, call id) of every tools/call forwarded and not answered yet."""
        with self._lock:
            return [(p.tool.name, p.msg_id) for p in self._pending.values() if p.tool]

    def _warn(self, text: str) -> None:
        try:
            self._log.write(f"mcpwrap: {text}\n")
            self._log.flush()
        except (OSError, ValueError):
            pass


_decode = jsontext.decode
_encode = jsontext.encode


# Results whose text reaches the model, and how each is cleaned.
_CLEANERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "tools/call": clean_tool_result,
    "prompts/get": clean_prompt_result,
}


def _names(tools: list[Any]) -> list[str]:
    return [t["name"] for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)]


def _clean_descriptive(item: object) -> object:
    """A resource or prompt entry with its descriptive text cleaned; names and URIs are
    identifiers the client sends back, so they are left as they are."""
    if not isinstance(item, dict):
        return item
    out = None
    for key in ("description", "title"):
        if key in item:
            cleaned = clean_value(item[key])
            if cleaned is not item[key]:
                out = {**(out or item), key: cleaned}
    return out if out is not None else item


def clean_text_short(value: object) -> str:
    return clean_line(str(value).encode("utf-8", "replace")[:200])


def _progress_token(params: object) -> object:
    meta = params.get("_meta") if isinstance(params, dict) else None
    return meta.get("progressToken") if isinstance(meta, dict) else None


def _error(msg_id: object, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}}


def _tool_error(msg_id: object, verdict: Verdict, modern: bool) -> dict[str, Any]:
    text = f"mcpwrap refused this call: {verdict.reason} (rule: {verdict.rule})"
    result: dict[str, Any] = {"content": [{"type": "text", "text": text}], "isError": True}
    if modern:
        result["resultType"] = "complete"  # required on every 2026-07-28 result
    return {"jsonrpc": "2.0", "id": msg_id, "result": result}


def _is_modern(params: object) -> bool:
    """A request of the 2026-07-28 generation names its protocol version in _meta."""
    meta = params.get("_meta") if isinstance(params, dict) else None
    return isinstance(meta, dict) and policy.META_PROTOCOL_VERSION in meta
