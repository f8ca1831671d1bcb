"""`mcpwrap doctor`: can this machine apply every layer of the jail, and did the last run?

Each layer is probed on its own (in a child process, so nothing sticks to mcpwrap), then
the whole jail is started once around /bin/true. A profile, when given, says which
layers it needs, and the audit log says what its last run applied.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TextIO

from mcpwrap.config import paths
from mcpwrap.config.profile import Profile


class Check(NamedTuple):
    layer: str
    ok: bool
    detail: str
    fix: str = ""


def run_doctor(profile: Profile | None, out: TextIO = sys.stdout) -> int:
    out.write(
        f"mcpwrap doctor: Linux {platform.release()}, Python {platform.python_version()}, "
        f"uid {os.getuid()}\n"
    )
    if profile is not None and profile.server.remote is not None:
        return _remote_doctor(profile, out)
    checks = [probe() for probe in _PROBES]
    checks.append(
        _end_to_end()
        if all(c.ok for c in checks)
        else Check("jail end to end", False, "not tried: a layer above is missing")
    )
    _write_checks(checks, out)
    namespaces = next(c for c in checks if c.layer == "namespaces").ok
    if not namespaces:
        from mcpwrap.sandbox import usernsfix

        if any(r.kind == "apparmor" for r in usernsfix.restrictions(usernsfix.read_facts())):
            usernsfix.apparmor_advice(out)
    if not namespaces or (profile is not None and profile.sandbox.jail.value != "full"):
        reduced_account(out)
    if profile is not None:
        _profile_report(profile, out)
        mine = [_project(profile)]
        if profile.sandbox.enforce and all(c.ok for c in checks + mine):
            mine.append(_profile_jail(profile))
        _write_checks(mine, out)
        checks += mine
    return 0 if all(c.ok for c in checks) else 1


def _remote_doctor(profile: Profile, out: TextIO) -> int:
    """A remote server's profile: the jail's layers do not apply (nothing runs here); what
    does is the URL, the host's name and the TLS verification `run` makes."""
    spec = profile.server.remote
    assert spec is not None
    out.write(f"\nprofile {paths.profile_arg(profile.source)} ({profile.source}):\n")
    lock, spki = _remote_lock(profile, spec)
    if spki and not spec.tls.pins:  # `run` checks the lock's pins then: so does doctor
        spec = spec._replace(tls=spec.tls._replace(pins=spki))
    checks = [*remote_checks(spec), lock]
    _write_checks(checks, out)
    out.write(f"  last run: {_last_run(profile)}\n")
    return 0 if all(c.ok for c in checks) else 1


def _remote_lock(profile: Profile, spec: Any) -> tuple[Check, tuple[str, ...]]:
    """What the profile's lock pins for the remote server, and its key pins."""
    from mcpwrap.basics.errors import LockError
    from mcpwrap.supply import pins

    path = paths.find_lock(profile.source, paths.served(profile))
    name = paths.profile_arg(profile.source)
    if not os.path.exists(path):
        detail = f"none: its tools and key are not pinned (`mcpwrap lock --profile {name}`)"
        return Check("lock", True, detail), ()
    try:
        lock = pins.load(path, name)
    except LockError as exc:
        return Check("lock", False, str(exc)), ()
    if lock is None or lock.remote is None:
        return Check("lock", False, f"{path} is the lock of a command, not of this URL"), ()
    if spec.url and lock.remote.url != spec.url:
        return Check(
            "lock",
            False,
            f"{path} is for {lock.remote.url}, not {spec.url}: `run` refuses to connect",
            f"mcpwrap lock --profile {name}",
        ), ()
    key = f"the key {', '.join(lock.remote.spki)}" if lock.remote.spki else "no key (plain http)"
    detail = f"{path}: {len(lock.tools)} tools and {key}, for {lock.remote.url}"
    return Check("lock", True, detail), tuple(lock.remote.spki)


