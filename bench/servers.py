"""Start to first reply of real MCP servers, locked and jailed, against the same server run
directly.

    .venv/bin/python bench/servers.py [--starts 9] [--baseline CHECKOUT]

Run it with the project's venv (its mcpwrap, uv and uvx are used) after scripts/test has
run once. Two real servers, each locked first with `mcpwrap lock`, offline as
tests/test_fetch.py does (uv and npm install from the project caches .cache/uv and
.cache/npm that scripts/test fills with the versions in tests/fetch_peers.json):

    mcp-server-time     uvx mcp-server-time==VERSION --local-timezone UTC
    server-filesystem   npx -y @modelcontextprotocol/server-filesystem@VERSION DIR

Two paths each: "direct" runs the entry point the lock installed in mcpwrap's store (the
same files, no mcpwrap; Python keeps its byte code in a cache of the benchmark's, warm
after the first start, as it would be in a __pycache__); "jail+lock" runs the original
command under `mcpwrap run` with a jailed profile (network = "none"), which verifies the
lock's artifacts and starts the installed version in the jail. One unmeasured start per
path warms the page cache and the caches; then the paths take turns, start after start, so
that load from elsewhere falls on both alike. Each start is timed from spawn to the
initialize reply and to the tools/list reply (sent right after it). The table shows
medians, their ratio and difference, and the difference of each path's fastest start.
With --baseline, a third path does the same with the mcpwrap of another checkout (put on
PYTHONPATH; the venv is this one), locked in a state of its own: before and after a
change in one run, e.g.

    git worktree add --detach /tmp/base main
    .venv/bin/python bench/servers.py --baseline /tmp/base

Figures are noisy, and other work on the machine makes every path slower and the added
time larger (the load average is printed; the fastest starts are the least disturbed):
compare the columns of one run, on an idle machine.
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from run import INIT  # bench/run.py's initialize: one client for every benchmark

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEERS = json.loads((REPO / "tests" / "fetch_peers.json").read_text())
TIME, TIME_VERSION = next(iter(PEERS["pypi"].items()))
FILESYSTEM, FILESYSTEM_VERSION = next(iter(PEERS["npm"].items()))
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
PROFILE = """\
version = 1
name = "{name}"

[sandbox]
network = "none"
read = {read}

[policy]
default = "allow"

