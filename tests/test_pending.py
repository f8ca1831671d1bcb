"""relay/pending.py: the table of client requests in flight, without threads or ends."""

from __future__ import annotations

from mcpwrap.config.profile import ToolClass, ToolSpec
from mcpwrap.relay.ends import Deliver, Usage
from mcpwrap.relay.pending import REMEMBERED, Pending, PendingTable, key_of, valid_id

ECHO = ToolSpec("echo", ToolClass.READ, None, None, None, (), {})


class Counting:
    """An upstream that counts peak resets and reports a fixed CPU time."""

    name = "u"

    def __init__(self) -> None:
        self.resets = 0

    def run(self, deliver: Deliver) -> None:
        pass

    def send(self, line: bytes) -> bool:
        return True

    def close(self) -> None:
        pass

    def usage(self, *, full: bool = True) -> Usage | None:
        return Usage(cpu_ms=42.0, peak_rss_kb=None)

    def reset_peaks(self) -> None:
        self.resets += 1


def _pending(
    msg_id: object,
    up: Counting,
    *,
    tool: ToolSpec | None = None,
    deadline: float | None = None,
    progress: object = None,
) -> Pending:
    p = Pending(msg_id, "tools/call" if tool else "ping", 0.0, 10, tool)
    p.upstream = up
    p.deadline = deadline
    p.progress = progress
    return p


def test_ids_one_and_string_one_are_different_keys() -> None:
    assert key_of(1) != key_of("1")
    assert [valid_id(i) for i in (0, "a", True, 1.5, None)] == [True, True, False, False, False]


def test_calls_are_counted_per_tool_and_upstream_while_in_flight() -> None:
    table, up = PendingTable(), Counting()
    ended: list[object] = []
    table.on_call_end = ended.append
    table.register(key_of(1), _pending(1, up, tool=ECHO, progress="t"))
    table.register(key_of(2), _pending(2, up, tool=ECHO))
    table.register(key_of(3), _pending(3, up))  # not a call: not counted
    assert (table.in_flight["echo"], table.calls, table.calls_on[up]) == (2, 2, 2)
    assert up.resets == 1  # only the call that started alone resets the peak
    assert table.pending[key_of(1)].cpu_start == 42.0
    assert table.progress[key_of("t")] is up
    assert table.unregister(key_of(1)) is not None
    assert (table.in_flight["echo"], table.calls, table.calls_on[up]) == (1, 1, 1)
    assert key_of("t") not in table.progress
    assert ended == [1]
    assert table.unregister(key_of(1)) is None  # once


def test_a_reply_from_another_upstream_does_not_end_the_request() -> None:
    table, up, other = PendingTable(), Counting(), Counting()
    table.register(key_of(1), _pending(1, up))
    assert table.unregister_from(other, key_of(1)) is None
    assert key_of(1) in table.pending
    assert table.unregister_from(up, key_of(1)) is not None


def test_the_deadline_thread_is_woken_only_for_an_earlier_deadline() -> None:
    table, up = PendingTable(), Counting()
    wakes = [
        table.register(key_of(i), _pending(i, up, deadline=d))
        for i, d in enumerate([10.0, 20.0, 5.0, 5.0, None])
    ]
    assert wakes == [True, False, True, False, False]
    assert table.next_deadline() == 5.0


def test_expired_requests_leave_the_table_and_are_remembered() -> None:
    table, up = PendingTable(), Counting()
    for i, deadline in enumerate([1.0, 2.0, 3.0]):
        table.register(key_of(i), _pending(i, up, deadline=deadline))
    table.unregister(key_of(0))  # answered in time: its heap entry is skipped
    assert [p.msg_id for p in table.take_expired(2.5)] == [1]
    assert table.local[key_of(1)] == "timed out" and key_of(0) not in table.local
    assert list(table.pending) == [key_of(2)]
    assert table.next_deadline() == 3.0


def test_remembered_ids_are_trimmed_oldest_first() -> None:
    table = PendingTable()
    for i in range(REMEMBERED + 3):
        table.remember(key_of(i), "refused")
    assert len(table.local) == REMEMBERED
    assert next(iter(table.local)) == key_of(3)


def test_ended_requests_do_not_pile_up_in_the_deadline_heap() -> None:
    table, up = PendingTable(), Counting()
    for i in range(10_000):
        table.register(key_of(i), _pending(i, up, deadline=1000.0 + i))
        table.unregister(key_of(i))
    # The heap keeps at most 64 spare entries and two per live request (one here), and the
    # entry pushed after the pruning: not one per request ever made.
    assert len(table._deadlines) <= 64 + 2 + 1
