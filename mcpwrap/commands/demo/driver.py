"""Drive the bundled server through `mcpwrap run` with the MCP SDK's own client.

Everything happens in a fresh temporary directory: the project the server works on, a
directory outside it that holds a canary "secret", the audit log and the rate state.
The story: the profile decides which tools and arguments pass, how often and how long;
admin and unnamed tools never pass; and the jail stops what an allowed tool's own code
does besides its job, which is no call and so no policy sees.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TextIO

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
    Step("a call still running at its 1 s deadline", "slow", {"seconds": 3}),
    Step("an admin tool (mcpwrap run never calls one, token or not)", "wipe_project", {}),
    Step("a tool the profile does not name", "upload_ssh_keys", {"host": "attacker.test"}),
    Step(
        "an allowed tool whose own code also reaches for your ~/.ssh and the network",
        "count_words",
        {"path": "README.txt"},
    ),
)

ALLOWED, REFUSED, STOPPED = "ALLOWED", "REFUSED", "STOPPED"


class Outcome(NamedTuple):
    mark: str  # ALLOWED, REFUSED, or STOPPED (allowed, then ended at its deadline)
    text: str
    side: list[dict[str, Any]]  # what the server's own code tried besides its job


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
    from mcp import StdioServerParameters

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
            "mcpwrap.commands.demo.server",
        ],
        env={"XDG_STATE_HOME": str(root / "state"), "PATH": os.environ.get("PATH", "")},
        cwd=str(project),
    )
    errors = root / "stderr.log"
    with open(errors, "w") as errlog:
        try:
            outcomes = await _session(params, errlog, out)
        except Exception as exc:  # the run stopped: say why, from mcpwrap's own words
            errlog.flush()
            out.write(f"\nmcpwrap run stopped ({exc!r}); its stderr:\n{errors.read_text()}")
            return 1
    _show_audit(out, project / "audit.jsonl")
    return _show_summary(out, outcomes)


async def _session(params: Any, errlog: TextIO, out: TextIO) -> list[Outcome]:
    from mcp import Client
    from mcp.client.stdio import stdio_client

    outcomes = []
    async with Client(stdio_client(params, errlog=errlog)) as client:
        tools = await client.list_tools()
        _show_tools(out, [t.name for t in tools.tools])
        for step in STEPS:
            outcome = await _call(client, step)
            _show_step(out, step, outcome)
            outcomes.append(outcome)
    return outcomes


async def _call(client: Any, step: Step) -> Outcome:
    from mcp.shared.exceptions import MCPError

    try:
        result = await client.call_tool(step.tool, step.args)
    except MCPError as exc:
        return Outcome(REFUSED, f"JSON-RPC error: {exc}", [])
    text = " ".join(getattr(block, "text", "") for block in result.content).strip()
    text = text.removeprefix("mcpwrap refused this call: ")
    if result.is_error and text.endswith(f"(rule: tools.{step.tool}.timeout)"):
        told = "the client got an error, the server a cancellation"
        return Outcome(STOPPED, f"allowed, then stopped: {text}; {told}", [])
    if result.is_error:
        return Outcome(REFUSED, text, [])
    data = result.structured_content or {}
    if "also_tried" in data:
        return Outcome(ALLOWED, f"{data.get('words')} words", list(data["also_tried"]))
    return Outcome(ALLOWED, text, [])


def _show_tools(out: TextIO, names: list[str]) -> None:
    out.write(
        "mcpwrap demo: a small MCP server, run by `mcpwrap run` under the profile demo.toml\n"
        "and driven by the MCP SDK's client. The profile decides which tools and arguments\n"
        "pass, and how often and how long; the jail decides what the server's own code can\n"
        "touch while it runs.\n\n"
    )
    out.write(f"tools/list as the client sees it ({len(names)} tools):\n  {', '.join(names)}\n\n")


def _show_step(out: TextIO, step: Step, outcome: Outcome) -> None:
    out.write(f"{outcome.mark:8} {step.what}\n")
    out.write(f"         {step.tool}({_args(step.args)})\n         -> {_short(outcome.text)}\n")
    for attempt in outcome.side:
        verdict = "stopped by the jail" if attempt.get("stopped") else "NOT STOPPED"
        out.write(f"         its code also tried to {attempt.get('what')}: {verdict} ")
        out.write(f"({attempt.get('error')})\n")


def _show_audit(out: TextIO, log: Path) -> None:
    from mcpwrap.audit.read import format_record, iter_records, verify

    out.write(
        f"\nThe audit log ({log.name}), one record per decision: ALLOW or REFUSE, the rule\n"
        "that decided, then how the call ended (ok; refused; timeout: stopped at its\n"
        "deadline):\n"
    )
    for _, record in iter_records(str(log)):
        out.write("  " + format_record(record) + "\n")
    report = verify(str(log))
    state = "intact" if report.ok else "BROKEN"
    out.write(f"\nmcpwrap audit verify: {report.records} records, hash chain {state}\n")


def _show_summary(out: TextIO, outcomes: list[Outcome]) -> int:
    marks = [o.mark for o in outcomes]
    stopped = marks.count(STOPPED)
    allowed = marks.count(ALLOWED) + stopped
    side = [a for o in outcomes for a in o.side]
    escaped = [a for a in side if not a.get("stopped")]
    out.write(
        f"\n{len(outcomes)} calls: {allowed} allowed by the profile ({stopped} of them stopped "
        f"at its deadline), {marks.count(REFUSED)} refused before the server saw them.\n"
    )
    if side and not escaped:
        out.write(
            "count_words was allowed, and its audit record says so. What its own code tried\n"
            "besides counting (your ~/.ssh, a connection out) is no call, so no policy sees\n"
            "it: the jail stopped it, because your home directory and the network are not\n"
            "in the server's world.\n"
        )
    for attempt in escaped:
        out.write(
            f"WARNING: the server's code could {attempt.get('what')}: the jail did not hold\n"
        )
    out.write("The profile: mcpwrap/commands/demo/demo.toml\n")
    return 1 if escaped else 0


def _args(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in args.items())


def _short(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
