"""Real clients and real servers through `mcpwrap run`.

Clients: the `mcp` SDK's ClientSession (handshake) and Client (2026-07-28 discovery with
fallback, and legacy mode), and @modelcontextprotocol/inspector's CLI. Servers: the
bundled SDK server, @modelcontextprotocol/server-everything (npm) and mcp-server-time
(PyPI).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError
from wrapped import MCPWRAP, REPO, audit_records

DEMO_SERVER = [sys.executable, "-m", "mcpwrap.commands.demo.server"]

EVERYTHING = """
version = 1
name = "everything"
[policy]
default = "deny"
sampling = "%(sampling)s"
elicitation = "allow"
roots = "%(roots)s"
resources = "allow"
[tools.echo]
class = "read"
[tools.echo.args]
message = { max_length = 40 }
[tools.get-sum]
class = "read"
[tools.get-sum.args]
a = { max = 100 }
[tools.trigger-sampling-request]
class = "read"
[tools.trigger-elicitation-request]
class = "read"
[tools.get-roots-list]
class = "read"
[tools.trigger-long-running-operation]
class = "read"
[tools.get-structured-content]
class = "read"
[tools.get-annotated-message]
class = "read"
[tools.get-env]
class = "read"
[sandbox]
read = ["{project}"]
[audit]
path = "%(dir)s/audit.jsonl"
"""

TIME = """
version = 1
name = "time"
[policy]
default = "deny"
[tools.get_current_time]
class = "read"
[tools.get_current_time.args]
timezone = { one_of = ["UTC", "Europe/Paris"] }
[sandbox]
read = ["{project}"]
[audit]
path = "%(dir)s/audit.jsonl"
"""

DEMO = """
version = 1
name = "demo"
[policy]
default = "deny"
[tools.read_file]
class = "read"
[tools.read_file.args]
path = { within = ["{project}"] }
[tools.list_dir]
class = "read"
[sandbox]
read = ["{project}"]
[audit]
path = "%(dir)s/audit.jsonl"
"""


def wrap(tmp_path: Path, body: str, server: list[str], **values: str) -> StdioServerParameters:
    profile = tmp_path / "p.toml"
    profile.write_text(body % {"dir": tmp_path, **values})
    argv = [*MCPWRAP, "run", "--profile", str(profile), "--", *server]
    return StdioServerParameters(
        command=argv[0],
        args=argv[1:],
        cwd=str(tmp_path),
        env={"PATH": "/usr/local/bin:/usr/bin:/bin"},
    )


def records(tmp_path: Path) -> list[dict[str, Any]]:
    return audit_records(tmp_path / "audit.jsonl")


def text(result: types.CallToolResult) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


# --- the bundled SDK server, three client modes -------------------------------------------


@pytest.mark.anyio
async def test_client_session_handshake_sees_only_allowed_tools(tmp_path: Path) -> None:
    (tmp_path / "inside.txt").write_text("inside")
    params = wrap(tmp_path, DEMO, DEMO_SERVER)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = await session.list_tools()
        assert sorted(t.name for t in tools.tools) == ["list_dir", "read_file"]
        ok = await session.call_tool("read_file", {"path": "inside.txt"})
        assert not ok.is_error and text(ok) == "inside"
        refused = await session.call_tool("read_file", {"path": "/etc/hostname"})
        assert refused.is_error and "tools.read_file.args.path" in text(refused)
        with pytest.raises(MCPError, match="Unknown tool: upload_ssh_keys"):
            await session.call_tool("upload_ssh_keys", {"host": "x"})


@pytest.mark.anyio
@pytest.mark.parametrize(("mode", "modern"), [("auto", True), ("legacy", False)])
async def test_client_in_both_protocol_generations(tmp_path: Path, mode: str, modern: bool) -> None:
    (tmp_path / "inside.txt").write_text("inside")
    params = wrap(tmp_path, DEMO, DEMO_SERVER)
    async with Client(stdio_client(params), mode=mode) as client:  # type: ignore[arg-type]
        assert client.protocol_version.startswith("2026") is modern
        tools = await client.list_tools()
        assert sorted(t.name for t in tools.tools) == ["list_dir", "read_file"]
        ok = await client.call_tool("read_file", {"path": "inside.txt"})
        assert text(ok) == "inside"
        refused = await client.call_tool("read_file", {"path": "../../../../etc/passwd"})
        assert refused.is_error
    calls = [r for r in records(tmp_path) if r["event"] == "call"]
    assert [(r["tool"], r["decision"]) for r in calls] == [
        ("read_file", "allow"),
        ("read_file", "refuse"),
    ]
    assert calls[0]["agent"]["client"]["name"] == "mcp"


# --- server-everything: every feature through the relay --------------------------------------


async def _sampling(
    context: Any, params: types.CreateMessageRequestParams
) -> types.CreateMessageResult:
    return types.CreateMessageResult(
        role="assistant",
        model="test-model",
        content=types.TextContent(type="text", text="sampled by the test"),
    )


async def _elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    return types.ElicitResult(action="decline")


@pytest.mark.anyio
async def test_everything_server_features_pass_through(
    tmp_path: Path, everything_cmd: list[str]
) -> None:
    roots_asked = anyio.Event()

    async def roots(context: Any) -> types.ListRootsResult:
        roots_asked.set()
        return types.ListRootsResult(roots=[types.Root(uri="file:///work/project", name="project")])

    params = wrap(tmp_path, EVERYTHING, everything_cmd, sampling="allow", roots="allow")
    async with (
        stdio_client(params) as (read, write),
        ClientSession(
            read,
            write,
            sampling_callback=_sampling,
            elicitation_callback=_elicit,
            list_roots_callback=roots,
        ) as session,
    ):
        init = await session.initialize()
        assert init.capabilities.tasks is None, "tasks are stripped"
        with anyio.fail_after(10):
            await roots_asked.wait()  # the server asks for roots right after initialized
        names = {t.name for t in (await session.list_tools()).tools}
        assert {"echo", "trigger-sampling-request", "get-roots-list"} <= names
        assert "get-tiny-image" not in names and "simulate-research-query" not in names
        assert "sampled by the test" in text(
            await session.call_tool("trigger-sampling-request", {"prompt": "hi"})
        )
        elicited = await session.call_tool("trigger-elicitation-request", {})
        assert not elicited.is_error
        steps: list[float] = []

        async def progress(value: float, total: float | None, message: str | None) -> None:
            steps.append(value)

        await session.call_tool(
            "trigger-long-running-operation",
            {"duration": 0.2, "steps": 2},
            progress_callback=progress,
        )
        assert len(steps) == 2
        structured = await session.call_tool("get-structured-content", {"location": "New York"})
        assert structured.structured_content is not None
        assert (await session.call_tool("echo", {"message": "x" * 41})).is_error
        assert (await session.call_tool("get-sum", {"a": 101, "b": 1})).is_error
        assert text(await session.call_tool("get-sum", {"a": 2, "b": 3})).endswith("5.")
        env = json.loads(text(await session.call_tool("get-env", {})))
        assert set(env) <= {"PATH", "HOME", "TMPDIR"}, "the environment is built from the profile"
        assert env["HOME"] == "/tmp/home", "HOME is the jail's private one, not the user's"


@pytest.mark.anyio
async def test_everything_server_never_asks_for_denied_capabilities(
    tmp_path: Path, everything_cmd: list[str]
) -> None:
    asked: list[str] = []

    async def roots(context: Any) -> types.ListRootsResult:
        asked.append("roots")
        return types.ListRootsResult(roots=[])

    async def sampling(
        context: Any, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        asked.append("sampling")
        return await _sampling(context, params)

    params = wrap(tmp_path, EVERYTHING, everything_cmd, sampling="deny", roots="deny")
    async with (
        stdio_client(params) as (read, write),
        ClientSession(
            read, write, sampling_callback=sampling, list_roots_callback=roots
        ) as session,
    ):
        await session.initialize()
        names = {t.name for t in (await session.list_tools()).tools}
        # The server registers these only for clients that declare the capability.
        assert "trigger-sampling-request" not in names and "get-roots-list" not in names
        # The profile names the tool, so the call is relayed; the server does not have it.
        assert (await session.call_tool("trigger-sampling-request", {"prompt": "hi"})).is_error
    assert asked == []


# --- mcp-server-time (PyPI), both protocol generations ---------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_time_server_with_argument_policy(
    tmp_path: Path, time_server_cmd: list[str], mode: str
) -> None:
    params = wrap(tmp_path, TIME, time_server_cmd)
    async with Client(stdio_client(params), mode=mode) as client:  # type: ignore[arg-type]
        names = [t.name for t in (await client.list_tools()).tools]
        assert names == ["get_current_time"]  # convert_time is not in the profile
        now = await client.call_tool("get_current_time", {"timezone": "UTC"})
        assert not now.is_error and now.structured_content["timezone"] == "UTC"  # type: ignore[index]
        tokyo = await client.call_tool("get_current_time", {"timezone": "Asia/Tokyo"})
        assert tokyo.is_error and "tools.get_current_time.args.timezone" in text(tokyo)


# --- the inspector's CLI ----------------------------------------------------------------------


def _inspector(inspector_cli: list[str], server: list[str], *method: str) -> Any:
    out = subprocess.run(
        [*inspector_cli, *server, *method],
        capture_output=True,
        text=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_inspector_cli_through_mcpwrap(
    tmp_path: Path, inspector_cli: list[str], everything_cmd: list[str]
) -> None:
    params = wrap(tmp_path, EVERYTHING, everything_cmd, sampling="deny", roots="deny")
    server = [params.command, *params.args]
    listed = _inspector(inspector_cli, server, "--method", "tools/list")
    assert sorted(t["name"] for t in listed["tools"]) == [
        "echo",
        "get-annotated-message",
        "get-env",
        "get-structured-content",
        "get-sum",
        "trigger-long-running-operation",
    ]
    ok = _inspector(
        inspector_cli,
        server,
        "--method",
        "tools/call",
        "--tool-name",
        "echo",
        "--tool-arg",
        "message=hi",
    )
    assert ok["content"][0]["text"] == "Echo: hi"
    refused = _inspector(
        inspector_cli,
        server,
        "--method",
        "tools/call",
        "--tool-name",
        "echo",
        "--tool-arg",
        "message=" + "y" * 50,
    )
    assert refused["isError"] is True and "tools.echo.args.message" in refused["content"][0]["text"]
    clients = {r["agent"]["client"]["name"] for r in records(tmp_path) if r["event"] == "call"}
    assert len(clients) == 1 and "inspector" in clients.pop()


@pytest.mark.anyio
async def test_curated_time_profile_is_found_by_name_and_holds(
    tmp_path: Path, time_server_cmd: list[str]
) -> None:
    """profiles/mcp-server-time.toml, found among the built-in profiles by name."""
    argv = [*MCPWRAP, "run", "--profile", "mcp-server-time", "--", *time_server_cmd]
    params = StdioServerParameters(
        command=argv[0],
        args=argv[1:],
        cwd=str(tmp_path),
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "XDG_STATE_HOME": str(tmp_path / "state")},
    )
    async with Client(stdio_client(params), mode="legacy") as client:
        names = sorted(t.name for t in (await client.list_tools()).tools)
        assert names == ["convert_time", "get_current_time"]
        ok = await client.call_tool(
            "convert_time",
            {"source_timezone": "UTC", "time": "12:30", "target_timezone": "Asia/Tokyo"},
        )
        assert not ok.is_error
        bad = await client.call_tool(
            "convert_time",
            {"source_timezone": "UTC", "time": "25:99", "target_timezone": "Asia/Tokyo"},
        )
        assert bad.is_error and "tools.convert_time.args.time" in text(bad)
        odd = await client.call_tool("get_current_time", {"timezone": "../../etc/passwd"})
        assert odd.is_error
    log = tmp_path / "state" / "mcpwrap" / "audit.jsonl"
    assert {r["server"] for r in audit_records(log)} == {"mcp-server-time"}  # what --profile takes


@pytest.mark.anyio
async def test_a_static_binary_server_runs_in_the_jail(tmp_path: Path) -> None:
    """busybox (Debian's busybox-static, installed by .ci/run) is the server process: no
    dynamic loader, no runtime tree. Its script lives in the project, under the read grant."""
    busybox = "/bin/busybox"
    script = tmp_path / "server.sh"
    script.write_text((REPO / "tests" / "fixtures" / "busybox_server.sh").read_text())
    body = 'version = 1\n[sandbox]\nread = ["{project}"]\n[policy]\ndefault = "deny"\n'
    body += '[tools.echo]\nclass = "read"\n[tools.uname]\nclass = "read"\n'
    body += f'[audit]\npath = "{tmp_path}/audit.jsonl"\n'
    params = wrap(tmp_path, body.replace("%", "%%"), [busybox, "sh", str(script)])
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        assert sorted(t.name for t in (await session.list_tools()).tools) == ["echo", "uname"]
        assert text(await session.call_tool("echo", {})) == "static hello"
        assert text(await session.call_tool("uname", {})) == "mcpwrap", "the jail's own hostname"
    start = records(tmp_path)[0]
    assert start["sandbox"].startswith("jail: ")
