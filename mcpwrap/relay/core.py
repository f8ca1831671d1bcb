"""The relay's core: decoded messages in, decisions and routed messages out.

The core decides and routes: it owns the one lock, the tables of server-to-client requests,
the tool gate, and the parts that do one job each, whose state that lock guards:
pending.PendingTable (client requests in flight, their counts and deadlines), shaping
(what the profile and the gate edit in a message), listing.ToolLister (mcpwrap's own
tools/list and the calls held for it), replies (the answers mcpwrap composes). It never
touches an fd, a process or /proc: messages arrive through from_client / from_upstream
(called by each end's reader thread, see ends.py) and leave through the ends' send();
resource figures come from Upstream.usage(); every record goes through a
recorder.Recorder.

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
from mcpwrap.basics.errors import MCPWrapError
from mcpwrap.basics.units import Rate
from mcpwrap.config.profile import Profile, ToolSpec
from mcpwrap.identity import auth
from mcpwrap.policy import decisions as policy
from mcpwrap.policy.constraints import Resolver
from mcpwrap.policy.decisions import Refusal, Verdict
from mcpwrap.policy.sanitize import clean_line, clean_value, might_need_cleaning
from mcpwrap.relay import shaping
from mcpwrap.relay.ends import Front, Upstream
from mcpwrap.relay.framing import PEEK_BYTES, Oversize, peek_id
from mcpwrap.relay.listing import LISTING_ID, ToolLister
from mcpwrap.relay.pending import Key, Pending, PendingTable, key_of, trim, valid_id
from mcpwrap.relay.ratelimit import RateLimiter
from mcpwrap.relay.replies import (
    clean_text_short,
    decode,
    decode_plain,
    encode,
    error,
    is_modern,
    progress_token,
    tool_error,
)
from mcpwrap.supply.toolgate import Alert, Gate, Status

Route = Callable[[dict[str, Any]], Upstream]  # the upstream that serves a client request
_ALIAS_ID = "mcpwrap-up-"  # server request ids the client sees, with several upstreams
_MAX_WAIT = 3600.0  # the deadline thread wakes at least this often (threading caps waits)


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
        self._table = PendingTable()  # client requests in flight
        # Server requests forwarded to the client, by the id the client sees.
        self._from_server: dict[Key, _FromServer] = {}
        # With several upstreams: (upstream, the id it sent) -> the id the client sees.
        self._alias_of: dict[tuple[Upstream, Key], Key] = {}
        self._alias_seq = itertools.count(1)
        self._refused_server: OrderedDict[tuple[Upstream, Key], str] = OrderedDict()
        self._deadline_wake = threading.Condition(self._lock)
        self._closed = threading.Event()
        self._queues: dict[Upstream, queue.SimpleQueue[bytes]] = {}  # see _send_later
        self._gate = gate or Gate(None, profile.policy.descriptions)
        self._lister = ToolLister(
            profile,
            self._gate,
            self._lock,
            send=self._first.send,
            alert=self._alert,
            send_notes=self._send_notes,
            call=self._client_call,
            refuse=self._refuse_call,
        )
        self._shape = self._shaping_context()
        self._notes: list[bytes] = []  # log notifications to send after the current reply

    @property
    def on_call_end(self) -> Callable[[object], None] | None:
        """Told the id of each tools/call that ends, under the lock (the egress proxy
        closes connections held open only by that call); must not block."""
        return self._table.on_call_end

    @on_call_end.setter
    def on_call_end(self, told: Callable[[object], None] | None) -> None:
        self._table.on_call_end = told

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
            if side != "client" or not valid_id(msg_id):
                return
            with self._lock:
                forwarded = key_of(msg_id) in self._table.pending
            if not forwarded:
                self._remember_local(msg_id)
                self._front.send(encode(error(msg_id, policy.INTERNAL_ERROR, reason)))
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
                expired = self._table.take_expired(self._opt.clock())
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
        deadline = self._table.next_deadline()
        if deadline is not None:
            wake = min(wake, max(0.0, deadline - self._opt.clock()))
        return wake

    def close(self) -> None:
        with self._lock:
            self._closed.set()
            self._deadline_wake.notify_all()
        self._rec.flush(float("inf"))

    # --- client to server ----------------------------------------------------------------

    def _client_line(self, line: bytes) -> None:
        try:
            msg = decode(line)
        except ValueError as exc:
            # The id, where it can be read before the fault: the client can match the reply.
            msg_id = peek_id(line[:PEEK_BYTES])
            self._protocol_refusal(
                msg_id if valid_id(msg_id) else None,
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
        elif not isinstance(method, str) or ("id" in msg and not valid_id(msg["id"])):
            msg_id = msg.get("id") if valid_id(msg.get("id")) else None
            self._protocol_refusal(
                msg_id, policy.INVALID_REQUEST, "Invalid Request", "protocol.shape", len(line)
            )
        elif "id" in msg:
            self._client_request(msg, method, line)
        else:
            self._client_notification(msg, method, line)

    def _client_request(self, msg: dict[str, Any], method: str, line: bytes) -> None:
        if isinstance(msg["id"], str) and msg["id"].startswith(LISTING_ID):
            reason = f"request ids starting with {LISTING_ID!r} are mcpwrap's own"
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
        line = shaping.request(self.profile.policy, msg, method, params) or line
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
        line = shaping.request(self.profile.policy, msg, "tools/call", params) or line
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
                start = self._lister.hold((msg, params, line))
        if check.status is Status.OK:
            return policy.allow(f"tools.{name}")
        if check.status is not Status.UNKNOWN:
            return policy.refuse_result(check.rule, check.reason)
        if start is not None:
            self._lister.request(start, None)
        return None

    def _limits_verdict(self, tool: ToolSpec) -> Verdict:
        tokens = self.tokens
        with self._lock:
            verdict = policy.concurrency_verdict(tool, self._table.in_flight.get(tool.name, 0))
            if verdict.allowed:
                verdict = auth.concurrency_verdict(tokens, self._table.calls)
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
        key = key_of(pending.msg_id)
        upstream = self._first if self._route is None else self._route(msg)
        pending.upstream = upstream
        pending.progress = progress_token(params)
        pending.modern = is_modern(params)
        with self._lock:
            if key in self._table.pending:
                duplicate = True
            else:
                duplicate = False
                if self._table.register(key, pending):
                    self._deadline_wake.notify()  # only when it must wake sooner
        if duplicate:
            reason = f"request id {pending.msg_id!r} is already in flight"
            self._protocol_refusal(
                pending.msg_id, policy.INVALID_REQUEST, reason, "protocol.duplicate_id", len(line)
            )
            return False
        upstream.send(line)
        return True

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
        key = key_of(request_id)
        with self._lock:
            pending = self._table.unregister(key)
            if pending is None:
                return None  # answered by us, timed out, or unknown: nothing to stop
            self._table.remember(key, "cancelled")
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
        key = key_of(msg.get("id"))
        with self._lock:
            asked = self._from_server.pop(key, None)
            if asked is not None and self._aliased:
                self._alias_of.pop((asked.upstream, key_of(asked.msg_id)), None)
        if asked is None:
            self._rec.record(
                "protocol",
                decision="drop",
                rule="protocol.unknown_id",
                reason=f"client answered unknown server request id {msg.get('id')!r}",
            )
            return
        if self._aliased:  # the id the upstream sent, in place of the one the client saw
            line = encode({**msg, "id": asked.msg_id})
        asked.upstream.send(line)

    def _note_identity(self, method: str, params: object) -> None:
        if not isinstance(params, dict):
            return
        meta = params.get("_meta")
        if isinstance(meta, dict) and policy.META_PROTOCOL_VERSION in meta:
            self._lister.meta = {policy.META_PROTOCOL_VERSION: meta[policy.META_PROTOCOL_VERSION]}
        if method == "initialize":
            self.agent.note_client_info(params.get("clientInfo"))
            return
        meta = params.get("_meta")
        if isinstance(meta, dict) and policy.META_CLIENT_INFO in meta and not self.agent.client:
            self.agent.note_client_info(meta[policy.META_CLIENT_INFO])

    # --- server to client ----------------------------------------------------------------

    def _server_line(self, upstream: Upstream, line: bytes) -> None:
        try:
            msg, plain = decode_plain(line)
        except ValueError as exc:
            self._server_garbage(line, f"invalid JSON ({exc})")
            return
        if not isinstance(msg, dict):
            self._server_garbage(line, "not a JSON object")
            return
        method = msg.get("method")
        if method is None and valid_id(msg.get("id")) and ("result" in msg or "error" in msg):
            self._server_response(upstream, msg, line, plain)
        elif isinstance(method, str) and "id" in msg and valid_id(msg["id"]):
            self._server_request(upstream, msg, method, line)
        elif isinstance(method, str) and "id" not in msg:
            self._server_notification(upstream, msg, method, line)
        else:
            self._server_garbage(line, "not a valid JSON-RPC message")

    def _server_response(
        self, upstream: Upstream, msg: dict[str, Any], line: bytes, plain: bool
    ) -> None:
        ours = isinstance(msg["id"], str) and msg["id"].startswith(LISTING_ID)
        if ours and upstream is self._first and self._lister.reply(msg):
            return
        key = key_of(msg["id"])
        with self._lock:
            pending = self._table.unregister_from(upstream, key)
            answered = self._table.local.get(key)
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
            shaped, alerts, refusal = shaping.reply(
                self._shape, pending.method, pending.modern, msg, line, plain=plain
            )
            if alerts:
                self._alert(alerts)
            if refusal is not None:  # input requests the profile denies, inside the result
                self._record_refusal("server_request", refusal, method=pending.method)
            out = shaped or line
        except Exception as exc:  # the call left the table: it still gets a record and a reply
            reason = clean_text_short(f"mcpwrap could not relay the server's reply: {exc!r}")
            self._warn(reason)
            msg = error(msg["id"], policy.INTERNAL_ERROR, reason)
            out = encode(msg)
        if pending.tool is not None:
            self._finish_call(pending, msg, len(out))
        self._front.send(out)
        self._send_notes()

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
        self._shape = self._shaping_context()

    def _shaping_context(self) -> shaping.Context:
        """What replies are reshaped with; made again when the token changes."""
        allows = self._token_allows if self._auth_on else None
        return shaping.Context(self.profile, self._gate, self._lock, allows)

    def _alert(self, alerts: Sequence[Alert]) -> None:
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
                self._notes.append(encode(note))

    def _send_notes(self) -> None:
        if not self._notes:  # the common case, read without the lock: a note added
            return  # meanwhile goes out after the reply that follows it
        with self._lock:
            notes, self._notes = self._notes, []
        for note in notes:
            self._front.send(note)

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
        key = key_of(msg["id"])
        verdict = policy.decide_server_request(self.profile.policy, method)
        if not verdict.allowed:
            with self._lock:
                self._refused_server[(upstream, key)] = method
                trim(self._refused_server)
            self._record_refusal("server_request", verdict, method=method, bytes_in=len(line))
            upstream.send(encode(error(msg["id"], verdict.code, verdict.reason)))
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
            self._alias_of[(upstream, key)] = key_of(alias)
            self._from_server[key_of(alias)] = asked
        self._front.send(encode({**msg, "id": alias}))

    def _server_notification(
        self, upstream: Upstream, msg: dict[str, Any], method: str, line: bytes
    ) -> None:
        verdict = policy.decide_server_notification(self.profile.policy, method)
        params = msg.get("params")
        if verdict.allowed and method == "notifications/progress":
            token = params.get("progressToken") if isinstance(params, dict) else None
            with self._lock:
                known = self._table.progress.get(key_of(token)) is upstream
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
                line = encode({**msg, "params": {**params, "requestId": alias[1]}})
        if not verdict.allowed:
            self._drop_notification(method, verdict)
            return
        if method == "notifications/tools/list_changed" and self._gate.active:
            self._lister.changed()
        if method == "notifications/message" and might_need_cleaning(line):
            cleaned = clean_value(params)
            if cleaned is not params:
                line = encode({**msg, "params": cleaned})
        self._front.send(line)

    def _server_cancel(self, upstream: Upstream, request_id: object) -> Key | None:
        """The id the client knows a server request by, now cancelled by `upstream`;
        None if the client never saw it."""
        key = key_of(request_id)
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
            pending = (
                self._table.unregister_from(upstream, key_of(msg_id)) if valid_id(msg_id) else None
            )
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
            encode(error(pending.msg_id, policy.INTERNAL_ERROR, f"the server sent {what}"))
        )

    # --- answers we give ourselves -------------------------------------------------------

    def _client_oversize(self, item: Oversize) -> None:
        msg_id = peek_id(item.head)
        reason = (
            f"message of {item.size} bytes is over the limit of {self._opt.max_message} bytes "
            "(mcpwrap run --max-message)"
        )
        self._protocol_refusal(
            msg_id if valid_id(msg_id) else None,
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
        self._front.send(encode(error(msg_id, code, reason)))

    def _refuse_request(self, msg_id: object, method: str, verdict: Verdict, size: int) -> None:
        self._record_refusal("request", verdict, method=method, bytes_in=size, request_id=msg_id)
        self._remember_local(msg_id)
        self._front.send(encode(error(msg_id, verdict.code, verdict.reason)))

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
            tool_error(msg_id, verdict, is_modern(params))
            if verdict.refusal is Refusal.RESULT
            else error(msg_id, verdict.code, verdict.reason)
        )
        self._front.send(encode(answer))

    def _remember_local(self, msg_id: object) -> None:
        with self._lock:
            self._table.remember(key_of(msg_id), "refused")

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
            answer = tool_error(pending.msg_id, verdict, pending.modern)
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
            answer = error(pending.msg_id, policy.INTERNAL_ERROR, reason)
            verdict = policy.refuse("policy.timeout", reason)
        self._front.send(encode(answer))
        cancel = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": pending.msg_id, "reason": verdict.reason},
        }
        assert pending.upstream is not None  # it was forwarded
        self._send_later(pending.upstream, encode(cancel))

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
        if upstream in (None, self._first):
            self._lister.fail(reason)
        with self._lock:
            pendings = [
                self._table.unregister(k)
                for k, p in list(self._table.pending.items())
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
            self._front.send(encode(error(pending.msg_id, policy.INTERNAL_ERROR, reason)))

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
            return [(p.tool.name, p.msg_id) for p in self._table.pending.values() if p.tool]

    def _warn(self, text: str) -> None:
        try:
            self._log.write(f"mcpwrap: {text}\n")
            self._log.flush()
        except (OSError, ValueError):
            pass
