"""Reading the audit log: records, chain verification, one line per record for a person,
and tail/follow.

What the chain proves, and what it cannot: every record carries the sha256 of the line
before it, so a record changed, removed, moved or repeated anywhere but at the very end
breaks a link that verify() finds and names. It cannot see a change to the LAST record
(nothing after it holds its hash, though an edited seq is still seen), nor records cut
from the end of the file, nor a rewrite of a record together with every record after it.
verify() reports last_seq and last_hash so that a person can keep them elsewhere; a later
file is then trusted up to that point only if the record after last_seq carries that hash.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import BinaryIO, TextIO

from mcpwrap.audit import GENESIS, VERSION, line_hash, lines_backwards
from mcpwrap.errors import AuditError
from mcpwrap.sanitize import clean_text

_POLL_SECONDS = 0.2
_RECENT = 4096  # seq -> line kept for the records just read, to name a duplicate's twin


class Kind(StrEnum):
    """What verify() found wrong with a line."""

    CHANGED = "changed"
    REMOVED = "removed"
    REORDERED = "reordered"
    TORN = "torn"
    MALFORMED = "malformed"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Problem:
    line: int  # 1-based line of the file where it shows
    seq: int | None  # the record concerned, when it has one
    kind: Kind
    message: str


@dataclass(frozen=True)
class VerifyReport:
    path: str
    records: int  # lines that are well-formed records
    problems: tuple[Problem, ...]
    last_hash: str | None  # hash of the last line: the next record's prev (None: empty)
    last_seq: int | None = None  # seq of the last record (None: no record)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class _Line:
    number: int
    raw: bytes  # without its newline
    terminated: bool


# ---------------------------------------------------------------------------- reading


def iter_records(path: str, *, skip_bad: bool = False) -> Iterator[tuple[int, dict[str, object]]]:
    """(line number, record) for each line; a line that is not a record raises AuditError
    naming it, or is passed over with skip_bad=True."""
    for line in _read_lines(path):
        rec = _parse(line.raw)
        if isinstance(rec, dict):
            yield line.number, rec
        elif not skip_bad:
            raise AuditError(f"{path}:{line.number}: not an audit record: {rec}")


def _read_lines(path: str) -> Iterator[_Line]:
    try:
        with open(path, "rb") as f:
            for number, chunk in enumerate(f, 1):  # binary files split on b"\n" only
                terminated = chunk.endswith(b"\n")
                yield _Line(number, chunk[:-1] if terminated else chunk, terminated)
    except OSError as exc:
        raise AuditError(f"cannot read audit log {path}: {exc.strerror or exc}") from exc


def _parse(raw: bytes) -> dict[str, object] | str:
    """The record on a line, or why the line is not one."""
    try:
        rec = json.loads(raw)
    except json.JSONDecodeError as exc:
        return f"not JSON ({exc.msg} at column {exc.colno})"
    except ValueError:  # bytes that are not UTF-8
        return "not text"
    if not isinstance(rec, dict):
        return "not a JSON object"
    if type(rec.get("v")) is not int or rec["v"] != VERSION:
        return f"unknown version {rec.get('v')!r}"
    seq = rec.get("seq")
    if type(seq) is not int or seq < 1:
        return "no valid seq"
    prev = rec.get("prev")
    if not (isinstance(prev, str) and len(prev) == 64 and _is_hex(prev)):
        return "no valid prev"
    return rec


_HEX = frozenset("0123456789abcdef")


def _is_hex(text: str) -> bool:
    return _HEX.issuperset(text)


def _cut_short(raw: bytes) -> bool:
    """Whether the line is the start of a JSON object that stops before its end, as a
    write cut off by a crash leaves it: inside a string or with brackets still open."""
    if not raw.startswith(b"{"):
        return False
    depth, in_string, escaped = 0, False, False
    for byte in raw:
        if escaped:
            escaped = False
        elif in_string:
            escaped = byte == 0x5C  # backslash
            in_string = byte != 0x22  # quote
        elif byte == 0x22:
            in_string = True
        elif byte in b"{[":
            depth += 1
        elif byte in b"}]":
            depth -= 1
            if depth == 0:
                return False  # the object closed: broken some other way
    return in_string or depth > 0


# ---------------------------------------------------------------------------- verify


def verify(path: str) -> VerifyReport:
    """Check the hash chain and the seq order of the whole file; name each bad record.

    Kinds: "changed" (a record's bytes no longer hash to the next record's prev while
    their seqs are consecutive, or its seq contradicts an intact link), "removed" (seqs
    missing), "reordered" (a seq that goes backwards), "duplicate" (a seq seen before),
    "torn" (a record cut short by a writer that died mid-write; later writers chain from
    it as it is), "malformed" (any other line that is not a record).

    A broken link between consecutive records is blamed on the earlier one, whose bytes
    no longer give the later one's prev; so an edited prev field blames the record before
    it as well. Limits (see the module docstring): a changed last record, records cut
    from the end, and a rewrite of everything from some record on are not detectable
    from the file alone; keep report.last_seq and report.last_hash elsewhere for that.
    """
    checker = _Checker()
    for line in _read_lines(path):
        checker.feed(line)
    return checker.report(path)


class _Checker:
    """One pass over the lines; memory stays small (gaps, late seqs, recent seqs)."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.records = 0
        self.seq = 0  # the seq the chain says the last record has
        self.prev_hash = GENESIS  # hash of the line before the current one
        self.prev: tuple[int, int | None, bool] | None = None  # (line, seq, flagged)
        self.gaps: list[tuple[int, int, int]] = []  # (first, last missing seq, line after)
        self.late: set[int] = set()  # seqs that turned up after a gap was seen
        self.recent: dict[int, int] = {}  # seq -> line

    def feed(self, line: _Line) -> None:
        rec = _parse(line.raw)
        if isinstance(rec, dict):
            self.records += 1
            seq = rec["seq"]
            prev = rec["prev"]
            assert isinstance(seq, int) and isinstance(prev, str)  # checked by _parse
            flagged = self._record(line.number, seq, linked=prev == self.prev_hash)
            self.prev = (line.number, seq, flagged)
        else:
            self._bad_line(line, rec)
            self.prev = (line.number, None, True)
        self.prev_hash = line_hash(line.raw)

    def report(self, path: str) -> VerifyReport:
        for first, last, after in self.gaps:
            for lo, hi in _ranges_without(first, last, self.late):
                self._add(after, lo, Kind.REMOVED, _missing(lo, hi, after))
        problems = tuple(sorted(self.problems, key=lambda p: p.line))
        last_hash = None if self.prev is None else self.prev_hash
        last_seq = self.seq if self.records else None
        return VerifyReport(path, self.records, problems, last_hash, last_seq)

    def _add(self, line: int, seq: int | None, kind: Kind, message: str) -> None:
        self.problems.append(Problem(line, seq, kind, message))

    def _bad_line(self, line: _Line, why: str) -> None:
        if not line.terminated or _cut_short(line.raw):
            end = "a later writer ended the line" if line.terminated else "it has no newline"
            message = f"line {line.number} is a record cut short by a writer that died ({end})"
            self._add(line.number, None, Kind.TORN, message)
        else:
            self._add(line.number, None, Kind.MALFORMED, f"line {line.number} is {why}")

    def _record(self, number: int, seq: int, *, linked: bool) -> bool:
        """Check one record against the chain; return whether the record itself is bad."""
        expected = self.seq + 1
        if linked and seq != expected:
            # The link proves what came before, so the seq field itself was edited.
            message = f"record seq {expected} (line {number}) was changed: it now says seq {seq}"
            self._add(number, expected, Kind.CHANGED, message)
            self._remember(expected, number)
            return True
        flagged = False
        if seq == expected:
            flagged = not linked and self._broken_link(number, seq)
        elif seq > expected:
            self.gaps.append((expected, seq - 1, number))
        else:
            self._backwards(number, seq)
            return True
        self._remember(seq, number)
        return flagged

    def _broken_link(self, number: int, seq: int) -> bool:
        """Report the record that a broken link between consecutive seqs points at;
        return whether that is this record (only the first line has no one to blame)."""
        if self.prev is None:
            message = f"record seq {seq} (line {number}) does not start the chain: prev is not 0*64"
            self._add(number, seq, Kind.CHANGED, message)
            return True
        line, prev_seq, flagged = self.prev
        if prev_seq is not None and not flagged:  # else that line is reported already
            message = f"record seq {prev_seq} (line {line}) was changed after it was written"
            self._add(line, prev_seq, Kind.CHANGED, message)
        return False

    def _backwards(self, number: int, seq: int) -> None:
        if seq not in self.late and any(lo <= seq <= hi for lo, hi, _ in self.gaps):
            self.late.add(seq)
            message = (
                f"record seq {seq} (line {number}) is out of order: "
                f"it comes after seq {self.seq} (line {self.recent.get(self.seq, '?')})"
            )
            self._add(number, seq, Kind.REORDERED, message)
            return
        first = self.recent.get(seq)
        where = f" (first at line {first})" if first is not None else ""
        message = f"record seq {seq} (line {number}) is a duplicate{where}"
        self._add(number, seq, Kind.DUPLICATE, message)

    def _remember(self, seq: int, number: int) -> None:
        self.seq = seq
        self.recent[seq] = number
        if len(self.recent) > _RECENT:
            del self.recent[next(iter(self.recent))]


