"""The relay end to end: `mcpwrap run` between raw pipes and the scripted raw server.

The raw server logs every message it receives, so "refused before the server sees it"
is checked against what the server actually saw.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from wrapped import RAW_SERVER, Wrapped, audit_records, server_log, write_profile

BASE = """
[server]
env = { RAW_SERVER_LOG = "{project}/out/server.log" }

[policy]
default = "deny"
timeout = "10s"
%(policy)s

[tools.echo]
class = "read"
[tools.echo.args]
text = { max_length = 20 }

[tools.big]
class = "read"
[tools.garbage]
class = "read"
[tools.oversize]
class = "read"
[tools.slow]
class = "read"
timeout = "%(slow_timeout)s"
concurrency = 2
[tools.sample]
class = "read"
[tools.roots]
class = "read"
[tools.elicit]
class = "read"
[tools.progress]
class = "read"
[tools.exit]
class = "read"
[tools.input_required]
class = "read"
[tools.stderr]
class = "read"
[tools.env]
class = "read"
[tools.wipe]
class = "admin"
"""


def profile(tmp_path: Path, policy: str = "", slow_timeout: str = "10s") -> Path:
    return write_profile(tmp_path, BASE % {"policy": policy, "slow_timeout": slow_timeout})


def calls_seen(tmp_path: Path) -> list[str]:
    return [
        m["params"]["name"]
        for m in server_log(tmp_path / "out" / "server.log")
        if m.get("method") == "tools/call"
    ]


def text_of(reply: dict[str, Any]) -> str:
    return " ".join(block.get("text", "") for block in reply["result"]["content"])


@pytest.fixture
def wrapped(tmp_path: Path) -> Any:
    with Wrapped(profile(tmp_path), RAW_SERVER) as w:
        w.initialize()
        yield w


# --- tools/list and tools/call ---------------------------------------------------------


def test_every_tools_list_page_is_filtered_and_cursors_pass_untouched(wrapped: Wrapped) -> None:
    first = wrapped.recv_id(wrapped.request("tools/list", {}))["result"]
    second = wrapped.recv_id(wrapped.request("tools/list", {"cursor": first["nextCursor"]}))[
        "result"
    ]
    names = [t["name"] for t in first["tools"] + second["tools"]]
    assert first["nextCursor"] == "page-2"
    assert "hidden_one" not in names and "hidden_two" not in names
    assert {"echo", "slow", "sample", "env"} <= set(names)


def test_unknown_tool_is_a_protocol_error_and_never_reaches_the_server(
    wrapped: Wrapped, tmp_path: Path
) -> None:
    reply = wrapped.call("hidden_one")
    assert reply["error"] == {"code": -32602, "message": "Unknown tool: hidden_one"}
    assert wrapped.call("echo", {"text": "ok"})["result"]["isError"] is False
    wrapped.close()
    assert calls_seen(tmp_path) == ["echo"]


def test_argument_refusal_is_a_tool_result_naming_the_rule(
    wrapped: Wrapped, tmp_path: Path
) -> None:
    reply = wrapped.call("echo", {"text": "x" * 21})
    assert reply["result"]["isError"] is True
    assert "tools.echo.args.text" in text_of(reply)
    assert "over the limit of 20" in text_of(reply)
    wrapped.close()
    assert calls_seen(tmp_path) == []


def test_admin_tool_is_refused_without_a_token(wrapped: Wrapped, tmp_path: Path) -> None:
    reply = wrapped.call("wipe")
    assert reply["result"]["isError"] is True and "tools.wipe.class" in text_of(reply)
    wrapped.close()
    assert calls_seen(tmp_path) == []


@pytest.mark.parametrize("msg_id", [0, "0", "", "call-1", -5, 2**53])
def test_ids_of_any_valid_kind_come_back_unchanged(wrapped: Wrapped, msg_id: object) -> None:
    reply = wrapped.call("echo", {"text": "id"}, msg_id=msg_id)
    assert reply["id"] == msg_id and type(reply["id"]) is type(msg_id)


def test_int_and_string_ids_are_different_requests(tmp_path: Path) -> None:
    with Wrapped(profile(tmp_path), RAW_SERVER) as w:
        w.initialize()
        w.request("tools/call", {"name": "slow", "arguments": {"seconds": 0.3}}, msg_id=7)
        w.request("tools/call", {"name": "echo", "arguments": {"text": "s"}}, msg_id="7")
        replies = {(type(m["id"]), m["id"]): m for m in (w.recv(), w.recv())}
        assert text_of(replies[(str, "7")]) == "s"
        assert text_of(replies[(int, 7)]) == "slow done"


def test_a_duplicate_in_flight_id_is_refused(tmp_path: Path) -> None:
    with Wrapped(profile(tmp_path), RAW_SERVER) as w:
        w.initialize()
        w.request("tools/call", {"name": "slow", "arguments": {"seconds": 0.5}}, msg_id=9)
        w.request("tools/call", {"name": "echo", "arguments": {"text": "dup"}}, msg_id=9)
        first = w.recv()
        assert first["error"]["code"] == -32600 and "already in flight" in first["error"]["message"]
        assert text_of(w.recv()) == "slow done"


# --- deadlines, concurrency, rate ------------------------------------------------------


def test_deadline_cancels_at_the_server_and_drops_the_late_reply(tmp_path: Path) -> None:
    with Wrapped(profile(tmp_path, slow_timeout="300ms"), RAW_SERVER) as w:
        w.initialize()
        reply = w.call("slow", {"seconds": 1.0}, msg_id=41)
        assert reply["result"]["isError"] is True and "timed out after 0.3 s" in text_of(reply)
        assert w.no_message(1.2), "the late reply must not reach the client"
        w.close()
    cancels = [
        m
        for m in server_log(tmp_path / "out" / "server.log")
        if m.get("method") == "notifications/cancelled"
    ]
    assert [c["params"]["requestId"] for c in cancels] == [41]
    timeouts = [r for r in audit_records(tmp_path / "audit.jsonl") if r.get("outcome") == "timeout"]
    assert len(timeouts) == 1 and timeouts[0]["rule"] == "tools.slow.timeout"


def test_concurrency_limit_refuses_the_third_call_in_flight(tmp_path: Path) -> None:
    with Wrapped(profile(tmp_path), RAW_SERVER) as w:
        w.initialize()
        for i in (1, 2):
            w.request("tools/call", {"name": "slow", "arguments": {"seconds": 0.5}}, msg_id=i)
        third = w.call("slow", {"seconds": 0.1}, msg_id=3)
        assert third["result"]["isError"] is True and "tools.slow.concurrency" in text_of(third)
        assert {w.recv()["id"], w.recv()["id"]} == {1, 2}
        after = w.call("slow", {"seconds": 0.01}, msg_id=4)  # the slots are free again
        assert after["result"]["isError"] is False


def test_rate_is_shared_by_every_mcpwrap_process(tmp_path: Path) -> None:
    body = BASE.replace(
        '[tools.big]\nclass = "read"', '[tools.big]\nclass = "read"\nrate = "4/hour"'
    )
    path = write_profile(tmp_path, body % {"policy": "", "slow_timeout": "10s"})
    allowed = []
    wrappers = [Wrapped(path, RAW_SERVER), Wrapped(path, RAW_SERVER)]
    try:
        for w in wrappers:
            w.initialize()
        for _ in range(3):
            for w in wrappers:
                reply = w.call("big", {"size": 1})
                allowed.append(not reply["result"]["isError"])
                if reply["result"]["isError"]:
                    assert "tools.big.rate" in text_of(reply)
    finally:
        for w in wrappers:
            w.close()
    assert allowed.count(True) == 4


# --- server-initiated requests, capabilities, notifications ------------------------------


def test_denied_sampling_is_removed_from_capabilities_and_refused(tmp_path: Path) -> None:
    with Wrapped(profile(tmp_path), RAW_SERVER) as w:
        init = w.initialize({"sampling": {}, "roots": {}, "elicitation": {}, "tasks": {}})
        reply = w.call("sample")
        assert "sampling/createMessage" not in json.dumps(getattr(w, "others", []))
        assert "is denied by the profile" in text_of(reply)
        w.close()
    seen = init["result"]["echoClientCapabilities"]
    assert seen == {"roots": {}, "elicitation": {}}  # sampling denied, tasks always stripped
    assert "tasks" not in init["result"]["capabilities"]
    refusals = [
        r for r in audit_records(tmp_path / "audit.jsonl") if r["event"] == "server_request"
    ]
    assert refusals[0]["rule"] == "policy.sampling" and refusals[0]["decision"] == "refuse"


def test_allowed_server_request_uses_its_own_id_space(tmp_path: Path) -> None:
    with Wrapped(profile(tmp_path, 'sampling = "allow"'), RAW_SERVER) as w:
        w.initialize({"sampling": {}})
        w.request("tools/call", {"name": "sample", "arguments": {}}, msg_id=0)
        asked = w.recv()
        assert asked["method"] == "sampling/createMessage" and asked["id"] == 0
        w.send(
            {
                "jsonrpc": "2.0",
                "id": 0,
                "result": {
                    "role": "assistant",
                    "model": "m",
                    "content": {"type": "text", "text": "sampled!"},
                },
            }
        )
        reply = w.recv()
        assert reply["id"] == 0 and "sampled!" in text_of(reply)


@pytest.mark.parametrize(
    ("tool", "method", "rule"),
    [
        ("roots", "roots/list", 'roots = "deny"'),
        ("elicit", "elicitation/create", 'elicitation = "deny"'),
    ],
)
def test_roots_and_elicitation_follow_the_policy(
    tmp_path: Path, tool: str, method: str, rule: str
) -> None:
    with Wrapped(profile(tmp_path), RAW_SERVER) as w:  # default: both allowed
        w.initialize({"roots": {}, "elicitation": {}})
        w.request("tools/call", {"name": tool, "arguments": {}}, msg_id=1)
        assert w.recv()["method"] == method
    denied = tmp_path / "denied"
    denied.mkdir()
    with Wrapped(profile(denied, rule), RAW_SERVER) as w:
        w.initialize({"roots": {}, "elicitation": {}})
        reply = w.call(tool, msg_id=1)
        assert "is denied by the profile" in text_of(reply)


def test_progress_is_relayed_only_for_requests_in_flight(wrapped: Wrapped) -> None:
    wrapped.request(
        "tools/call", {"name": "progress", "arguments": {}, "_meta": {"progressToken": "tok"}}, 5
    )
    wrapped.recv_id(5)
    progress = [m for m in wrapped.others if m.get("method") == "notifications/progress"]
    assert [p["params"]["progressToken"] for p in progress] == ["tok"]


@pytest.mark.parametrize(
    ("kind", "policy_line", "refused"),
    [
        ("sampling/createMessage", "", True),
        ("roots/list", "", False),
        ("roots/list", 'roots = "deny"', True),
        ("elicitation/create", 'elicitation = "deny"', True),
    ],
)
def test_2026_input_requests_follow_the_same_policy(
    tmp_path: Path, kind: str, policy_line: str, refused: bool
) -> None:
    with Wrapped(profile(tmp_path, policy_line), RAW_SERVER) as w:
        w.initialize()
        result = w.call("input_required", {"kind": kind})["result"]
    if refused:
        assert result["isError"] is True and "denied by the profile" in result["content"][0]["text"]
    else:
        assert (
            result["resultType"] == "input_required"
            and result["inputRequests"]["a"]["method"] == kind
        )


def test_2026_meta_client_capabilities_lose_denied_entries(tmp_path: Path) -> None:
    meta = {
        "io.modelcontextprotocol/clientCapabilities": {"sampling": {}, "roots": {}},
        "io.modelcontextprotocol/clientInfo": {"name": "modern", "version": "2"},
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    }
    with Wrapped(profile(tmp_path), RAW_SERVER) as w:
        reply = w.recv_id(
            w.request("tools/call", {"name": "echo", "arguments": {"text": "m"}, "_meta": meta})
        )
        assert text_of(reply) == "m"
        w.close()
    seen = [
        m for m in server_log(tmp_path / "out" / "server.log") if m.get("method") == "tools/call"
    ]
    assert seen[0]["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] == {"roots": {}}
    record = next(r for r in audit_records(tmp_path / "audit.jsonl") if r["event"] == "call")
    assert record["agent"]["client"] == {"name": "modern", "version": "2"}


def test_tasks_are_stripped_and_task_calls_refused(wrapped: Wrapped, tmp_path: Path) -> None:
    task_call = wrapped.recv_id(
        wrapped.request(
            "tools/call", {"name": "echo", "arguments": {"text": "t"}, "task": {"ttl": 1000}}
        )
    )
    assert task_call["error"]["code"] == -32602 and "task" in task_call["error"]["message"]
    get = wrapped.recv_id(wrapped.request("tasks/get", {"taskId": "x"}))
    assert get["error"]["code"] == -32601
    wrapped.close()
    assert calls_seen(tmp_path) == []


def test_resources_and_prompts_rules(tmp_path: Path) -> None:
    with Wrapped(profile(tmp_path), RAW_SERVER) as w:  # defaults: resources deny, prompts allow
        init = w.initialize()
        assert "resources" not in init["result"]["capabilities"]
        assert w.recv_id(w.request("resources/list", {}))["error"]["code"] == -32601
        assert len(w.recv_id(w.request("prompts/list", {}))["result"]["prompts"]) == 2
    narrowed = tmp_path / "narrow"
    narrowed.mkdir()
    rules = 'resources = ["file:///docs/*"]\nprompts = ["greet"]'
    with Wrapped(profile(narrowed, rules), RAW_SERVER) as w:
        w.initialize()
        listed = w.recv_id(w.request("resources/list", {}))["result"]["resources"]
        assert [r["uri"] for r in listed] == ["file:///docs/a.md"]
        secret = w.recv_id(w.request("resources/read", {"uri": "secret://keys"}))
        assert secret["error"]["code"] == -32602 and "not allowed" in secret["error"]["message"]
        ok = w.recv_id(w.request("resources/read", {"uri": "file:///docs/a.md"}))
        assert ok["result"]["contents"][0]["text"] == "resource body"
        prompts = w.recv_id(w.request("prompts/list", {}))["result"]["prompts"]
        assert [p["name"] for p in prompts] == ["greet"]
        assert "error" in w.recv_id(w.request("prompts/get", {"name": "jailbreak"}))


def test_unknown_methods_are_refused_not_relayed(wrapped: Wrapped, tmp_path: Path) -> None:
    reply = wrapped.recv_id(wrapped.request("x/exec", {"cmd": "id"}))
    assert reply["error"]["code"] == -32601
    wrapped.close()
    assert not [
        m for m in server_log(tmp_path / "out" / "server.log") if m.get("method") == "x/exec"
    ]


def test_cancel_for_a_refused_call_is_swallowed(wrapped: Wrapped, tmp_path: Path) -> None:
    wrapped.call("hidden_one", msg_id=55)
    wrapped.send(
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 55}}
    )
    wrapped.call("echo", {"text": "sync"})  # the cancel, if relayed, was before this
    wrapped.close()
    assert not [
        m
        for m in server_log(tmp_path / "out" / "server.log")
        if m.get("method") == "notifications/cancelled"
    ]


def test_cancel_for_a_call_in_flight_reaches_the_server(wrapped: Wrapped, tmp_path: Path) -> None:
    wrapped.request("tools/call", {"name": "slow", "arguments": {"seconds": 0.5}}, msg_id=66)
    wrapped.send(
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 66}}
    )
    assert wrapped.no_message(1.0), "a cancelled call's late reply is dropped"
    wrapped.close()
    cancels = [
        m
        for m in server_log(tmp_path / "out" / "server.log")
        if m.get("method") == "notifications/cancelled"
    ]
    assert cancels[0]["params"]["requestId"] == 66
    outcomes = [
        r["outcome"] for r in audit_records(tmp_path / "audit.jsonl") if r["event"] == "call"
    ]
    assert outcomes == ["cancelled"]


# --- bad input, both directions --------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "code", "reply_id"),
    [
        (b"{not json", -32700, None),
        (b"\xff\xfe garbage", -32700, None),
        (b"[1, 2]", -32600, None),
        (b'"a string"', -32600, None),
        (b'{"jsonrpc": "2.0", "id": true, "method": "ping"}', -32600, None),
        (b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}', -32600, None),
        (b'{"jsonrpc": "2.0", "id": 3, "method": 42}', -32600, 3),
    ],
)
def test_bad_client_input_gets_an_error_and_the_stream_goes_on(
    wrapped: Wrapped, line: bytes, code: int, reply_id: object
) -> None:
    wrapped.send_raw(line + b"\n")
    reply = wrapped.recv()
    assert reply["error"]["code"] == code and reply["id"] == reply_id
    assert wrapped.call("echo", {"text": "still here"})["result"]["isError"] is False


def test_an_oversized_line_is_refused_with_its_id_in_bounded_memory(tmp_path: Path) -> None:
    with Wrapped(profile(tmp_path), RAW_SERVER, extra=["--max-message", "64KiB"]) as w:
        w.initialize()
        head = b'{"jsonrpc":"2.0","id":77,"method":"tools/call","params":{"name":"echo","arguments":{"text":"'
        writer = threading.Thread(
            target=w.send_raw, args=(head + b"x" * (30 * 1024 * 1024) + b'"}}}\n',)
        )
        writer.start()
        reply = w.recv(30)
        writer.join()
        assert reply["id"] == 77 and reply["error"]["code"] == -32600
        assert "over the limit of 65536 bytes" in reply["error"]["message"]
        assert w.call("echo", {"text": "after"})["result"]["isError"] is False
        with open(f"/proc/{w.proc.pid}/status") as status:
            hwm_kb = next(int(x.split()[1]) for x in status if x.startswith("VmHWM"))
        assert hwm_kb < 60 * 1024, "a 30 MB line must not be buffered"
        w.close()
    assert calls_seen(tmp_path) == ["echo"]


def test_server_garbage_is_dropped_logged_and_audited(wrapped: Wrapped, tmp_path: Path) -> None:
    reply = wrapped.call("garbage")
    assert text_of(reply) == "after garbage"
    assert not getattr(wrapped, "others", []), "garbage must never reach the client"
    wrapped.close()
    drops = [
        r for r in audit_records(tmp_path / "audit.jsonl") if r["rule"] == "protocol.server_output"
    ]
    assert len(drops) == 3
    assert "dropped a server message" in wrapped.proc.stderr.read().decode()  # type: ignore[union-attr]


def test_an_oversized_server_reply_becomes_an_error_for_its_request(tmp_path: Path) -> None:
    with Wrapped(profile(tmp_path), RAW_SERVER, extra=["--max-message", "64KiB"]) as w:
        w.initialize()
        reply = w.call("oversize", {"size": 200_000}, msg_id=88)
        assert (
            reply["error"]["code"] == -32603
            and "over the 65536-byte limit" in reply["error"]["message"]
        )
        assert w.call("echo", {"text": "next"})["result"]["isError"] is False


def test_big_results_pass_intact(wrapped: Wrapped) -> None:
    reply = wrapped.call("big", {"size": 5_000_000})
    assert len(text_of(reply)) == 5_000_000


# --- the child ------------------------------------------------------------------------


def test_the_server_gets_only_the_environment_the_profile_builds(tmp_path: Path) -> None:
    with Wrapped(profile(tmp_path), RAW_SERVER, env={"AWS_SECRET_ACCESS_KEY": "canary"}) as w:
        w.initialize()
        names = json.loads(text_of(w.call("env")))
    assert "AWS_SECRET_ACCESS_KEY" not in names
    assert set(names) <= {"PATH", "HOME", "TMPDIR", "RAW_SERVER_LOG", "LC_CTYPE"}


def test_server_stderr_reaches_ours_without_control_characters(wrapped: Wrapped) -> None:
    wrapped.call("stderr")
    wrapped.close()
    err = wrapped.proc.stderr.read().decode()  # type: ignore[union-attr]
    line = next(x for x in err.splitlines() if "plain" in x)
    assert line == "red title evil plain"


def test_a_call_record_holds_every_field_the_audit_promises(tmp_path: Path) -> None:
    body = BASE.replace(
        '[tools.echo]\nclass = "read"', '[tools.echo]\nclass = "read"\neffects = ["none"]'
    )
    with Wrapped(
        write_profile(tmp_path, body % {"policy": "", "slow_timeout": "10s"}), RAW_SERVER
    ) as w:
        w.initialize()
        w.call("echo", {"text": "fields"}, msg_id=1)
        w.close()
    record = next(r for r in audit_records(tmp_path / "audit.jsonl") if r["event"] == "call")
    assert record["v"] == 1 and len(record["prev"]) == 64 and record["seq"] >= 1
    assert record["ts"].endswith("Z") and len(record["session"]) == 32
    assert record["agent"]["client"] == {"name": "pytest", "version": "1.0"}
    assert record["agent"]["pid"] > 0 and record["agent"]["exe"]  # the launching process
    assert record["token"] is None and record["server"] == "test"
    assert (record["tool"], record["class"], record["effects"]) == ("echo", "read", ["none"])
    assert (record["decision"], record["rule"], record["outcome"]) == ("allow", "tools.echo", "ok")
    assert record["duration_ms"] > 0 and record["bytes_in"] > 0 and record["bytes_out"] > 0
    assert record["cpu_ms"] >= 0 and record["peak_rss_kb"] > 1000  # a python server's tree
    assert record["args"] == {"text": "fields"}  # [audit] arguments = "full" in these tests
    assert record["request_id"] == 1
