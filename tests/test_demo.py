"""The demo's server and profile: what `mcpwrap demo` claims, checked against the jail.

count_words is allowed by the demo profile; its own code also lists $HOME/.ssh and tries
to connect out. In the jail both fail; the controls (the same server without the jail,
or with the host's network) show that the code really does reach them otherwise, so the
demo's "stopped by the jail" rests on the jail and not on the tool.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from wrapped import REPO, Wrapped, audit_records

DEMO_SERVER = [sys.executable, "-m", "mcpwrap.commands.demo.server"]
DEMO_PROFILE = REPO / "mcpwrap" / "commands" / "demo" / "demo.toml"


def _project(tmp_path: Path, sandbox: str = "") -> tuple[Path, dict[str, str]]:
    """The demo's profile in a project, and a HOME holding a canary ~/.ssh."""
    project, home = tmp_path / "project", tmp_path / "home"
    (project / "notes").mkdir(parents=True)
    (project / "README.txt").write_text("three small words\n")
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_canary").write_text("not a key\n")
    text = DEMO_PROFILE.read_text()
    if sandbox:
        text = text.replace("[sandbox]", f"[sandbox]\n{sandbox}", 1)
    (project / "demo.toml").write_text(text)
    return project, {"HOME": str(home)}


def _also_tried(project: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    with Wrapped(project / "demo.toml", DEMO_SERVER, cwd=project, env=env) as w:
        w.initialize()
        result = w.call("count_words", {"path": "README.txt"})["result"]
        assert result.get("isError") is not True, result
        assert result["structuredContent"]["words"] == 3  # it did its job
        assert w.close() == 0
    tried: list[dict[str, Any]] = result["structuredContent"]["also_tried"]
    return tried


def test_the_jail_stops_what_an_allowed_tools_own_code_tries(tmp_path: Path) -> None:
    project, env = _project(tmp_path)
    ssh, call = _also_tried(project, env)
    assert ssh == {
        "what": f"list {env['HOME']}/.ssh",
        "stopped": True,
        "error": "No such file or directory",  # the home directory is not in the jail
    }
    assert call["what"] == "connect to 192.0.2.1:443" and call["stopped"] is True
    assert call["error"] in ("Permission denied", "Network is unreachable"), call
    (record,) = [r for r in audit_records(project / "audit.jsonl") if r.get("tool")]
    assert (record["decision"], record["outcome"]) == ("allow", "ok")  # the call was allowed


def test_control_without_the_jail_the_code_finds_the_keys(tmp_path: Path) -> None:
    project, env = _project(tmp_path, "enforce = false")
    ssh, call = _also_tried(project, env)
    assert ssh == {"what": f"list {env['HOME']}/.ssh", "stopped": False, "error": "found 1 entries"}
    # With a network, the tool does not even try: the demo never sends anything out.
    assert call["stopped"] is False and call["error"] == "not tried: this process has a network"


def test_control_with_the_hosts_network_nothing_is_tried(tmp_path: Path) -> None:
    project, env = _project(tmp_path, 'network = "host"')
    ssh, call = _also_tried(project, env)
    assert ssh["stopped"] is True  # the file system part of the jail still holds
    assert call == {
        "what": "connect to 192.0.2.1:443",
        "stopped": False,
        "error": "not tried: this process has a network",
    }


def test_a_call_stopped_at_its_deadline_is_cancelled_and_the_session_ends_promptly(
    tmp_path: Path,
) -> None:
    """The server honours notifications/cancelled: once the client is gone, nothing keeps
    it alive (a sleeping worker thread made every demo sit idle for 2 s)."""
    project, env = _project(tmp_path)
    with Wrapped(project / "demo.toml", DEMO_SERVER, cwd=project, env=env) as w:
        w.initialize()
        result = w.call("slow", {"seconds": 5}, msg_id=7)["result"]
        assert result["isError"] is True and "timed out after 1 s" in result["content"][0]["text"]
        start = time.monotonic()
        assert w.close() == 0
        ended = time.monotonic() - start
    assert ended < 1.5, f"mcpwrap took {ended:.1f} s to end after the client left"
    records = audit_records(project / "audit.jsonl")
    (call,) = [r for r in records if r.get("tool") == "slow"]
    assert (call["decision"], call["outcome"], call["rule"]) == (
        "allow",
        "timeout",
        "tools.slow.timeout",
    )
    assert (records[-1]["event"], records[-1]["decision"]) == ("session", "stop")