def _ranges_without(first: int, last: int, present: set[int]) -> Iterator[tuple[int, int]]:
    """The runs of first..last that are not in present."""
    start = first
    for seq in sorted(s for s in present if first <= s <= last):
        if seq > start:
            yield start, seq - 1
        start = seq + 1
    if start <= last:
        yield start, last


def _missing(lo: int, hi: int, after: int) -> str:
    where = f"between lines {after - 1} and {after}" if after > 1 else "before line 1"
    if lo == hi:
        return f"record seq {lo} is missing {where}"
    return f"records seq {lo} to {hi} are missing {where}"


# ---------------------------------------------------------------------------- format


def format_record(rec: Mapping[str, object]) -> str:
    """One line for a person: local time, server, event, decision, tool or method,
    (rule), outcome, duration, and the reason when not allowed. "-" for what is missing;
    no control, bidi or zero-width character of any value reaches the terminal."""
    decision = _text(rec.get("decision")).upper()
    target = rec.get("tool") if rec.get("tool") is not None else rec.get("method")
    parts = [
        _local_time(rec.get("ts")),
        _text(rec.get("server")),
        _text(rec.get("event")),
        decision,
        _text(target),
        f"({_text(rec.get('rule'))})",
        _text(rec.get("outcome")),
        _duration(rec.get("duration_ms")),
    ]
    if decision not in ("ALLOW", "-") and rec.get("reason") is not None:
        parts.append(_text(rec.get("reason")))
    return "  ".join(parts)


