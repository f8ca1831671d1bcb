"""Start the MCP server as a child and stop it again.

The child's environment is built from the profile, not inherited: a server sees PATH,
HOME, its `[server] env` and the names in `passthrough`, and nothing else of the
environment mcpwrap was started with (cloud keys, tokens and agent sockets stay out).
"""

from __future__ import annotations

import contextlib
import functools
import marshal
import os
import signal
import struct
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mcpwrap.basics.errors import MCPWrapError, UsageError
from mcpwrap.basics.pipes import widen_pipe
from mcpwrap.basics.programs import which
from mcpwrap.config import paths
from mcpwrap.config.profile import Profile

if TYPE_CHECKING:
    from mcpwrap.sandbox.reaper import Reaper

_BASE_ENV = ("PATH", "HOME")


class LaunchError(MCPWrapError):
    """The server could not be started."""

    exit_code = 127


def server_argv(profile: Profile, given: Sequence[str]) -> list[str]:
    """The command to run: from the command line, the profile, or both when they agree."""
    from_profile = list(profile.server.command or ())
    if given and from_profile and list(given) != from_profile:
        raise UsageError(
            f"{profile.source}: [server] command is {from_profile!r} but the command line "
            f"gives {list(given)!r}; remove one of them"
        )
    argv = list(given) or from_profile
    if not argv:
        raise UsageError(
            "no server command: give it after `--` "
            f"(mcpwrap run --profile {paths.profile_arg(profile.source)} -- CMD ...) "
            f"or as [server] command in {profile.source}"
        )
    return argv


def child_env(profile: Profile, environ: Mapping[str, str]) -> dict[str, str]:
    env = {name: environ[name] for name in _BASE_ENV if name in environ}
    env.update({name: environ[name] for name in profile.server.passthrough if name in environ})
    env.update(profile.server.env)
    if profile.server.secrets:
        from mcpwrap.identity import secrets as secretstore

        env.update(secretstore.read(profile.server.secrets, profile.source))
    return env


