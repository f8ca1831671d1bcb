"""Tokens at the boundary of `mcpwrap run`, with a real Secret Service holding the signing
key and named tokens (gnome-keyring on a private D-Bus session bus).

The server is tests/fixtures/raw_server.py in the jail; a refused call never reaches it
(its log says so).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from wrapped import MCPWRAP, RAW_SERVER, Wrapped, audit_records, server_log, write_profile

from mcpwrap.identity import tokens

PROFILE = """
[server]
passthrough = ["RAW_SERVER_LOG"]

[policy]
default = "deny"

[tools.echo]
class = "read"

[tools.slow]
class = "read"

[tools.env]
class = "write"

[tools.exit]
class = "admin"

[tools.big]
class = "read"
args.size = { max = 10 }
"""


def _issue(
    *,
    tenant: str = "acme",
    tools: tuple[str, ...] = ("echo", "slow", "env", "exit", "big"),
    classes: frozenset[str] = frozenset({"read"}),
    rate: str | None = None,
    concurrency: int | None = None,
    lifetime: float = 3600.0,
    not_before: float | None = None,
    name: str | None = None,
    now: float | None = None,
) -> tuple[tokens.Token, str]:
    scope = tokens.Scope(tenant, tools, classes, rate, concurrency)
    from mcpwrap.config import paths

    return tokens.issue(
        scope,
        lifetime=lifetime,
        not_before=not_before,
        name=name,
        state_dir=paths.state_dir(),
        now=now,
    )


def _profile(tmp_path: Path, extra: str = "") -> Path:
    return write_profile(tmp_path, PROFILE + extra)


def _run(profile: Path, env: dict[str, str], *extra: str, text: str | None = None) -> Wrapped:
    full = {**env, "RAW_SERVER_LOG": str(profile.parent / "out" / "log.jsonl")}
    if text is not None:
        full["MCPWRAP_TOKEN"] = text
    return Wrapped(profile, RAW_SERVER, extra=list(extra), env=full)


def _listed(w: Wrapped) -> list[str]:
    names: list[str] = []
    cursor = None
    while True:
        reply = w.recv_id(w.request("tools/list", {"cursor": cursor} if cursor else {}))
        names += [t["name"] for t in reply["result"]["tools"]]
        cursor = reply["result"].get("nextCursor")
        if not cursor:
            return sorted(names)


def _rule(reply: dict[str, Any]) -> str:
    text = reply["result"]["content"][0]["text"] if "result" in reply else reply["error"]["message"]
    return str(text)


def _calls(profile: Path, name: str) -> list[dict[str, Any]]:
    log = server_log(profile.parent / "out" / "log.jsonl")
    return [m for m in log if m.get("method") == "tools/call" and m["params"]["name"] == name]


# --- no token -------------------------------------------------------------------------------


def test_required_without_a_token_shows_nothing_callable(tmp_path: Path) -> None:
    profile = _profile(tmp_path, "\n[auth]\nrequired = true\n")
    with _run(profile, {}) as w:
        w.initialize()
        assert _listed(w) == []
        assert "auth.required" in _rule(w.call("echo", {"text": "x"}))
    assert _calls(profile, "echo") == []
    call = next(r for r in audit_records(tmp_path / "audit.jsonl") if r["event"] == "call")
    assert call["rule"] == "auth.required" and call["token"] is None


def test_required_write_keeps_reads_open_and_writes_need_a_write_token(
    tmp_path: Path, keyring_env: dict[str, str]
) -> None:
    profile = _profile(tmp_path, '\n[auth]\nrequired = "write"\n')
    with _run(profile, {}) as w:
        w.initialize()
        assert _listed(w) == ["big", "echo", "slow"]  # env (write), exit (admin) hidden
        assert w.call("echo", {"text": "hi"})["result"]["isError"] is False
        assert "auth.required" in _rule(w.call("env"))
        assert "admin" in _rule(w.call("exit"))
    assert _calls(profile, "env") == []  # refused before the server saw it
    _, reader = _issue()
    with _run(profile, keyring_env, text=reader) as w:
        w.initialize()
        assert "token.class" in _rule(w.call("env"))
    assert _calls(profile, "env") == []
    _, writer = _issue(classes=frozenset({"read", "write"}))
    with _run(profile, keyring_env, text=writer) as w:
        w.initialize()
        assert _listed(w) == ["big", "echo", "env", "slow"]
        assert w.call("env")["result"]["isError"] is False
    assert len(_calls(profile, "env")) == 1


def test_not_required_and_no_token_is_the_profile_alone(tmp_path: Path) -> None:
    with _run(_profile(tmp_path), {}) as w:
        w.initialize()
        assert _listed(w) == ["big", "echo", "env", "exit", "slow"]


# --- a valid token: its scope intersected with the profile ----------------------------------


def test_a_token_narrows_the_profile_and_every_record_names_it(
    tmp_path: Path, keyring_env: dict[str, str]
) -> None:
    token, text = _issue(tools=("echo", "env", "exit", "big", "not-in-profile"))
    profile = _profile(tmp_path, "\n[auth]\nrequired = true\n")
    with _run(profile, keyring_env, text=text) as w:
        w.initialize()
        assert _listed(w) == ["big", "echo"]  # slow: not in the token; env: write class
        assert w.call("echo", {"text": "hi"})["result"]["isError"] is False
        assert "token.tools" in _rule(w.call("slow", {"seconds": 0}))
        assert "token.class" in _rule(w.call("env"))
        admin = _rule(w.call("exit"))
        assert "admin" in admin  # refused by the profile's class rule or the token's
        assert "tools.big.args.size" in _rule(w.call("big", {"size": 11}))  # the profile too
    assert [
        c["params"]["name"]
        for c in server_log(tmp_path / "out" / "log.jsonl")
        if c.get("method") == "tools/call"
    ] == ["echo"]
    records = [r for r in audit_records(tmp_path / "audit.jsonl") if r["event"] == "call"]
    assert records and all(r["token"] == token.id for r in records)


def test_the_token_from_the_keyring_by_name(tmp_path: Path, keyring_env: dict[str, str]) -> None:
    token, _ = _issue(name="ci-acme")
    with _run(_profile(tmp_path), keyring_env, "--token-name", "ci-acme") as w:
        w.initialize()
        assert w.call("echo", {"text": "x"})["result"]["isError"] is False
    records = [r for r in audit_records(tmp_path / "audit.jsonl") if r["event"] == "call"]
    assert records[0]["token"] == token.id


def test_a_token_on_both_sides_is_a_usage_error(
    tmp_path: Path, keyring_env: dict[str, str]
) -> None:
    _, text = _issue(name="both")
    with _run(_profile(tmp_path), keyring_env, "--token-name", "both", text=text) as w:
        assert w.proc.wait(30) == 2
        assert "give one of them" in w.stderr_now()


def test_the_stricter_rate_and_concurrency_win(tmp_path: Path, keyring_env: dict[str, str]) -> None:
    _, text = _issue(rate="2/min", concurrency=1)
    with _run(_profile(tmp_path), keyring_env, text=text) as w:
        w.initialize()
        slow = w.request("tools/call", {"name": "slow", "arguments": {"seconds": 2}})
        busy = w.call("echo", {"text": "while slow runs"})
        assert "token.concurrency" in _rule(busy)
        assert w.recv_id(slow, timeout=15)["result"]["isError"] is False
        assert w.call("echo", {"text": "second"})["result"]["isError"] is False
        assert "token.rate" in _rule(w.call("echo", {"text": "third"}))


def test_tenant_placeholders_resolve_to_the_tokens_tenant(
    tmp_path: Path, keyring_env: dict[str, str]
) -> None:
    extra = '\n[tools.echo.args]\ntext = { within = ["{project}/data/{tenant}"] }\n'
    _, text = _issue(tenant="acme")
    with _run(_profile(tmp_path, extra), keyring_env, text=text) as w:
        w.initialize()
        mine = w.call("echo", {"text": str(tmp_path / "data" / "acme" / "a.txt")})
        assert mine["result"]["isError"] is False
        theirs = w.call("echo", {"text": str(tmp_path / "data" / "globex" / "a.txt")})
        assert "tools.echo.args.text" in _rule(theirs)


# --- refused at the boundary -----------------------------------------------------------------


def _refused(tmp_path: Path, env: dict[str, str], text: str, extra: str = "") -> str:
    tmp_path.mkdir(exist_ok=True)
    profile = _profile(tmp_path, extra)
    with _run(profile, env, text=text) as w:
        assert w.proc.wait(30) == 2
        err = w.stderr_now()
    assert not (tmp_path / "out" / "log.jsonl").exists()  # the server never started
    return err


def test_expired_not_yet_valid_tampered_and_revoked_tokens_stop_the_run(
    tmp_path: Path, keyring_env: dict[str, str]
) -> None:
    past = time.time() - 100  # issued back then, expired since
    _, expired = _issue(lifetime=10.0, not_before=past, now=past)
    assert "token.expired" in _refused(tmp_path / "a", keyring_env, expired)
    _, early = _issue(not_before=time.time() + 3600)
    assert "token.not_yet_valid" in _refused(tmp_path / "b", keyring_env, early)
    _, good = _issue()
    head, payload, mac = good.split(".")
    flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    assert "token.signature" in _refused(tmp_path / "c", keyring_env, f"{head}.{flipped}.{mac}")
    assert "token.format" in _refused(tmp_path / "d", keyring_env, "not-a-token")
    revoked, text = _issue()
    from mcpwrap.config import paths

    tokens.Registry(os.path.join(paths.state_dir(), "tokens.sqlite3")).revoke(
        revoked.id, time.time()
    )
    assert "token.revoked" in _refused(tmp_path / "e", keyring_env, text)
    refusals = [
        r
        for sub in "abcde"
        for r in audit_records(tmp_path / sub / "audit.jsonl")
        if r["decision"] == "refuse"
    ]
    assert [r["rule"] for r in refusals] == [
        "token.expired",
        "token.not_yet_valid",
        "token.signature",
        "token.format",
        "token.revoked",
    ]


def test_a_token_of_another_tenant_is_refused(tmp_path: Path, keyring_env: dict[str, str]) -> None:
    token, text = _issue(tenant="globex")
    err = _refused(tmp_path, keyring_env, text, '\n[auth]\ntenants = ["acme"]\n')
    assert "token.tenant" in err and "globex" in err
    (record,) = [r for r in audit_records(tmp_path / "audit.jsonl") if r["decision"] == "refuse"]
    assert record["rule"] == "token.tenant" and record["token"] == token.id


# --- while the wrapper runs -----------------------------------------------------------------


def _until(check: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def test_a_revocation_reaches_a_running_wrapper_within_seconds(
    tmp_path: Path, keyring_env: dict[str, str]
) -> None:
    token, text = _issue()
    with _run(_profile(tmp_path), keyring_env, text=text) as w:
        w.initialize()
        assert w.call("echo", {"text": "before"})["result"]["isError"] is False
        revoke = subprocess.run(
            [*MCPWRAP, "token", "revoke", token.id],
            capture_output=True,
            text=True,
            env={**os.environ, **keyring_env},
            timeout=60,
        )
        assert revoke.returncode == 0, revoke.stderr
        started = time.monotonic()
        assert _until(lambda: "token.revoked" in _rule(w.call("echo", {"text": "x"})), 5)
        assert time.monotonic() - started < 3
    events = [r for r in audit_records(tmp_path / "audit.jsonl") if r["event"] == "token"]
    assert events[0]["decision"] == "revoked"


def test_a_named_token_is_rotated_while_the_wrapper_runs(
    tmp_path: Path, keyring_env: dict[str, str]
) -> None:
    first, _ = _issue(name="short", lifetime=5.0)
    with _run(_profile(tmp_path), keyring_env, "--token-name", "short") as w:
        w.initialize()
        assert w.call("echo", {"text": "early"})["result"]["isError"] is False
        time.sleep(max(0.0, first.expires - time.time() + 0.5))  # past the first's expiry
        assert w.call("echo", {"text": "late"})["result"]["isError"] is False
    records = audit_records(tmp_path / "audit.jsonl")
    rotated = [r for r in records if r["event"] == "token" and r["decision"] == "rotated"]
    assert rotated and rotated[0]["previous"] == first.id
    calls = [r for r in records if r["event"] == "call"]
    assert calls[0]["token"] == first.id and calls[-1]["token"] != first.id
    from mcpwrap.config import paths

    successor = tokens.Registry(os.path.join(paths.state_dir(), "tokens.sqlite3")).get("short")
    assert successor is not None and successor.predecessor == first.id
    assert calls[-1]["token"] == successor.id


NO_BUS = {"DBUS_SESSION_BUS_ADDRESS": "unix:path=/nonexistent/bus"}


def test_without_a_keyring_every_token_command_says_so(tmp_path: Path) -> None:
    issue = subprocess.run(
        [*MCPWRAP, "token", "issue", "--tenant", "acme", "--tool", "echo", "--expires", "1d"],
        capture_output=True,
        text=True,
        env={**os.environ, **NO_BUS},
        timeout=60,
    )
    assert issue.returncode == 2 and "no usable keyring backend" in issue.stderr
    with _run(_profile(tmp_path), NO_BUS, "--token-name", "ci") as w:
        assert w.proc.wait(30) == 2
        err = w.stderr_now()
    assert "no usable keyring backend" in err and "gnome-keyring-daemon" in err
    assert not (tmp_path / "out" / "log.jsonl").exists()
