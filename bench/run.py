"""The benchmark: one workload, direct and through `mcpwrap run`, in one run.

    python bench/run.py [--calls 2000] [--starts 15] [--blobs 20]

A raw JSON-RPC client (no SDK: the client's own cost must not hide the relay's) drives
bench/echo_server.py three ways: directly; through bench/floor_relay.py (the least a
Python relay can do: parse each line, forward it); through mcpwrap with
bench/allow_all.toml (every tool allowed, audit on, no jail); and the same with the jail
(bench/jailed.toml); and the jail with a lock (`mcpwrap lock` first: every start then
verifies the venv and the script, every call passes the tool gate). It prints start to
first reply,
small-call round trip p50/p99, throughput of 4 MiB results and peak RSS (the server's,
then each relay's), with mcpwrap's figures against the direct path. Figures are noisy:
compare the columns of one run, not runs.
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


def mcpwrap_cmd(profile: str = "allow_all.toml") -> list[str]:
    script = Path(sys.executable).parent / "mcpwrap"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "mcpwrap"]
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
        self.buf = b""
        self.next_id = 1

    def send(self, msg: object) -> None:
        self.stdin.write(json.dumps(msg).encode() + b"\n")

    def recv(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = os.read(self.stdout.fileno(), 1 << 20)
            if not chunk:
                raise EOFError("the server closed its stdout")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line

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


def measure(argv: list[str], env: dict[str, str], args: argparse.Namespace) -> Figures:
    starts = []
    for _ in range(args.starts):
        t0 = time.perf_counter()
        peer = Peer(argv, env)
        peer.send(INIT)
        peer.recv()
        starts.append((time.perf_counter() - t0) * 1000)
        peer.close()
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
    )


def table(
    direct: Figures, floor: Figures, wrapped: Figures, jailed: Figures, locked: Figures
) -> str:
    rows: list[tuple[str, Callable[[Figures], float], str, str]] = [
        ("start to first reply", lambda f: f.start_ms, "ms", "added"),
        ("small call round trip p50", lambda f: f.p50_us, "us", "added"),
        ("small call round trip p99", lambda f: f.p99_us, "us", "added"),
        ("4 MiB results throughput", lambda f: f.mb_per_s, "MB/s", "ratio"),
        ("peak RSS of the process", lambda f: f.peak_rss_mb, "MB", "-"),
    ]
    names = (
        "direct",
        "floor relay",
        "mcpwrap",
        "mcpwrap+jail",
        "jail+lock",
        "mcpwrap vs direct",
        "jail vs mcpwrap",
        "lock vs jail",
    )
    lines = ["| measure | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, get, unit, kind in rows:
        d, f, w, j, k = get(direct), get(floor), get(wrapped), get(jailed), get(locked)
        cells = [f"{v:.1f} {unit}" for v in (d, f, w, j, k)]
        cells += [
            _delta(kind, w, d, unit, "of direct"),
            _delta(kind, j, w, unit, "of mcpwrap"),
            _delta(kind, k, j, unit, "of jail"),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--starts", type=int, default=15)
    parser.add_argument("--blobs", type=int, default=20)
    args = parser.parse_args()
    # An installed mcpwrap runs from bytecode pip compiled at install time; an editable
    # checkout (or PYTHONDONTWRITEBYTECODE=1) would recompile every module on each start.
    import compileall

    import mcpwrap

    compileall.compile_dir(os.path.dirname(mcpwrap.__file__), quiet=1)
    state = tempfile.mkdtemp(prefix="mcpwrap-bench-")
    env = {**os.environ, "XDG_STATE_HOME": state, "XDG_CONFIG_HOME": state}
    try:
        direct = measure(SERVER, env, args)
        floor = measure([sys.executable, str(HERE / "floor_relay.py"), *SERVER], env, args)
        wrapped = measure(mcpwrap_cmd(), env, args)
        jailed = measure(mcpwrap_cmd("jailed.toml"), env, args)
        locked = measure(mcpwrap_cmd(_locked_profile(state, env)), env, args)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    print(
        f"mcpwrap benchmark: {args.calls} small calls, {args.blobs} x 4 MiB results, "
        f"{args.starts} starts; python {sys.version.split()[0]}, {os.cpu_count()} cpus"
    )
    print(table(direct, floor, wrapped, jailed, locked))
    return 0


if __name__ == "__main__":
    sys.exit(main())
