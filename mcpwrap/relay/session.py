"""One run of the relay: threads, signals, and the end of the run.

Lifecycle: client EOF closes the server's stdin, waits, then SIGTERM and SIGKILL for its
process group. Server exit answers every request still pending and exits with the
server's status. SIGINT, SIGTERM and SIGHUP stop the server the same way and exit with
128 + the signal's number.

A remote server (child None, a RemoteUpstream): client EOF or a signal closes the
connection; the connection's end answers every request still pending with its reason and
exits 0 when we closed it, 1 when the server or the network ended it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from mcpwrap.audit.recorder import Recorder
from mcpwrap.audit.records import Agent
from mcpwrap.audit.writer import AuditWriter
from mcpwrap.basics.errors import MCPWrapError
from mcpwrap.config import paths
from mcpwrap.config.profile import Profile
from mcpwrap.policy.sanitize import clean_line
from mcpwrap.relay.core import Core, RelayOptions
from mcpwrap.relay.ends import Upstream
from mcpwrap.relay.framing import LineReader, Oversize, write_all
from mcpwrap.relay.process import ProcessUpstream
from mcpwrap.relay.ratelimit import RateLimiter
from mcpwrap.relay.stdio import StdioFront
from mcpwrap.sandbox import launch
from mcpwrap.sandbox.proctree import ProcessTree
from mcpwrap.supply.toolgate import Gate


def _return_big_buffers_to_the_os() -> None:
    """Serve allocations of 1 MiB and up from mmap, so that freeing them returns memory.

    glibc raises its mmap threshold each time a large block is freed; after a few
    multi-MB messages every new one then comes from a heap that never shrinks, and the
    relay's resident memory keeps the high-water mark of its largest messages. Setting the
    threshold by hand turns that adjustment off. Not glibc (musl): nothing to do.
    """
    import ctypes

    m_mmap_threshold = -3
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(m_mmap_threshold, 1 << 20)


TOKEN_POLL = 1.0  # seconds: how soon a revocation reaches a running wrapper
EOF_GRACE = 2.0  # seconds a server gets to exit by itself after its stdin closes
TERM_GRACE = 2.0
DRAIN_GRACE = 2.0  # seconds to read a dead server's last replies from a pipe a grandchild holds
STDERR_LINE = 64 * 1024


class Session:
    def __init__(
        self,
        profile: Profile,
        child: launch.Child | None,
        audit: AuditWriter,
        *,
        max_message: int,
        cwd: str,
        gate: Gate | None = None,
        redact: Callable[[str], str] = str,
        upstream: Upstream | None = None,
    ) -> None:
        """child None: `upstream` is a remote server's (no process, no jail)."""
        self._redact = redact
        self.child = child
        options = RelayOptions(max_message=max_message, cwd=cwd)
        self.front = StdioFront(sys.stdin.fileno(), sys.stdout.fileno(), max_message=max_message)
        self.upstream: Upstream
        if child is not None:
            server_in, server_out, self.server_err = child.fds()
            self.upstream = ProcessUpstream(
                server_in,
                server_out,
                max_message=max_message,
                tree=ProcessTree(child.server_pid()),
                name=profile.name,
            )
        else:
            assert upstream is not None, "a session without a child needs its upstream"
            self.upstream = upstream
        self.recorder = Recorder(
            audit,
            server=profile.name,
            agent=Agent.of_parent(),
            arguments=profile.audit.arguments,
            clock=options.clock,
        )
        self.core = Core(
            profile,
            front=self.front,
            upstreams=[self.upstream],
            recorder=self.recorder,
            limiter=RateLimiter(os.path.join(paths.state_dir(), "state.sqlite3")),
            options=options,
            gate=gate,
            redact=redact,
        )
        self._stopping = threading.Event()
        self._signal: int | None = None

    def run(
        self,
        argv: list[str],
        *,
        sandbox: str,
        jail: dict[str, Any] | None = None,
        profile_change: dict[str, Any] | None = None,
        pinned: dict[str, Any] | None = None,
    ) -> int:
        """jail: the jail's kind and, when reduced, its layers applied and missing;
        pinned: a remote server's lock and the key pins checked, for the start record."""
        _return_big_buffers_to_the_os()
        profile = self.core.profile
        if self.child is None:
            return self._run_remote(argv, profile_change, pinned or {})
        self.recorder.session(
            decision="start",
            command=argv,
            profile=profile.source,
            profile_digest=profile.digest,
            sandbox=sandbox,
            **(jail or {}),
            child_pid=self.child.pid,
        )
        if profile_change is not None:
            self.recorder.event("profile", **profile_change)
        # Before any thread relays: a client that saw a reply may signal mcpwrap at once,
        # and a signal that came before the handlers killed mcpwrap outright.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        server_pump = self._thread(self._pump_server, "server")
        if profile.sandbox.cpu is not None:
            self._thread(self._watch_cpu, "cpu")
        self._thread(self.core.run_deadlines, "deadlines")
        self._thread(self._pump_stderr, "stderr")
        self._thread(self._pump_client, "client")
        status = self.child.process.wait()
        server_pump.join(DRAIN_GRACE)
        self.child.signal_group(signal.SIGKILL)  # nothing of the server outlives it
        self.core.fail_pending(f"the MCP server exited (status {status}) before answering")
        self.core.close()
        code = self._exit_code(status)
        self.recorder.session(
            decision="stop", exit_status=status, exit_code=code, signal=self._signal
        )
        self.recorder.close()
        return code

    def _run_remote(
        self, argv: list[str], profile_change: dict[str, Any] | None, pinned: dict[str, Any]
    ) -> int:
        """The run of a remote server: until the connection ends (the client's EOF or a
        signal closes it)."""
        profile = self.core.profile
        self.recorder.session(
            decision="start",
            command=argv,
            profile=profile.source,
            profile_digest=profile.digest,
            sandbox="off: a remote server, no local process",
            **pinned,
        )
        if profile_change is not None:
            self.recorder.event("profile", **profile_change)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        server_pump = self._thread(self._pump_server, "server")
        self._thread(self.core.run_deadlines, "deadlines")
        self._thread(self._pump_client, "client")
        server_pump.join()
        error = getattr(self.upstream, "error", None)
        closed = self._stopping.is_set() and error is None
        reason = error or "the connection to the remote MCP server was closed"
        self.core.fail_pending(f"{reason}, before answering")
        self.core.close()
        if not closed:
            sys.stderr.write(f"mcpwrap: {reason}\n")
        code = 128 + self._signal if self._signal is not None else (0 if closed else 1)
        self.recorder.session(
            decision="stop",
            exit_code=code,
            signal=self._signal,
            transport=getattr(self.upstream, "transport", None),
            reason=None if closed else reason,
        )
        self.recorder.close()
        return code

    def watch_token(self, name: str | None, state_dir: str) -> None:
        """Every second: a revoked token stops working at once (or gives way to its
        successor under the same name); a named token in the last part of its life is
        rotated, and the run goes on with the successor."""
        self._thread(lambda: self._watch_token(name, state_dir), "token")

    def _watch_token(self, name: str | None, state_dir: str) -> None:
        from mcpwrap.identity import auth, tokens

        registry = tokens.Registry(os.path.join(state_dir, "tokens.sqlite3"))
        while not self._stopping.wait(TOKEN_POLL):
            state = self.core.tokens
            token = state.token
            if token is None:
                return
            try:
                revoked = registry.revoked(token.id)
                if name is not None and (revoked or tokens.needs_rotation(token, time.time())):
                    successor = self._successor(registry, token, name, state_dir)
                    if successor is not None:
                        self.core.set_token(auth.TokenState(successor))
                        self.recorder.event(
                            "token",
                            decision="rotated",
                            rule="token.rotation",
                            previous=token.id,
                            reason=f"now {successor.id}",
                        )
                        continue
                if revoked and not state.revoked:
                    self.core.set_token(auth.TokenState(token, revoked=True))
                    self.recorder.event(
                        "token",
                        decision="revoked",
                        rule="token.revoked",
                        reason=f"token {token.id} was revoked: every further call is refused",
                    )
            except MCPWrapError as exc:  # the registry or keyring failed: say so, keep polling
                self.recorder.event("token", decision="error", rule="token.watch", reason=str(exc))

    @staticmethod
    def _successor(registry: Any, token: Any, name: str, state_dir: str) -> Any:
        """The token that follows `token` under `name`: made now if none exists yet."""
        from mcpwrap.identity import tokens

        if registry.successor(token.id) is None:
            if registry.revoked(token.id):
                return None  # revoked, never rotated: it just stops
            new, _ = tokens.rotate(name, state_dir=state_dir)
            return new
        successor = tokens.verify(tokens.load_named(name), state_dir=state_dir)
        return successor if successor.id != token.id else None

    def _thread(self, target: Callable[[], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    def _pump_server(self) -> None:
        """Server to client, until the server closes its stdout."""
        self.upstream.run(self.core.deliverer(self.upstream))

    def _pump_client(self) -> None:
        """Client to server, until the client closes its end."""
        try:
            self.front.run(self.core.from_client)
        finally:
            self._stop()  # the client closed its end: the server gets EOF and then signals

    def _pump_stderr(self) -> None:
        reader = LineReader(self.server_err, STDERR_LINE)
        while (item := reader.read()) is not None:
            if isinstance(item, Oversize):
                text = clean_line(item.head[:512]) + f" ... [mcpwrap: {item.size}-byte line cut]"
            else:
                text = clean_line(item)
            try:
                write_all(2, (self._redact(text) + "\n").encode("utf-8", "replace"))
            except OSError:
                return

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signal = signum
        if self.child is not None:
            self.child.signal_group(signal.SIGTERM)
        self._stop()

    def _watch_cpu(self) -> None:
        """[sandbox] cpu is CPU seconds of the whole tree. RLIMIT_CPU holds each process
        to it; this holds their sum: a server that spreads work over children is stopped
        too."""
        limit = self.core.profile.sandbox.cpu
        assert limit is not None
        while not self._stopping.wait(0.5):
            usage = self.upstream.usage()
            used = usage.cpu_ms / 1000.0 if usage is not None else 0.0
            if used >= limit:
                self.recorder.session(
                    decision="kill",
                    rule="sandbox.cpu",
                    reason=f"the server's processes used {used:.1f} s of CPU, over the "
                    f"limit of {limit:g} s",
                )
                sys.stderr.write(
                    f"mcpwrap: the server used {used:.1f} s of CPU "
                    f"([sandbox] cpu = {limit:g} s): stopped\n"
                )
                if self.child is not None:
                    self.child.signal_group(signal.SIGKILL)
                return

    def _stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        self.upstream.close()
        if self.child is None:
            return
        threading.Thread(
            target=self.child.stop,
            kwargs={"eof_grace": EOF_GRACE, "term_grace": TERM_GRACE},
            daemon=True,
        ).start()

    def _exit_code(self, status: int) -> int:
        if self._signal is not None:
            return 128 + self._signal
        return 128 - status if status < 0 else status