class Child:
    """The started server: its process and our ends of its three pipes."""

    def __init__(self, process: subprocess.Popen[bytes], reaper: Reaper | None = None) -> None:
        self.process = process
        self._reaper = reaper  # unjailed: reaches the daemons that left the group

    @property
    def pid(self) -> int:
        return self.process.pid

    def server_pid(self) -> int:
        """The pid whose process tree is the server's (for resource figures)."""
        return self.pid

    def fds(self) -> tuple[int, int, int]:
        """The child's stdin, stdout and stderr pipe ends on our side."""
        p = self.process
        assert p.stdin is not None and p.stdout is not None and p.stderr is not None
        return p.stdin.fileno(), p.stdout.fileno(), p.stderr.fileno()

    def signal_group(self, sig: int) -> None:
        """Signal the server's process group, and unjailed every other process of the
        server's (a daemon in a session of its own); SIGKILL leaves none."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)
        if self._reaper is not None:
            self._reaper.signal(sig)

    def stop(self, *, eof_grace: float, term_grace: float) -> None:
        """After stdin was closed: wait, then SIGTERM the group, wait, then SIGKILL it."""
        for sig, grace in ((None, eof_grace), (signal.SIGTERM, term_grace), (signal.SIGKILL, 5.0)):
            if sig is not None:
                self.signal_group(sig)
            try:
                self.process.wait(grace)
                break
            except subprocess.TimeoutExpired:
                continue
        # The leader is gone; anything it left in its group goes too.
        self.signal_group(signal.SIGKILL)


def start(argv: Sequence[str], *, env: Mapping[str, str], cwd: str) -> Child:
    """Start the server outside the jail; on Linux, mcpwrap first becomes the subreaper
    that its daemons are reparented to (reaper.py)."""
    exe = which(argv[0], path=env.get("PATH"))
    if exe is None:
        raise LaunchError(
            f"cannot start the server: {argv[0]!r} is not found on PATH ({env.get('PATH', '')})"
        )
    reaper = None
    if sys.platform.startswith("linux"):
        from mcpwrap.sandbox.reaper import Reaper

        reaper = Reaper()
    try:
        process = subprocess.Popen(
            [exe, *argv[1:]],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            cwd=cwd,
            bufsize=0,
            close_fds=True,
            start_new_session=True,  # its own group: stop() reaches npx's grandchildren too
            preexec_fn=functools.partial(_die_with_parent, os.getpid()),  # noqa: PLW1509 - no threads yet
        )
    except OSError as exc:
        raise LaunchError(
            f"cannot start the server {argv[0]!r}: {exc.strerror} (cwd {cwd})"
        ) from exc
    if reaper is not None:
        reaper.watch(process)
    child = Child(process, reaper)
    for fd in child.fds():
        widen_pipe(fd)
    return child


class Jailed(Child):
    """A server started through the jail trampoline; `wait_ready` reports its set-up and,
    when a directory is sealed, starts the seal broker (`broker`)."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        status_fd: int,
        egress: Any = None,
        seal: tuple[Any, list[str]] | None = None,
        go_fd: int = -1,
    ) -> None:
        super().__init__(process)
        self._status_fd = status_fd
        self._go_fd = go_fd  # a held start: one byte lets the trampoline exec the server
        self._egress = egress  # our end of the socket the jail sends its listeners on
        self._seal = seal  # (our end of the broker's socket, the protected paths)
        self.broker: Any = None  # sandbox.broker.Broker, once the jail is ready
        self.note: dict[str, Any] = {}  # the jail's kind and layers (wait_ready)
        self.egress_secret: str | None = None  # what the reduced jail's proxies require
        self._sealed: dict[str, dict[str, Any]] = {}  # per jail kind: its sealed directories

    @property
    def kind(self) -> str:
        """ "full" or "reduced": which jail the trampoline applied (after wait_ready)."""
        return str(self.note.get("jail", "full"))

    @property
    def sealed(self) -> dict[str, Any]:
        """The directories sealed in the jail that was applied (after wait_ready)."""
        return self._sealed.get(self.kind, {})

    def signal_group(self, sig: int) -> None:
        """The reduced jail has no pid namespace: SIGKILL becomes the supervisor's "kill
        it all" (reduced.KILL_ALL), so that it kills every process of the server before it
        exits; a supervisor that does not exit in time is killed as before."""
        if sig != signal.SIGKILL or self.kind != "reduced" or self.process.poll() is not None:
            super().signal_group(sig)
            return
        from mcpwrap.sandbox.reduced import KILL_ALL

        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, KILL_ALL)
        try:
            self.process.wait(2.0)
        except subprocess.TimeoutExpired:
            super().signal_group(sig)

    def release(self) -> None:
        """Let a held trampoline exec the server."""
        if self._go_fd >= 0:
            try:
                os.write(self._go_fd, b"1")
            except BrokenPipeError:
                pass  # the trampoline failed already: wait_ready reports why
            finally:
                os.close(self._go_fd)
                self._go_fd = -1

    def abort(self) -> None:
        """End a held trampoline that must not start the server (its files failed their
        check): it sees EOF instead of the go byte, and is killed with its jail."""
        if self._go_fd >= 0:
            os.close(self._go_fd)
            self._go_fd = -1
        self.process.kill()  # the jail's pid 1 dies with it (PDEATHSIG)
        self.process.wait()
        os.close(self._status_fd)
        for end in (self._egress, self._seal[0] if self._seal else None):
            if end is not None:
                end.close()

    def egress_listeners(self) -> list[tuple[str, Any, tuple[str, int] | None]]:
        """The listeners the jail bound in its network namespace: (kind, socket, target).
        Call after wait_ready(): the jail sent them before it exec'd the server."""
        if self._egress is None:
            return []
        import socket

        with self._egress:
            msg, fds = _receive_fds(self._egress, 64)  # close-on-exec, as the broker's
        kinds = marshal.loads(msg)  # noqa: S302 - from our own trampoline
        if len(kinds) != len(fds):
            for fd in fds:
                os.close(fd)
            raise SandboxError({"message": "the jail sent an incomplete set of listeners"})
        return [
            (kind, socket.socket(fileno=fd), tuple(target) if target else None)
            for (kind, target), fd in zip(kinds, fds, strict=True)
        ]

    def server_pid(self) -> int:
        """pid 1 of the jail (the server, after exec), not the supervisor outside it: the
        supervisor's own ~10 MB would otherwise be the peak RSS of every small server."""
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                children = f.read().split()
        except OSError:
            children = []
        return int(children[0]) if children else self.pid

    def wait_ready(self) -> None:
        """Block until the trampoline exec'd the server (EOF) or failed (a report)."""
        chunks = []
        while chunk := os.read(self._status_fd, 65536):
            chunks.append(chunk)
        os.close(self._status_fd)
        frames = _frames(b"".join(chunks))
        failed = next((f for f in frames if "step" in f), None)
        self.note = next((f for f in frames if "jail" in f), {})
        if failed is None and self.note:
            self._start_broker()
            return
        if self._seal is not None:
            self._seal[0].close()
        self.process.wait()
        raise SandboxError(failed or {"message": "the jail ended before it started the server"})

    def _start_broker(self) -> None:
        """The listener the jail sent before it exec'd the server, and the directories it
        put Landlock rules on: serve the server's creating calls from now on."""
        if self._seal is None:
            return
        channel, protect = self._seal
        if not self.sealed:  # the other jail kind needed the broker: this one did not
            channel.close()
            return
        try:
            msg, fds = _receive_fds(channel)
        finally:
            channel.close()
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            self.stop(eof_grace=0, term_grace=1.0)
            raise SandboxError({"message": "seal broker: the jail sent no listener"})
        from mcpwrap.sandbox import broker, unotify

        ruled = marshal.loads(msg)  # noqa: S302 - from our own trampoline
        # The reduced jail's seals are read-only to Landlock: they are named, not inferred,
        # and the broker also answers their removals and renames.
        reduced = self.kind == "reduced"
        found = broker.seals(ruled, protect, sealed=list(self.sealed) if reduced else ())
        self.broker = broker.Broker(unotify.Listener(fds[0]), found)
        self.broker.start()

    def stop(self, *, eof_grace: float, term_grace: float) -> None:
        super().stop(eof_grace=eof_grace, term_grace=term_grace)
        if self.broker is not None:
            self.broker.close()


