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
from typing import BinaryIO, TextIO

from mcpwrap.audit import chain as auditchain
from mcpwrap.audit.chain import Kind, Problem, Run
from mcpwrap.audit.writer import VERSION, line_hash, lines_backwards
from mcpwrap.basics.errors import AuditError
from mcpwrap.policy.sanitize import clean_text

__all__ = ["Kind", "Problem", "VerifyReport", "format_record", "iter_records", "tail", "verify"]

_POLL_SECONDS = 0.2


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
    missing), "reordered" (a record that is not where the chain puts it: the fewest such
    records that explain the order), "duplicate" (a seq seen before), "torn" (a record
    cut short by a writer that died mid-write; later writers chain from it as it is),
    "malformed" (any other line that is not a record). chain.py says how.

    A broken link between consecutive records is blamed on the earlier one, whose bytes
    no longer give the later one's prev; so an edited prev field blames the record before
    it as well. Limits (see the module docstring): a changed last record, records cut
    from the end, and a rewrite of everything from some record on are not detectable
    from the file alone; keep report.last_seq and report.last_hash elsewhere for that.

    One pass reads an intact file; a damaged one is read a second time to find the lines
    that the broken links point at.
    """
    scan = _Scan()
    for line in _read_lines(path):
        scan.feed(line)
    owners: dict[str, int] = {}
    if not auditchain.intact(scan.runs):
        owners = _owners(path, auditchain.wanted(scan.runs), scan.lines)
    chain, last_seq = auditchain.diagnose(scan.runs, owners)
    problems = tuple(sorted(scan.problems + chain, key=lambda p: p.line))
    return VerifyReport(path, scan.records, problems, scan.last_hash, last_seq)


class _Scan:
    """The first pass: runs of chained records, lines that are not records, the end."""

    def __init__(self) -> None:
        self.runs: list[Run] = []
        self.problems: list[Problem] = []
        self.records = 0
        self.lines = 0
        self.last_hash: str | None = None  # of the last line: the next record's prev
        self._in_run = False  # the line before was a record of runs[-1]

    def feed(self, line: _Line) -> None:
        rec = _parse(line.raw)
        if isinstance(rec, dict):
            self.records += 1
            seq, prev = rec["seq"], rec["prev"]
            assert isinstance(seq, int) and isinstance(prev, str)  # checked by _parse
            run = self.runs[-1] if self._in_run else None
            if run is not None and prev == self.last_hash and seq == run.seq + run.count:
                run.count += 1
            else:
                self.runs.append(Run(line.number, seq, 1, prev))
            self._in_run = True
        else:
            self.problems.append(_bad_line(line, rec))
            self._in_run = False
        self.last_hash = line_hash(line.raw)
        self.lines = line.number


def _bad_line(line: _Line, why: str) -> Problem:
    if not line.terminated or _cut_short(line.raw):
        end = "a later writer ended the line" if line.terminated else "it has no newline"
        message = f"line {line.number} is a record cut short by a writer that died ({end})"
        return Problem(line.number, None, Kind.TORN, message)
    return Problem(line.number, None, Kind.MALFORMED, f"line {line.number} is {why}")


def _owners(path: str, wanted: set[str], lines: int) -> dict[str, int]:
    """The first line (of the first `lines`, those the first pass read) with each hash."""
    found: dict[str, int] = {}
    for line in _read_lines(path):
        if line.number > lines:
            break
        digest = line_hash(line.raw)
        if digest in wanted and digest not in found:
            found[digest] = line.number
    return found


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
