"""Start and stop: who ends the run, what the other side gets, and what is left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from wrapped import MCPWRAP, RAW_SERVER, Wrapped, audit_records, processes_with, write_profile

from mcpwrap.auditread import verify

PROFILE = """
[server]
env = { RAW_SERVER_LOG = "{project}/out/server.log" }
[policy]
default = "allow"
"""

# A server that ignores stdin EOF and TERM, and leaves a daemonised grandchild behind: a
# new session, reparented when its parent exits. Its pid inside the jail means nothing
# outside, so the test finds it by the marker in its command line.
STUBBORN = r"""
import json, os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", sys.argv[1]],
                 start_new_session=True)
for line in sys.stdin:
    msg = json.loads(line)
    if "id" in msg:
        print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {}}), flush=True)
while True:
    time.sleep(1)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def server_pid(w: Wrapped) -> int:
    children = Path(f"/proc/{w.proc.pid}/task/{w.proc.pid}/children").read_text().split()
    return int(children[0])


def test_server_exit_fails_pending_requests_and_sets_the_exit_status(tmp_path: Path) -> None:
    with Wrapped(write_profile(tmp_path, PROFILE), RAW_SERVER) as w:
        w.initialize()
        w.request("tools/call", {"name": "slow", "arguments": {"seconds": 30}}, msg_id=1)
        w.request("tools/call", {"name": "exit", "arguments": {"code": 7}}, msg_id=2)
        replies = {m["id"]: m for m in (w.recv(), w.recv())}
        assert replies[1]["error"]["code"] == -32603 and "exited" in replies[1]["error"]["message"]
        assert replies[2]["error"]["code"] == -32603
        assert w.proc.wait(10) == 7
    calls = [r for r in audit_records(tmp_path / "audit.jsonl") if r["event"] == "call"]
    assert sorted(r["outcome"] for r in calls) == ["error", "error"]


def test_client_eof_ends_the_server_and_mcpwrap(tmp_path: Path) -> None:
    with Wrapped(write_profile(tmp_path, PROFILE), RAW_SERVER) as w:
        w.initialize()
        child = server_pid(w)
        assert w.close() == 0
        assert wait_dead(child)
    stop = audit_records(tmp_path / "audit.jsonl")[-1]
    assert stop["event"] == "session" and stop["decision"] == "stop"


def test_a_server_that_ignores_eof_and_sigterm_is_killed_with_its_daemons(tmp_path: Path) -> None:
    script = tmp_path / "stubborn.py"
    script.write_text(STUBBORN)
    marker = f"mcpwrap-test-daemon-{os.getpid()}-{time.monotonic_ns()}"
    w = Wrapped(write_profile(tmp_path, PROFILE), [sys.executable, str(script), marker])
    with w:
        w.request("ping", {}, msg_id=1)
        w.recv()
        assert processes_with(marker), "the daemon must be running before the stop"
        start = time.monotonic()
        w.close(timeout=20)
        assert time.monotonic() - start < 12
    deadline = time.monotonic() + 5
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    leftovers = processes_with(marker)
    for pid in leftovers:  # never leave it running, even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not leftovers, "a daemon outlived the jail's pid namespace"


def test_sigterm_stops_the_server_and_exits_143(tmp_path: Path) -> None:
    with Wrapped(write_profile(tmp_path, PROFILE), RAW_SERVER) as w:
        w.initialize()
        child = server_pid(w)
        w.proc.send_signal(signal.SIGTERM)
        assert w.proc.wait(10) == 128 + signal.SIGTERM
        assert wait_dead(child)
    assert audit_records(tmp_path / "audit.jsonl")[-1]["signal"] == signal.SIGTERM


def test_kill_9_of_mcpwrap_loses_no_record_and_takes_the_server_along(tmp_path: Path) -> None:
    with Wrapped(write_profile(tmp_path, PROFILE), RAW_SERVER) as w:
        w.initialize()
        child = server_pid(w)
        for i in range(50):
            w.call("echo", {"text": f"n{i}"}, msg_id=i)
        w.proc.kill()
        w.proc.wait()
        assert wait_dead(child), "PR_SET_PDEATHSIG must take the server down with mcpwrap"
    records = audit_records(tmp_path / "audit.jsonl")
    assert [r["request_id"] for r in records if r["event"] == "call"] == list(range(50))
    assert verify(str(tmp_path / "audit.jsonl")).ok


def test_an_unknown_server_command_is_a_clear_error(tmp_path: Path) -> None:
    path = write_profile(tmp_path, PROFILE)
    out = subprocess.run(
        [*MCPWRAP, "run", "--profile", str(path), "--", "no-such-server-x"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
    )
    assert out.returncode == 127
    assert "'no-such-server-x' is not found on PATH" in out.stderr


def test_profile_command_and_cli_command_must_agree(tmp_path: Path) -> None:
    path = write_profile(tmp_path, '[server]\ncommand = ["python3", "a.py"]\n')
    out = subprocess.run(
        [*MCPWRAP, "run", "--profile", str(path), "--", "python3", "b.py"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
    )
    assert out.returncode == 2
    assert (
        "remove one of them" in out.stderr
        and json.dumps(["python3", "a.py"]).replace('"', "'") in out.stderr
    )
