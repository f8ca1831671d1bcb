"""The audit log writer: hash-chained JSONL, one record per decision.

Each line is one JSON object, pure ASCII, that starts with
``{"v":1,"seq":N,"prev":"<sha256 of the previous line>","ts":...,"session":...}``.
Several mcpwrap processes of one user append to the same file, so the chain is kept per
FILE, not per writer: every write takes an exclusive flock, and a writer that finds the
file grown since its own last write reads the last line back before it chains.

This module sits on the hot path of every relayed call: it imports only light stdlib
modules, and the common case is flock + lseek + one write + unlock.
"""

from __future__ import annotations

import _thread  # the builtin under threading: a lock without the import cost of threading
import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping

from mcpwrap.basics import sha
from mcpwrap.basics.errors import AuditError

VERSION = 1
GENESIS = "0" * 64  # the "prev" of the first line of a file
RESERVED = ("v", "seq", "prev", "ts", "session")
_RESERVED_SET = frozenset(RESERVED)
_BLOCK = 8192
_UNKNOWN = -1  # a size no file has: forces a read-back on the next write
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False, default=str)


# Counts forks in this process's line, so a writer can tell it is in a child without a
# getpid() syscall on every write.
_FORKS = [0]
os.register_at_fork(after_in_child=lambda: _FORKS.__setitem__(0, _FORKS[0] + 1))


def encode_fields(fields: Mapping[str, object]) -> bytes:
    """`"key":value,...` for a record (no braces), ASCII only: for write(prefix=...).

    ensure_ascii escapes every control and non-ASCII character: the log is safe to cat.
    """
    clash = _RESERVED_SET.intersection(fields)
    if clash:
        raise ValueError(f"audit record may not set {', '.join(sorted(clash))}")
    try:
        return _ENCODER.encode(dict(fields))[1:-1].encode("ascii")
    except ValueError:
        # A value JSON cannot hold (1e400 read as infinity, NaN, an int too long to
        # print) in what a peer sent: the record is written with it named, never lost.
        from mcpwrap.basics.jsontext import safe

        return _ENCODER.encode(safe(dict(fields)))[1:-1].encode("ascii")


def line_hash(line: bytes) -> str:
    """The chain hash of one line: sha256 of its bytes without the newline."""
    return sha.hexdigest(line)


_last_second: list[tuple[int, str]] = [(-1, "")]  # strftime once per second, not per record


