"""The relay's core in-process, between fake ends that record what they were sent.

Routing between several upstreams (a request to each, each reply back to its caller,
server requests with colliding ids, cancels, a failed upstream), and with one upstream the
bytes forwarded exactly as they came.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcpwrap.audit.recorder import Recorder
from mcpwrap.audit.records import Agent
from mcpwrap.audit.writer import AuditWriter
from mcpwrap.config.profile import Placeholders, parse_profile
from mcpwrap.relay.core import Core, RelayOptions
from mcpwrap.relay.ends import Deliver, Front, Upstream, Usage
from mcpwrap.relay.ratelimit import RateLimiter

PROFILE = """
version = 1
name = "core"

[sandbox]
enforce = false

[policy]
default = "allow"
timeout = {timeout}

[tools.echo]
class = "read"
"""


class FakeFront:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False

    def run(self, deliver: Deliver) -> None:
        pass

    def send(self, line: bytes) -> bool:
        if self.closed:
            return False
        self.sent.append(line)
        return True

    def close(self) -> None:
        self.closed = True

    def decoded(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.sent]


class FakeUpstream:
    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[bytes] = []
        self.got = threading.Event()

    def run(self, deliver: Deliver) -> None:
        pass

    def send(self, line: bytes) -> bool:
        self.sent.append(line)
        self.got.set()
        return True

    def close(self) -> None:
        pass

    def usage(self, *, full: bool = True) -> Usage | None:
        return None

    def reset_peaks(self) -> None:
        pass

    def decoded(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.sent]


def test_the_fakes_are_ends() -> None:
    """The fakes keep to the Protocols the core is typed against."""
    assert isinstance(FakeFront(), Front)
    assert isinstance(FakeUpstream("a"), Upstream)


class Bed:
    def __init__(self, tmp: Path, upstreams: int, timeout: float = 30.0) -> None:
        places = Placeholders(project=str(tmp), home=str(tmp), cwd=str(tmp), state=str(tmp))
        profile = parse_profile(
            PROFILE.format(timeout=timeout), source=str(tmp / "p.toml"), places=places
        )
        self.audit = AuditWriter(str(tmp / "audit.jsonl"), session="s")
        self.log = tmp / "audit.jsonl"
        self.front = FakeFront()
        self.ups = [FakeUpstream(f"u{i}") for i in range(upstreams)]
        options = RelayOptions(max_message=1 << 20, cwd=str(tmp))
        recorder = Recorder(
            self.audit,
            server=profile.name,
            agent=Agent(pid=1, exe=None),
            arguments=profile.audit.arguments,
            clock=options.clock,
        )

        # Requests carry the index of the upstream they are for in their id's tens: 11 and
        # 12 go to upstream 1, 2 to upstream 0.
        def route(msg: dict[str, Any]) -> Upstream:
            return self.ups[msg["id"] // 10]

        self.core = Core(
            profile,
            front=self.front,
            upstreams=self.ups,
            recorder=recorder,
            limiter=RateLimiter(str(tmp / "state.sqlite3")),
            options=options,
            route=route,
        )

    def client(self, msg: dict[str, Any] | bytes) -> None:
        self.core.from_client(msg if isinstance(msg, bytes) else _line(msg))

    def server(self, index: int, msg: dict[str, Any] | bytes) -> None:
        self.core.from_upstream(self.ups[index], msg if isinstance(msg, bytes) else _line(msg))

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]


def _line(msg: dict[str, Any]) -> bytes:
    return json.dumps({"jsonrpc": "2.0", **msg}).encode()


def _call(msg_id: int, text: str = "hi") -> dict[str, Any]:
    params = {"name": "echo", "arguments": {"text": text}}
    return {"id": msg_id, "method": "tools/call", "params": params}


def _reply(msg_id: object, text: str) -> dict[str, Any]:
    return {"id": msg_id, "result": {"content": [{"type": "text", "text": text}]}}


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    b = Bed(tmp_path, upstreams=2)
    yield b
    b.core.close()
    b.audit.close()


def test_each_request_goes_where_route_says_and_its_reply_back(bed: Bed) -> None:
    bed.client(_call(2, "to zero"))
    bed.client(_call(11, "to one"))
    bed.client({"id": 12, "method": "ping"})
    assert [m["id"] for m in bed.ups[0].decoded()] == [2]
    assert [m["id"] for m in bed.ups[1].decoded()] == [11, 12]
    bed.server(1, _reply(11, "one"))
    bed.server(0, _reply(2, "zero"))
    bed.server(1, {"id": 12, "result": {}})
    got = {m["id"]: m["result"] for m in bed.front.decoded()}
    assert got[11]["content"][0]["text"] == "one"
    assert got[2]["content"][0]["text"] == "zero"
    assert got[12] == {}
    calls = [r for r in bed.records() if r["event"] == "call"]
    assert sorted((r["request_id"], r["outcome"]) for r in calls) == [(2, "ok"), (11, "ok")]


def test_a_reply_from_the_wrong_upstream_is_an_unknown_id(bed: Bed) -> None:
    bed.client(_call(2))
    bed.server(1, _reply(2, "forged by the other upstream"))
    assert bed.front.sent == []
    drop = [r for r in bed.records() if r.get("rule") == "protocol.unknown_id"]
    assert len(drop) == 1 and drop[0]["reason"].endswith(": 2")
    bed.server(0, _reply(2, "the real one"))  # still pending at its own upstream
    assert [m["result"]["content"][0]["text"] for m in bed.front.decoded()] == ["the real one"]


def test_server_requests_with_the_same_id_reach_the_client_apart(bed: Bed) -> None:
    bed.server(0, {"id": 7, "method": "ping"})
    bed.server(1, {"id": 7, "method": "ping"})
    seen = [m["id"] for m in bed.front.decoded()]
    assert len(seen) == 2 and seen[0] != seen[1]
    assert all(isinstance(i, str) and i.startswith("mcpwrap-up-") for i in seen)
    # The client answers in the other order; each answer reaches its asker with id 7.
    bed.client({"id": seen[1], "result": {"from": "client", "n": 1}})
    bed.client({"id": seen[0], "result": {"from": "client", "n": 0}})
    assert bed.ups[0].decoded() == [
        {"jsonrpc": "2.0", "id": 7, "result": {"from": "client", "n": 0}}
    ]
    assert bed.ups[1].decoded() == [
        {"jsonrpc": "2.0", "id": 7, "result": {"from": "client", "n": 1}}
    ]
    # Answered once: a second answer is to an unknown id and reaches nobody.
    bed.client({"id": seen[0], "result": {}})
    assert len(bed.ups[0].sent) == 1 and len(bed.ups[1].sent) == 1


def test_a_server_cancel_names_the_id_the_client_saw(bed: Bed) -> None:
    bed.server(0, {"id": 7, "method": "ping"})
    bed.server(1, {"id": 7, "method": "ping"})
    seen = [m["id"] for m in bed.front.decoded()]
    bed.server(1, {"method": "notifications/cancelled", "params": {"requestId": 7}})
    cancel = bed.front.decoded()[-1]
    assert cancel["method"] == "notifications/cancelled"
    assert cancel["params"]["requestId"] == seen[1]
    # Upstream 0's request is still open, upstream 1's is gone.
    bed.client({"id": seen[1], "result": {}})
    bed.client({"id": seen[0], "result": {}})
    assert bed.ups[1].sent == [] and len(bed.ups[0].sent) == 1


def test_a_client_cancel_goes_to_the_upstream_that_holds_the_request(bed: Bed) -> None:
    bed.client(_call(2))
    bed.client(_call(11))
    cancel = {"method": "notifications/cancelled", "params": {"requestId": 11}}
    bed.client(cancel)
    assert [m.get("method") for m in bed.ups[1].decoded()] == [
        "tools/call",
        "notifications/cancelled",
    ]
    assert [m.get("method") for m in bed.ups[0].decoded()] == ["tools/call"]
    calls = [r for r in bed.records() if r["event"] == "call"]
    assert [(r["request_id"], r["outcome"]) for r in calls] == [(11, "cancelled")]


def test_a_deadline_cancel_goes_to_the_holder(tmp_path: Path) -> None:
    b = Bed(tmp_path, upstreams=2, timeout=0.2)
    deadlines = threading.Thread(target=b.core.run_deadlines, daemon=True)
    deadlines.start()
    try:
        b.client({"id": 2, "method": "ping"})
        b.client({"id": 11, "method": "ping"})
        b.server(0, {"id": 2, "result": {}})  # only upstream 1's request times out
        b.ups[1].got.clear()
        assert b.ups[1].got.wait(10), "upstream 1 was never sent its cancel"
        assert b.ups[1].decoded()[-1]["method"] == "notifications/cancelled"
        assert b.ups[1].decoded()[-1]["params"]["requestId"] == 11
        assert [m.get("method") for m in b.ups[0].decoded()] == ["ping"]
        errors = [m for m in b.front.decoded() if "error" in m]
        assert [m["id"] for m in errors] == [11]
    finally:
        b.core.close()
        deadlines.join(5)
        b.audit.close()


def test_fail_pending_answers_only_the_failed_upstreams_requests(bed: Bed) -> None:
    bed.client(_call(2))
    bed.client(_call(11))
    bed.client({"id": 12, "method": "ping"})
    bed.core.fail_pending("upstream one is gone", bed.ups[1])
    answered = {m["id"]: m for m in bed.front.decoded()}
    assert set(answered) == {11, 12}
    assert answered[11]["error"]["message"] == "upstream one is gone"
    bed.server(0, _reply(2, "zero"))  # upstream 0's call was left alone
    assert bed.front.decoded()[-1]["result"]["content"][0]["text"] == "zero"
    calls = {r["request_id"]: r for r in bed.records() if r["event"] == "call"}
    assert calls[11]["rule"] == "protocol.server_exit" and calls[2]["outcome"] == "ok"


def test_client_notifications_reach_every_upstream(bed: Bed) -> None:
    line = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
    bed.client(line)
    assert bed.ups[0].sent == [line] and bed.ups[1].sent == [line]


def test_one_upstream_gets_and_gives_the_bytes_as_they_came(tmp_path: Path) -> None:
    """No id is rewritten, nothing re-encoded: odd spacing, key order and escapes pass."""
    b = Bed(tmp_path, upstreams=1)
    try:
        call = (
            b'{ "params" : {"name":"echo","arguments":{"text":"caf\\u00e9"}},'
            b' "id":3,"method":"tools/call" ,"jsonrpc":"2.0"}'
        )
        ping = b'{"method":"ping","jsonrpc":"2.0","id":"p\\u0031"}'
        b.client(call)
        b.client(ping)
        assert b.ups[0].sent == [call, ping]
        reply = (
            b'{"id":3,  "result":{"content":[{"type":"text","text":"\\u00e9"}]},"jsonrpc":"2.0"}'
        )
        pong = b'{"result":{},"id":"p1","jsonrpc":"2.0"}'
        asks = b'{"id": 1 ,"method":"ping","jsonrpc":"2.0"}'
        note = b'{"method":"notifications/message","params":{"level":"info","data":"x"},"jsonrpc":"2.0"}'
        b.server(0, reply)
        b.server(0, pong)
        b.server(0, asks)
        b.server(0, note)
        assert b.front.sent == [reply, pong, asks, note]
        answer = b'{"result":{} ,"id":1,"jsonrpc":"2.0"}'
        b.client(answer)
        assert b.ups[0].sent[-1] == answer
    finally:
        b.core.close()
        b.audit.close()


@pytest.mark.parametrize(
    ("tail", "cleaned"),
    [
        ("", None),  # plain: forwarded as it came, not scanned
        ("\u202e", ""),  # a bidi override, as the raw character and as \u202e
        ("\u001b[31m", ""),  # an escape sequence (the whole of it)
        ("\u200b", ""),  # zero width
    ],
)
def test_a_large_result_is_cleaned_whether_or_not_it_is_plain(
    tmp_path: Path, tail: str, cleaned: str | None
) -> None:
    """A result over the plain path's threshold: what a cleaner removes is removed from
    it as from a small one; a plain one passes byte for byte."""
    b = Bed(tmp_path, upstreams=1)
    try:
        body = "x" * 200_000
        for ascii_only in (True, False):
            reply = json.dumps(
                {"jsonrpc": "2.0", **_reply(3, body + tail)}, ensure_ascii=ascii_only
            ).encode()
            b.front.sent.clear()
            b.client(_call(3))
            b.server(0, reply)
            (sent,) = b.front.sent
            if cleaned is None:
                assert sent == reply
            else:
                assert json.loads(sent)["result"]["content"][0]["text"] == body + cleaned
    finally:
        b.core.close()
        b.audit.close()