class SandboxError(LaunchError):
    """A jail layer that could not be applied: the run stops (fail closed)."""

    exit_code = 126

    def __init__(self, report: dict[str, Any]) -> None:
        self.report = report
        message = str(report.get("message"))
        hint = report.get("hint") or _HINTS.get(str(report.get("step")), "")
        super().__init__(
            f"the sandbox could not be applied: {message}"
            + (f" ({hint})" if hint and hint not in message else "")
            + "; see `mcpwrap doctor`. To run this server without the sandbox (unsafe), "
            "set [sandbox] enforce = false in its profile"
        )


_HINTS = {
    "namespaces": "unprivileged user namespaces may be off (sysctl "
    "kernel.unprivileged_userns_clone, or AppArmor's "
    "kernel.apparmor_restrict_unprivileged_userns on Ubuntu 24.04)",
    "landlock": "the kernel needs Landlock (5.13+, lsm=landlock in the boot parameters)",
    "seccomp": "libseccomp (Debian: libseccomp2) and the pyseccomp package are needed",
}


def _frames(data: bytes) -> list[dict[str, Any]]:
    """The status pipe's frames: a 4-byte little-endian length, then a marshalled dict."""
    frames: list[dict[str, Any]] = []
    at = 0
    while at + 4 <= len(data):
        size = int.from_bytes(data[at : at + 4], "little")
        body = data[at + 4 : at + 4 + size]
        at += 4 + size
        try:
            frame = marshal.loads(body)  # noqa: S302 - from our own trampoline
        except (EOFError, ValueError, TypeError):
            return [*frames, {"step": "jail", "message": "a garbled report from the jail"}]
        frames.append(frame if isinstance(frame, dict) else {"step": "jail", "message": "?"})
    if at != len(data):
        frames.append({"step": "jail", "message": "a truncated report from the jail"})
    return frames


# -S skips `site` (and every .pth file it would read): the trampoline gets exactly the
# directories it needs, and starts a few milliseconds sooner.
_TRAMPOLINE = (
    "import sys; sys.path[:0] = sys.argv[4:]; del sys.argv[4:]; "
    "from mcpwrap.sandbox.jail import main; main(sys.argv)"
)


