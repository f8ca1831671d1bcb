"""An unjailed server's processes, daemons included, kept within mcpwrap's reach.

In the jail, the server is pid 1 of its own pid namespace: when it ends, the kernel ends
everything it started. Unjailed, a daemon (fork, setsid, the parent exits) leaves the
server's process group and would be reparented to init, out of reach. So mcpwrap makes
itself a child subreaper (PR_SET_CHILD_SUBREAPER) before it starts the server: such an
orphan becomes mcpwrap's own child instead. The server's processes are then the server's
descendants, and mcpwrap's children that it did not have before the server started, and
theirs; signal() reaches them all, and with SIGKILL repeats until none is left.
Adopted children that exit are reaped on SIGCHLD, so a long session collects no zombies.

Not covered: a SIGKILL of mcpwrap itself (nothing runs to clean up; in the jail, the pid
namespace covers it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from types import FrameType

from mcpwrap.basics.errors import MCPWrapError
from mcpwrap.sandbox.proctree import children

_PR_SET_CHILD_SUBREAPER = 36
KILL_PATIENCE = 2.0  # seconds to keep killing what the killed processes leave behind


class ReaperError(MCPWrapError):
    """mcpwrap could not make the server's daemons its own children."""

    exit_code = 127


class Reaper:
    """Made before the server starts; told the server's pid once it runs."""

    def __init__(self) -> None:
        _become_subreaper()
        self._own = os.getpid()
        self._before = set(children(self._own))  # not the server's: never touched
        self._server: subprocess.Popen[bytes] | None = None
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGCHLD, self._on_child)
            self._reap_on_wakeup()

    def watch(self, server: subprocess.Popen[bytes]) -> None:
        self._server = server

    def members(self) -> list[int]:
        """The server's live processes but the leader (its group is killpg's): descendants
        of the leader (until subprocess reaps it: then its pid may be another's) and of
        every child mcpwrap adopted."""
        leader = self._server.pid if self._server is not None else None
        roots = [p for p in self._adopted() if p != leader]
        if self._server is not None and self._server.returncode is None:
            roots += children(self._server.pid)
        found: list[int] = []
        while roots:
            pid = roots.pop()
            if pid not in found and _alive(pid):
                found.append(pid)
                roots += children(pid)
        return found

    def signal(self, sig: int) -> None:
        """Send `sig` to every member; SIGKILL again until none is left (what a killed
        process leaves is adopted the moment it dies), for at most KILL_PATIENCE."""
        deadline = time.monotonic() + KILL_PATIENCE
        while True:
            found = self.members()
            for pid in found:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            self.reap()
            if sig != signal.SIGKILL or not found or time.monotonic() > deadline:
                return
            time.sleep(0.005)

    def reap(self) -> None:
        """Collect adopted children that exited (never the leader: subprocess reaps it)."""
        leader = self._server.pid if self._server is not None else None
        for pid in self._adopted():
            if pid != leader and not _alive(pid):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
        # /proc's children lists can miss a child (the kernel says so, for children that
        # are not stopped), and no second SIGCHLD comes for it: ask the kernel too, peeking
        # (WNOWAIT) so that the leader is left to subprocess, which stops the peeking.
        while True:
            try:
                found = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if found is None or found.si_pid in (leader, *self._before):
                return
            with contextlib.suppress(ChildProcessError):
                os.waitpid(found.si_pid, os.WNOHANG)

    def _adopted(self) -> list[int]:
        return [p for p in children(self._own) if p not in self._before]

    def _on_child(self, signum: int, frame: FrameType | None) -> None:
        """Nothing: the handler is there so that the C-level one writes the wakeup fd,
        and the reaper's thread reaps (_reap_on_wakeup)."""

    def _reap_on_wakeup(self) -> None:
        """The kernel hands SIGCHLD to any thread, and Python runs a handler in the main
        thread only once that thread runs again; a session's main thread sits in waitpid()
        for the server, so reaping there left daemons zombies until the server exited. The
        C-level handler writes to the wakeup fd whichever thread took the signal: a thread
        of the reaper's own reads it and reaps."""
        r, w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(w, False)  # a full pipe drops a wakeup, never blocks a handler
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        threading.Thread(target=self._wakeups, args=(r,), name="reaper", daemon=True).start()

    def _wakeups(self, fd: int) -> None:
        while data := os.read(fd, 512):
            if signal.SIGCHLD in data:  # one byte per signal: its number
                self.reap()


def _become_subreaper() -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise ReaperError(
            f"cannot start the server: prctl(PR_SET_CHILD_SUBREAPER) failed: "
            f"{os.strerror(err)}; without it a daemon the server starts would outlive "
            "mcpwrap. Linux 3.4 or later is needed"
        )


def _alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] != b"Z"
