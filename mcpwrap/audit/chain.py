"""What a broken audit chain says happened: the pure half of `audit verify`.

read.py scans the log into runs: stretches of records in which each record's prev is
the hash of the line before it and its seq is one more. An intact log is one run that
starts from the genesis hash at seq 1. Where runs meet, the chain itself tells what
happened, because each run's first prev names its real predecessor by hash wherever that
line now is (`owners`, found in a second pass over the file):

- a prev that points at the record it follows, with a seq that does not follow it: that
  record's seq field was edited (the hash link proves what came before);
- a prev that no line has: the record before it was changed, or records were removed
  (the seqs say which: a gap means removed);
- a seq seen before: a duplicate;
- predecessors found, but not in file order: records moved. The records named are the
  fewest whose moving explains the order; among equal explanations, the one that leaves
  more records at their own place, then the one that names later lines (two adjacent
  records swapped: the second is named, with where it belongs).

Memory grows with the damage (one Run per break, one piece per displaced stretch), not
with the length of the log.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import overload

from mcpwrap.audit.writer import GENESIS


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


@dataclass(slots=True)
class Run:
    """Records on consecutive lines, each chained to the one before, seqs counting up."""

    line: int  # of the first record
    seq: int  # the first record's seq, as written
    count: int
    prev: str  # the first record's prev


@dataclass(frozen=True)
class _Piece:
    """Consecutive records of one run: the line and seq of the first, and how many."""

    line: int
    seq: int
    count: int


def intact(runs: Sequence[Run]) -> bool:
    """Whether the records form one chain from the genesis hash (no owners needed)."""
    return not runs or (len(runs) == 1 and runs[0].prev == GENESIS and runs[0].seq == 1)


def wanted(runs: Sequence[Run]) -> set[str]:
    """The hashes whose first line diagnose() needs in `owners`."""
    return {run.prev for run in runs if run.prev != GENESIS}


def diagnose(runs: Sequence[Run], owners: Mapping[str, int]) -> tuple[list[Problem], int | None]:
    """The chain's problems, and the seq the chain gives the last record (None: none).

    `runs` in file order; `owners` maps each hash of wanted(runs) to the first line whose
    bytes have it (absent: no line has).
    """
    if not runs:
        return [], None
    starts, problems, flagged = _starts(runs, owners)
    holders, moved, repeats = _sort_out(_pieces(runs, starts))
    where = _Where(holders)
    problems += [_repeat(p, h) for p, h in _joined(repeats) if h is not None]
    problems += [_out_of_order(p, where) for p, _ in _joined((p, None) for p in moved)]
    problems += _unlinked(runs, starts, owners, where, flagged)
    problems += _gaps(where)
    problems.sort(key=lambda p: p.line)
    return problems, starts[-1] + runs[-1].count - 1


def _starts(
    runs: Sequence[Run], owners: Mapping[str, int]
) -> tuple[list[int], list[Problem], set[int]]:
    """Each run's first seq as the chain has it; a seq field that contradicts the record's
    intact link to its predecessor is reported, and the chain's seq used instead."""
    starts, problems, flagged = [], [], set()
    for run in runs:
        pred = 0 if run.prev == GENESIS else _written_seq(runs, owners.get(run.prev))
        if pred is None or run.seq == pred + 1:
            starts.append(run.seq)
            continue
        seq = pred + 1
        message = f"record seq {seq} (line {run.line}) was changed: it now says seq {run.seq}"
        problems.append(Problem(run.line, seq, Kind.CHANGED, message))
        flagged.add(run.line)
        starts.append(seq)
    return starts, problems, flagged


def _written_seq(runs: Sequence[Run], line: int | None) -> int | None:
    """The seq written on `line`; None for no line, or one that is not a record (a torn
    line a later writer chained from: its successor's seq cannot be checked against it)."""
    if line is None:
        return None
    at = bisect.bisect_right([run.line for run in runs], line) - 1
    if at < 0 or line >= runs[at].line + runs[at].count:
        return None
    return runs[at].seq + line - runs[at].line