[audit]
path = "{{state}}/bench-audit.jsonl"
arguments = "digest"
"""


class Server(NamedTuple):
    name: str
    command: list[str]  # as the user writes it; `mcpwrap lock` installs it
    read: list[str]  # the jail's read grants


class Start(NamedTuple):
    initialize_ms: float
    tools_ms: float


def offline_env(state: str) -> dict[str, str]:
    """The tests' environment for `mcpwrap lock` (tests/offline.py): npm and uv install
    from the project's caches, with no network; mcpwrap's state, config and store in
    `state`."""
    for cache in ("npm", "uv"):
        if not (REPO / ".cache" / cache).is_dir():
            sys.exit(f"{REPO / '.cache' / cache} is missing: run scripts/test once to fill it")
    node = shutil.which("node")
    if node is None:
        sys.exit("node is not on PATH: server-filesystem needs Node.js >= 20")
    bins = [str(Path(sys.executable).parent), os.path.dirname(node), "/usr/bin", "/bin"]
    # A user's Python writes byte code: the direct path must keep its cache between starts.
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {
        **environ,
        "PATH": os.pathsep.join(dict.fromkeys(bins)),
        "XDG_STATE_HOME": state,
        "XDG_CONFIG_HOME": state,
        "XDG_CACHE_HOME": state,
        "UV_CACHE_DIR": str(REPO / ".cache" / "uv"),
        "UV_OFFLINE": "1",
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_PYTHON": sys.executable,
        "UV_NO_PROGRESS": "1",
        "npm_config_cache": str(REPO / ".cache" / "npm"),
        "npm_config_offline": "true",
        "npm_config_update_notifier": "false",
    }


def mcpwrap() -> list[str]:
    script = Path(sys.executable).parent / "mcpwrap"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mcpwrap"]


def lock(server: Server, state: str, env: dict[str, str]) -> tuple[str, list[str]]:
    """Write the server's profile, lock it; (the profile, the command the lock runs: the
    entry point in the store, as this machine's record of the lock says)."""
    profile = os.path.join(state, f"{server.name}.toml")
    Path(profile).write_text(PROFILE.format(name=server.name, read=json.dumps(server.read)))
    argv = [*mcpwrap(), "lock", "--profile", profile, "--yes", "--", *server.command]
    done = subprocess.run(
        argv, env=env, cwd=state, capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode != 0:
        sys.exit(f"mcpwrap lock for {server.name} failed:\n{done.stderr}{done.stdout}")
    from mcpwrap.supply import store

    root = os.path.join(env["XDG_CACHE_HOME"], "mcpwrap", "store")
    record = store.load_synced(root, os.path.splitext(profile)[0] + ".lock")
    if record is None:  # a --baseline from before records: only its run is timed
        return profile, []
    return profile, [*record.prefix, *server.command[record.skip :]]


def start(argv: list[str], env: dict[str, str], cwd: str) -> Start:
    """Spawn, initialize, list the tools; the times from spawn to each reply."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
        bufsize=0,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        lines = _lines(proc.stdout.fileno())
        proc.stdin.write(json.dumps(INIT).encode() + b"\n")
        _reply(lines, 0)
        t1 = time.perf_counter()
        proc.stdin.write(json.dumps(INITIALIZED).encode() + b"\n")
        proc.stdin.write(json.dumps(LIST).encode() + b"\n")
        _reply(lines, 1)
        t2 = time.perf_counter()
    finally:
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return Start((t1 - t0) * 1000, (t2 - t0) * 1000)


def _lines(fd: int) -> Iterator[bytes]:
    buf = b""
    while True:
        while b"\n" not in buf:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise EOFError("the server closed its stdout before it answered")
            buf += chunk
        line, _, buf = buf.partition(b"\n")
        yield line


def _reply(lines: Iterator[bytes], msg_id: int) -> None:
    for line in lines:
        msg = json.loads(line)
        if msg.get("id") == msg_id and "method" not in msg:
            if "error" in msg:
                raise RuntimeError(f"the server answered request {msg_id} with {msg['error']}")
            return


class Row(NamedTuple):
    server: str
    direct: list[Start]
    wrapped: dict[str, list[Start]]  # "jail+lock", and "baseline" with --baseline


def measure(server: Server, envs: dict[str, dict[str, str]], starts: int) -> Row:
    """Lock the server with each mcpwrap (its own state each), then time the paths in turn."""
    paths: dict[str, tuple[list[str], dict[str, str]]] = {}
    runs: dict[str, list[str]] = {}
    for label, env in envs.items():
        profile, runs[label] = lock(server, env["XDG_STATE_HOME"], env)
        paths[label] = ([*mcpwrap(), "run", "--profile", profile, "--", *server.command], env)
    cwd = envs["jail+lock"]["XDG_STATE_HOME"]
    if not runs["jail+lock"]:
        sys.exit(f"mcpwrap lock for {server.name} left no record of what it runs in the store")
    # The direct path runs what the current mcpwrap installed.
    direct_env = {**envs["jail+lock"], "PYTHONPYCACHEPREFIX": f"{cwd}/direct-pycache"}
    paths["direct"] = (runs["jail+lock"], direct_env)
    # The stat caches keep no hash of a file changed in the last 2 s (see StatCache): let
    # the files just installed settle, so that the first starts after the warm-up are warm.
    time.sleep(2.5)
    for argv, env in paths.values():  # warm-up: page cache, byte code, stat caches
        start(argv, env, cwd)
    times: dict[str, list[Start]] = {label: [] for label in paths}
    for _ in range(starts):
        for label, (argv, env) in paths.items():
            times[label].append(start(argv, env, cwd))
    direct = times.pop("direct")
    return Row(server.name, direct, times)


def table(rows: list[Row]) -> str:
    baseline = any("baseline" in row.wrapped for row in rows)
    head = "| server | reply | direct | jail+lock | ratio | added | added, fastest starts |"
    head += " baseline | baseline added |" if baseline else ""
    lines = [head, "|---" * head.count(" | ") + "|---|"]
    for row in rows:
        for label, field in (("initialize", 0), ("tools/list", 1)):
            d = statistics.median(s[field] for s in row.direct)
            k = statistics.median(s[field] for s in row.wrapped["jail+lock"])
            fastest = min(s[field] for s in row.wrapped["jail+lock"])
            best = fastest - min(s[field] for s in row.direct)
            line = (
                f"| {row.server} | {label} | {d:.0f} ms | {k:.0f} ms | {k / d:.2f}x "
                f"| {k - d:+.0f} ms | {best:+.0f} ms |"
            )
            if baseline:
                b = statistics.median(s[field] for s in row.wrapped["baseline"])
                line += f" {b:.0f} ms | {b - d:+.0f} ms |"
            lines.append(line)
    return "\n".join(lines)


@contextmanager
def scratch() -> Iterator[str]:
    # A short path: uv writes a console script's #! line with the venv's python only then.
    state = tempfile.mkdtemp(prefix="mcpwrap-bench-")
    try:
        yield state
    finally:
        shutil.rmtree(state, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--starts", type=int, default=9, help="measured starts per path")
    parser.add_argument(
        "--baseline",
        metavar="CHECKOUT",
        help="also lock and time the servers with the mcpwrap of another checkout (its "
        "directory goes on PYTHONPATH), e.g. a worktree of main: before and after a change",
    )
    args = parser.parse_args()
    # An installed mcpwrap runs from byte code pip compiled; so must an editable checkout.
    import compileall

    import mcpwrap

    compileall.compile_dir(os.path.dirname(mcpwrap.__file__), quiet=1)
    if args.baseline:
        compileall.compile_dir(os.path.join(args.baseline, "mcpwrap"), quiet=1)
    load = os.getloadavg()[0]
    with scratch() as state:
        envs = {"jail+lock": offline_env(_made(state, "current"))}
        if args.baseline:
            base = offline_env(_made(state, "baseline"))
            envs["baseline"] = {**base, "PYTHONPATH": os.path.abspath(args.baseline)}
        shared = os.path.join(state, "shared")
        os.mkdir(shared)
        Path(shared, "hello.txt").write_text("hello\n")
        servers = [
            Server(
                "mcp-server-time",
                ["uvx", f"{TIME}=={TIME_VERSION}", "--local-timezone", "UTC"],
                [],
            ),
            Server(
                "server-filesystem",
                ["npx", "-y", f"{FILESYSTEM}@{FILESYSTEM_VERSION}", shared],
                [shared],
            ),
        ]
        rows = [measure(s, envs, args.starts) for s in servers]
    print(
        f"mcpwrap real-server start benchmark: {args.starts} starts per path (medians); "
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load average "
        f"{load:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    print(table(rows))
    return 0


def _made(parent: str, name: str) -> str:
    path = os.path.join(parent, name)
    os.mkdir(path)
    return path


if __name__ == "__main__":
    sys.exit(main())