def remote_checks(spec: Any) -> list[Check]:
    """The URL check, name resolution and one verified TLS handshake (tlsclient.fetch_pin,
    with the profile's [server.tls]), and the jail that is not there by design."""
    from urllib.parse import urlsplit

    from mcpwrap.config.remote import url_problem

    jail = Check(
        "jail",
        True,
        "none, by design: a remote server runs on its own host; mcpwrap checks, shapes and "
        "audits every message, and verifies the peer",
    )
    if not spec.url:
        detail = "the profile names no [server] url: `run -- URL` gives it, so it is not checked"
        return [Check("URL", True, detail), jail]
    problem = url_problem(spec.url)
    if problem is not None:
        return [Check("URL", False, problem, "fix [server] url"), jail]
    parts = urlsplit(spec.url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    checks = [Check("URL", True, f"{spec.url} (transport {spec.transport})")]
    checks.append(_resolves(host, port))
    if checks[-1].ok:
        checks.append(_tls(spec))
    return [*checks, jail]


def _resolves(host: str, port: int) -> Check:
    import socket

    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return Check(
            "host resolves",
            False,
            f"{host} does not resolve ({exc})",
            "check the URL's host name, and this machine's DNS and network",
        )
    addresses = ", ".join(dict.fromkeys(str(info[4][0]) for info in found))
    return Check("host resolves", True, f"{host}: {addresses}")


def _tls(spec: Any) -> Check:
    """One handshake verified as `run` verifies it: the CA ([server.tls] ca, else the
    system store), the host name, TLS 1.2+, the client certificate; then the pins."""
    if not spec.url.lower().startswith("https://"):
        return Check("TLS", True, "none: plain http, allowed to this machine (loopback) only")
    import anyio

    from mcpwrap.identity.tlsclient import TlsRefused, TlsSettings, fetch_pin

    t = spec.tls
    tls = TlsSettings(ca_file=t.ca, client_cert=t.client_cert, client_key=t.client_key, pins=())
    trust = f"the CA in {t.ca}" if t.ca else "the system trust store"
    try:
        pin = anyio.run(fetch_pin, spec.url, tls)
    except TlsRefused as exc:
        return Check("TLS", False, str(exc), "see the message; [server.tls] in mcpwrap-profile(5)")
    except Exception as exc:  # the keyring, a file: said as it is
        return Check("TLS", False, f"{type(exc).__name__}: {exc}")
    if t.pins and pin not in t.pins:
        return Check(
            "TLS",
            False,
            f"verified against {trust}, but the server's key pin is {pin}, and only "
            f"{', '.join(t.pins)} are accepted ([server.tls] pins, else the lock's): `run` "
            "refuses to connect",
            "if the operator replaced the key: `mcpwrap approve`, or the new pin in "
            "[server.tls] pins where the profile names them",
        )
    mtls = ", our client certificate offered" if t.client_cert else ""
    pinned = ", the pin matches" if t.pins else ""
    return Check("TLS", True, f"verified against {trust}{mtls}{pinned}; the server's pin: {pin}")


def reduced_account(out: TextIO) -> None:
    """What the reduced jail holds on this kernel and what is weaker (sandbox/account.py,
    the same account as the README's and `check`'s)."""
    from mcpwrap.sandbox import account, landlock

    abi = landlock.abi_version()
    out.write(
        '\nthe reduced jail (no namespaces), which [sandbox] jail = "any" accepts where '
        f"user namespaces cannot be had; on this kernel (Landlock ABI {abi}):\n"
    )
    for line in account.lines(abi):
        out.write(f"  {line}\n")


def _write_checks(checks: list[Check], out: TextIO) -> None:
    for check in checks:
        mark = "ok  " if check.ok else "FAIL"
        out.write(f"  {mark} {check.layer:18} {check.detail}\n")
        if check.fix:
            out.write(f"       {'':18} to fix: {check.fix}\n")


def _in_child(fn: Callable[[], str]) -> tuple[bool, str]:
    """Run fn in a forked child: (True, its text) or (False, the error)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            result = {"ok": True, "text": fn()}
        except Exception as exc:
            result = {"ok": False, "text": str(exc)}
        os.write(w, json.dumps(result).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    result = json.loads(data) if data else {"ok": False, "text": "the probe died"}
    return bool(result["ok"]), str(result["text"])


def _user_namespaces() -> Check:
    """Created by the interpreter the jail's trampoline runs (the dedicated one, which an
    AppArmor profile may let through where /usr/bin/python3 is refused), in a process of
    its own."""
    from mcpwrap.sandbox import apparmor, kernel, launch, usernsfix

    exe = apparmor.trampoline_executable()
    flags = (
        kernel.CLONE_NEWUSER
        | kernel.CLONE_NEWNS
        | kernel.CLONE_NEWNET
        | kernel.CLONE_NEWPID
        | kernel.CLONE_NEWIPC
        | kernel.CLONE_NEWUTS
    )
    code = (
        "import sys; sys.path[:0] = sys.argv[1:]; from mcpwrap.sandbox import kernel; "
        f"kernel.unshare({flags})"
    )
    done = subprocess.run(
        [exe, "-I", "-S", "-B", "-c", code, *launch.trampoline_path()],
        capture_output=True,
        text=True,
        env={},
        check=False,
    )
    ok = done.returncode == 0
    last = (done.stderr.strip().splitlines() or ["the probe died"])[-1]
    # success, or the traceback's last line without the exception's class
    text = (
        "user, mount, network, pid, ipc and uts namespaces can be created"
        if ok
        else last.partition("Error: ")[2] or last
    )
    dedicated = apparmor.places().executable
    unused = apparmor.copy_problem(dedicated) if os.path.exists(dedicated) else None
    found = usernsfix.restrictions(usernsfix.read_facts())
    return namespaces_check(ok, text, exe, found, unused)


def namespaces_check(
    ok: bool, text: str, exe: str, found: list[Any], unused: str | None = None
) -> Check:
    """The namespaces line: the probe's result (`text`, run by `exe`), what blocks user
    namespaces here (usernsfix.Restriction), and why an installed copy of the interpreter
    is not used (`unused`). Pure."""
    if ok:
        return Check("namespaces", True, f"{text} (by {exe})")
    why = [r.detail for r in found] + (
        [f"mcpwrap's own interpreter is installed but not used: {unused}"] if unused else []
    )
    fix = "; or ".join(r.fix for r in found) if found else _NAMESPACES_FIX
    return Check("namespaces", False, "; ".join([text, *why]), fix)


_NAMESPACES_FIX = (
    "enable unprivileged user namespaces: sysctl kernel.unprivileged_userns_clone=1, "
    "user.max_user_namespaces=10000; on Ubuntu 23.10+ `sudo mcpwrap doctor --fix` lets "
    "mcpwrap's jail alone use them through AppArmor"
)


def _landlock() -> Check:
    from mcpwrap.sandbox import landlock

    abi = landlock.abi_version()
    if abi <= 0:
        return Check(
            "Landlock",
            False,
            "the kernel has no Landlock",
            "a kernel 5.13+ with Landlock enabled (lsm=...,landlock on the command line)",
        )
    parts = ["filesystem"] + (["TCP ports"] if abi >= 4 else []) + (["scoping"] if abi >= 6 else [])
    return Check("Landlock", True, f"ABI {abi}: {', '.join(parts)}")


def _seccomp() -> Check:
    def probe() -> str:
        from mcpwrap.sandbox import seccomp

        prepared = seccomp.build("default")
        prepared.load()
        return "; ".join(prepared.describe()[:2]) or "filters load"

    ok, text = _in_child(probe)
    fix = "install libseccomp (Debian: apt install libseccomp2) and the pyseccomp package"
    return Check("seccomp", ok, text if ok else text[:200], "" if ok else fix)


_PROBES: tuple[Callable[[], Check], ...] = (_user_namespaces, _landlock, _seccomp)


def _end_to_end() -> Check:
    import tempfile

    from mcpwrap.config.profile import load_profile
    from mcpwrap.sandbox import launch, spec

    with tempfile.TemporaryDirectory(prefix="mcpwrap-doctor-") as tmp:
        path = os.path.join(tmp, "doctor.toml")
        with open(path, "w") as f:
            f.write("version = 1\n")
        profile = load_profile(path, state_dir=tmp)
        start = time.monotonic()
        try:
            child = launch.start_jailed(
                spec.build(profile, ["true"], {"PATH": "/usr/bin:/bin"}, tmp, state_dir=tmp)
            )
            child.wait_ready()
            status = child.process.wait(10)
        except launch.LaunchError as exc:
            return Check("jail end to end", False, str(exc))
    ms = (time.monotonic() - start) * 1000
    return Check(
        "jail end to end", status == 0, f"ran /bin/true in the jail in {ms:.0f} ms (exit {status})"
    )


def _project(profile: Profile) -> Check:
    """The project check `run` makes before anything starts."""
    from mcpwrap.config.project import refusal

    if not profile.uses_project:
        return Check("project", True, "the profile grants no {project}")
    why = refusal(profile.project)
    if why is None:
        return Check("project", True, profile.project)
    return Check(
        "project",
        False,
        f"the profile gives the server its project, and that would be {profile.project}: {why}",
        "--project DIR, or MCPWRAP_PROJECT (see `mcpwrap run --help`)",
    )


def _profile_jail(profile: Profile) -> Check:
    """The jail this profile's run builds (its grants, seals, Landlock rules and seccomp
    mode), started around /bin/true from here: a run's setup failure shows here too."""
    from mcpwrap.config import paths
    from mcpwrap.sandbox import launch, spec

    cwd = profile.working_dir()
    start = time.monotonic()
    try:
        jail = spec.build(
            profile, ["true"], {"PATH": "/usr/bin:/bin"}, cwd, state_dir=paths.state_dir()
        )
        child = launch.start_jailed(jail)
        child.wait_ready()
        status = child.process.wait(10)
    except launch.LaunchError as exc:
        return Check(
            "profile's jail",
            False,
            str(exc),
            "see the message; `mcpwrap check` lists the profile's findings",
        )
    ms = (time.monotonic() - start) * 1000
    return Check(
        "profile's jail", status == 0, f"its jail ran /bin/true in {ms:.0f} ms (exit {status})"
    )


