"""Generated hostile traffic through `mcpwrap run`, from both peers at once, in the jail
and without it. Whatever is sent, these hold on every run:

- every request the client sends gets exactly one reply, and no reply names an id that
  was never sent;
- every call that reached the server has exactly one allow record, and the chain verifies;
- nothing dies: no traceback, no "Exception in thread", and mcpwrap exits when the client
  closes its stdin.

The client side draws from deep nesting, lone surrogates, control and bidi characters,
non-finite and huge numbers, invalid UTF-8, batches, partial lines, cancels and stray
responses; the server side (through the raw server's `emit` tool) from the same, plus
replies to unknown ids and floods of stray notifications.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wrapped import RAW_SERVER, Wrapped, audit_records, server_log, write_profile

from mcpwrap.audit.read import verify

BODY = """
[server]
env = { RAW_SERVER_LOG = "{project}/out/server.log" }
[policy]
default = "deny"
timeout = "5s"
[tools.echo]
class = "read"
[tools.emit]
class = "read"
[audit]
path = "{project}/audit.jsonl"
arguments = "full"
"""


class Unit(NamedTuple):
    """One line the client sends, and the id of the reply it must get (None: none)."""

    line: bytes
    reply_id: object


_hostile_text = st.lists(
    st.sampled_from(
        ["a", "\ud800", "\udfff", "\x1b[31m", "\x00", "\u202e", "\u200b", "\U000e0041", "\n", '"']
    ),
    max_size=20,
).map("".join)
_number = st.sampled_from(["1e400", "-1e400", "1e-400", "9" * 4500, "-" + "7" * 5000, "0.5"])
_depth = st.integers(min_value=900, max_value=20_000)


def _call(msg_id: int, name: str, args_json: str) -> bytes:
    return (
        b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"%s","arguments":%s}}'
        % (msg_id, name.encode(), args_json.encode("utf-8", "surrogatepass"))
    )


def _server_lines(draw: Any) -> list[str]:
    """What the server emits before its answer: hostile in its own ways."""
    kinds = draw(
        st.lists(st.sampled_from(["deep", "note", "stray", "garbage", "flood"]), max_size=3)
    )
    lines: list[str] = []
    for kind in kinds:
        if kind == "deep":
            n = draw(_depth)
            lines.append("[" * n + "]" * n)
        elif kind == "note":
            text = draw(_hostile_text)
            note = {
                "jsonrpc": "2.0",
                "method": "notifications/message",
                "params": {"level": "info", "data": text},
            }
            lines.append(json.dumps(note))
        elif kind == "stray":
            lines.append(json.dumps({"jsonrpc": "2.0", "id": "nobody-asked", "result": {}}))
        elif kind == "garbage":
            lines.append("not json {")
        else:
            progress = {
                "jsonrpc": "2.0",
                "method": "notifications/progress",
                "params": {"progressToken": 1},
            }
            lines += [json.dumps(progress)] * 500
    return lines


@st.composite
def _unit(draw: Any, msg_id: int) -> Unit:
    kind = draw(
        st.sampled_from(
            ["echo", "number", "deep", "utf8", "batch", "scalar", "cancel", "stray", "emit", "nan"]
        )
    )
    if kind == "echo":
        # Escaped (\ud800 in JSON) or raw (invalid UTF-8 on the wire): both must be answered.
        text = json.dumps({"text": draw(_hostile_text)}, ensure_ascii=draw(st.booleans()))
        return Unit(_call(msg_id, "echo", text), msg_id)
    if kind == "number":
        return Unit(_call(msg_id, "echo", '{"text":"n","n":' + draw(_number) + "}"), msg_id)
    if kind == "deep":
        n = draw(_depth)
        head = b'{"jsonrpc":"2.0","id":%d,"method":"ping","params":' % msg_id
        return Unit(head + b"[" * n + b"]" * n + b"}", msg_id)
    if kind == "utf8":
        return Unit(b'{"jsonrpc":"2.0","id":%d,"method":"ping","x":"\xff\xfe"}' % msg_id, msg_id)
    if kind == "batch":
        return Unit(b'[{"jsonrpc":"2.0","id":%d,"method":"ping"}]' % msg_id, None)
    if kind == "scalar":
        return Unit(b"42", None)
    if kind == "cancel":
        cancel = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": msg_id + 10_000},
        }
        return Unit(json.dumps(cancel).encode(), None)
    if kind == "stray":
        return Unit(json.dumps({"jsonrpc": "2.0", "id": "x", "result": {}}).encode(), None)
    if kind == "nan":
        return Unit(_call(msg_id, "echo", '{"n":NaN}'), msg_id)
    lines = _server_lines(draw)
    return Unit(_call(msg_id, "emit", json.dumps({"lines": lines})), msg_id)


@st.composite
def _traffic(draw: Any) -> list[Unit]:
    count = draw(st.integers(min_value=1, max_value=12))
    return [draw(_unit(100 + i)) for i in range(count)]


def _run(units: list[Unit], jail: bool) -> None:
    base = Path(tempfile.mkdtemp(prefix="mcpwrap-props-"))
    try:
        body = BODY + ("" if jail else "[sandbox]\nenforce = false\n")
        with Wrapped(write_profile(base, body), RAW_SERVER) as w:
            w.initialize()
            for unit in units:
                w.send_raw(unit.line + b"\n")
            replies = _replies(w, [u.reply_id for u in units if u.reply_id is not None])
            w.close(timeout=20)
            err = w.stderr_now()
        _check(units, replies, err, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _replies(w: Wrapped, want: list[object]) -> list[dict[str, Any]]:
    """Every response until each wanted id has one (then a short quiet period for extras)."""
    got: list[dict[str, Any]] = []
    missing = set(want)
    while missing:
        msg = w.recv(timeout=20)
        if "method" not in msg:
            got.append(msg)
            missing.discard(msg.get("id"))
    while not w.no_message(0.3):
        msg = w.recv(timeout=5)
        if "method" not in msg:
            got.append(msg)
    return got


def _check(units: list[Unit], replies: list[dict[str, Any]], err: str, base: Path) -> None:
    assert "Traceback" not in err and "Exception in thread" not in err, err[-2000:]
    sent = [u.reply_id for u in units if u.reply_id is not None]
    ids = [r.get("id") for r in replies]
    for msg_id in sent:
        assert ids.count(msg_id) == 1, (msg_id, replies)
    assert all(i in sent or i is None for i in ids), ids
    calls = [m for m in server_log(base / "out" / "server.log") if m.get("method") == "tools/call"]
    records = audit_records(base / "audit.jsonl")
    allowed = [
        r["request_id"] for r in records if r.get("event") == "call" and r["decision"] == "allow"
    ]
    assert sorted(m["id"] for m in calls) == sorted(allowed)
    assert verify(str(base / "audit.jsonl")).ok


_SETTINGS = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@_SETTINGS
@given(units=_traffic())
def test_hostile_traffic_in_the_jail(units: list[Unit]) -> None:
    _run(units, jail=True)


@_SETTINGS
@given(units=_traffic())
def test_hostile_traffic_without_the_jail(units: list[Unit]) -> None:
    _run(units, jail=False)
