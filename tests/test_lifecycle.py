"""Start and stop: who ends the run, what the other side gets, and what is left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from wrapped import MCPWRAP, RAW_SERVER, Wrapped, audit_records, processes_with, write_profile

from mcpwrap.audit.read import verify
from mcpwrap.sandbox import proctree

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


# A server that daemonises a child the classic way, outside any jail: fork, the child
# starts a grandchild in a session of its own (setsid) and exits at once, so the grandchild
# is an orphan in no group of the server's. Its stdio is /dev/null, as a daemon's is.
DAEMONISING = r"""
import json, os, subprocess, sys

def daemon(code):
    pid = os.fork()
    if pid == 0:
        subprocess.Popen([sys.executable, "-c", code, sys.argv[1]], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        os._exit(0)
    os.waitpid(pid, 0)

daemon("import time; time.sleep(600)")
for line in sys.stdin:
    msg = json.loads(line)
    tool = (msg.get("params") or {}).get("name")
    if tool == "exit":
        sys.exit(3)
    if tool == "brief":  # a daemon that ends on its own
        daemon("pass")
    if "id" in msg:
        print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {}}), flush=True)
"""


def _is_daemon(pid: int) -> bool:
    try:
        return b"time.sleep(600)" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _gone(marker: str, timeout: float = 5.0) -> list[int]:
    """The processes still holding `marker` after `timeout`, killed so none outlives the test."""
    deadline = time.monotonic() + timeout
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    leftovers = processes_with(marker)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    return leftovers


def _unjailed(tmp_path: Path, marker: str) -> Wrapped:
    script = tmp_path / "daemonising.py"
    script.write_text(DAEMONISING)
    profile = write_profile(tmp_path, PROFILE + "[sandbox]\nenforce = false\n")
    return Wrapped(profile, [sys.executable, str(script), marker])


@pytest.mark.parametrize("stop", ["client-closes-stdin", "sigterm", "server-exits"])
def test_unjailed_a_daemonised_grandchild_does_not_outlive_mcpwrap(
    tmp_path: Path, stop: str
) -> None:
    """Issue 15, item 10: with [sandbox] enforce = false there is no pid namespace, and a
    daemon that left the server's session outlived mcpwrap. mcpwrap is now the subreaper
    its orphans are reparented to, and kills them with the server. The server's own exit
    status still comes through (mcpwrap reaps only what it adopted)."""
    marker = f"mcpwrap-test-daemon-{os.getpid()}-{time.monotonic_ns()}"
    try:
        with _unjailed(tmp_path, marker) as w:
            w.request("ping", {}, msg_id=1)
            assert w.recv()["id"] == 1
            # The server daemonises as it starts: under load the daemon may come after
            # the ping's answer.
            deadline = time.monotonic() + 10
            while not (daemons := [p for p in processes_with(marker) if _is_daemon(p)]):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert len(daemons) == 1, "the daemon must be running before the stop"
            assert os.getsid(daemons[0]) == daemons[0]  # in a session of its own
            assert os.getpgid(daemons[0]) != os.getpgid(server_pid(w))
            if stop == "sigterm":
                w.proc.send_signal(signal.SIGTERM)
                assert w.proc.wait(20) == 128 + signal.SIGTERM
            elif stop == "server-exits":
                w.request("tools/call", {"name": "exit", "arguments": {}}, msg_id=2)
                assert w.proc.wait(20) == 3
            else:
                assert w.close(timeout=20) == 0
    finally:
        leftovers = _gone(marker)
    assert not leftovers, "a daemon outlived mcpwrap"


def _zombies(pid: int) -> list[int]:
    found = []
    for child in proctree.children(pid):
        try:
            stat = Path(f"/proc/{child}/stat").read_bytes()
        except FileNotFoundError:
            continue  # reaped between the listing and the read
        if stat[stat.rfind(b")") + 2 :].startswith(b"Z"):
            found.append(child)
    return found


def test_unjailed_daemons_that_end_are_reaped_during_the_run(tmp_path: Path) -> None:
    """Orphans adopted by mcpwrap that exit are its children: unreaped, a long session
    would collect one zombie per daemon the server started."""
    marker = f"mcpwrap-test-daemon-{os.getpid()}-{time.monotonic_ns()}"
    try:
        with _unjailed(tmp_path, marker) as w:
            for i in range(5):
                assert "result" in w.call("brief", msg_id=10 + i)
            deadline = time.monotonic() + 5
            while _zombies(w.proc.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _zombies(w.proc.pid) == []
            assert len([p for p in processes_with(marker) if _is_daemon(p)]) == 1
            assert w.close(timeout=20) == 0
    finally:
        leftovers = _gone(marker)
    assert not leftovers


REAPED_OFF_THE_MAIN_THREAD = """
import os, signal, subprocess, sys, threading, time
from mcpwrap.sandbox.reaper import Reaper
from mcpwrap.sandbox.proctree import children

reaper = Reaper()
# The main thread blocks SIGCHLD, as one sitting in waitpid() for the server may as well
# not exist: the kernel hands the signal to the other thread, and _on_child cannot run.
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
server = subprocess.Popen(["sh", "-c", "sleep 0.2 & exit 0"])  # the sleep is orphaned
reaper.watch(server)
server.wait()
deadline = time.monotonic() + 5
while time.monotonic() < deadline:
    zombies = [p for p in children(os.getpid()) if p != server.pid]
    if not zombies:
        break
    time.sleep(0.05)
print("zombies", zombies)
"""


def test_an_adopted_daemon_is_reaped_when_another_thread_takes_the_sigchld() -> None:
    """A signal goes to any thread: the reaper's own thread reaps from the wakeup fd, so a
    daemon that ends is collected while the main thread waits for the server."""
    done = subprocess.run(
        [sys.executable, "-c", REAPED_OFF_THE_MAIN_THREAD],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert done.stdout.strip() == "zombies []", done.stdout + done.stderr


REAPED_WHEN_PROC_MISSES_IT = """
import os, subprocess, time
from mcpwrap.sandbox import reaper as module
from mcpwrap.sandbox.proctree import children

reaper = module.Reaper()
module.children = lambda pid: []  # /proc's lists may miss a child: here they miss all
server = subprocess.Popen(["sh", "-c", "sleep 0.2 & exit 0"])  # the sleep is orphaned
reaper.watch(server)
server.wait()
deadline = time.monotonic() + 5
while time.monotonic() < deadline:
    zombies = [p for p in children(os.getpid()) if p != server.pid]
    if not zombies:
        break
    time.sleep(0.05)
print("zombies", zombies)
"""


def test_an_adopted_daemon_is_reaped_even_when_proc_does_not_list_it() -> None:
    """The kernel does not promise that /proc/PID/task/TID/children lists every child of a
    running process, and a missed one gets no second SIGCHLD: the reaper asks waitid as
    well. Here the lists miss everything, and the daemon is still collected."""
    done = subprocess.run(
        [sys.executable, "-c", REAPED_WHEN_PROC_MISSES_IT],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert done.stdout.strip() == "zombies []", done.stdout + done.stderr


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
