"""Hostile peers on both sides of the relay: each case once killed a pump thread, lost a
call's record or hung mcpwrap (issue 15). Every case checks the same invariants: the
stream goes on (a later call is answered), every request gets exactly one reply, every
call that reached the server has exactly one record, and mcpwrap exits when its client
closes stdin. Run in the jail (the default of write_profile) and, where the server side
matters, without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from wrapped import RAW_SERVER, Wrapped, audit_records, processes_with, server_log, write_profile

BODY = """
[server]
env = { RAW_SERVER_LOG = "{project}/out/server.log" }

[policy]
default = "deny"
timeout = "%(timeout)s"
sampling = "deny"

[tools.echo]
class = "read"
[tools.emit]
class = "read"
[tools.progress]
class = "read"
[tools.slow]
class = "read"
timeout = "%(slow)s"

[audit]
path = "{project}/audit.jsonl"
arguments = "full"
"""

JAIL = {"jail": "", "no jail": "[sandbox]\nenforce = false\n"}


def _profile(tmp_path: Path, jail: str, timeout: str = "10s", slow: str = "10s") -> Path:
    return write_profile(tmp_path, BODY % {"timeout": timeout, "slow": slow} + JAIL[jail])


def _calls(tmp_path: Path) -> list[dict[str, Any]]:
    return [r for r in audit_records(tmp_path / "audit.jsonl") if r.get("event") == "call"]


def _server_calls(tmp_path: Path) -> list[dict[str, Any]]:
    log = server_log(tmp_path / "out" / "server.log")
    return [m for m in log if m.get("method") == "tools/call"]


def _still_relays(w: Wrapped) -> None:
    reply = w.call("echo", {"text": "still here"})
    assert reply["result"]["content"][0]["text"] == "still here", reply


def _ends_when_the_client_leaves(w: Wrapped) -> None:
    w.close(timeout=15)  # raises TimeoutExpired if mcpwrap hangs
    assert "Traceback" not in w.stderr_now() and "Exception in thread" not in w.stderr_now()


def _one_record_per_forwarded_call(tmp_path: Path) -> None:
    """Every tools/call the server saw has exactly one call record with its id."""
    seen = [m["id"] for m in _server_calls(tmp_path)]
    recorded = [r["request_id"] for r in _calls(tmp_path) if r["decision"] == "allow"]
    assert sorted(map(str, seen)) == sorted(map(str, recorded)), (seen, recorded)


@pytest.mark.parametrize("jail", JAIL)
def test_json_nested_100k_deep_from_the_client_is_a_parse_error(tmp_path: Path, jail: str) -> None:
    with Wrapped(_profile(tmp_path, jail), RAW_SERVER) as w:
        w.initialize()
        w.send_raw(b'{"jsonrpc":"2.0","id":7,"method":"ping","params":' + b"[" * 100_000 + b"\n")
        w.send_raw(b"[" * 100_000 + b"]" * 100_000 + b"\n")
        errors = [w.recv(), w.recv()]
        assert all(e["error"]["code"] == -32700 for e in errors), errors
        assert [e["id"] for e in errors] == [7, None]  # the id, where it could be read
        assert "nested too deeply" in errors[1]["error"]["message"]
        _still_relays(w)
        _ends_when_the_client_leaves(w)


@pytest.mark.parametrize("jail", JAIL)
def test_json_nested_100k_deep_from_the_server_is_dropped(tmp_path: Path, jail: str) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    reply_to_a_call = '{"jsonrpc":"2.0","id":2,"result":' + "[" * 100_000
    with Wrapped(_profile(tmp_path, jail), RAW_SERVER) as w:
        w.initialize()
        answer = w.call("emit", {"lines": [deep, reply_to_a_call]})
        assert answer["result"]["content"][0]["text"] == "emitted"
        _still_relays(w)
        _ends_when_the_client_leaves(w)
    drops = [r for r in audit_records(tmp_path / "audit.jsonl") if r.get("decision") == "drop"]
    assert len(drops) == 2 and all("nested too deeply" in r["reason"] for r in drops), drops
    _one_record_per_forwarded_call(tmp_path)


SURROGATE_AND_ESC = "\ud800 and \x1b[31mred\u202e"


@pytest.mark.parametrize("jail", JAIL)
def test_a_lone_surrogate_in_text_that_needs_cleaning_is_relayed(tmp_path: Path, jail: str) -> None:
    """The result, a log notification and the echo of a client's argument each hold a lone
    surrogate and an escape: re-encoding the cleaned message once raised UnicodeEncodeError
    in the server pump, after the call had left the table (no reply, no record)."""
    note = {
        "jsonrpc": "2.0",
        "method": "notifications/message",
        "params": {"level": "info", "data": SURROGATE_AND_ESC},
    }
    with Wrapped(_profile(tmp_path, jail), RAW_SERVER) as w:
        w.initialize()
        echoed = w.call("echo", {"text": SURROGATE_AND_ESC})
        text = echoed["result"]["content"][0]["text"]
        assert "\x1b" not in text and "\u202e" not in text and "\ud800" in text
        emitted = w.call("emit", {"lines": [json.dumps(note)]})
        assert emitted["result"]["content"][0]["text"] == "emitted"
        logged = [m for m in w.others if m.get("method") == "notifications/message"]
        assert logged and "\x1b" not in logged[0]["params"]["data"]
        _still_relays(w)
        _ends_when_the_client_leaves(w)
    _one_record_per_forwarded_call(tmp_path)
    assert _calls(tmp_path)[0]["args"]["text"] == SURROGATE_AND_ESC


@pytest.mark.parametrize("jail", JAIL)
def test_numbers_json_cannot_carry_are_recorded_with_full_arguments(
    tmp_path: Path, jail: str
) -> None:
    """arguments = "full": 1e400, a float of a million digits and an integer of 5,000
    digits once broke the record's encoder after the call was forwarded."""
    huge_float = "0." + "1" * 1_000_000
    with Wrapped(_profile(tmp_path, jail), RAW_SERVER) as w:
        w.initialize()
        for n, value in enumerate(("1e400", "-1e400", huge_float, "9" * 5000)):
            w.send_raw(
                b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo",'
                b'"arguments":{"text":"n","n":%s}}}\n' % (n + 1, value.encode())
            )
            assert w.recv_id(n + 1)["result"]["content"][0]["text"] == "n"
        w.send_raw(b'{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"n":NaN}}\n')
        refused = w.recv_id(9)
        assert refused["error"]["code"] == -32700, refused  # NaN is not JSON
        assert "NaN is not a JSON value" in refused["error"]["message"]
        _still_relays(w)
        _ends_when_the_client_leaves(w)
    args = [r["args"]["n"] for r in _calls(tmp_path)[:4]]
    assert args[:2] == ["[number JSON cannot hold: inf]", "[number JSON cannot hold: -inf]"]
    assert args[2] == pytest.approx(0.1111111)
    assert args[3] == "[number JSON cannot hold: inf]"  # 5,000 digits read as a float
    _one_record_per_forwarded_call(tmp_path)


