"""Audit records: every decision of mcpwrap becomes a record here, and only here.

The relay's core decides and hands each decision to a `Recorder`, which adds the common
fields (server, agent, token), counts flooded drops instead of writing each one (`_Tally`),
and fails closed: once a record cannot be written, `audit_broken` says why and the core
refuses every further call. The few records written before or outside a relay (a run
refused at start, a token refused, a lock written) have their functions here too, so that
nothing else in mcpwrap writes to an AuditWriter (tests/test_recorder.py holds to that).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring_ascii as _json_str
from math import isfinite
from typing import Any, TextIO

from mcpwrap.audit.records import Agent, arguments_field
from mcpwrap.audit.writer import AuditWriter, encode_fields
from mcpwrap.basics.errors import MCPWrapError
from mcpwrap.config.profile import ArgumentsMode, ToolSpec

_TALLY_WINDOW = 1.0  # seconds: drops of one kind beyond _TALLY_EACH in it are counted
_TALLY_EACH = 10


class _Tally:
    """Drops of one kind (event, rule, method) past _TALLY_EACH in a window are counted,
    not written one by one: 100k stray progress notifications make a few records and one
    count per window, and the count is written when its window ends (or at close)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # kind -> [window start, seen in it, the last record of that kind]
        self._kinds: dict[tuple[object, ...], list[Any]] = {}

    def note(self, kind: tuple[object, ...], now: float, record: dict[str, Any]) -> list[Any]:
        """The records to write for this drop: itself while under the cap, and the count
        of the window before, if one was being counted."""
        with self._lock:
            entry = self._kinds.get(kind)
            out = []
            if entry is None or now - entry[0] >= _TALLY_WINDOW:
                if entry is not None:
                    out += self._summary(entry)
                entry = self._kinds[kind] = [now, 0, record]
            entry[1] += 1
            entry[2] = record
            if entry[1] <= _TALLY_EACH:
                out.append(record)
            return out

    def pending(self) -> bool:
        with self._lock:  # the server pump adds kinds meanwhile
            return any(e[1] > _TALLY_EACH for e in self._kinds.values())

    def flush(self, now: float, write: Callable[[dict[str, Any]], None]) -> None:
        """Write the count of every window that has ended by `now`."""
        with self._lock:
            ended = [k for k, e in self._kinds.items() if now - e[0] >= _TALLY_WINDOW]
            out = [r for k in ended for r in self._summary(self._kinds.pop(k))]
        for record in out:
            write(record)

    @staticmethod
    def _summary(entry: list[Any]) -> list[dict[str, Any]]:
        more = entry[1] - _TALLY_EACH
        if more <= 0:
            return []
        reason = f"{more} more like this within {_TALLY_WINDOW:g} s, counted, not written each"
        return [{**entry[2], "count": more, "reason": reason}]


TALLY_WINDOW = _TALLY_WINDOW  # how often a pending tally wants flushing (the core's wakes)


def tool_fields(tool: ToolSpec | None) -> dict[str, Any]:
    if tool is None:
        return {"class": None, "effects": []}
    return {"class": tool.cls.value, "effects": list(tool.effects)}


def _call_end_fields(
    *,
    rule: object,
    outcome: object,
    duration_ms: object,
    bytes_out: object,
    cpu_ms: object,
    peak_rss_kb: object,
) -> bytes | None:
    """The outcome fields of a call's record, formatted straight to what encode_fields()
    makes of them (tests/test_recorder_fields.py compares the two), without a dict and an
    encoder run on the reply's path. None for a value of another type, or a float JSON
    cannot hold: those go through encode_fields()."""
    if (
        type(rule) is not str
        or type(outcome) is not str
        or type(duration_ms) is not float
        or type(bytes_out) is not int
        or not (type(cpu_ms) is float or cpu_ms is None)
        or not (type(peak_rss_kb) is int or peak_rss_kb is None)
        or not isfinite(duration_ms)
        or (cpu_ms is not None and not isfinite(cpu_ms))
    ):
        return None
    # json's encoder writes floats and ints with their repr, and strings escaped to ASCII.
    try:
        return (
            f'"rule":{_json_str(rule)},"outcome":{_json_str(outcome)},'
            f'"duration_ms":{duration_ms!r},"bytes_out":{bytes_out!r},'
            f'"cpu_ms":{"null" if cpu_ms is None else repr(cpu_ms)},'
            f'"peak_rss_kb":{"null" if peak_rss_kb is None else repr(peak_rss_kb)}'
        ).encode("ascii")
    except ValueError:  # an int too long to print: encode_fields() names it
        return None


