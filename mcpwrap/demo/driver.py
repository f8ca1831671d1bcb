"""Drive the bundled server through `mcpwrap run` with the MCP SDK's own client.

Everything happens in a fresh temporary directory: the project the server works on, a
directory outside it that holds a canary "secret", the audit log and the rate state.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

_HERE = Path(__file__).parent


@dataclass(frozen=True)
class Step:
    what: str
    tool: str
    args: dict[str, Any]


STEPS = (
    Step("read a file in the project", "read_file", {"path": "README.txt"}),
    Step("read a file outside the project with ..", "read_file", {"path": "../outside/secret.txt"}),
    Step(
        "read through a symlink that leaves the project", "read_file", {"path": "escape/secret.txt"}
    ),
    Step("list the project", "list_dir", {"path": "."}),
    Step("write a note", "write_note", {"name": "todo", "content": "try mcpwrap"}),
    Step(
        "write a note with a path in its name",
        "write_note",
        {"name": "../../etc/cron.d/x", "content": "*"},
    ),
    Step("write a second note", "write_note", {"name": "two", "content": "2"}),
    Step("write a third note", "write_note", {"name": "three", "content": "3"}),
    Step(
        "write a fourth note within a minute (rate 3/min)",
        "write_note",
        {"name": "four", "content": "4"},
    ),
    Step("look up allowed docs", "lookup_docs", {"url": "https://docs.example.com/mcpwrap"}),
    Step(
        "look up a host not in the list",
        "lookup_docs",
        {"url": "https://docs.example.com.evil.test/x"},
    ),
    Step("a call that outlives its 1 s deadline", "slow", {"seconds": 3}),
    Step("an admin tool without a token", "wipe_project", {}),
    Step("a tool the profile does not name", "upload_ssh_keys", {"host": "attacker.test"}),
)


def run_demo(out: TextIO = sys.stdout) -> int:
    import anyio

    root = Path(tempfile.mkdtemp(prefix="mcpwrap-demo-"))
    try:
        project = _make_project(root)
        return anyio.run(_drive, project, root, out)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _make_project(root: Path) -> Path:
    project, outside = root / "project", root / "outside"
    project.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("a canary secret outside the project\n")
    (project / "README.txt").write_text("Hello from inside the project.\n")
    (project / "escape").symlink_to(outside)
    (project / "notes").mkdir()
    shutil.copy(_HERE / "demo.toml", project / "demo.toml")
    return project


async def _drive(project: Path, root: Path, out: TextIO) -> int:
    from mcp import Client, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "mcpwrap",
            "run",
            "--profile",
            str(project / "demo.toml"),
            "--",
            sys.executable,
            "-m",
            "mcpwrap.demo.server",
        ],
        env={"XDG_STATE_HOME": str(root / "state"), "PATH": os.environ.get("PATH", "")},
        cwd=str(project),
    )
    with open(root / "stderr.log", "w") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            tools = await client.list_tools()
            _show_tools(out, [t.name for t in tools.tools])
            allowed = refused = 0
            for step in STEPS:
                ok, text = await _call(client, step)
                allowed, refused = allowed + ok, refused + (not ok)
                _show_step(out, step, ok, text)
    _show_audit(out, project / "audit.jsonl")
    out.write(
        f"\n{allowed} calls allowed, {refused} refused. The profile: mcpwrap/demo/demo.toml\n"
    )
    return 0


async def _call(client: Any, step: Step) -> tuple[bool, str]:
    from mcp.shared.exceptions import MCPError

    try:
        result = await client.call_tool(step.tool, step.args)
    except MCPError as exc:
        return False, f"JSON-RPC error: {exc}"
    text = " ".join(getattr(block, "text", "") for block in result.content).strip()
    return not result.is_error, text.removeprefix("mcpwrap refused this call: ")


def _show_tools(out: TextIO, names: list[str]) -> None:
    out.write("mcpwrap demo: a bundled MCP server run through `mcpwrap run` under demo.toml.\n")
    out.write(f"tools/list as the client sees it ({len(names)} tools):\n  {', '.join(names)}\n\n")


def _show_step(out: TextIO, step: Step, ok: bool, text: str) -> None:
    mark = "ALLOWED" if ok else "REFUSED"
    out.write(f"{mark:8} {step.what}\n")
    out.write(f"         {step.tool}({_args(step.args)})\n         -> {_short(text)}\n")


def _show_audit(out: TextIO, log: Path) -> None:
    from mcpwrap.auditread import format_record, iter_records, verify

    out.write(f"\nThe audit log ({log.name}), one record per decision:\n")
    for _, record in iter_records(str(log)):
        out.write("  " + format_record(record) + "\n")
    report = verify(str(log))
    state = "intact" if report.ok else "BROKEN"
    out.write(f"\nmcpwrap audit verify: {report.records} records, hash chain {state}\n")


def _args(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in args.items())


def _short(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
