"""The egress benchmark: mcpwrap's proxy against the direct path on loopback, in one run.

    python bench/egress.py [--mb 200] [--connects 200] [--rounds 3]

With `[sandbox] network = "allowlist"` a jailed server's only way out is mcpwrap's egress
proxy (mcpwrap/sandbox/egress.py). This starts upstreams on the host's loopback (an HTTP server
answering --mb MiB from one 1 MiB buffer, and a TCP echo server: bench/egress_peers.py
serve, a process of its own) and one jailed client, wired the way `mcpwrap run` wires
them (profile, jail spec, start_jailed, the listeners the jail hands over, Egress), with
each connection's audit record written by an AuditWriter to a file as `mcpwrap run`
does (the relay's common fields included), so the figures include the audit cost. The
same client (bench/egress_peers.py client) runs on the host for the direct path; the
jail starts once, before anything is timed. Three paths:

  direct       the client on the host, straight to the upstream
  HTTP proxy   the client in the jail, through the jail's http_proxy: an absolute-URI GET
               for the download, CONNECT for the connect test
  tcp forward  the client in the jail, to 127.0.0.1:PORT, which is a `tcp:` forward: the
               pure relay path

Figures: download throughput of one --mb MiB body with curl (curl's size_download /
time_total, MB = 10^6 bytes), the median of --rounds in the table and every round below
it: on a loaded machine single rounds swing both ways, proxied ones too, with where the
scheduler puts curl, the proxy and the server. Connect latency: connect, CONNECT through
the HTTP proxy, send one byte, receive its echo, close; --connects sequential
connections a round, all rounds pooled, p50 and p95. Rounds interleave the paths. The
issue's target, reported and never asserted: the HTTP proxy at >= 50 % of direct
throughput, and <= 2 ms added connect latency.
Figures are noisy: compare the columns of one run, not runs.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PEERS = str(HERE / "egress_peers.py")
PATHS = ("direct", "proxy", "forward")
NAMES = {"direct": "direct", "proxy": "HTTP proxy", "forward": "tcp forward"}


class Client:
    """One bench/egress_peers.py client: a command a line in, an answer a line out."""

    def __init__(self, proc: subprocess.Popen[bytes], where: str) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc, self.where = proc, where
        self.stdin, self.stdout = proc.stdin, proc.stdout
        self.buf = b""

    def ask(self, **cmd: object) -> dict[str, Any]:
        self.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.stdin.flush()
        while b"\n" not in self.buf:
            chunk = os.read(self.stdout.fileno(), 1 << 16)
            if not chunk:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"the {self.where} client ended: {err}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.where} client, {cmd}: {answer['error']}")
        return answer

    def close(self) -> None:
        self.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Figures:
    mb_per_s: list[float] = field(default_factory=list)
    connect_us: list[float] = field(default_factory=list)

    @property
    def median_mb_per_s(self) -> float:
        return statistics.median(self.mb_per_s)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.connect_us)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] / 1000


class Jail:
    """The client in the jail under network = "allowlist", and mcpwrap's proxy serving it,
    wired as `mcpwrap run` does (and as tests/test_egress.py's jailed() does)."""

    def __init__(self, tmp: str, ports: tuple[int, int]) -> None:
        from mcpwrap.audit.writer import AuditWriter
        from mcpwrap.config.profile import load_profile
        from mcpwrap.policy import network as netpolicy
        from mcpwrap.sandbox import egress, launch
        from mcpwrap.sandbox import spec as jail_spec

        listed = ", ".join(
            json.dumps(f"{kind}127.0.0.1:{port}") for port in ports for kind in ("", "tcp:")
        )
        profile_path = Path(tmp) / "egress.toml"
        profile_path.write_text(
            f'version = 1\nname = "bench-egress"\n[sandbox]\nnetwork = "allowlist"\n'
            f"egress = [{listed}]\nread = [{json.dumps(str(HERE))}]\n"
            f'[audit]\npath = "{tmp}/audit.jsonl"\n'
        )
        state = str(Path(tmp) / "state")
        profile = load_profile(str(profile_path), state_dir=state)
        self.audit = AuditWriter(profile.audit.path, session=os.urandom(16).hex())
        common = {"server": profile.name, "agent": {"name": "bench", "version": "1"}}

        def record(event: str, **fields: object) -> None:  # Relay.record_event's cost
            self.audit.write({"event": event, **common, "token": None, **fields})

        argv = [sys.executable, "-u", PEERS, "client"]
        env = {"PATH": os.environ["PATH"]}
        spec = jail_spec.build(profile, argv, env, tmp, state_dir=state)
        child = launch.start_jailed(spec)
        child.wait_ready()
        box = profile.sandbox
        self.proxy = egress.Egress(
            netpolicy.entries(profile),
            [egress.Listener(k, s, t) for k, s, t in child.egress_listeners()],
            record=record,
            in_flight=list,
            limits=egress.Limits(box.egress_connections, box.egress_idle, box.egress_bytes),
            broken=lambda: None,
        )
        self.proxy.start()
        self.client = Client(child.process, "jailed")

    def records(self) -> int:
        with open(self.audit.path, "rb") as f:
            return sum(1 for line in f if b'"event":"egress"' in line)

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            self.proxy.close()
            self.audit.close()


def measure(args: argparse.Namespace, tmp: str) -> tuple[dict[str, Figures], int]:
    upstream = subprocess.Popen(
        [sys.executable, PEERS, "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert upstream.stdin is not None and upstream.stdout is not None
    jail: Jail | None = None
    host: Client | None = None
    try:
        http_port, echo_port = (int(p) for p in upstream.stdout.readline().split())
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        host = Client(
            subprocess.Popen(
                [sys.executable, "-u", PEERS, "client"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            ),
            "host",
        )
        jail = Jail(tmp, (http_port, echo_port))
        clients = {"direct": host, "proxy": jail.client, "forward": jail.client}
        figures = {via: Figures() for via in PATHS}
        for via in PATHS:  # warm up: first connections, page cache, curl's libraries
            clients[via].ask(op="curl", via=via, port=http_port, mib=1)
            clients[via].ask(op="connect", via=via, port=echo_port, n=20)
        for _ in range(args.rounds):
            for via in PATHS:
                got = clients[via].ask(op="curl", via=via, port=http_port, mib=args.mb)
                if got["bytes"] != args.mb << 20:
                    raise RuntimeError(f"{via}: {got['bytes']} bytes, not {args.mb} MiB")
                figures[via].mb_per_s.append(got["bytes"] / got["seconds"] / 1e6)
            for via in PATHS:
                got = clients[via].ask(op="connect", via=via, port=echo_port, n=args.connects)
                figures[via].connect_us += got["us"]
        jail.close()
        records, jail = jail.records(), None
        return figures, records
    finally:
        if jail is not None:
            jail.close()
        if host is not None:
            host.close()
        upstream.stdin.close()
        upstream.wait(10)


def table(figures: dict[str, Figures]) -> str:
    rows: list[tuple[str, Callable[[Figures], float], str, str]] = [
        ("download throughput (median)", lambda f: f.median_mb_per_s, "MB/s", "ratio"),
        ("connect + first byte p50", lambda f: f.percentile(0.5), "ms", "added"),
        ("connect + first byte p95", lambda f: f.percentile(0.95), "ms", "added"),
    ]
    names = [NAMES[via] for via in PATHS] + ["HTTP proxy vs direct", "tcp forward vs direct"]
    lines = ["| measure | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, get, unit, kind in rows:
        d, p, f = (get(figures[via]) for via in PATHS)
        digits = 0 if unit == "MB/s" else 3
        cells = [f"{v:.{digits}f} {unit}" for v in (d, p, f)]
        cells += [_delta(kind, p, d, unit), _delta(kind, f, d, unit)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _delta(kind: str, value: float, base: float, unit: str) -> str:
    if kind == "added":
        return f"{value - base:+.3f} {unit} ({value / base:.2f}x)"
    return f"{value / base * 100:.0f} % of direct"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--mb",
        type=int,
        default=200,
        help="MiB per download (under the 1 GiB egress_bytes default)",
    )
    parser.add_argument("--connects", type=int, default=200, help="connections a round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("curl") is None:
        parser.error("curl is not on PATH")
    tmp = tempfile.mkdtemp(prefix="mcpwrap-bench-egress-")
    try:
        figures, records = measure(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    runs = {via: " ".join(f"{v:.0f}" for v in f.mb_per_s) for via, f in figures.items()}
    print(
        f"mcpwrap egress benchmark: {args.rounds} x {args.mb} MiB downloads (curl), "
        f"{args.rounds} x {args.connects} connections a path; {records} audit records; "
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus"
    )
    print(table(figures))
    best = {via: max(f.mb_per_s) for via, f in figures.items()}
    print(
        "every round, MB/s: " + "; ".join(f"{NAMES[v]} {runs[v]}" for v in PATHS) + "\n"
        "best round, MB/s: "
        + "; ".join(
            f"{NAMES[v]} {best[v]:.0f} ({best[v] / best['direct'] * 100:.0f} %)" for v in PATHS
        )
        + "\nthe issue's target: HTTP proxy >= 50 % of direct throughput, <= 2 ms added "
        "connect latency"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
