"""The benchmark: one workload, direct, through peers and through `mcpwrap run`, in one run.

    python bench/run.py [--calls 2000] [--starts 15] [--blobs 20] [--baseline CHECKOUT]

The fixture, the same server on every path, is bench/echo_server.py: it answers from
bytes encoded once (the 4 MiB result is a template with only the id spliced in), so it
serves at the speed of the pipe and is not itself the bottleneck. A raw JSON-RPC client
(no SDK: the client's own cost must not hide the relay's) drives it seven ways: directly;
through two peers measured in the same run, bench/floor_relay.py (the least a Python
relay can do: parse each line, forward it) and sandbox-runtime (`srt` of npm
@anthropic-ai/sandbox-runtime, pinned in bench/peers.json and installed into .cache/bench
by scripts/test: bubblewrap, no network, the home directory hidden but for the Python
install, nothing writable); through mcpwrap with bench/allow_all.toml (every tool allowed,
audit on, no jail); the same with the jail (bench/jailed.toml); with the reduced jail,
the one without namespaces (bench/reduced.toml: jail = "reduced"); and the jail with a
lock (`mcpwrap lock` first: every start then verifies the venv and the script, every call
passes the tool gate). srt hands the server the driver's own pipes and relays nothing: its
per-call figures are the direct path's, moved only by where the kernel put the two ends
(one CPU or two: on a 2-vCPU VM, a p50 of ~30 against ~90 us).

Start to first reply: one unmeasured start per path warms the page cache, then the paths
take turns, start after start, so that load from elsewhere falls on all alike; the table
shows medians. Then each path in turn: small-call round trip p50/p99, throughput of
4 MiB results and peak RSS of the process the driver spawned (direct: the server; the
floor relay and mcpwrap: the relay; sandbox-runtime: srt's node process, not bubblewrap
nor the server under it). Every mcpwrap figure is read against a peer: mcpwrap against
the direct path and the floor relay, the jail against the unjailed relay and against
sandbox-runtime, the reduced jail against the unjailed relay, the lock against the jail.
A last line gives the reduced jail's added start over the unjailed relay (medians, and
the fastest starts of each) against its target. With --baseline, the mcpwrap of another
checkout (put on PYTHONPATH, run as `python -P -m mcpwrap`) takes its turns too, with and
without the jail, and two more columns set the current code against it (every mcpwrap
path then starts as `python -P -m mcpwrap`, so that both start alike): before and after a
change, in one run, e.g.

    git worktree add --detach /tmp/base main
    .venv/bin/python bench/run.py --baseline /tmp/base

Figures are noisy, and other work on the machine makes every path slower (the load
average is printed): compare the columns of one run, not runs.
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVER = [sys.executable, str(HERE / "echo_server.py")]
# sandbox-runtime, as scripts/test installs it (bench/peers.json).
SRT = HERE.parent / ".cache" / "bench" / "node_modules" / ".bin" / "srt"
SRT_NEEDS = ("bwrap", "socat", "rg")  # its Linux dependencies, on PATH
INIT = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "bench", "version": "1"},
    },
}


def mcpwrap_cmd(profile: str = "allow_all.toml", *, module: bool = False) -> list[str]:
    """`mcpwrap run` with a profile of bench/; module: as `python -P -m mcpwrap`, which a
    baseline checkout on PYTHONPATH needs (the venv's script imports this checkout; and
    without -P, `-m` would put the working directory first on sys.path, so that run from
    this checkout the "baseline" would be this checkout's code too)."""
    script = Path(sys.executable).parent / "mcpwrap"
    module_cmd = [sys.executable, "-P", "-m", "mcpwrap"]
    base = [str(script)] if script.exists() and not module else module_cmd
    return [*base, "run", "--profile", str(HERE / profile), "--", *SERVER]


class Peer:
    """One server process (direct or wrapped) and a blocking line reader on its stdout."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            bufsize=0,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        self.buf = b""  # what followed the last line read
        self.next_id = 1

    def send(self, msg: object) -> None:
        self.stdin.write(json.dumps(msg).encode() + b"\n")

    def recv(self) -> bytes:
        # Chunks are kept in a list and only each new one is searched: a 4 MiB line comes
        # in ~64 KiB pipe reads, and `buf += chunk` would copy it over and over, making
        # the driver the bottleneck of the throughput figure.
        chunks: list[bytes] = []
        tail = self.buf
        while b"\n" not in tail:
            chunks.append(tail)
            tail = os.read(self.stdout.fileno(), 1 << 20)
            if not tail:
                raise EOFError("the server closed its stdout")
        line, _, self.buf = tail.partition(b"\n")
        chunks.append(line)
        return b"".join(chunks)

    def call(self, name: str, arguments: dict[str, object]) -> bytes:
        self.next_id += 1
        self.send(
            {
                "jsonrpc": "2.0",
                "id": self.next_id,
                "method": "tools/call",
                "params": {"name": name, "arguments": arguments},
            }
        )
        return self.recv()

    def peak_rss_kb(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    def close(self) -> None:
        self.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Figures:
    start_ms: float
    p50_us: float
    p99_us: float
    mb_per_s: float
    peak_rss_mb: float
    fastest_start_ms: float


def start_ms(argv: list[str], env: dict[str, str]) -> float:
    """One start, from spawn to the initialize reply."""
    t0 = time.perf_counter()
    peer = Peer(argv, env)
    peer.send(INIT)
    peer.recv()
    elapsed = (time.perf_counter() - t0) * 1000
    peer.close()
    return elapsed


Path_ = tuple[list[str], dict[str, str]]  # a path's command and environment


def starts_in_turn(paths: dict[str, Path_], rounds: int) -> dict[str, list[float]]:
    """One warm-up start per path, then `rounds` rounds of one start per path."""
    for argv, env in paths.values():
        start_ms(argv, env)
    times: dict[str, list[float]] = {label: [] for label in paths}
    for _ in range(rounds):
        for label, (argv, env) in paths.items():
            times[label].append(start_ms(argv, env))
    return times


def measure(
    argv: list[str], env: dict[str, str], args: argparse.Namespace, starts: list[float]
) -> Figures:
    peer = Peer(argv, env)
    peer.send(INIT)
    peer.recv()
    peer.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    for _ in range(200):  # warm up
        peer.call("echo", {"text": "warm"})
    rtts = []
    for i in range(args.calls):
        t0 = time.perf_counter()
        peer.call("echo", {"text": f"call {i}"})
        rtts.append((time.perf_counter() - t0) * 1e6)
    t0 = time.perf_counter()
    total = sum(len(peer.call("blob", {})) for _ in range(args.blobs))
    seconds = time.perf_counter() - t0
    rss = peer.peak_rss_kb() / 1024
    peer.close()
    rtts.sort()
    return Figures(
        statistics.median(starts),
        rtts[len(rtts) // 2],
        rtts[int(len(rtts) * 0.99)],
        total / seconds / 1e6,
        rss,
        min(starts),
    )


# (column, path, base path, "of ..." in ratios): each added cost against its own base.
COMPARED = (
    ("mcpwrap vs direct", "mcpwrap", "direct", "of direct"),
    ("mcpwrap vs floor relay", "mcpwrap", "floor relay", "of floor relay"),
    ("jail vs mcpwrap", "mcpwrap+jail", "mcpwrap", "of mcpwrap"),
    ("jail vs sandbox-runtime", "mcpwrap+jail", "sandbox-runtime", "of sandbox-runtime"),
    ("reduced vs mcpwrap", "reduced jail", "mcpwrap", "of mcpwrap"),
    ("lock vs jail", "jail+lock", "mcpwrap+jail", "of jail"),
)
BASELINE = (
    ("mcpwrap vs baseline", "mcpwrap", "baseline", "of baseline"),
    ("jail vs baseline+jail", "mcpwrap+jail", "baseline+jail", "of baseline+jail"),
)
REDUCED_TARGET_MS = 30.0  # the reduced jail's added start over the unjailed relay


def table(figures: dict[str, Figures]) -> str:
    """One column per path (in `figures`' order), then the COMPARED columns."""
    rows: list[tuple[str, Callable[[Figures], float], str, str]] = [
        ("start to first reply", lambda f: f.start_ms, "ms", "added"),
        ("small call round trip p50", lambda f: f.p50_us, "us", "added"),
        ("small call round trip p99", lambda f: f.p99_us, "us", "added"),
        ("4 MiB results throughput", lambda f: f.mb_per_s, "MB/s", "ratio"),
        ("peak RSS of the spawned process", lambda f: f.peak_rss_mb, "MB", "-"),
    ]
    compared = COMPARED + (BASELINE if "baseline" in figures else ())
    names = (*figures, *(c[0] for c in compared))
    lines = ["| measure | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, get, unit, kind in rows:
        cells = [f"{get(f):.1f} {unit}" for f in figures.values()]
        cells += [
            _delta(kind, get(figures[path]), get(figures[base]), unit, of)
            for _, path, base, of in compared
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reduced_line(figures: dict[str, Figures]) -> str:
    """The reduced jail's added start over the unjailed relay, against its target."""
    reduced, relay = figures["reduced jail"], figures["mcpwrap"]
    added = reduced.start_ms - relay.start_ms
    fastest = reduced.fastest_start_ms - relay.fastest_start_ms
    verdict = "met" if added <= REDUCED_TARGET_MS else "not met"
    return (
        f"reduced jail's added start over mcpwrap: {added:+.1f} ms (medians; fastest starts "
        f"{fastest:+.1f} ms); target <= {REDUCED_TARGET_MS:.0f} ms: {verdict}"
    )


RSS_NOTE = (
    "peak RSS is the process the driver spawned: direct the server, floor relay and "
    "mcpwrap the relay, sandbox-runtime srt's node (not bubblewrap nor the server under it)"
)


def _delta(kind: str, value: float, base: float, unit: str, of: str) -> str:
    if kind == "added":
        return f"{value - base:+.1f} {unit} ({value / base:.2f}x)"
    if kind == "ratio":
        return f"{value / base * 100:.0f} % {of}"
    return "-"


def _locked_profile(state: str, env: dict[str, str]) -> str:
    """jailed.toml in the state dir (its lock goes beside it), locked once."""
    text = (HERE / "jailed.toml").read_text()
    text = text.replace('read = ["{project}"]', f"read = [{json.dumps(str(HERE.parent))}]")
    profile = os.path.join(state, "locked.toml")
    Path(profile).write_text(text.replace('"bench-jailed"', '"bench-locked"'))
    lock = [*mcpwrap_cmd(profile)]
    lock[lock.index("run")] = "lock"
    subprocess.run(lock, env=env, check=True, capture_output=True, timeout=300)
    return profile


def srt_path(state: str) -> list[str]:
    """`srt` with a settings file in `state`: no network (no domain allowed), nothing
    writable, the home directory hidden but for the Python install the server runs on,
    the repository readable (its script, the venv). Fails, saying what to do, where srt or
    one of its dependencies is missing."""
    if not SRT.exists():
        raise SystemExit(
            f"bench/run.py: {SRT} is missing: run scripts/test once (it npm-installs the "
            "peers pinned in bench/peers.json into .cache/bench)"
        )
    missing = [tool for tool in SRT_NEEDS if shutil.which(tool) is None]
    if missing:
        raise SystemExit(
            f"bench/run.py: sandbox-runtime needs {', '.join(missing)} on PATH: on Debian, "
            "apt-get install bubblewrap socat ripgrep (scripts/test does it as root)"
        )
    settings = {
        "network": {"allowedDomains": [], "deniedDomains": []},
        "filesystem": {
            "denyRead": ["~"],
            "allowRead": [str(HERE.parent), sys.base_prefix, sys.prefix],
            "allowWrite": [],
            "denyWrite": [],
        },
    }
    path = os.path.join(state, "srt-settings.json")
    Path(path).write_text(json.dumps(settings))
    return [str(SRT), "--settings", path, "--", *SERVER]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--starts", type=int, default=15)
    parser.add_argument("--blobs", type=int, default=20)
    parser.add_argument(
        "--baseline",
        metavar="CHECKOUT",
        help="also time the mcpwrap of another checkout (its directory goes on PYTHONPATH), "
        "with and without the jail, e.g. a worktree of main: before and after a change",
    )
    args = parser.parse_args()
    # An installed mcpwrap runs from bytecode pip compiled at install time; an editable
    # checkout (or PYTHONDONTWRITEBYTECODE=1) would recompile every module on each start.
    import compileall

    import mcpwrap

    compileall.compile_dir(os.path.dirname(mcpwrap.__file__), quiet=1)
    if args.baseline:
        compileall.compile_dir(os.path.join(args.baseline, "mcpwrap"), quiet=1)
    state = tempfile.mkdtemp(prefix="mcpwrap-bench-")
    env = {**os.environ, "XDG_STATE_HOME": state, "XDG_CONFIG_HOME": state}
    load = os.getloadavg()[0]
    same = bool(args.baseline)  # both as `python -P -m mcpwrap`: the same start-up path
    try:
        paths: dict[str, Path_] = {
            "direct": (SERVER, env),
            "floor relay": ([sys.executable, str(HERE / "floor_relay.py"), *SERVER], env),
            "sandbox-runtime": (srt_path(state), env),
            "mcpwrap": (mcpwrap_cmd(module=same), env),
            "mcpwrap+jail": (mcpwrap_cmd("jailed.toml", module=same), env),
            "reduced jail": (mcpwrap_cmd("reduced.toml", module=same), env),
            "jail+lock": (mcpwrap_cmd(_locked_profile(state, env), module=same), env),
        }
        if args.baseline:
            base_env = {**env, "PYTHONPATH": os.path.abspath(args.baseline)}
            paths["baseline"] = (mcpwrap_cmd(module=True), base_env)
            paths["baseline+jail"] = (mcpwrap_cmd("jailed.toml", module=True), base_env)
        starts = starts_in_turn(paths, args.starts)
        figures = {
            label: measure(argv, path_env, args, starts[label])
            for label, (argv, path_env) in paths.items()
        }
    finally:
        shutil.rmtree(state, ignore_errors=True)
    print(
        f"mcpwrap benchmark: {args.calls} small calls, {args.blobs} x 4 MiB results, "
        f"{args.starts} starts per path in turn (medians); python {sys.version.split()[0]}, "
        f"{os.cpu_count()} cpus, load average {load:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    print(table(figures))
    print(RSS_NOTE)
    print(reduced_line(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