def _text(value: object) -> str:
    if value is None:
        return "-"
    text = value if isinstance(value, str) else _compact(value)
    text = clean_text(text, keep_newlines=False)
    # clean_text removes escape sequences whole; this catches what it leaves (tabs, line
    # and paragraph separators, lone surrogates that would not even encode).
    text = "".join(c for c in text if unicodedata.category(c)[0] != "C" and c not in "\u2028\u2029")
    return text or "-"


def _compact(value: object) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except ValueError:
        return str(value)


def _local_time(ts: object) -> str:
    if not isinstance(ts, str):
        return _text(ts)
    try:
        when = datetime.fromisoformat(ts)
    except ValueError:
        return _text(ts)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _duration(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.1f} ms"
    return _text(value)


def _show(raw: bytes) -> str:
    rec = _parse(raw)
    if isinstance(rec, dict):
        return format_record(rec)
    return f"-- not an audit record ({len(raw)} bytes: {rec}) --"


# ---------------------------------------------------------------------------- tail


def tail(
    path: str,
    n: int = 20,
    *,
    follow: bool = False,
    out: TextIO | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Print the last n records, one line each; with follow, keep printing new ones
    (polling every 0.2 s, reopening the path when the file is replaced) until stop is
    set, or forever without one. out defaults to sys.stdout as it is at call time."""
    follower = _Follower(path, out if out is not None else sys.stdout)
    try:
        follower.show_last(n, keep_partial=follow)
        if follow:
            follower.run(stop)
    finally:
        follower.close()


class _Follower:
    """An open log file and the bytes of its line in progress."""

    def __init__(self, path: str, out: TextIO) -> None:
        self.path, self.out = path, out
        self.file = _open_binary(path)
        self.partial = b""  # an unterminated last line: torn, or still being written

    def show_last(self, n: int, *, keep_partial: bool) -> None:
        """Print the last n lines; leave the file at its end for run()."""
        size = os.fstat(self.file.fileno()).st_size
        self.file.seek(size)
        lines: list[bytes] = []
        for raw, terminated in lines_backwards(self.file.fileno(), size):
            if keep_partial and not terminated:
                self.partial = raw
                continue
            if len(lines) >= n:
                break
            lines.append(raw)
        self._emit(reversed(lines))

    def run(self, stop: threading.Event | None) -> None:
        while True:
            if not self._read_more():
                self._reopen_if_replaced()
            if _wait(stop):
                return

    def close(self) -> None:
        self.file.close()

    def _read_more(self) -> bool:
        data = self.file.read()
        if not data:
            if os.fstat(self.file.fileno()).st_size < self.file.tell():
                self.file.seek(0)  # truncated in place: start over
                self.partial = b""
            return False
        *complete, self.partial = (self.partial + data).split(b"\n")
        self._emit(complete)
        return True

    def _reopen_if_replaced(self) -> None:
        try:
            now = os.stat(self.path)
        except OSError:
            return  # moved away and not recreated yet: the old file may still grow
        was = os.fstat(self.file.fileno())
        if (now.st_dev, now.st_ino) == (was.st_dev, was.st_ino):
            return
        # Rotated: the old file is drained (nothing more to read), so show its torn end.
        if self.partial:
            self._emit([self.partial])
        new = _open_binary(self.path)
        self.file.close()
        self.file, self.partial = new, b""

    def _emit(self, lines: Iterable[bytes]) -> None:
        for raw in lines:
            self.out.write(_show(raw) + "\n")
        self.out.flush()


def _open_binary(path: str) -> BinaryIO:
    try:
        return open(path, "rb", buffering=0)  # the caller closes it
    except OSError as exc:
        raise AuditError(f"cannot read audit log {path}: {exc.strerror or exc}") from exc


def _wait(stop: threading.Event | None) -> bool:
    """Sleep one poll interval; True when it is time to stop."""
    if stop is None:
        time.sleep(_POLL_SECONDS)
        return False
    return stop.wait(_POLL_SECONDS)