@pytest.mark.parametrize("jail", JAIL)
def test_initialize_with_a_lone_surrogate_and_a_denied_capability(
    tmp_path: Path, jail: str
) -> None:
    with Wrapped(_profile(tmp_path, jail), RAW_SERVER) as w:
        w.send(
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {"sampling": {}, "roots": {}},
                    "clientInfo": {"name": "evil\ud800\x1b[2J", "version": "1"},
                },
            }
        )
        reply = w.recv_id(0)
        assert "sampling" not in reply["result"]["echoClientCapabilities"], reply
        _still_relays(w)
        _ends_when_the_client_leaves(w)
    start = audit_records(tmp_path / "audit.jsonl")
    assert any(r.get("agent", {}) and "evil" in json.dumps(r["agent"]) for r in start)


def _server_pids(marker: str) -> list[int]:
    """The raw server's own processes (mcpwrap's command line names the server too)."""
    found = []
    for pid in processes_with(marker):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if len(argv) > 1 and argv[1].endswith(b"raw_server.py"):
                found.append(pid)
    return found


def _stop(marker: str) -> list[int]:
    deadline = time.monotonic() + 10
    while not (pids := _server_pids(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pids, f"no process with {marker}"
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    return pids


def _resume(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


@pytest.mark.parametrize("jail", JAIL)
def test_deadlines_fire_while_the_server_stops_reading(tmp_path: Path, jail: str) -> None:
    """A SIGSTOPped server stops reading; the client pump then blocks writing a large
    message to it, and once held the lock the deadline thread needed: no call timed out.
    100 calls in flight with a 2 s deadline, then a 3 MB one that fills the pipe."""
    marker = f"marker-{uuid.uuid4().hex}"
    with Wrapped(_profile(tmp_path, jail, slow="2s"), [*RAW_SERVER, marker]) as w:
        w.initialize()
        pids = _stop(marker)
        try:
            start = time.monotonic()
            ids = [w.request("tools/call", {"name": "slow", "arguments": {}}) for _ in range(100)]
            big = {"name": "slow", "arguments": {"pad": "x" * 3_000_000}}
            sender = threading.Thread(target=w.request, args=("tools/call", big, "big"))
            sender.start()  # mcpwrap blocks writing it to the server, so this may block too
            answered = [w.recv_id(i, timeout=10) for i in [*ids, "big"]]
            took = time.monotonic() - start
        finally:
            _resume(pids)
        sender.join(10)
        texts = [a["result"]["content"][0]["text"] for a in answered]
        assert all("timed out after 2 s" in t for t in texts), texts[:3]
        assert took < 8, f"101 deadlines of 2 s took {took:.1f} s"
        _ends_when_the_client_leaves(w)
    timeouts = [r for r in _calls(tmp_path) if r["outcome"] == "timeout"]
    assert len(timeouts) == 101


@pytest.mark.parametrize("jail", JAIL)
def test_a_server_that_never_answers_initialize_does_not_hold_the_client(
    tmp_path: Path, jail: str
) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    with Wrapped(_profile(tmp_path, jail, timeout="2s"), [*RAW_SERVER, marker]) as w:
        pids = _stop(marker)
        try:
            params = {"protocolVersion": "2025-06-18", "capabilities": {}}
            w.request("initialize", params, msg_id=0)
            reply = w.recv_id(0, timeout=8)
        finally:
            _resume(pids)
        assert reply["error"]["code"] == -32603 and "within 2 s" in reply["error"]["message"]
        _ends_when_the_client_leaves(w)
    timeouts = [r for r in audit_records(tmp_path / "audit.jsonl") if r.get("outcome") == "timeout"]
    assert timeouts and timeouts[0]["method"] == "initialize"


@pytest.mark.parametrize("jail", JAIL)
def test_a_flood_of_dropped_notifications_is_counted_not_logged_each(
    tmp_path: Path, jail: str
) -> None:
    stray = json.dumps(
        {
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": {"progressToken": "nobody", "progress": 1},
        }
    )
    with Wrapped(_profile(tmp_path, jail), RAW_SERVER) as w:
        w.initialize()
        for _ in range(10):
            w.call("emit", {"lines": [stray], "times": 10_000})
        _still_relays(w)
        _ends_when_the_client_leaves(w)
    log = tmp_path / "audit.jsonl"
    drops = [r for r in audit_records(log) if r.get("rule") == "protocol.progress"]
    assert sum(r.get("count", 1) for r in drops) == 100_000  # the fact is kept
    assert len(drops) < 200 and log.stat().st_size < 200_000, len(drops)