class Recorder:
    """One run's records: its AuditWriter, its common fields and its drop tally.

    Thread-safe: the writer is, the tally has its own lock, and `token` is replaced whole.
    """

    def __init__(
        self,
        audit: AuditWriter,
        *,
        server: str,
        agent: Agent,
        arguments: ArgumentsMode,
        clock: Callable[[], float],
        log: TextIO = sys.stderr,
    ) -> None:
        self._audit = audit
        self.server = server
        self.agent = agent
        self.token: str | None = None  # the id of the run's token; set by Core.set_token
        self._arguments = arguments
        self._clock = clock
        self._log = log
        self._tally = _Tally()
        self.audit_broken: str | None = None

    # --- the relay's records -------------------------------------------------------------

    def common(self) -> dict[str, Any]:
        return {"server": self.server, "agent": self.agent.as_record(), "token": self.token}

    def record(self, event: str, **fields: Any) -> None:
        self._write({"event": event, **self.common(), **fields})

    def event(self, event: str, **fields: Any) -> None:
        """A record of another part of mcpwrap (the egress proxy, the seal broker, the
        token watcher), in this run's chain."""
        self.record(event, **fields)

    def session(self, *, rule: str = "session", **fields: Any) -> None:
        self.record("session", rule=rule, **fields)

    def refusal(self, event: str, rule: str, reason: str, **fields: Any) -> None:
        """The record of a message mcpwrap answered (or dropped) instead of relaying."""
        self.record(event, decision="refuse", rule=rule, reason=reason, outcome="refused", **fields)

    def drop(self, event: str, **fields: Any) -> bool:
        """A dropped message's record, counted rather than written when they flood; True
        if this one was written."""
        record = {"event": event, **self.common(), **fields}
        kind = (event, fields.get("rule"), fields.get("method"))
        out = self._tally.note(kind, self._clock(), record)
        for each in out:
            self._write(each)
        return bool(out) and out[-1] is record

    def arguments(self, arguments: object) -> dict[str, Any]:
        """The record's view of a call's arguments, per the profile's [audit] arguments."""
        return arguments_field(self._arguments, arguments)

    def call_prefix(
        self, *, tool: ToolSpec | None, request_id: object, bytes_in: int, arguments: object
    ) -> bytes:
        """The fixed fields of an allowed call's record, encoded: made while the server
        works, so that the reply's path only encodes the outcome."""
        return encode_fields(
            {
                **self.common(),
                "event": "call",
                "decision": "allow",
                "tool": tool.name if tool else None,
                "request_id": request_id,
                "bytes_in": bytes_in,
                **tool_fields(tool),
                **self.arguments(arguments),
            }
        )

    def call_end(
        self,
        prefix: bytes,
        *,
        rule: str,
        outcome: str,
        duration_ms: float,
        bytes_out: int,
        cpu_ms: float | None,
        peak_rss_kb: int | None,
    ) -> None:
        """An allowed call's record, written when it ended (answered, failed, timed out,
        cancelled): `prefix` from call_prefix()."""
        fields = _call_end_fields(
            rule=rule,
            outcome=outcome,
            duration_ms=duration_ms,
            bytes_out=bytes_out,
            cpu_ms=cpu_ms,
            peak_rss_kb=peak_rss_kb,
        )
        if fields is None:
            dynamic = {
                "rule": rule,
                "outcome": outcome,
                "duration_ms": duration_ms,
                "bytes_out": bytes_out,
                "cpu_ms": cpu_ms,
                "peak_rss_kb": peak_rss_kb,
            }
            self._write(dynamic, prefix)
        else:
            self._write({}, prefix + b"," + fields if prefix else fields)

    def tally_pending(self) -> bool:
        """True while a flood's count waits for its window to end."""
        return self._tally.pending()

    def flush(self, now: float) -> None:
        """Write the count of every flood window ended by `now` (inf: all of them)."""
        self._tally.flush(now, self._write)

    def close(self) -> None:
        """Every count written, the log flushed to disk and closed."""
        self.flush(float("inf"))
        self._audit.close()

    def _write(self, record: dict[str, Any], prefix: bytes = b"") -> None:
        try:
            # The writer is thread-safe and chains across processes.
            self._audit.write(record, prefix=prefix)
        except (MCPWrapError, OSError) as exc:
            # Fail closed: no further call is allowed once decisions cannot be recorded.
            if self.audit_broken is None:
                self._warn(f"audit log write failed, refusing further calls: {exc}")
            self.audit_broken = str(exc)

    def _warn(self, text: str) -> None:
        try:
            self._log.write(f"mcpwrap: {text}\n")
            self._log.flush()
        except (OSError, ValueError):
            pass


# --- records of runs that never relayed ----------------------------------------------------


def refuse_start(audit: AuditWriter, *, server: str, rule: str, reason: str, **extra: str) -> None:
    """The pins record of a run stopped before anything of the server started; the log is
    closed after it (the run ends here)."""
    record = {"event": "pins", "server": server, "agent": None, "token": None}
    audit.write({**record, "decision": "refuse", "rule": rule, **extra, "reason": reason})
    audit.close()


def refuse_token(path: str, *, server: str, token: str | None, rule: str, reason: str) -> None:
    """The session record of a token refused before anything started, in a session of
    its own. Raises AuditError when the log cannot be written."""
    with AuditWriter(path, session=os.urandom(16).hex()) as audit:
        audit.write(
            {
                "event": "session",
                "server": server,
                "agent": None,
                "token": token,
                "decision": "refuse",
                "rule": rule,
                "reason": reason,
            }
        )


def lock_written(
    path: str,
    *,
    server: str,
    decision: str,
    lock: str,
    version: str | None,
    tools: list[str],
    changes: list[str],
    remote: Mapping[str, Any] | None = None,
) -> None:
    """The pins record of `mcpwrap lock` / `approve` (decision "lock" or "approve"), in a
    session of its own; `remote`: a remote server's URL and key pins, as locked. Raises
    AuditError when the log cannot be written."""
    with AuditWriter(path, session=os.urandom(16).hex()) as audit:
        audit.write(
            {
                "event": "pins",
                "server": server,
                "agent": Agent.of_parent().as_record(),
                "token": None,
                "decision": decision,
                "rule": f"pins.{decision}",
                "lock": lock,
                "version": version,
                "tools": tools,
                "changes": changes,
                **({"remote": dict(remote)} if remote else {}),
            }
        )