def _pieces(runs: Sequence[Run], starts: Sequence[int]) -> list[_Piece]:
    """The runs in file order, each cut at every run's first and past-last seq: any two
    pieces then hold the same seqs or none in common."""
    bounds = sorted({b for run, s in zip(runs, starts, strict=True) for b in (s, s + run.count)})
    pieces = []
    for run, start in zip(runs, starts, strict=True):
        first = bisect.bisect_left(bounds, start)
        last = bisect.bisect_left(bounds, start + run.count)
        for lo, hi in itertools.pairwise(bounds[first : last + 1]):
            pieces.append(_Piece(run.line + lo - start, lo, hi - lo))
    return pieces


def _sort_out(
    pieces: Sequence[_Piece],
) -> tuple[list[_Piece], list[_Piece], list[tuple[_Piece, _Piece]]]:
    """(the piece holding each seq, the moved ones among them, (repeat, holder) pairs).

    The holders are the heaviest chain of pieces in order; a piece off that chain whose
    seqs it holds too is a repeat of those records, any other one was moved (the first
    of several copies that are all off the chain holds their seqs)."""
    kept = _longest_in_order(pieces)
    holders = {pieces[i].seq: pieces[i] for i in kept}
    moved, repeats = [], []
    for i, piece in enumerate(pieces):
        if i in kept:
            continue
        held = holders.get(piece.seq)
        if held is None:
            holders[piece.seq] = piece
            moved.append(piece)
        else:
            repeats.append((piece, held))
    return list(holders.values()), moved, repeats


def _longest_in_order(pieces: Sequence[_Piece]) -> set[int]:
    """Indexes of the pieces (in file order) to keep: the heaviest chain increasing in seq,
    by records, then records at their own place (as many records before them in the file
    as seqs below them), then earlier lines. A weighted longest increasing subsequence,
    with a Fenwick tree of prefix maxima over the rank of the seqs."""
    seqs = sorted({p.seq: p.count for p in pieces}.items())
    rank = {seq: r for r, (seq, _) in enumerate(seqs)}
    below = dict(zip(rank, itertools.accumulate((n for _, n in seqs), initial=0), strict=False))
    tree: list[tuple[int, int, int]] = [(0, 0, 1)] * (len(seqs) + 1)
    best: list[tuple[int, int, int]] = []  # (records, records at home, -index)
    parent: list[int] = []
    before = 0
    for i, piece in enumerate(pieces):
        home = piece.count if below[piece.seq] == before else 0
        before += piece.count
        weight, at_home, minus_index = _prefix_max(tree, rank[piece.seq])
        best.append((weight + piece.count, at_home + home, -i))
        parent.append(-minus_index)
        _raise(tree, rank[piece.seq] + 1, best[-1])
    kept, i = set(), -max(best)[2]
    while i >= 0:
        kept.add(i)
        i = parent[i]
    return kept


def _prefix_max(tree: Sequence[tuple[int, int, int]], end: int) -> tuple[int, int, int]:
    """Max over Fenwick positions 1..end; (0, 0, 1) when empty (parent index -1)."""
    found = (0, 0, 1)
    while end > 0:
        found = max(found, tree[end])
        end -= end & -end
    return found


def _raise(tree: list[tuple[int, int, int]], at: int, value: tuple[int, int, int]) -> None:
    while at < len(tree):
        tree[at] = max(tree[at], value)
        at += at & -at


def _joined(
    pairs: Iterable[tuple[_Piece, _Piece | None]],
) -> list[tuple[_Piece, _Piece | None]]:
    """Neighbouring pieces that continue each other (and whose holders do), as one."""
    out: list[tuple[_Piece, _Piece | None]] = []
    for piece, held in pairs:
        if out and _continues(out[-1][0], piece) and _continues(out[-1][1], held):
            last, last_held = out[-1]
            out[-1] = (_grown(last, piece.count), _grown(last_held, piece.count))
        else:
            out.append((piece, held))
    return out


def _continues(piece: _Piece | None, after: _Piece | None) -> bool:
    if piece is None or after is None:
        return piece is after
    return after.line == piece.line + piece.count and after.seq == piece.seq + piece.count


@overload
def _grown(piece: _Piece, more: int) -> _Piece: ...
@overload
def _grown(piece: None, more: int) -> None: ...
def _grown(piece: _Piece | None, more: int) -> _Piece | None:
    return None if piece is None else _Piece(piece.line, piece.seq, piece.count + more)


