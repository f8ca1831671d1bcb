"""The audit writer (mcpwrap.audit.writer) and reader (mcpwrap.audit.read), on real files."""

from __future__ import annotations

import bisect
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpwrap.audit.read import Kind, Problem, format_record, iter_records, tail, verify
from mcpwrap.audit.writer import GENESIS, RESERVED, AuditWriter
from mcpwrap.basics.errors import AuditError

REPO_ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------- helpers


def write_log(path: Path, count: int, *, session: str = "s1", start: int = 1) -> list[str]:
    with AuditWriter(str(path), session=session) as writer:
        return [writer.write({"event": "call", "tool": f"t{i}"}) for i in range(start, count + 1)]


def read_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def problems(path: Path) -> list[tuple[Kind, int, int | None]]:
    return [(p.kind, p.line, p.seq) for p in verify(str(path)).problems]


def seqs(path: Path) -> list[int]:
    return [int(str(rec["seq"])) for _, rec in iter_records(str(path), skip_bad=True)]


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
def log10(log: Path) -> Path:
    write_log(log, 10)
    return log


# ---------------------------------------------------------------------------- writer


def test_chain_is_valid_after_many_writes(log: Path) -> None:
    hashes = write_log(log, 50)
    lines = read_lines(log)
    assert len(lines) == 50
    prev = GENESIS
    for n, (raw, returned) in enumerate(zip(lines, hashes, strict=True), 1):
        rec = json.loads(raw)
        assert (rec["seq"], rec["prev"]) == (n, prev)
        prev = sha(raw.rstrip(b"\n"))
        assert returned == prev
    report = verify(str(log))
    assert report.ok
    assert (report.records, report.last_seq, report.last_hash) == (50, 50, hashes[-1])


def test_record_layout(log: Path) -> None:
    with AuditWriter(str(log), session="abc") as writer:
        writer.write({"event": "call", "server": "fs"})
    rec = json.loads(log.read_bytes())
    assert list(rec) == [*RESERVED, "event", "server"]
    assert (rec["v"], rec["session"]) == (1, "abc")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", rec["ts"])
    assert b" " not in log.read_bytes()  # compact separators


def test_unknown_types_are_written_as_text(log: Path) -> None:
    with AuditWriter(str(log), session="s") as writer:
        writer.write({"path": Path("/x/y"), "when": datetime(2026, 1, 2, tzinfo=UTC)})
    rec = json.loads(log.read_bytes())
    assert (rec["path"], rec["when"]) == ("/x/y", "2026-01-02 00:00:00+00:00")


def test_a_value_json_cannot_hold_is_written_named_never_lost(log: Path) -> None:
    """A peer's 1e400 (read as infinity) or a 5,000-digit integer in `[audit] arguments =
    "full"` once made the encoder raise, and the call went unrecorded."""
    args = {"a": float("inf"), "b": [float("nan")], "c": 10**5000, "d": "\ud800"}
    with AuditWriter(str(log), session="s") as writer:
        writer.write({"event": "call", "args": args})
    rec = json.loads(log.read_bytes())
    assert rec["args"]["a"] == "[number JSON cannot hold: inf]"
    assert rec["args"]["b"] == ["[number JSON cannot hold: nan]"]
    assert rec["args"]["c"].startswith("[integer of about 5000 digits")
    assert rec["args"]["d"] == "\ud800"
    assert verify(str(log)).ok


@pytest.mark.parametrize("key", RESERVED)
def test_caller_may_not_set_reserved_keys(log: Path, key: str) -> None:
    with AuditWriter(str(log), session="s") as writer:
        with pytest.raises(ValueError, match=key):
            writer.write({"event": "call", key: "forged"})
        writer.write({"event": "call"})
    assert seqs(log) == [1]


def test_reopening_continues_seq_and_chain(log: Path) -> None:
    first = write_log(log, 3)
    with AuditWriter(str(log), session="s2") as writer:
        writer.write({"event": "call"})
    rec = json.loads(read_lines(log)[3])
    assert (rec["seq"], rec["prev"], rec["session"]) == (4, first[-1], "s2")
    assert verify(str(log)).ok


