"""Landlock against the real kernel: every check forks a child that restricts itself.

A restricted child reports one outcome over a pipe: ("ok", value), ("errno", n) for an
OSError, or ("error", text) for anything else. Each refusal is paired with the same
attempt in an unrestricted child, so a test fails if the rule behind it goes away. Only
paths under tmp_path are grants and canaries, except the read-only system runtime that a
dynamically linked /bin/true needs to start. Works as root (Landlock ignores
capabilities) and as an ordinary user.
"""

from __future__ import annotations

import ctypes
import errno
import os
import pickle
import shutil
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mcpwrap.sandbox import landlock
from mcpwrap.sandbox.landlock import LandlockError, Report, restrict

OK: tuple[str, Any] = ("ok", None)
EACCES = ("errno", errno.EACCES)
EPERM = ("errno", errno.EPERM)

# What the dynamic loader and libc of /bin/true need: EXECUTE on ld.so, READ on libc and
# the loader's cache. Read-only system files, never user data; missing ones are skipped.
SYSTEM_RUNTIME = ["/usr", "/lib", "/lib64", "/lib32", "/etc/ld.so.cache"]


def in_child(action: Callable[[], object], **grants: Any) -> tuple[str, Any]:
    """Run action in a forked child, after restrict(**grants) unless grants is empty.

    An execve that succeeds closes the close-on-exec pipe unread: that reports
    ("exited", code).
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns into pytest
        os.close(r)
        _child(w, action, grants)
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        return ("exited", os.waitstatus_to_exitcode(status))
    outcome: tuple[str, Any] = pickle.loads(data)
    return outcome


def _child(w: int, action: Callable[[], object], grants: dict[str, Any]) -> None:
    try:
        signal.alarm(30)  # a hung child dies instead of hanging the suite
        outcome: tuple[str, Any]
        try:
            if grants:
                restrict(**{"read": (), "write": (), "execute": (), **grants})
            outcome = ("ok", action())
        except OSError as exc:
            outcome = ("errno", exc.errno)
        except BaseException as exc:
            outcome = ("error", repr(exc))
        os.write(w, pickle.dumps(outcome))
    finally:
        os._exit(0)


def refused(action: Callable[[], object], expected: tuple[str, Any], **grants: Any) -> None:
    """The restricted attempt is refused; then the same attempt works without Landlock."""
    assert in_child(action, **grants) == expected
    assert in_child(action)[0] == "ok", "the control attempt must work without Landlock"


def read(path: Path) -> Callable[[], bytes]:
    return path.read_bytes


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """ro/ (read grant), rw/ and rw2/ (write grants), out/ (no grant) with canaries."""
    for name in ("ro", "rw", "rw2", "out", "out/sub"):
        (tmp_path / name).mkdir()
    (tmp_path / "ro" / "data.txt").write_text("public")
    (tmp_path / "rw" / "file.txt").write_text("mine")
    (tmp_path / "out" / "secret.txt").write_text("secret")
    return tmp_path


def grants_for(tree: Path) -> dict[str, Any]:
    return {"read": [str(tree / "ro")], "write": [str(tree / "rw"), str(tree / "rw2")]}


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server


def port_of(server: socket.socket) -> int:
    port: int = server.getsockname()[1]
    return port


# --- ABI and report ------------------------------------------------------------------


def test_abi_is_7_on_this_machine() -> None:
    # shared/notes/sandbox.md: kernel 6.18, Landlock ABI 7.
    assert landlock.abi_version() == 7


def test_report_and_describe(tree: Path) -> None:
    outcome = in_child(lambda: restrict(read=[str(tree / "ro")], write=[], execute=[]))
    assert outcome[0] == "ok"
    report: Report = outcome[1]
    st = (tree / "ro").stat()
    ruled = ((str(tree / "ro"), st.st_dev, st.st_ino, 0b1100),)  # read_file | read_dir
    assert report == Report(7, 0xFFFF, True, ("abstract_unix_socket", "signal"), 1, (), ruled)
    text = "\n".join(report.describe())
    assert "ABI 7" in text
    assert "abstract_unix_socket" in text
    assert "signal" in text


def test_describe_without_scope(tree: Path) -> None:
    outcome = in_child(lambda: restrict(read=[], write=[], execute=[], scope=False))
    assert outcome[0] == "ok"
    assert outcome[1].scoped == ()
    assert "scoped: none (disabled)" in outcome[1].describe()


@pytest.mark.parametrize("abi", range(1, 10))
def test_masks_follow_the_abi(abi: int) -> None:
    fs, net, scoped = landlock._handled(abi, scope=True)
    expected_fs = 0x1FFF  # ABI 1: execute .. make_sym
    expected_fs |= (1 << 13) if abi >= 2 else 0  # refer
    expected_fs |= (1 << 14) if abi >= 3 else 0  # truncate
    expected_fs |= (1 << 15) if abi >= 5 else 0  # ioctl_dev
    assert fs == expected_fs
    assert net == (0b11 if abi >= 4 else 0)
    assert scoped == (0b11 if abi >= 6 else 0)
    assert landlock._handled(abi, scope=False)[2] == 0
    report = Report(abi, fs, bool(net), (), 0)
    assert f"Landlock ABI {abi}" in report.describe()[0]


def test_sets_no_new_privs(tree: Path) -> None:
    def nnp() -> int:
        value: int = ctypes.CDLL(None).prctl(39, 0, 0, 0, 0)  # PR_GET_NO_NEW_PRIVS
        return value

    assert in_child(nnp, **grants_for(tree)) == ("ok", 1)


# --- reading -------------------------------------------------------------------------


def test_read_grant_reads(tree: Path) -> None:
    assert in_child(read(tree / "ro" / "data.txt"), **grants_for(tree)) == ("ok", b"public")
    assert in_child(lambda: os.listdir(tree / "ro"), **grants_for(tree)) == ("ok", ["data.txt"])


def test_read_outside_every_grant_refused(tree: Path) -> None:
    refused(read(tree / "out" / "secret.txt"), EACCES, **grants_for(tree))
    refused(lambda: os.listdir(tree / "out"), EACCES, **grants_for(tree))


# --- writing -------------------------------------------------------------------------


def _create(d: Path) -> None:
    (d / "new.txt").write_text("x")


def _overwrite(d: Path) -> None:
    with open(d / "victim.txt", "r+b") as f:
        f.write(b"y")


def _truncate(d: Path) -> None:
    os.truncate(d / "victim.txt", 0)


def _rename(d: Path) -> None:
    os.rename(d / "victim.txt", d / "renamed.txt")


def _unlink(d: Path) -> None:
    os.unlink(d / "victim.txt")


def _mkdir(d: Path) -> None:
    os.mkdir(d / "newdir")


def _rmdir(d: Path) -> None:
    os.rmdir(d / "emptydir")


def _symlink(d: Path) -> None:
    os.symlink("victim.txt", d / "link")


def _mkfifo(d: Path) -> None:
    os.mkfifo(d / "fifo")


WRITES = [_create, _overwrite, _truncate, _rename, _unlink, _mkdir, _rmdir, _symlink, _mkfifo]


def _target(tree: Path, where: str) -> Path:
    d = tree / where
    (d / "victim.txt").write_text("keep")
    (d / "emptydir").mkdir()
    return d


@pytest.mark.parametrize("op", WRITES, ids=lambda op: op.__name__.strip("_"))
def test_write_grant_allows(tree: Path, op: Callable[[Path], None]) -> None:
    d = _target(tree, "rw")
    assert in_child(lambda: op(d), **grants_for(tree)) == OK


@pytest.mark.parametrize("where", ["out", "ro"], ids=["ungranted", "read-granted"])
@pytest.mark.parametrize("op", WRITES, ids=lambda op: op.__name__.strip("_"))
def test_write_outside_write_grant_refused(
    tree: Path, op: Callable[[Path], None], where: str
) -> None:
    d = _target(tree, where)
    refused(lambda: op(d), EACCES, **grants_for(tree))


def test_rename_across_write_grants_allowed(tree: Path) -> None:
    # REFER is granted on both hierarchies, and they carry the same rights.
    move = lambda: os.rename(tree / "rw" / "file.txt", tree / "rw2" / "file.txt")  # noqa: E731
    assert in_child(move, **grants_for(tree)) == OK


def test_rename_out_of_write_grant_refused(tree: Path) -> None:
    # Reparenting into out/ would escape the grant: REFER (and MAKE_REG) are missing
    # there, and EACCES prevails over EXDEV.
    move = lambda: os.rename(tree / "rw" / "file.txt", tree / "out" / "file.txt")  # noqa: E731
    refused(move, EACCES, **grants_for(tree))


def test_link_out_of_write_grant_refused(tree: Path) -> None:
    link = lambda: os.link(tree / "rw" / "file.txt", tree / "out" / "hard.txt")  # noqa: E731
    refused(link, EACCES, **grants_for(tree))


# --- file grants and missing grants --------------------------------------------------


def test_file_grant_covers_that_file_only(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    for name in ("one.txt", "two.txt", "log.txt"):
        (files / name).write_text(name)
    grants = {"read": [str(files / "one.txt")], "write": [str(files / "log.txt")]}

    assert in_child(read(files / "one.txt"), **grants) == ("ok", b"one.txt")
    append = lambda: (files / "log.txt").open("a").write("more")  # noqa: E731
    assert in_child(append, **grants) == ("ok", 4)
    refused(read(files / "two.txt"), EACCES, **grants)
    refused(lambda: os.listdir(files), EACCES, **grants)
    refused(lambda: (files / "new.txt").write_text("x"), EACCES, **grants)


def test_missing_grant_is_skipped(tree: Path) -> None:
    missing = str(tree / "missing")
    dangling = tree / "dangling"
    dangling.symlink_to(tree / "nowhere")

    def act() -> tuple[Report, bytes]:
        report = restrict(read=[missing, str(dangling), str(tree / "ro")], write=[], execute=[])
        return report, (tree / "ro" / "data.txt").read_bytes()

    kind, (report, data) = in_child(act)
    assert kind == "ok"
    assert data == b"public"
    assert report.skipped == (missing, str(dangling))
    assert report.rules == 1
    assert any(missing in line for line in report.describe())


def test_unopenable_grant_names_call_errno_and_path(tree: Path) -> None:
    loop = tree / "loop"
    loop.symlink_to(loop)

    def act() -> tuple[str, int, str, str, bytes]:
        try:
            restrict(read=[str(loop)], write=[], execute=[])
        except LandlockError as exc:
            # The failure comes before restrict_self: the child is still unrestricted.
            secret = (tree / "out" / "secret.txt").read_bytes()
            return exc.call, exc.errno, exc.path, str(exc), secret
        raise AssertionError("restrict accepted a symlink loop")

    kind, (call, err, path, text, secret) = in_child(act)
    assert (kind, call, err, path, secret) == ("ok", "open", errno.ELOOP, str(loop), b"secret")
    assert "ELOOP" in text
    assert str(loop) in text


def test_bad_port_refused_before_any_syscall(tree: Path) -> None:
    def act() -> str:
        try:
            restrict(read=[], write=[], execute=[], tcp_connect=[70000])
        except LandlockError as exc:
            (tree / "out" / "secret.txt").read_bytes()  # still unrestricted
            return str(exc)
        raise AssertionError("restrict accepted port 70000")

    kind, text = in_child(act)
    assert kind == "ok"
    assert "70000" in text


# --- executing -----------------------------------------------------------------------


@pytest.fixture
def binaries(tmp_path: Path) -> tuple[Path, Path]:
    """tmp/bin/true (to be granted execute) and tmp/other/true (not granted)."""
    true = shutil.which("true") or "/bin/true"
    granted, other = tmp_path / "bin" / "true", tmp_path / "other" / "true"
    for path in (granted, other):
        path.parent.mkdir()
        shutil.copy2(true, path)
    return granted, other


def execv(path: Path) -> Callable[[], None]:
    return lambda: os.execv(path, [str(path)])


def test_execute_grant_runs(binaries: tuple[Path, Path]) -> None:
    granted, _ = binaries
    grants = {"execute": [str(granted.parent), *SYSTEM_RUNTIME]}
    assert in_child(execv(granted), **grants) == ("exited", 0)


def test_execute_outside_grant_refused(binaries: tuple[Path, Path]) -> None:
    granted, other = binaries
    for grants in (
        {"execute": [str(granted.parent), *SYSTEM_RUNTIME]},
        # A read grant does not let a file run.
        {"execute": SYSTEM_RUNTIME, "read": [str(other.parent)]},
    ):
        assert in_child(execv(other), **grants) == EACCES
    assert in_child(execv(other)) == ("exited", 0)


# --- TCP -----------------------------------------------------------------------------


def connect(port: int) -> Callable[[], None]:
    # Not socket.create_connection: it imports encodings.idna lazily, which the
    # restricted child may not read.
    def act() -> None:
        with socket.socket() as s:
            s.settimeout(10)
            s.connect(("127.0.0.1", port))

    return act


def bind(port: int) -> Callable[[], None]:
    def act() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))

    return act


def test_tcp_connect_to_granted_port_only(listener: socket.socket) -> None:
    with socket.create_server(("127.0.0.1", 0)) as other:
        grants = {"tcp_connect": [port_of(listener)]}
        assert in_child(connect(port_of(listener)), **grants) == OK
        refused(connect(port_of(other)), EACCES, **grants)


def test_tcp_connect_refused_without_ports(listener: socket.socket) -> None:
    refused(connect(port_of(listener)), EACCES, read=[])


def test_tcp_bind_refused_unless_granted() -> None:
    # Port 0 asks for an ephemeral port; Landlock checks it as port 0.
    refused(bind(0), EACCES, read=[])
    refused(bind(0), EACCES, tcp_connect=[0])
    assert in_child(bind(0), tcp_bind=[0]) == OK


# --- scopes --------------------------------------------------------------------------


def test_signal_outside_domain_refused() -> None:
    runner = os.getpid()
    probe = lambda: os.kill(runner, 0)  # noqa: E731 - signal 0: a harmless probe
    refused(probe, EPERM, read=[])
    assert in_child(probe, read=[], scope=False) == OK


def test_abstract_socket_outside_domain_refused(tmp_path: Path) -> None:
    name = f"\0mcpwrap-landlock-test-{os.getpid()}-{tmp_path.name}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(name)
        server.listen(8)

        def dial() -> None:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(name)

        refused(dial, EPERM, read=[])
        assert in_child(dial, read=[], scope=False) == OK


def test_tcp_false_leaves_tcp_alone(listener: socket.socket) -> None:
    """network = "host": the profile gave the server the network; Landlock must not take
    TCP away again (while still refusing it by default, as the test above shows)."""
    assert in_child(connect(port_of(listener)), read=[], tcp=False) == OK
