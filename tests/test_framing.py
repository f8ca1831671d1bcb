"""mcpwrap.relay.framing: newline-delimited messages over raw file descriptors.

Split on b"\\n" only, bounded memory past the cap, the id of an oversized request, and
writes that survive partial os.write() calls. Pipes are real; threads stand in for peers.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
import tracemalloc
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpwrap.relay.framing import (
    DEFAULT_MAX_MESSAGE,
    PEEK_BYTES,
    READ_CHUNK,
    LineReader,
    Oversize,
    peek_id,
    write_all,
    write_line,
)

Item = bytes | Oversize


def _feed_all(chunks: list[bytes], max_line: int = 1 << 20) -> list[Item]:
    reader = LineReader(-1, max_line)
    for chunk in chunks:
        reader.feed(chunk)
    return reader.drain_ready()


def _read_pipe(data: bytes, max_line: int = DEFAULT_MAX_MESSAGE) -> list[Item]:
    """Everything a LineReader reads from a real pipe that a thread fills, then closes."""
    r, w = os.pipe()

    def writer() -> None:
        try:
            write_all(w, data)
        finally:
            os.close(w)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        reader = LineReader(r, max_line)
        items: list[Item] = []
        while (item := reader.read()) is not None:
            items.append(item)
        assert reader.read() is None  # EOF stays EOF
    finally:
        thread.join()
        os.close(r)
    return items


# --- splitting ---------------------------------------------------------------------------

ODD_BREAKS = '{"text":"a\u2028b\u2029c\u0085d\re\x0bf\x0cg"}'.encode()


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([b'{"a":1}\n{"b":2}\n'], [b'{"a":1}', b'{"b":2}']),
        ([b'{"a"', b":1}\n", b'{"b":', b"2}\n"], [b'{"a":1}', b'{"b":2}']),
        ([b"a", b"b", b"c", b"\n"], [b"abc"]),
        ([b"abc\n", b"", b"def\n"], [b"abc", b"def"]),
        ([ODD_BREAKS + b"\n"], [ODD_BREAKS]),
        ([ODD_BREAKS[:5], ODD_BREAKS[5:] + b"\n"], [ODD_BREAKS]),
        ([b"crlf\r\n"], [b"crlf\r"]),
        ([b"\n\n\nx\n\n", b"\n", b"y\n\n"], [b"x", b"y"]),
        ([b"\n"], []),
        ([b"no newline yet"], []),
        ([b" \n"], [b" "]),
    ],
    ids=[
        "two-in-one-chunk",
        "split-across-chunks",
        "byte-per-chunk",
        "empty-chunk",
        "u2028-u0085-cr-stay-inside",
        "odd-breaks-split",
        "crlf-keeps-cr",
        "empty-lines-skipped",
        "only-newline",
        "incomplete-held",
        "whitespace-line-kept",
    ],
)
def test_feed_splits_on_newline_only(chunks: list[bytes], expected: list[Item]) -> None:
    assert _feed_all(chunks) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", []),
        (b"\n\n", []),
        (b'{"a":1}\n{"b":2}', [b'{"a":1}', b'{"b":2}']),
        (b'{"last":true}', [b'{"last":true}']),
        (ODD_BREAKS, [ODD_BREAKS]),
        (b"x\n" * 3, [b"x", b"x", b"x"]),
        (b"big" * (READ_CHUNK // 2) + b"\nafter", [b"big" * (READ_CHUNK // 2), b"after"]),
    ],
    ids=[
        "empty",
        "only-newlines",
        "final-line-without-newline",
        "single-line-at-eof",
        "odd-breaks-at-eof",
        "three",
        "over-one-read-chunk",
    ],
)
def test_pipe_reads_lines_and_final_line_at_eof(data: bytes, expected: list[Item]) -> None:
    assert _read_pipe(data) == expected


def test_pipe_carries_a_5mb_message() -> None:
    big = b'{"id":1,"result":"' + b"A" * (5 << 20) + b'"}'
    assert _read_pipe(big + b"\n" + b'{"id":2}\n') == [big, b'{"id":2}']


# --- the cap -----------------------------------------------------------------------------

CAP = 2 * PEEK_BYTES


def _line(size: int, fill: bytes = b"x") -> bytes:
    body = b'{"id":7,"pad":"'
    return (body + fill * size)[:size]


@pytest.mark.parametrize(
    ("size", "oversize"),
    [(CAP - 1, False), (CAP, False), (CAP + 1, True), (3 * CAP + 5, True)],
    ids=["under", "at-cap", "one-over", "far-over"],
)
@pytest.mark.parametrize("chunk", [1 << 20, 1000, 1], ids=["one-chunk", "1000B", "1B"])
def test_cap_boundary(size: int, oversize: bool, chunk: int) -> None:
    line = _line(size)
    data = line + b"\n" + b'{"next":1}\n'
    items = _feed_all([data[i : i + chunk] for i in range(0, len(data), chunk)], CAP)
    first = Oversize(size, line[:PEEK_BYTES]) if oversize else line
    assert items == [first, b'{"next":1}']


@pytest.mark.parametrize(
    "data",
    [_line(CAP + 10), _line(CAP + 10) + b"\n", b"\n" + _line(5 * CAP)],
    ids=["at-eof-no-newline", "at-eof-newline", "after-empty-line"],
)
def test_oversize_through_a_pipe(data: bytes) -> None:
    line = data.strip(b"\n")
    assert _read_pipe(data, CAP) == [Oversize(len(line), line[:PEEK_BYTES])]


def test_oversize_head_feeds_peek_id() -> None:
    line = b'{"jsonrpc":"2.0","id":"req-9","method":"tools/call","params":{"x":"' + b"y" * CAP
    (item,) = _feed_all([line, b"\n"], CAP)
    assert isinstance(item, Oversize)
    assert peek_id(item.head) == "req-9"


@pytest.mark.parametrize(
    ("cap", "piece", "total"),
    [
        (1 << 20, 64 << 10, 50 << 20),
        (1 << 20, 1 << 20, 50 << 20),
        (64 << 10, 1, 200 << 10),
        (256 << 10, 100, 1 << 20),
        (256 << 10, 100, 200 << 10),  # under the cap: kept whole
    ],
    ids=["64KiB-reads", "1MiB-reads", "1B-reads", "100B-reads", "100B-reads-under-cap"],
)
def test_memory_stays_near_the_cap_for_any_line(cap: int, piece: int, total: int) -> None:
    """Issue 15, item 10: a line over the cap cost about twice the cap (every part, plus a
    join of them all to cut the head), and a peer writing a byte at a time about 120
    times (a bytes object per byte, and join's bookkeeping of each). The reader may hold
    the cap, the piece in hand and the head; a line within the cap is also copied once,
    into the bytes returned. Each piece is a fresh object, as each read gives one."""
    reader = LineReader(-1, cap)
    source = memoryview(b"z" * piece)
    tracemalloc.start()
    try:
        for _ in range(total // piece):
            reader.feed(bytes(source))
        reader.feed(b"\nok\n")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = total // piece * piece
    first = b"z" * size if size <= cap else Oversize(size, b"z" * PEEK_BYTES)
    assert reader.drain_ready() == [first, b"ok"]
    room = size if size <= cap else 0  # the copy returned
    # 1/8: a growing bytearray's spare room; 16 KiB: the head and small objects.
    assert peak < min(size, cap) * 9 // 8 + piece + room + (16 << 10), f"peak {peak} bytes"


# --- properties --------------------------------------------------------------------------

_message = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b""))


@st.composite
def _framed(draw: st.DrawFn) -> tuple[list[bytes], list[bytes]]:
    """(messages, chunks): the messages joined by b"\\n", cut at arbitrary points."""
    messages = draw(st.lists(_message, max_size=12))
    data = b"\n".join(messages) + b"\n"
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return messages, [data[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=300, deadline=None, database=None)
@given(_framed())
def test_property_reader_yields_the_non_empty_messages(
    framed: tuple[list[bytes], list[bytes]],
) -> None:
    messages, chunks = framed
    assert _feed_all(chunks) == [m for m in messages if m]


@settings(max_examples=300, deadline=None, database=None)
@given(_framed(), st.integers(0, 48))
def test_property_cap_marks_exactly_the_long_messages(
    framed: tuple[list[bytes], list[bytes]], cap: int
) -> None:
    messages, chunks = framed
    items = _feed_all(chunks, cap)
    kept = [m for m in messages if m]
    assert len(items) == len(kept)
    for message, item in zip(kept, items, strict=True):
        if len(message) <= cap:
            assert item == message
        else:
            assert isinstance(item, Oversize)
            assert item.size == len(message)
            # The head is what had arrived when the cap was crossed (cap < PEEK_BYTES here).
            assert message.startswith(item.head)
            assert min(len(message), cap + 1) <= len(item.head) <= PEEK_BYTES


@settings(max_examples=100, deadline=None, database=None)
@given(st.lists(_message, max_size=8))
def test_property_pipe_keeps_final_line_at_eof(messages: list[bytes]) -> None:
    assert _read_pipe(b"\n".join(messages)) == [m for m in messages if m]


# --- peek_id -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b'{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"argu', 42),
        (b'{"id":0,"method":"x"', 0),
        (b'{"id":-7,"method":"x"', -7),
        (b'{"id":123456789012345678901234567890}', 123456789012345678901234567890),
        (b' \r\n\t{ "id" : 5 }', 5),
        (b'{"id":"abc","method":', "abc"),
        (b'{"id":"a\\"b\\\\c\\u00e9\\n","method":', 'a"b\\c\u00e9\n'),
        (b'{"id":"","x":1}', ""),
        (b'{"\\u0069d":8,"method":"x"', 8),
        (
            b'{"method":"tools/call","params":{"id":1,"arguments":{"id":"x","list":'
            b'[{"id":2},[3,{"id":4}]]}},"id":99,"jsonrpc":"2.0","x":"',
            99,
        ),
        (b'{"params":"text with \\"id\\":3 inside","id":4,', 4),
        (b'{"a":"ends in backslash \\\\","id":6,', 6),
        (b'{"idx":1,"xid":2,"id":3,', 3),
        (b'{"a":1.5e3,"b":true,"c":null,"d":[],"e":{},"id":11}', 11),
        (b'{"jsonrpc":"2.0","method":"tools/call","params":{"arguments":{"c":"aaaa', None),
        (b'{"jsonrpc":"2.0","id":"ab', None),
        (b'{"jsonrpc":"2.0","id"', None),
        (b'{"jsonrpc":"2.0","id":', None),
        (b'{"jsonrpc":"2.0"', None),
        (b"", None),
        (b"   ", None),
        (b'[{"id":1}]', None),
        (b'"id"', None),
        (b"42", None),
        (b'{"id":1.5,"x":1', None),
        (b'{"id":1e3,"x":1', None),
        (b'{"id":-,"x":1', None),
        (b'{"id":01,"x":1', None),
        (b'{"id":true,"x":1', None),
        (b'{"id":null,"x":1', None),
        (b'{"id":{"n":1},"x":1', None),
        (b'{"id":[1],"x":1', None),
        (b'{"a":1}', None),
        (b"{id:1}", None),
        (b'{"id":"\xff\xfe","x":1', None),
    ],
    ids=[
        "int",
        "zero",
        "negative",
        "bigint",
        "whitespace",
        "string",
        "string-escapes",
        "empty-string",
        "escaped-key",
        "after-nested-ids",
        "id-text-inside-string",
        "escaped-backslash-before-quote",
        "similar-keys",
        "after-scalars",
        "truncated-before-id",
        "truncated-string",
        "truncated-after-key",
        "truncated-after-colon",
        "no-id-truncated",
        "empty",
        "blank",
        "array",
        "string-top-level",
        "number-top-level",
        "float",
        "exponent",
        "lone-minus",
        "leading-zero",
        "true",
        "null",
        "object",
        "array-id",
        "complete-without-id",
        "unquoted-key",
        "invalid-utf8",
    ],
)
def test_peek_id(head: bytes, expected: int | str | None) -> None:
    with _deadline(2.0):
        found = peek_id(head)
    assert found == expected
    assert type(found) is type(expected)


@pytest.mark.parametrize(
    "head",
    [
        b'{"jsonrpc":"2.0","id":12',
        b'{"id":-',
    ],
    ids=["digits", "minus"],
)
def test_peek_id_head_cut_inside_a_number_ends(head: bytes) -> None:
    """An oversized request whose first PEEK_BYTES bytes end inside the numeric id.

    Regression: `self.data[end : end + 1]` is b"" at the end of the head, and b"" is
    `in` every bytes object, so the digit loop never ended: peek_id spun forever and the
    relay's reader thread with it.
    """
    with _deadline(0.5):
        found = peek_id(head)
    assert found is None


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Turn a hang in pure Python code into a TimeoutError (the loop sees the signal)."""

    def expired(*_: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# --- writing -----------------------------------------------------------------------------


@pytest.fixture
def interrupted_writes() -> Iterator[None]:
    """A timer signal every 200 us: a blocking pipe write that is interrupted after some
    bytes went through returns short, so write loops really see partial writes."""
    old = signal.signal(signal.SIGALRM, lambda *_: None)
    signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _drain(fd: int, out: bytearray) -> None:
    while chunk := os.read(fd, 4096):  # small reads keep the writer blocking often
        out += chunk


def _through_pipe(write: Callable[[int], object]) -> tuple[bytes, object]:
    """What a reader thread receives while `write(fd)` writes into a real pipe."""
    r, w = os.pipe()
    got = bytearray()
    thread = threading.Thread(target=_drain, args=(r, got))
    thread.start()
    try:
        result = write(w)
    finally:
        os.close(w)
        thread.join()
        os.close(r)
    return bytes(got), result


def _raw_writes(fd: int, data: bytes) -> list[int]:
    view, sizes = memoryview(data), []
    while view:
        n = os.write(fd, view)
        sizes.append(n)
        view = view[n:]
    return sizes


BIG = bytes(range(256)) * ((5 << 20) // 256)


@pytest.mark.usefixtures("interrupted_writes")
def test_harness_produces_partial_writes() -> None:
    """Guards the two tests below: without short writes they would prove nothing."""
    got, sizes = _through_pipe(lambda fd: _raw_writes(fd, BIG))
    assert got == BIG
    assert isinstance(sizes, list)
    assert len(sizes) > 1, "one os.write() took all 5 MB: the harness is not interrupting"


@pytest.mark.usefixtures("interrupted_writes")
@pytest.mark.parametrize(
    ("write", "data", "expected"),
    [
        (write_line, BIG, BIG + b"\n"),
        (write_line, b"", b"\n"),
        (write_line, b'{"id":1}', b'{"id":1}\n'),
        (write_all, BIG, BIG),
        (write_all, memoryview(BIG)[7:], BIG[7:]),
        (write_all, b"", b""),
    ],
    ids=["line-5MB", "line-empty", "line-small", "all-5MB", "all-memoryview", "all-empty"],
)
def test_writes_deliver_every_byte(
    write: Callable[[int, bytes], None], data: bytes, expected: bytes
) -> None:
    got, _ = _through_pipe(lambda fd: write(fd, data))
    assert got == expected


def test_the_tail_of_an_oversized_line_read_on_its_own_is_not_a_message() -> None:
    """The fast path (one whole message per read) must not fire while a line over the cap
    is being dropped: its last chunk ends in a newline like a message does."""
    r, w = os.pipe()
    try:
        reader = LineReader(r, max_line=1024)
        os.write(w, b'{"id": 1, "x": "' + b"a" * 4000)  # over the cap, no newline yet
        reader._fill()  # one read at a time, as the relay's loop does
        assert not reader.drain_ready()
        os.write(w, b'aaaa"}\n')  # the tail, alone in one read, ending like a message
        reader._fill()
        os.write(w, b'{"id": 2}\n')
        reader._fill()
        items = reader.drain_ready()
        assert len(items) == 2
        assert isinstance(items[0], Oversize) and items[0].size == 4000 + 16 + 6
        assert items[1] == b'{"id": 2}'
    finally:
        os.close(r)
        os.close(w)