def test_creates_private_dirs_and_file(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "audit.jsonl"
    write_log(path, 1)
    for directory in (tmp_path / "a", tmp_path / "a" / "b"):
        assert directory.stat().st_mode & 0o777 == 0o700
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("blocker", ["file", "dir"])
def test_unusable_path_names_it(tmp_path: Path, blocker: str) -> None:
    if blocker == "file":  # a file where a directory should be: fails even for root
        (tmp_path / "plain").write_text("x")
        path = tmp_path / "plain" / "audit.jsonl"
    else:  # a directory where the file should be
        path = tmp_path / "audit.jsonl"
        path.mkdir()
    with pytest.raises(AuditError, match=re.escape(str(path))) as info:
        AuditWriter(str(path), session="s")
    assert "directory" in str(info.value)  # says what to do


def test_write_after_close_is_an_audit_error(log: Path) -> None:
    writer = AuditWriter(str(log), session="s")
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(AuditError, match="closed"):
        writer.write({"event": "call"})


def test_control_and_bidi_characters_are_escaped(log: Path) -> None:
    evil = {"tool": "x\x1b[31mred", "reason": "abc\u202eexe.txt", "server": "bell\x07\n"}
    with AuditWriter(str(log), session="s") as writer:
        writer.write({"event": "call", "decision": "refuse", **evil})
    raw = log.read_bytes()
    assert raw.isascii()
    assert raw.endswith(b"}\n") and all(b >= 0x20 for b in raw[:-1])
    assert b"\\u001b[31m" in raw and b"\\u202e" in raw and b"\\u0007\\n" in raw
    ((_, rec),) = iter_records(str(log))
    assert {k: rec[k] for k in evil} == evil  # the log keeps the exact values
    text = format_record(rec)
    assert not any(unicodedata.category(c)[0] == "C" for c in text), repr(text)
    assert "xred" in text and "abcexe.txt" in text and "bell" in text


def test_torn_line_written_by_hand_is_terminated_and_chained(log: Path) -> None:
    write_log(log, 3)
    torn = b'{"v":1,"seq":4,"prev":"' + b"ab" * 10
    with log.open("ab") as f:
        f.write(torn)
    assert problems(log) == [(Kind.TORN, 4, None)]
    write_log(log, 2, session="s2")
    lines = read_lines(log)
    assert lines[3] == torn + b"\n"
    after = json.loads(lines[4])
    assert (after["seq"], after["prev"]) == (4, sha(torn))
    assert problems(log) == [(Kind.TORN, 4, None)]
    assert seqs(log) == [1, 2, 3, 4, 5]


def test_torn_line_after_own_write_is_noticed(log: Path) -> None:
    """The size check catches bytes appended behind this writer's back."""
    with AuditWriter(str(log), session="s") as writer:
        writer.write({"event": "call"})
        with log.open("ab") as f:
            f.write(b'{"v":1,"seq":2,"pre')
        writer.write({"event": "call"})
    assert problems(log) == [(Kind.TORN, 2, None)]
    assert seqs(log) == [1, 2]


def test_complete_last_line_without_newline_is_kept(log: Path) -> None:
    write_log(log, 2)
    log.write_bytes(log.read_bytes()[:-1])
    assert verify(str(log)).ok
    write_log(log, 1)
    assert verify(str(log)).ok and seqs(log) == [1, 2, 3]


def test_readback_across_block_boundaries(log: Path) -> None:
    """Two writers on one file: each write reads the other's last line back, whatever
    its length against the 8 KiB read-back block."""
    with (
        AuditWriter(str(log), session="a") as a,
        AuditWriter(str(log), session="b") as b,
    ):
        for i, size in enumerate([10, 8000, 8192, 8300, 20000, 3, 16384, 100]):
            (a if i % 2 else b).write({"event": "call", "pad": "x" * size})
    assert verify(str(log)).ok and seqs(log) == list(range(1, 9))


def test_threads_share_one_writer(log: Path) -> None:
    with AuditWriter(str(log), session="s") as writer:

        def burst() -> None:
            for _ in range(200):
                writer.write({"event": "call"})

        threads = [threading.Thread(target=burst) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert verify(str(log)).ok and seqs(log) == list(range(1, 801))


def test_forked_child_reopens_the_file(log: Path) -> None:
    """A flock belongs to the open file description, which a fork shares: the child
    must get its own, or parent and child would both hold the lock at once."""
    with AuditWriter(str(log), session="s") as writer:
        writer.write({"event": "start"})
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child)
            code = 0
            try:
                for _ in range(300):
                    writer.write({"event": "child"})
            except BaseException:
                code = 1
            os._exit(code)
        for _ in range(300):
            writer.write({"event": "parent"})
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert verify(str(log)).ok and seqs(log) == list(range(1, 602))


# ---------------------------------------------------------------------------- processes

_LOCKSTEP_CHILD = """
import os, sys
from mcpwrap.audit.writer import AuditWriter
writer = AuditWriter(sys.argv[1], session=sys.argv[2])
while sys.stdin.buffer.read(1):  # one write per byte from the parent
    writer.write({"event": "call", "writer": sys.argv[2], "pad": "x" * 300})
    os.write(1, b".")
writer.close()
"""

_BURST_CHILD = """
import sys
from mcpwrap.audit.writer import AuditWriter
writer = AuditWriter(sys.argv[1], session=sys.argv[2])
sys.stdin.buffer.read(1)  # all start together
for _ in range(200):
    writer.write({"event": "call", "writer": sys.argv[2]})
writer.close()
"""

_LOOP_CHILD = """
import os, sys
from mcpwrap.audit.writer import AuditWriter
writer = AuditWriter(sys.argv[1], session="loop")
n = 0
while True:
    n += 1
    digest = writer.write({"event": "call", "n": n, "pad": "y" * 200})
    os.write(1, f"{n} {digest}\\n".encode())  # only after write() returned
"""


def spawn(code: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=child_env(),
    )


@pytest.mark.timeout(60)
def test_two_processes_in_lockstep_make_one_chain(log: Path) -> None:
    """Each round both processes write once, in whatever order they win the lock: every
    write finds the file grown by the other process and reads its last line back."""
    children = [spawn(_LOCKSTEP_CHILD, str(log), name) for name in ("a", "b")]
    for _ in range(200):
        for child in children:
            assert child.stdin is not None
            child.stdin.write(b"g")
            child.stdin.flush()
        for child in children:
            assert child.stdout is not None
            assert child.stdout.read(1) == b"."
    for child in children:
        child.communicate()
        assert child.returncode == 0
    report = verify(str(log))
    assert report.ok, report.problems
    records = [rec for _, rec in iter_records(str(log))]
    assert [rec["seq"] for rec in records] == list(range(1, 401))
    for first, second in zip(records[::2], records[1::2], strict=True):
        assert {first["writer"], second["writer"]} == {"a", "b"}  # interleaved


@pytest.mark.timeout(60)
def test_four_processes_racing_make_one_chain(log: Path) -> None:
    children = [spawn(_BURST_CHILD, str(log), f"w{i}") for i in range(4)]
    for child in children:
        assert child.stdin is not None
        child.stdin.write(b"g")
        child.stdin.flush()
    for child in children:
        child.communicate()
        assert child.returncode == 0
    assert verify(str(log)).ok
    assert seqs(log) == list(range(1, 801))


@pytest.mark.timeout(60)
def test_kill_9_loses_no_returned_write(log: Path) -> None:
    child = spawn(_LOOP_CHILD, str(log))
    assert child.stdout is not None
    acked: dict[int, str] = {}
    while len(acked) < 300:
        n, digest = child.stdout.readline().split()
        acked[int(n)] = digest.decode()
    child.send_signal(signal.SIGKILL)
    rest = child.stdout.read()  # acks already in the pipe: those writes returned too
    child.wait()
    assert child.returncode == -signal.SIGKILL
    for line in rest.splitlines():
        if len(line.split()) == 2:
            n, digest = line.split()
            acked[int(n)] = digest.decode()
    on_disk = {sha(raw.rstrip(b"\n")) for raw in read_lines(log)}
    assert set(acked.values()) <= on_disk
    found = {int(str(rec["n"])) for _, rec in iter_records(str(log), skip_bad=True)}
    assert set(acked) <= found
    assert [p.kind for p in verify(str(log)).problems] in ([], [Kind.TORN])
    write_log(log, 1, session="after")  # a later writer chains on from the wreck
    assert [p.kind for p in verify(str(log)).problems] in ([], [Kind.TORN])


# ---------------------------------------------------------------------------- verify


def test_verify_names_a_changed_record(log10: Path) -> None:
    lines = read_lines(log10)
    lines[6] = lines[6].replace(b'"tool":"t7"', b'"tool":"tX"')
    write_lines(log10, lines)
    (problem,) = verify(str(log10)).problems
    assert (problem.kind, problem.line, problem.seq) == (Kind.CHANGED, 7, 7)
    assert problem.message == "record seq 7 (line 7) was changed after it was written"


def test_verify_names_a_record_whose_seq_was_changed(log10: Path) -> None:
    lines = read_lines(log10)
    lines[6] = lines[6].replace(b'"seq":7,', b'"seq":70,')
    write_lines(log10, lines)
    assert problems(log10) == [(Kind.CHANGED, 7, 7)]


def test_verify_names_a_removed_record(log10: Path) -> None:
    lines = read_lines(log10)
    del lines[7]
    write_lines(log10, lines)
    (problem,) = verify(str(log10)).problems
    assert (problem.kind, problem.line, problem.seq) == (Kind.REMOVED, 8, 8)
    assert problem.message == "record seq 8 is missing between lines 7 and 8"


def test_verify_names_several_removed_records(log10: Path) -> None:
    lines = read_lines(log10)
    del lines[3:6]
    write_lines(log10, lines)
    (problem,) = verify(str(log10)).problems
    assert (problem.kind, problem.line, problem.seq) == (Kind.REMOVED, 4, 4)
    assert problem.message == "records seq 4 to 6 are missing between lines 3 and 4"


def test_verify_names_a_removed_first_record(log10: Path) -> None:
    write_lines(log10, read_lines(log10)[1:])
    (problem,) = verify(str(log10)).problems
    assert (problem.kind, problem.line, problem.seq) == (Kind.REMOVED, 1, 1)
    assert "before line 1" in problem.message


def test_verify_names_reordered_records(log10: Path) -> None:
    lines = read_lines(log10)
    lines[5], lines[6] = lines[6], lines[5]
    write_lines(log10, lines)
    (problem,) = verify(str(log10)).problems
    assert (problem.kind, problem.line, problem.seq) == (Kind.REORDERED, 7, 6)
    assert "seq 6 (line 7) is out of order" in problem.message


def test_verify_names_a_duplicate(log10: Path) -> None:
    lines = read_lines(log10)
    lines.insert(5, lines[4])
    write_lines(log10, lines)
    (problem,) = verify(str(log10)).problems
    assert (problem.kind, problem.line, problem.seq) == (Kind.DUPLICATE, 6, 5)
    assert problem.message == "record seq 5 (line 6) is a duplicate (first at line 5)"


def test_verify_names_a_torn_last_line(log10: Path) -> None:
    log10.write_bytes(log10.read_bytes()[:-40])
    report = verify(str(log10))
    assert [(p.kind, p.line, p.seq) for p in report.problems] == [(Kind.TORN, 10, None)]
    assert report.records == 9


def test_verify_names_a_malformed_line(log10: Path) -> None:
    lines = read_lines(log10)
    lines[2] = b"hello\n"
    write_lines(log10, lines)
    assert problems(log10) == [(Kind.MALFORMED, 3, None), (Kind.REMOVED, 4, 3)]


def test_verify_first_record_must_start_the_chain(log10: Path) -> None:
    lines = read_lines(log10)
    lines[0] = lines[0].replace(GENESIS.encode(), b"1" * 64)
    write_lines(log10, lines)
    (problem,) = verify(str(log10)).problems
    assert (problem.kind, problem.line, problem.seq) == (Kind.CHANGED, 1, 1)
    assert "does not start the chain" in problem.message


# Issue 15, item 9: a swap of two records 5 apart was reported as records missing that are
# present and 13 untouched records changed. Each row: a 30-record log, one tampering, and
# exactly the problems (kind, line, seq) that name what was done, nothing else.

N = 30


def _swap(i: int, j: int) -> Callable[[list[bytes]], list[bytes]]:
    def tamper(lines: list[bytes]) -> list[bytes]:
        lines[i - 1], lines[j - 1] = lines[j - 1], lines[i - 1]
        return lines

    return tamper


def _swapped(i: int, d: int) -> list[tuple[Kind, int, int | None]]:
    """Adjacent: one record moved one place (the later line is named); else both."""
    if d == 1:
        return [(Kind.REORDERED, i + 1, i)]
    return [(Kind.REORDERED, i, i + d), (Kind.REORDERED, i + d, i)]


def _delete(k: int) -> Callable[[list[bytes]], list[bytes]]:
    return lambda lines: lines[: k - 1] + lines[k:]


def _edit(k: int) -> Callable[[list[bytes]], list[bytes]]:
    def tamper(lines: list[bytes]) -> list[bytes]:
        lines[k - 1] = lines[k - 1].replace(f'"tool":"t{k}"'.encode(), b'"tool":"tX"')
        return lines

    return tamper


def _copy(k: int, at: int) -> Callable[[list[bytes]], list[bytes]]:
    """Record k copied to become line `at`."""
    return lambda lines: [*lines[: at - 1], lines[k - 1], *lines[at - 1 :]]


def _truncate(lines: list[bytes]) -> list[bytes]:
    return [*lines[:-1], lines[-1][:-40]]


def _move_block(first: int, last: int, after: int) -> Callable[[list[bytes]], list[bytes]]:
    """Records first..last moved to follow record `after` (0: to the front)."""

    def tamper(lines: list[bytes]) -> list[bytes]:
        block = lines[first - 1 : last]
        rest = lines[: first - 1] + lines[last:]
        at = after if after < first else after - len(block)
        return rest[:at] + block + rest[at:]

    return tamper


TAMPERED: list[tuple[str, Callable[[list[bytes]], list[bytes]], list[tuple[Kind, int, int | None]]]]
TAMPERED = [
    *((f"swap-{i}-{i + d}", _swap(i, i + d), _swapped(i, d)) for d in range(1, 11) for i in (1, 7)),
    *((f"swap-{N - d}-{N}", _swap(N - d, N), _swapped(N - d, d)) for d in (1, 2, 5, 10)),
    ("delete-1", _delete(1), [(Kind.REMOVED, 1, 1)]),
    ("delete-2", _delete(2), [(Kind.REMOVED, 2, 2)]),
    ("delete-15", _delete(15), [(Kind.REMOVED, 15, 15)]),
    ("delete-29", _delete(29), [(Kind.REMOVED, 29, 29)]),
    ("edit-1", _edit(1), [(Kind.CHANGED, 1, 1)]),
    ("edit-15", _edit(15), [(Kind.CHANGED, 15, 15)]),
    ("edit-29", _edit(29), [(Kind.CHANGED, 29, 29)]),
    ("copy-5-right-after", _copy(5, 6), [(Kind.DUPLICATE, 6, 5)]),
    ("copy-5-at-the-end", _copy(5, N + 1), [(Kind.DUPLICATE, N + 1, 5)]),
    ("copy-20-before-it", _copy(20, 3), [(Kind.DUPLICATE, 3, 20)]),
    ("copy-1-first", _copy(1, 1), [(Kind.DUPLICATE, 2, 1)]),  # the same bytes twice
    ("truncate-last-line", _truncate, [(Kind.TORN, N, None)]),
    ("move-5..9-after-20", _move_block(5, 9, 20), [(Kind.REORDERED, 16, 5)]),
    ("move-25-to-front", _move_block(25, 25, 0), [(Kind.REORDERED, 1, 25)]),
]


@pytest.mark.parametrize(
    ("tamper", "expected"), [t[1:] for t in TAMPERED], ids=[t[0] for t in TAMPERED]
)
def test_verify_names_exactly_what_was_done(
    log: Path,
    tamper: Callable[[list[bytes]], list[bytes]],
    expected: list[tuple[Kind, int, int | None]],
) -> None:
    write_log(log, N)
    write_lines(log, tamper(read_lines(log)))
    assert problems(log) == expected


@pytest.mark.parametrize("d", range(2, 11))
def test_a_swap_says_where_each_record_belongs(log: Path, d: int) -> None:
    write_log(log, N)
    write_lines(log, _swap(7, 7 + d)(read_lines(log)))
    first, second = verify(str(log)).problems
    assert first.message == (
        f"record seq {7 + d} (line 7) is out of order: it belongs after seq {6 + d} (line {6 + d})"
    )
    assert second.message == (
        f"record seq 7 (line {7 + d}) is out of order: it belongs after seq 6 (line 6)"
    )


def test_a_moved_block_is_one_problem(log: Path) -> None:
    write_log(log, N)
    write_lines(log, _move_block(5, 9, 20)(read_lines(log)))
    (problem,) = verify(str(log)).problems
    assert problem.message == (
        "records seq 5 to 9 (lines 16 to 20) are out of order: they belong after seq 4 (line 4)"
    )


def test_a_copy_before_the_original_names_the_copy(log: Path) -> None:
    write_log(log, N)
    write_lines(log, _copy(20, 3)(read_lines(log)))
    (problem,) = verify(str(log)).problems
    assert problem.message == "record seq 20 (line 3) is a duplicate (also at line 21)"


def test_verify_reads_a_long_damaged_log_in_bounded_time(log: Path) -> None:
    """The diagnosis works on runs between breaks, not on every record: a 20,000-record
    log with a swap and an edit is verified in two passes."""
    write_log(log, 20_000)
    lines = _swap(5_000, 15_000)(read_lines(log))
    lines = _edit(10_000)(lines)
    write_lines(log, lines)
    start = time.monotonic()
    found = problems(log)
    assert time.monotonic() - start < 10
    assert found == [
        (Kind.REORDERED, 5_000, 15_000),
        (Kind.CHANGED, 10_000, 10_000),
        (Kind.REORDERED, 15_000, 5_000),
    ]


def _fewest_moves(order: list[int]) -> int:
    """len(order) minus its longest increasing subsequence: the fewest records to move."""
    tails: list[int] = []
    for seq in order:
        at = bisect.bisect_left(tails, seq)
        tails[at : at + 1] = [seq]
    return len(order) - len(tails)


def _records_named(problem: Problem) -> int:
    block = re.match(r"records seq (\d+) to (\d+)", problem.message)
    return int(block[2]) - int(block[1]) + 1 if block else 1


@settings(max_examples=150, deadline=None, database=None)
@given(st.permutations(range(12)))
def test_property_any_reorder_is_only_reorders_and_the_fewest(order: list[int]) -> None:
    """Whatever the order, nothing is reported missing, changed or repeated, and the records
    named are as few as any explanation by moves can be."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "audit.jsonl"
        write_log(log, 12)
        lines = read_lines(log)
        write_lines(log, [lines[i] for i in order])
        found = verify(str(log)).problems
    assert {p.kind for p in found} <= {Kind.REORDERED}
    assert sum(_records_named(p) for p in found) == _fewest_moves(order)


@settings(max_examples=150, deadline=None, database=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["swap", "delete", "copy", "edit", "garble"]), st.integers(0, 11)
        ),
        max_size=4,
    )
)
def test_property_verify_never_fails_on_tampering(steps: list[tuple[str, int]]) -> None:
    """Any mix of tamperings gives a report, whose problems name lines of the file."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "audit.jsonl"
        write_log(log, 12)
        original = read_lines(log)
        lines = list(original)
        for step, n in steps:
            if not lines:
                break
            k = n % len(lines)
            if step == "swap":
                lines[k], lines[-1 - k] = lines[-1 - k], lines[k]
            elif step == "delete":
                del lines[k]
            elif step == "copy":
                lines.insert(k // 2, lines[k])
            elif step == "edit":
                lines[k] = lines[k].replace(b'"tool":"t', b'"tool":"x')
            else:
                lines[k] = lines[k][: len(lines[k]) // 2] + b"\n"
        write_lines(log, lines)
        report = verify(str(log))
    assert all(1 <= p.line <= len(lines) for p in report.problems)
    if lines == original:
        assert report.ok


def test_verify_cannot_see_a_changed_last_record_but_reports_its_hash(log10: Path) -> None:
    """The documented limit: nothing after the last record holds its hash."""
    before = verify(str(log10))
    lines = read_lines(log10)
    lines[9] = lines[9].replace(b'"tool":"t10"', b'"tool":"tX"')
    write_lines(log10, lines)
    after = verify(str(log10))
    assert after.ok
    assert after.last_hash != before.last_hash  # what a hash kept elsewhere would catch


def test_verify_cannot_see_a_cut_tail_but_reports_last_seq(log10: Path) -> None:
    write_lines(log10, read_lines(log10)[:8])
    report = verify(str(log10))
    assert report.ok and report.last_seq == 8


def test_verify_empty_and_missing(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    report = verify(str(empty))
    assert report.ok and (report.records, report.last_hash, report.last_seq) == (0, None, None)
    with pytest.raises(AuditError, match=r"missing\.jsonl"):
        verify(str(tmp_path / "missing.jsonl"))


def test_iter_records_names_a_bad_line(log10: Path) -> None:
    lines = read_lines(log10)
    lines[2] = b'{"not": "a record"}\n'
    write_lines(log10, lines)
    with pytest.raises(AuditError, match=r"audit\.jsonl:3: "):
        list(iter_records(str(log10)))
    assert [n for n, _ in iter_records(str(log10), skip_bad=True)] == [1, 2, *range(4, 11)]


# ---------------------------------------------------------------------------- format


def local(ts: str) -> str:
    return datetime.fromisoformat(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def test_format_record_allowed_call() -> None:
    rec = {
        "ts": "2026-11-23T19:51:16.123456Z",
        "server": "fs",
        "event": "call",
        "decision": "allow",
        "tool": "read_file",
        "rule": "tools.read_file",
        "outcome": "ok",
        "duration_ms": 12.345,
        "reason": "not shown when allowed",
    }
    expected = f"{local(rec['ts'])}  fs  call  ALLOW  read_file  (tools.read_file)  ok  12.3 ms"
    assert format_record(rec) == expected


def test_format_record_refusal_shows_reason_and_method() -> None:
    rec = {"decision": "refuse", "method": "sampling/createMessage", "reason": "not granted"}
    line = format_record(rec)
    assert line == "-  -  -  REFUSE  sampling/createMessage  (-)  -  -  not granted"


def test_format_record_with_nothing() -> None:
    assert format_record({}) == "-  -  -  -  -  (-)  -  -"


# ---------------------------------------------------------------------------- tail


class Sink(io.StringIO):
    """A text stream a test can wait on: for some text, or for a flush."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = threading.Condition()
        self.flushes = 0
        self.unflushed = False

    def write(self, text: str) -> int:
        with self.changed:
            count = super().write(text)
            self.unflushed = True
            self.changed.notify_all()
            return count

    def flush(self) -> None:
        with self.changed:
            super().flush()
            self.flushes += 1
            self.unflushed = False
            self.changed.notify_all()

    def wait(self, ready: Callable[[], bool], what: str) -> None:
        with self.changed:
            assert self.changed.wait_for(ready, 10.0), f"{what}: {self.getvalue()!r}"

    def wait_for(self, text: str) -> None:
        """Until text is written and flushed."""
        self.wait(lambda: text in self.getvalue() and not self.unflushed, f"no {text!r}")


def test_tail_prints_the_last_n(log10: Path) -> None:
    out = Sink()
    tail(str(log10), 3, out=out)
    shown = out.getvalue().splitlines()
    assert [line.split()[5] for line in shown] == ["t8", "t9", "t10"]


def test_tail_shows_a_torn_last_line(log10: Path) -> None:
    log10.write_bytes(log10.read_bytes()[:-40])
    out = Sink()
    tail(str(log10), 2, out=out)
    first, second = out.getvalue().splitlines()
    assert " t9 " in first and second.startswith("-- not an audit record")


@pytest.mark.timeout(60)
def test_tail_follows_appends_partial_lines_and_rotation(log: Path) -> None:
    write_log(log, 2)
    out, stop = Sink(), threading.Event()
    follower = threading.Thread(
        target=tail, args=(str(log),), kwargs={"n": 1, "follow": True, "out": out, "stop": stop}
    )
    follower.start()
    try:
        out.wait_for(" t2 ")
        with AuditWriter(str(log), session="s") as writer:
            writer.write({"tool": "appended"})
            out.wait_for(" appended ")
            line = json.dumps({"v": 1, "seq": 4, "prev": GENESIS, "tool": "slow"}).encode()
            with log.open("ab") as f:  # a line that arrives in two pieces
                before, flushes = out.getvalue(), out.flushes
                f.write(line[:20])
                f.flush()
                out.wait(lambda: out.flushes > flushes, "the first piece was not read")
                assert out.getvalue() == before  # nothing shown for half a line
                f.write(line[20:] + b"\n")
            out.wait_for(" slow ")
        os.rename(log, log.with_suffix(".1"))
        write_log(log, 1, session="new")  # a fresh file at the same path
        out.wait_for(" t1 ")
    finally:
        stop.set()
        follower.join(10)
    assert not follower.is_alive()
    shown = out.getvalue()
    assert " t1 " not in shown.split(" slow ")[0]  # the old file's t1 was not reprinted
    assert shown.count(" slow ") == 1 and "not an audit record" not in shown