def _profile_report(profile: Profile, out: TextIO) -> None:
    sandbox = profile.sandbox
    out.write(f"\nprofile {paths.profile_arg(profile.source)} ({profile.source}):\n")
    if not sandbox.enforce:
        out.write("  [sandbox] enforce = false: the server runs WITHOUT the jail\n")
    else:
        out.write(
            f"  needs: namespaces, Landlock, seccomp ({sandbox.syscalls.value}), "
            f"network {sandbox.network.value}\n"
        )
    out.write(f"  last run: {_last_run(profile)}\n")
    out.write(f"  lock: {_lock_state(profile)}\n")


def _lock_state(profile: Profile) -> str:
    """Whether the profile has a lock, what it pins, and whether this machine verified it
    (the files themselves are hashed by `run`)."""
    from mcpwrap.basics.errors import LockError
    from mcpwrap.supply import lockstate, pins, store

    path = paths.find_lock(profile.source, paths.served(profile))
    name = paths.profile_arg(profile.source)
    try:
        lock = pins.load(path, name)
    except LockError as exc:
        return f"does not load: {exc}"
    if lock is None:
        return f"none ({path}); `mcpwrap lock --profile {name}` pins its artifacts and tools"
    what = f"{lock.package} {lock.version}, " if lock.package else ""
    record = store.load_synced(store.root(), path)
    here = (
        "verified on this machine"
        if record is not None and record.lock_sha256 == lock.sha256
        else f"not verified on this machine: {lockstate.sync_command(name)}"
    )
    return f"{path}: {what}{len(lock.tools)} tools pinned; {here}"


def _last_run(profile: Profile) -> str:
    from mcpwrap.audit.read import iter_records

    last = None
    try:
        for _, record in iter_records(profile.audit.path, skip_bad=True):
            if (
                record.get("event") == "session"
                and record.get("decision") == "start"
                and record.get("server") == profile.name
            ):
                last = record
    except Exception as exc:
        return f"unknown ({exc})"
    if last is None:
        return f"none recorded in {profile.audit.path}"
    return f"{last.get('ts')}: sandbox {last.get('sandbox')}"
