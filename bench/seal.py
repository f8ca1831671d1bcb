"""The seal broker's cost: creating files in a sealed project, raw and through a server.

    python bench/seal.py [--files 2000] [--calls 200] [--depth 100] [--rounds 3] [--dir D]

Two projects under a fresh directory in --dir (default /var/tmp; not under /tmp, where the
jail's private /tmp cannot hold a seal; a tmpfs mounted elsewhere shows the broker's own
cost, which a disk's own creation time may hide): a git repository, whose root is sealed
(.git exists, .mcp.json, .vscode/ and the rest do not), and the same with every protected
path created first, where nothing is sealed (no notifying filter, no broker: the
baseline). Two levels, rounds interleaved:

  syscalls  a Python process in the jail, wired as `mcpwrap run` wires it (spec.build,
            start_jailed, the broker in this process), creates --files files (open
            O_CREAT|O_EXCL, close), timed inside the jail, at four places:
              root          the sealed root: the broker makes each file (PERFORM)
              subdirectory  an existing one of the sealed project: each call stopped, then
                            let through (PROCEED)
              new tree      a directory made during the run at the sealed root, 5 deep:
                            the broker makes each file, after walking up to the seal
              /tmp          the jail's private /tmp: stopped, let through
  tools     the real server-filesystem (tests/node) through `mcpwrap run` with the
            curated profile (profiles/server-filesystem.toml, less its rate limits, which
            a benchmark would exceed): --calls write_file calls each making a new file at the
            root, --calls write_file calls each replacing a root file (the server's temp
            file and rename), one create_directory of a --depth deep path at the root
            (mkdir -p: a creation per level). Milliseconds per call, as the client sees.

Medians of --rounds. Figures are noisy: compare the columns of one run, not runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FS_SCRIPT = REPO / "tests/node/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js"
PROTECTED = (".mcpwrap", ".vscode", ".cursor", ".claude", ".git/hooks")
PROTECTED_FILES = (".mcp.json", ".envrc", ".git/config")
PLACES = ("root", "subdirectory", "new tree", "/tmp")
CREATE = """
import json, os, sys, time
where, count = sys.argv[1], int(sys.argv[2])
os.makedirs(where, exist_ok=True)  # the new tree: made here, inside the jail
start = time.perf_counter()
for i in range(count):
    os.close(os.open(f"{where}/f{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
elapsed = time.perf_counter() - start
for i in range(count):
    os.unlink(f"{where}/f{i}")
print(json.dumps(elapsed))
"""


def make_project(base: Path, name: str, sealed: bool) -> Path:
    project = base / name
    (project / "src").mkdir(parents=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(base), "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "init", "-q", str(project)], check=True, env=env)
    (project / "README.md").write_text("# bench\n")
    if not sealed:
        for sub in PROTECTED:
            (project / sub).mkdir(parents=True, exist_ok=True)
        for file in PROTECTED_FILES:
            (project / file).touch()
    (project / "p.toml").write_text(
        'version = 1\n[sandbox]\nread = ["{project}"]\nwrite = ["{project}"]\n'
        f'[audit]\npath = "{base}/audit-{name}.jsonl"\n'
    )
    if not sealed:
        (project / "p.lock").touch()
    return project


def create_in_jail(project: Path, where: str, count: int) -> tuple[float, dict[str, int]]:
    """Seconds for `count` creations at `where`, and the broker's answers by action."""
    from mcpwrap.config.profile import load_profile
    from mcpwrap.sandbox import launch
    from mcpwrap.sandbox import spec as jail_spec

    state = str(project.parent / "state")
    profile = load_profile(str(project / "p.toml"), state_dir=state)
    argv = [sys.executable, "-c", CREATE, where, str(count)]
    env = {"PATH": os.environ["PATH"]}
    spec = jail_spec.build(profile, argv, env, str(project), state_dir=state)
    child = launch.start_jailed(spec)
    child.wait_ready()
    out, err = child.process.communicate(timeout=600)
    if child.process.returncode:
        raise RuntimeError(f"the creating process failed: {err.decode()}")
    counts = dict(child.broker.counts) if child.broker is not None else {}
    return float(json.loads(out)), counts


def place(project: Path, name: str) -> str:
    return {
        "root": str(project),
        "subdirectory": str(project / "src"),
        "new tree": str(project / "new/a/b/c/d"),
        "/tmp": "/tmp/bench",  # the jail's private /tmp
    }[name]


def unlimited_profile(base: Path) -> Path:
    """The curated profile without its `rate` lines."""
    lines = (REPO / "profiles" / "server-filesystem.toml").read_text().splitlines()
    path = base / "server-filesystem.toml"
    path.write_text("".join(f"{line}\n" for line in lines if not line.startswith("rate =")))
    return path


class Server:
    """server-filesystem through `mcpwrap run`, driven over raw JSON-RPC lines."""

    def __init__(self, project: Path, env: dict[str, str]) -> None:
        profile = str(unlimited_profile(project.parent))
        # The profile file sits outside the project: name the project, as a user would.
        argv = [sys.executable, "-m", "mcpwrap", "run", "--profile", profile]
        argv += ["--project", str(project)]
        argv += ["--", shutil.which("node") or "node", str(FS_SCRIPT), "."]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=project,
            env=env,
        )
        self.next_id = 0
        self.call("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                 "clientInfo": {"name": "bench", "version": "1"}})  # fmt: skip
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
        self.proc.stdin.flush()

    def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        assert self.proc.stdout is not None
        while True:
            reply: dict[str, Any] = json.loads(self.proc.stdout.readline())
            if reply.get("id") == self.next_id:
                if "error" in reply or reply.get("result", {}).get("isError"):
                    raise RuntimeError(f"{method} {params}: {reply}")
                return reply

    def tool(self, name: str, arguments: dict[str, Any]) -> None:
        self.call("tools/call", {"name": name, "arguments": arguments})

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


def tools_round(project: Path, env: dict[str, str], calls: int, depth: int) -> dict[str, float]:
    """Milliseconds per call of each tool workload, in one server session."""
    server = Server(project, env)
    figures: dict[str, float] = {}
    try:
        start = time.perf_counter()
        for i in range(calls):
            server.tool("write_file", {"path": f"new{i}.md", "content": "x\n"})
        figures["write_file, a new root file"] = (time.perf_counter() - start) / calls * 1000
        start = time.perf_counter()
        for i in range(calls):
            server.tool("write_file", {"path": "README.md", "content": f"v{i}\n"})
        figures["write_file, replacing a root file"] = (time.perf_counter() - start) / calls * 1000
        deep = "/".join(f"d{i}" for i in range(depth))
        start = time.perf_counter()
        server.tool("create_directory", {"path": deep})
        figures[f"create_directory, {depth} deep"] = (time.perf_counter() - start) * 1000
    finally:
        server.close()
    for i in range(calls):
        (project / f"new{i}.md").unlink()
    shutil.rmtree(project / "d0")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default="/var/tmp")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    base = Path(tempfile.mkdtemp(prefix="mcpwrap-bench-seal-", dir=args.dir))
    try:
        return run(base, args)
    finally:
        shutil.rmtree(base)


def run(base: Path, args: argparse.Namespace) -> int:
    projects = {True: make_project(base, "sealed", True), False: make_project(base, "open", False)}
    env = {**os.environ}
    for var in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
        env[var] = str(base / "xdg" / var.lower())
    raw: dict[tuple[str, bool], list[float]] = {}
    answers: dict[str, dict[str, int]] = {}
    tools: dict[tuple[str, bool], list[float]] = {}
    for _ in range(args.rounds):
        for sealed, project in projects.items():
            for name in PLACES:
                seconds, counts = create_in_jail(project, place(project, name), args.files)
                raw.setdefault((name, sealed), []).append(seconds / args.files * 1e6)
                answers[name] = counts if sealed else answers.get(name, {})
                if name == "new tree":
                    shutil.rmtree(project / "new")
            for label, ms in tools_round(project, env, args.calls, args.depth).items():
                tools.setdefault((label, sealed), []).append(ms)
    report(args, raw, answers, tools)
    return 0


def report(
    args: argparse.Namespace,
    raw: dict[tuple[str, bool], list[float]],
    answers: dict[str, dict[str, int]],
    tools: dict[tuple[str, bool], list[float]],
) -> None:
    med = statistics.median
    print(f"syscalls: {args.files} creations (open O_CREAT|O_EXCL + close) under {args.dir}, "
          f"us each, median of {args.rounds}")  # fmt: skip
    print("| where | not sealed | sealed | added | broker's answers (last round) |")
    print("|---|---|---|---|---|")
    for name in PLACES:
        base, seal = med(raw[(name, False)]), med(raw[(name, True)])
        shown = ", ".join(f"{k} {v}" for k, v in sorted(answers[name].items()))
        print(f"| {name} | {base:.1f} | {seal:.1f} | {seal - base:+.1f} | {shown} |")
    print(f"\ntools: server-filesystem through mcpwrap run, ms per call, median of {args.rounds}")
    print("| call | not sealed | sealed | added |")
    print("|---|---|---|---|")
    for label in dict.fromkeys(label for label, _ in tools):
        base, seal = med(tools[(label, False)]), med(tools[(label, True)])
        print(f"| {label} | {base:.2f} | {seal:.2f} | {seal - base:+.2f} |")


if __name__ == "__main__":
    sys.exit(main())
