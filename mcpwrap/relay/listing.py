"""mcpwrap's own tools/list, page by page, for the tool gate.

A tools/call whose tool's definition is not known yet (no complete listing since the
start, or the server said its tools changed) is held while mcpwrap lists the tools of the
first upstream itself; when the listing ends the held calls are released (decided again,
now that the tools are known) or, if it failed, refused. A change announced while a listing
runs starts it over once it ends.

The relay's lock (passed in) guards the listing's state and the gate; the server is sent
to, and the held calls decided, outside it.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from mcpwrap.config.profile import Profile, ToolSpec
from mcpwrap.policy import decisions as policy
from mcpwrap.policy.decisions import Verdict
from mcpwrap.relay.replies import clean_text_short, encode
from mcpwrap.relay.shaping import tool_names
from mcpwrap.supply.toolgate import Alert, Gate

LISTING_ID = "mcpwrap-pins-"  # ids of mcpwrap's own tools/list requests to the server
_LISTING_PAGES = 1000  # a server that pages forever does not hold calls forever

Held = tuple[dict[str, Any], object, bytes]  # a held tools/call: message, params, bytes


class Listing:
    """One run of mcpwrap's own tools/list."""

    __slots__ = ("msg_id", "names", "pages", "stale", "timer")

    def __init__(self) -> None:
        self.msg_id = ""
        self.names: list[str] = []
        self.pages = 0
        self.stale = False  # the tools changed again while this listing ran
        self.timer: threading.Timer | None = None


class RefuseCall(Protocol):
    def __call__(
        self,
        *,
        msg_id: object,
        params: object,
        tool: ToolSpec | None,
        arguments: object,
        verdict: Verdict,
        size: int,
    ) -> None: ...


class ToolLister:
    """The listing in progress (at most one) and the calls that wait for it."""

    def __init__(
        self,
        profile: Profile,
        gate: Gate,
        lock: threading.Lock,
        *,
        send: Callable[[bytes], object],
        alert: Callable[[Sequence[Alert]], None],
        send_notes: Callable[[], None],
        call: Callable[[dict[str, Any], object, bytes], None],
        refuse: RefuseCall,
    ) -> None:
        self._profile = profile
        self._gate = gate
        self._lock = lock
        self._send = send  # to the first upstream
        self._alert = alert
        self._send_notes = send_notes
        self._call = call  # decide a released call again
        self._refuse = refuse
        self._listing: Listing | None = None
        self._seq = itertools.count(1)
        self._held: list[Held] = []
        self.meta: dict[str, Any] | None = None  # a 2026 client's _meta version, for ours

    def hold(self, held: Held) -> Listing | None:
        """Hold a call until the tools are known; the listing to start, or None if one
        runs. The caller holds the lock."""
        self._held.append(held)
        return self._want()

    def _want(self) -> Listing | None:
        """A new listing to send, or None if one is running; the caller holds the lock."""
        if self._listing is not None:
            return None
        self._listing = Listing()
        return self._listing

    def request(self, listing: Listing, cursor: str | None) -> None:
        """Ask the server for a page (the first: cursor None)."""
        params: dict[str, Any] = {}
        if cursor is not None:
            params["cursor"] = cursor
        if self.meta is not None:
            params["_meta"] = dict(self.meta)
        with self._lock:
            listing.msg_id = f"{LISTING_ID}{next(self._seq)}"
            listing.pages += 1
            if listing.timer is None:
                listing.timer = threading.Timer(
                    self._profile.policy.timeout, self._timeout, (listing,)
                )
                listing.timer.daemon = True
                listing.timer.start()
            request = {"jsonrpc": "2.0", "id": listing.msg_id, "method": "tools/list"}
        self._send(encode({**request, "params": params}))

    def reply(self, msg: dict[str, Any]) -> bool:
        """True if `msg` (from the first upstream) answers the listing, and was handled."""
        with self._lock:
            listing = self._listing
            if listing is None or listing.msg_id != msg["id"]:
                return False
        result = msg.get("result")
        tools = result.get("tools") if isinstance(result, dict) else None
        if not isinstance(tools, list):
            error = msg.get("error")
            what = error.get("message") if isinstance(error, dict) else "no tools array"
            self._end(listing, f"the server did not list its tools ({clean_text_short(what)})")
            return True
        assert isinstance(result, dict)
        names = tool_names(tools)
        with self._lock:
            review = self._gate.review(policy.visible_tools(self._profile, tools), names)
            listing.names += names
        self._alert(review.alerts)
        self._send_notes()
        cursor = result.get("nextCursor")
        if isinstance(cursor, str) and cursor and listing.pages < _LISTING_PAGES:
            self.request(listing, cursor)
        else:
            self._end(listing, None)
        return True

    def changed(self) -> None:
        """notifications/tools/list_changed: nothing seen so far is known any longer."""
        with self._lock:
            self._gate.invalidate()
            if self._listing is not None:
                self._listing.stale = True
            start = self._want()
        if start is not None:
            self.request(start, None)

    def fail(self, reason: str) -> None:
        """The first upstream is gone: the listing running, if any, ends and its held calls
        are refused."""
        with self._lock:
            listing = self._listing
        if listing is not None:
            self._end(listing, reason)

    def _timeout(self, listing: Listing) -> None:
        seconds = self._profile.policy.timeout
        self._end(listing, f"the server did not list its tools within {seconds:g} s")

    def _end(self, listing: Listing, failure: str | None) -> None:
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
            again = self._want() if restart else None
        if again is not None:
            self.request(again, None)
            return
        self._alert(alerts)
        self._send_notes()
        if held and failure is not None:
            self._release(held, failure)
        elif held:
            # A thread of its own: the upstream's reader must not block sending to it.
            threading.Thread(target=self._release, args=(held, None), daemon=True).start()

    def _release(self, held: list[Held], failure: str | None) -> None:
        for msg, params, line in held:
            if failure is None:
                self._call(msg, params, line)
                continue
            name = params.get("name") if isinstance(params, dict) else None
            self._refuse(
                msg_id=msg["id"],
                params=params,
                tool=self._profile.tool(name) if isinstance(name, str) else None,
                arguments=params.get("arguments") if isinstance(params, dict) else None,
                verdict=policy.refuse_result("pins.listing", failure),
                size=len(line),
            )