def utc_timestamp(ns: int) -> str:
    """RFC 3339 UTC with microseconds, e.g. 2026-11-23T19:51:16.123456Z."""
    seconds, micros = divmod(ns // 1000, 1_000_000)
    cached_second, prefix = _last_second[0]
    if seconds != cached_second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _last_second[0] = (seconds, prefix)
    return f"{prefix}.{micros:06d}Z"


class AuditWriter:
    """Appends records to one audit file, chained across every process that writes it.

    Durability: records are not fsynced one by one (too slow for the hot path), but each
    is handed to the kernel by write(2) before write() returns, so killing this process,
    even with SIGKILL, loses nothing that write() returned for. Only a kernel crash or a
    power cut can lose the page cache's last seconds; close() fsyncs.

    Safe to share between threads; after a fork the child reopens the file, since a
    flock is held per open file description and the two processes would share one.
    """

    def __init__(self, path: str, *, session: str) -> None:
        self._path = path
        self._session_json = _ENCODER.encode(session)
        self._lock = _thread.allocate_lock()
        self._fd: int | None = _open_log(path)
        self._forks = _FORKS[0]
        # What this writer knows about the file's end: valid while the size matches.
        self._size = _UNKNOWN
        self._seq = 0
        self._hash = GENESIS

    @property
    def path(self) -> str:
        return self._path

    def write(self, record: Mapping[str, object], *, prefix: bytes = b"") -> str:
        """Append one record; return its hash (the next record's "prev").

        `prefix` is a fragment made earlier by encode_fields(): fields known before the
        record is due (the relay encodes a call's fixed fields while the server works,
        so that only the outcome is encoded when the reply arrives). Its keys and the
        record's must not overlap.

        Raises ValueError for a record that sets a reserved key, and AuditError when the
        file cannot be written; a value JSON cannot hold is written as a string naming it.
        """
        # Encoded before the locks: other writers wait only for the chain and the write.
        if record:
            encoded = encode_fields(record)
            fields = prefix + b"," + encoded if prefix else encoded
        else:
            fields = prefix
        with self._lock:
            fd = self._current_fd()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    return self._append(fd, fields)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError as exc:
                self._size = _UNKNOWN  # a partial line may be on disk: re-read it next time
                raise AuditError(
                    f"cannot write audit log {self._path}: {exc.strerror or exc}; "
                    "check free space and permissions; decisions are not being recorded"
                ) from exc

    def close(self) -> None:
        """Flush the file to disk and close it. Idempotent."""
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is None:
                return
            try:
                os.fsync(fd)
            except OSError as exc:
                raise AuditError(
                    f"cannot flush audit log {self._path}: {exc.strerror or exc}; "
                    "the last records may be lost if the machine crashes"
                ) from exc
            finally:
                os.close(fd)

    def __enter__(self) -> AuditWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _current_fd(self) -> int:
        if self._fd is None:
            raise AuditError(f"audit log {self._path} is closed; records cannot be written")
        if _FORKS[0] != self._forks:  # forked: get an open file description of our own
            fd = _open_log(self._path)
            os.close(self._fd)
            self._fd, self._forks, self._size = fd, _FORKS[0], _UNKNOWN
        return self._fd

    def _append(self, fd: int, fields: bytes) -> str:
        """Chain and write one record; the caller holds the flock."""
        # The size by lseek: the same answer as fstat under the flock, without a stat
        # result to build.
        size = os.lseek(fd, 0, os.SEEK_END)
        terminator = b""
        if size != self._size:  # another process wrote, or this is our first write
            self._seq, self._hash, torn = _tail_state(fd, size)
            # A crashed writer's torn line gets its newline so it stays one bad line.
            terminator = b"\n" if torn else b""
        line = self._encode(fields)
        # No fsync: once write(2) returns the bytes are the kernel's, so a kill -9 of this
        # process cannot lose them; only a kernel crash or power cut could.
        _write_all(fd, terminator + line + b"\n")
        self._size = size + len(terminator) + len(line) + 1
        self._seq += 1
        self._hash = line_hash(line)
        return self._hash

    def _encode(self, fields: bytes) -> bytes:
        # The head is formatted, not serialised: its values are known to need no escaping
        # (ints, a hex hash, a timestamp) except the session, encoded once.
        head = (
            f'{{"v":{VERSION},"seq":{self._seq + 1},"prev":"{self._hash}",'
            f'"ts":"{utc_timestamp(time.time_ns())}","session":{self._session_json}'
        ).encode("ascii")
        return head + (b"," + fields if fields else b"") + b"}"


def _open_log(path: str) -> int:
    try:
        _make_dirs(os.path.dirname(os.path.abspath(path)))
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        return os.open(path, flags, 0o600)
    except OSError as exc:
        where = f" (at {exc.filename})" if exc.filename not in (None, path) else ""
        raise AuditError(
            f"cannot open audit log {path}: {exc.strerror or exc}{where}; "
            "make sure its directory is writable by this user, or set [audit] path"
        ) from exc


def _make_dirs(directory: str) -> None:
    """Create missing directories with mode 0o700 (os.makedirs would not give the parents
    that mode)."""
    if os.path.isdir(directory):
        return
    parent = os.path.dirname(directory)
    if parent != directory:
        _make_dirs(parent)
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        if not os.path.isdir(directory):
            raise


def _write_all(fd: int, data: bytes) -> None:
    """One write(2) in practice; loop on the rare partial write (e.g. a signal)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _tail_state(fd: int, size: int) -> tuple[int, str, bool]:
    """(seq, hash, torn) of the file's end, read back under the flock.

    The hash is that of the last line's bytes as they are, torn or not, so the next
    record chains from what is really there. The seq is that of the last line that
    parses; a torn line has none, so its seq is used again by the next record.
    """
    lines = lines_backwards(fd, size)
    last = next(lines, None)
    if last is None:
        return 0, GENESIS, False
    raw, terminated = last
    seq = _seq_of(raw)
    for earlier, _ in lines:
        if seq is not None:
            break
        seq = _seq_of(earlier)
    return seq if seq is not None else 0, line_hash(raw), not terminated


def _seq_of(raw: bytes) -> int | None:
    try:
        rec = json.loads(raw)
    except ValueError:
        return None
    seq = rec.get("seq") if isinstance(rec, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def lines_backwards(fd: int, size: int) -> Iterator[tuple[bytes, bool]]:
    """(line without its newline, had a newline) from the end of the file to its start."""
    if size == 0:
        return
    start = max(0, size - _BLOCK)
    buf = os.pread(fd, size - start, start)
    terminated = buf.endswith(b"\n")
    if terminated:
        buf = buf[:-1]
    while True:
        cut = buf.rfind(b"\n")
        if cut >= 0:
            yield buf[cut + 1 :], terminated
            buf, terminated = buf[:cut], True
        elif start == 0:
            yield buf, terminated
            return
        else:  # the line starts in an earlier block
            earlier = max(0, start - _BLOCK)
            buf = os.pread(fd, start - earlier, earlier) + buf
            start = earlier
