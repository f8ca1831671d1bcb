"""Run a command in the real jail under network = "allowlist", with mcpwrap's egress proxy
serving it in this process, and collect the proxy's audit records.

Shared by tests/test_egress.py (upstreams on the host's loopback) and
tests/test_egress_hosts.py (upstreams in a test host's network namespace); the loopback
upstreams themselves (an HTTP server, a TCP echo server) serve the other egress tests too.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from mcpwrap.config.profile import load_profile
from mcpwrap.policy import network as netpolicy
from mcpwrap.sandbox import egress, launch
from mcpwrap.sandbox import spec as jail_spec


class Upstream(NamedTuple):
    port: int
    hits: list[str]  # the paths asked for, in order


@contextlib.contextmanager
def hello_server() -> Iterator[Upstream]:
    """An HTTP server on the host's loopback answering "hello PATH\n" to every GET."""
    hits: list[str] = []

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = f"hello {self.path}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Upstream(server.server_address[1], hits)
    finally:
        server.shutdown()
        server.server_close()


class EchoServer:
    """A TCP echo server on the host's loopback; counts the connections it accepted."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def close(self) -> None:
        self.sock.close()


class Run(NamedTuple):
    returncode: int
    stdout: str
    stderr: str
    records: list[dict[str, Any]]


def jailed(
    tmp: Path,
    egress_entries: list[str],
    argv: list[str],
    *,
    tools: str = "",
    in_flight: list[tuple[str, object]] | None = None,
    hosts: dict[str, str] | None = None,
    monkeypatch: pytest.MonkeyPatch | None = None,
    read: Sequence[str | Path] = (),
    env: Mapping[str, str] | None = None,
) -> Run:
    """argv in the jail under network = "allowlist", with mcpwrap's proxy serving it.

    hosts (with monkeypatch): names mapped for the proxy's resolver (MCPWRAP_TEST_HOSTS).
    read: extra paths for the profile's [sandbox] read grant (files a client must read).
    env: extra variables for the jailed command, besides PATH (the jail adds the proxy's)."""
    listed = ", ".join(json.dumps(e) for e in egress_entries)
    grants = ", ".join(json.dumps(str(p)) for p in read)
    profile_path = tmp / "p.toml"
    profile_path.write_text(
        f'version = 1\n[sandbox]\nnetwork = "allowlist"\negress = [{listed}]\n'
        f"read = [{grants}]\n"
        f'[audit]\npath = "{tmp}/a.jsonl"\n{tools}'
    )
    if hosts is not None and monkeypatch is not None:
        (tmp / "hosts").write_text("".join(f"{a} {n}\n" for n, a in hosts.items()))
        monkeypatch.setenv("MCPWRAP_TEST_HOSTS", str(tmp / "hosts"))
    profile = load_profile(str(profile_path), state_dir=str(tmp / "state"))
    inside = {"PATH": os.environ["PATH"], **(env or {})}
    spec = jail_spec.build(profile, argv, inside, str(tmp), state_dir=str(tmp / "state"))
    child = launch.start_jailed(spec)
    child.wait_ready()
    records: list[dict[str, Any]] = []
    proxy = egress.Egress(
        netpolicy.entries(profile),
        [egress.Listener(k, s, t) for k, s, t in child.egress_listeners()],
        record=lambda event, **fields: records.append({"event": event, **fields}),
        in_flight=lambda: list(in_flight or []),
    )
    proxy.start()
    try:
        out, err = child.process.communicate(timeout=60)
    finally:
        proxy.close()
    _settle()
    return Run(child.process.returncode, out.decode(), err.decode(), records)


def _settle(timeout: float = 10.0) -> None:
    """Wait for the proxy's connections to end: each writes its audit record when both of
    its sides are done, which may be just after the jailed command exits."""
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread.name == "egress-conn":
            thread.join(max(0.0, deadline - time.monotonic()))


class HostListeners(NamedTuple):
    listeners: list[tuple[str, socket.socket]]  # ("http" | "socks", bound and listening)
    ports: list[int]
    env: dict[str, str]  # the proxy variables the server is given, with the secret
    secret: str


def host_listeners() -> HostListeners:
    """The reduced jail's proxy listeners on the host's loopback, as its trampoline binds
    them (jail.egress_listeners with host=True, handed over a socketpair as in a run), with
    a run's secret and the environment the server gets."""
    import marshal

    from mcpwrap.sandbox import jail, proxyauth

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    secret = proxyauth.new_secret()
    spec: dict[str, Any] = {
        "egress": {"forwards": [], "secret": secret, "fd": theirs.detach()},
        "env": {},
    }
    with ours:
        ports = jail.egress_listeners(spec, host=True)
        msg, fds = launch._receive_fds(ours)  # as Jailed.egress_listeners receives them
    kinds = marshal.loads(msg)
    listeners = [(kind, socket.socket(fileno=fd)) for (kind, _), fd in zip(kinds, fds, strict=True)]
    return HostListeners(listeners, ports, spec["env"], secret)