class _Where:
    """Where each seq is: the pieces that hold them, in seq order."""

    def __init__(self, holders: Sequence[_Piece]) -> None:
        self.by_seq = sorted(holders, key=lambda p: p.seq)
        self._firsts = [p.seq for p in self.by_seq]

    def line(self, seq: int) -> int | None:
        at = bisect.bisect_right(self._firsts, seq) - 1
        if at < 0 or seq >= self.by_seq[at].seq + self.by_seq[at].count:
            return None
        piece = self.by_seq[at]
        return piece.line + seq - piece.seq


def _repeat(piece: _Piece, held: _Piece) -> Problem:
    where = "first" if held.line < piece.line else "also"
    if piece.count == 1:
        message = (
            f"record seq {piece.seq} (line {piece.line}) is a duplicate "
            f"({where} at line {held.line})"
        )
    else:
        message = (
            f"records seq {piece.seq} to {piece.seq + piece.count - 1} (lines {piece.line} to "
            f"{piece.line + piece.count - 1}) are duplicates ({where} at lines {held.line} to "
            f"{held.line + held.count - 1})"
        )
    return Problem(piece.line, piece.seq, Kind.DUPLICATE, message)


def _out_of_order(piece: _Piece, where: _Where) -> Problem:
    after, before = where.line(piece.seq - 1), where.line(piece.seq + piece.count)
    if after is not None:
        belongs = f"after seq {piece.seq - 1} (line {after})"
    elif before is not None:
        belongs = f"before seq {piece.seq + piece.count} (line {before})"
    else:
        belongs = "elsewhere"
    if piece.count == 1:
        what = f"record seq {piece.seq} (line {piece.line}) is out of order: it belongs"
    else:
        last_seq, last_line = piece.seq + piece.count - 1, piece.line + piece.count - 1
        what = (
            f"records seq {piece.seq} to {last_seq} (lines {piece.line} to {last_line}) are "
            "out of order: they belong"
        )
    return Problem(piece.line, piece.seq, Kind.REORDERED, f"{what} {belongs}")


def _unlinked(
    runs: Sequence[Run],
    starts: Sequence[int],
    owners: Mapping[str, int],
    where: _Where,
    flagged: set[int],
) -> list[Problem]:
    """Runs whose first prev no line has: blamed on the record they follow when it is
    there (its bytes no longer hash to that prev); a missing one is a gap (_gaps)."""
    broken = [
        (run, start)
        for run, start in zip(runs, starts, strict=True)
        if run.prev != GENESIS and run.prev not in owners
    ]
    problems = []
    for run, _ in (b for b in broken if b[1] == 1):  # nothing comes before seq 1
        flagged.add(run.line)
        message = f"record seq 1 (line {run.line}) does not start the chain: prev is not 0*64"
        problems.append(Problem(run.line, 1, Kind.CHANGED, message))
    for _, start in broken:
        line = where.line(start - 1)
        if start > 1 and line is not None and line not in flagged:
            flagged.add(line)
            message = f"record seq {start - 1} (line {line}) was changed after it was written"
            problems.append(Problem(line, start - 1, Kind.CHANGED, message))
    return problems


def _gaps(where: _Where) -> list[Problem]:
    """Seqs from 1 to the highest that no line holds, reported at the record after them."""
    problems, expected, last_line = [], 1, None
    for piece in where.by_seq:
        if piece.seq > expected:
            lo, hi = expected, piece.seq - 1
            problems.append(
                Problem(piece.line, lo, Kind.REMOVED, _missing(lo, hi, last_line, piece.line))
            )
        expected = piece.seq + piece.count
        last_line = piece.line + piece.count - 1
    return problems


def _missing(lo: int, hi: int, before: int | None, after: int) -> str:
    what = f"record seq {lo} is" if lo == hi else f"records seq {lo} to {hi} are"
    if before is not None and before == after - 1:
        return f"{what} missing between lines {before} and {after}"
    if before is None and after == 1:
        return f"{what} missing before line 1"
    if before is None:
        return f"{what} missing before seq {hi + 1} (line {after})"
    return f"{what} missing between seq {lo - 1} (line {before}) and seq {hi + 1} (line {after})"