def trampoline_path() -> list[str]:
    """mcpwrap's own parent directory, and pyseccomp's (used when the filter's cache
    misses). Found by a look along sys.path: importlib.util would cost ~4 ms a start."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    extra = [
        entry for entry in sys.path if entry and os.path.isfile(os.path.join(entry, "pyseccomp.py"))
    ][:1]
    _compile_trampoline(here)
    return [here, *extra]


_TRAMPOLINE_MODULES = ("jail", "kernel", "landlock", "unotify", "bpf")


def _compile_trampoline(here: str) -> None:
    """Byte code for the trampoline's modules. It runs with -B and mcpwrap never imports
    jail.py itself, so where the installer compiled nothing (uv does not, by default) it
    would compile them from source at every start (~10 ms). Written once, as an import
    would; skipped where the user asked Python not to write byte code."""
    if sys.dont_write_bytecode or sys.pycache_prefix:
        return
    base = os.path.join(here, "mcpwrap", "sandbox")
    tag = sys.implementation.cache_tag
    for name in _TRAMPOLINE_MODULES:
        source = os.path.join(base, f"{name}.py")
        compiled = os.path.join(base, "__pycache__", f"{name}.{tag}.pyc")
        try:
            if os.stat(compiled).st_mtime_ns >= os.stat(source).st_mtime_ns:
                continue
        except OSError:
            pass
        import py_compile

        try:
            py_compile.compile(source, cfile=compiled, doraise=True)
        except (OSError, py_compile.PyCompileError):
            return  # a read-only install: the trampoline compiles in memory, as before


def _receive_fds(channel: Any, most: int = 4) -> tuple[bytes, list[int]]:
    """One message and the fds that came with it (SCM_RIGHTS, made close-on-exec), with
    _socket alone."""
    import _socket
    import array

    fds = array.array("i")
    space = _socket.CMSG_SPACE(most * fds.itemsize)
    msg, ancillary, _, _ = channel.recvmsg(1 << 20, space, _socket.MSG_CMSG_CLOEXEC)
    for level, kind, data in ancillary:
        if (level, kind) == (_socket.SOL_SOCKET, _socket.SCM_RIGHTS):
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return msg, list(fds)


class Trampoline:
    """The jail trampoline, started before its spec exists: its interpreter starts
    (~15 ms) while mcpwrap loads the profile and checks the lock. It waits on `control`
    for the spec and the sockets it needs (start_jailed sends them) and exits quietly
    when that closes without one (`discard`)."""

    def __init__(self) -> None:
        import _socket

        from mcpwrap.sandbox.apparmor import trampoline_executable

        self.used = False  # start_jailed took it
        self.control, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        self.status_r, status_w = os.pipe()
        go_r, self.go_w = os.pipe()
        exe = trampoline_executable()  # its own copy where AppArmor grants it user namespaces
        args = [str(status_w), str(theirs.fileno()), str(go_r), *trampoline_path()]
        try:
            self.process = subprocess.Popen(
                [exe, "-I", "-S", "-B", "-c", _TRAMPOLINE, *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={},
                bufsize=0,
                close_fds=True,
                pass_fds=(status_w, theirs.fileno(), go_r),
                start_new_session=True,
            )
        except OSError as exc:
            self.control.close()
            os.close(self.status_r)
            os.close(self.go_w)
            raise LaunchError(f"cannot start the jail trampoline {exe}: {exc.strerror}") from exc
        finally:
            os.close(status_w)
            os.close(go_r)
            theirs.close()

    def discard(self) -> None:
        """Not needed after all (no jail, or the run stopped first)."""
        self.used = True
        self.control.close()
        os.close(self.status_r)
        os.close(self.go_w)
        self.process.kill()
        self.process.communicate()


def prespawn() -> Trampoline | None:
    """A trampoline started early, or None where none can start now (start_jailed then
    starts one itself and reports why it could not)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return Trampoline()
    except LaunchError:
        return None


def start_jailed(
    spec: dict[str, Any], *, hold: bool = False, trampoline: Trampoline | None = None
) -> Jailed:
    """Send the trampoline (`trampoline`, or one started now) its spec: a fresh
    interpreter applies the layers, then execs the server. With `hold`, it stops before
    execve until `Jailed.release()` (or exits at `abort()`): mcpwrap verifies the
    server's files while the jail is being built."""
    import _socket

    t = trampoline if trampoline is not None else Trampoline()
    t.used = True
    sent: list[Any] = []  # the jail's ends of its sockets; the spec names them by index
    egress = seal = None
    if spec.get("egress") is not None:
        egress, jail_end = _socketpair()
        spec["egress"]["fd"] = len(sent)
        sent.append(jail_end)
    reduced = spec.get("reduced") or {}
    full = spec.get("sealed") if spec.get("jail") != "reduced" else {}
    sealed = {"full": full or {}, "reduced": reduced.get("sealed") or {}}
    if any(sealed.values()):
        ours, seal_end = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        spec["broker"] = {"fd": len(sent)}
        sent.append(seal_end)
        seal = (ours, list(spec["protect"]))
    spec["hold"] = hold
    rights = struct.pack(f"{len(sent)}i", *(end.fileno() for end in sent))
    try:
        # marshal: the trampoline need not import json
        t.control.sendmsg(
            [marshal.dumps(spec)],
            [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)] if sent else [],
        )
    except OSError as exc:
        for end in (egress, seal[0] if seal else None):
            if end is not None:
                end.close()
        t.discard()
        raise LaunchError(f"cannot send the jail trampoline its spec: {exc.strerror}") from exc
    finally:
        for end in sent:
            end.close()
    t.control.close()
    if not hold:
        os.close(t.go_w)
    child = Jailed(t.process, t.status_r, egress, seal, t.go_w if hold else -1)
    child._sealed = sealed
    child.egress_secret = (spec.get("egress") or {}).get("secret")
    for fd in child.fds():
        widen_pipe(fd)
    return child


def _socketpair() -> tuple[Any, Any]:
    import socket  # egress only: ~3 ms

    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def _die_with_parent(parent: int) -> None:
    """In the child: get SIGKILL when mcpwrap dies, even by SIGKILL."""
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
