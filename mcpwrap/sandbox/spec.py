"""What goes into the jail: the spec the trampoline applies, computed on the host side.

Inside, paths keep their host names. The new root holds read-only binds of the system's
runtime directories, an allowlist of /etc, the server's own runtime (its executable's
install prefix, a venv's base interpreter, directories that .pth files add, a Node
script's node_modules), the profile's `read` and `write` grants, a private /tmp holding
HOME, a fresh /proc and a minimal /dev. Nothing else of the host is there: not $HOME,
not /run, not other users' files, not the sockets of host services.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from mcpwrap.basics.programs import which
from mcpwrap.config.profile import JailKind, Network, Profile
from mcpwrap.supply.entrypoints import node_modules_of, script_of

_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC = (
    "passwd",
    "group",
    "hosts",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "protocols",
    "services",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "alternatives",
    "os-release",
    "mime.types",
    "debian_version",
)
# Files no server may change whatever the profile grants (ARCHITECTURE.md): relative to
# the project root, or to the home directory.
PROTECTED_IN_PROJECT = (
    ".mcpwrap",
    ".git/hooks",
    ".git/config",
    ".mcp.json",
    ".cursor",
    ".vscode",
    ".claude",
    ".envrc",
)
_PROTECTED_IN_HOME = (
    ".bashrc",
    ".bash_profile",
    ".bash_login",
    ".profile",
    ".zshrc",
    ".zprofile",
    ".zshenv",
    ".config/fish",
    ".claude.json",
    ".claude",
    ".cursor",
    ".config/Claude",
    ".config/Code/User",
    ".ssh",
    ".gitconfig",
    ".config/git",
    ".config/mcpwrap",
    ".local/state/mcpwrap",
    ".cache/mcpwrap",  # the store of locked npx/uvx packages
)
HOME_INSIDE = "/tmp/home"


def build(
    profile: Profile,
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: str,
    *,
    state_dir: str,
    bytecode: str | None = None,
) -> dict[str, Any]:
    """The trampoline's spec: a JSON-ready dict. `bytecode`: a uv install's compiled byte
    code (bytecode.py), bound read-only and protected like the state dir: no write grant
    can reach into it."""
    exe = _which(argv[0], env.get("PATH", ""))
    runtime = sorted(set(_runtime_dirs([exe, *script_of(exe, argv[1:])], cwd)))
    binds = _system_binds() + [[d, "rx"] for d in runtime if not _covered(d)]
    _refuse_whole_host(profile)
    binds += [[p, "ro"] for p in profile.sandbox.read if os.path.exists(p)]
    binds += [[bytecode, "ro"]] if bytecode else []
    binds += [[p, "rw"] for p in profile.sandbox.write if os.path.exists(p)]
    protect = protected_paths(profile, state_dir) + ([bytecode] if bytecode else [])
    kind = profile.sandbox.jail
    writable = [p for p, m in binds if m == "rw"]
    full = kind is not JailKind.REDUCED
    guard = guard_protected(writable, protect, profile.source) if full else Guard((), {}, ())
    inside_env = {**env, "HOME": HOME_INSIDE, "TMPDIR": "/tmp"}
    return {
        "jail": kind.value,
        "reduced": None if kind is JailKind.FULL else _reduced(profile, binds, protect),
        "parent": os.getpid(),
        "uid": os.getuid(),
        "gid": os.getgid(),
        "exe": exe,
        "argv": list(argv),
        "env": inside_env,
        "cwd": cwd,
        "binds": _dedupe(binds),
        "protect": protect,
        "pins": list(guard.pins),
        "sealed": {d: list(p) for d, p in guard.sealed.items()},
        "rlimits": rlimits(profile),
        "landlock": _landlock_grants(binds, guard),
        "seccomp": profile.sandbox.syscalls.value,
        "seccomp_cache": os.path.join(state_dir, "cache"),
        "host_network": profile.sandbox.network is Network.HOST,
        "egress": _egress(profile),
    }


_DEVICES_RW = ("/dev/null", "/dev/zero", "/dev/full")
_DEVICES_RO = ("/dev/random", "/dev/urandom")


def _reduced(profile: Profile, binds: list[list[str]], protect: list[str]) -> dict[str, Any]:
    """What the reduced jail (no namespaces: sandbox/reduced.py) applies instead of the new
    root: the same paths as Landlock rules on the host's own tree. Protected paths cannot be
    pinned or bound read-only without a mount, so every directory from a write grant down
    to a protected path is sealed (read-only to the server; mcpwrap's broker makes, renames
    and removes the other names there), and the private HOME and TMPDIR live in a per-run
    directory the jail makes (and its supervisor removes)."""
    writable = [p for p, m in binds if m == "rw"]
    guard = guard_protected(writable, protect, profile.source, seal_all=True)
    network = profile.sandbox.network
    return {
        "landlock": {
            "read": ["/proc", *_DEVICES_RO, *(p for p, m in binds if m == "ro")],
            "execute": [p for p, m in binds if m == "rx"],
            "write": [
                *_DEVICES_RW,
                *(p for p in writable if p not in guard.sealed),
                *guard.unsealed,
            ],
            "seal": list(guard.sealed),
        },
        "sealed": {d: list(p) for d, p in guard.sealed.items()},
        "seccomp_net": {Network.NONE: "none", Network.ALLOWLIST: "stream"}.get(network, "any"),
        "private_base": _private_base(),
    }


def _private_base() -> str:
    """Where the reduced jail makes its per-run directory: the user's runtime directory
    (a tmpfs of its own, 0700) when there is one, else /tmp."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime.startswith("/") and os.path.isdir(runtime) and os.access(runtime, os.W_OK):
        return runtime
    return "/tmp"


def _refuse_whole_host(profile: Profile) -> None:
    """A grant of / would put every file of the host back into the new root: no jail."""
    for kind, grants in (("read", profile.sandbox.read), ("write", profile.sandbox.write)):
        if "/" in grants:
            from mcpwrap.sandbox.launch import LaunchError

            raise LaunchError(
                f"{profile.source}: [sandbox] {kind} grants /, the whole filesystem of the "
                "host: the jail would hide nothing. Grant the directories the server needs "
                "(a {project}-relative path, or an absolute one below /)"
            )


def _egress(profile: Profile) -> dict[str, Any] | None:
    """With network = "allowlist": the tcp: forwards the jail listens at (the proxies it
    always binds). The fd to send the listeners on is added by launch.start_jailed."""
    if profile.sandbox.network is not Network.ALLOWLIST:
        return None
    from mcpwrap.policy import network as netpolicy

    forwards = netpolicy.forwards(netpolicy.entries(profile))
    for address, port in forwards:
        if ":" in address and address != "::1":
            from mcpwrap.sandbox.launch import LaunchError

            raise LaunchError(
                f"{profile.source}: egress tcp:[{address}]:{port}: a forward inside the jail "
                "needs an IPv4 address or [::1]"
            )
    from mcpwrap.sandbox.proxyauth import new_secret

    # The reduced jail's proxies listen on the host's loopback, where any local process
    # could reach them: they then ask for this run's secret, which the server is given in
    # its proxy URLs (proxyauth.py). The full jail's live in its own namespace.
    return {"forwards": [list(f) for f in forwards], "secret": new_secret()}


def _which(program: str, path: str) -> str:
    found = which(program, path=path) if "/" not in program else program
    if found is None or not os.path.exists(found):
        from mcpwrap.sandbox.launch import LaunchError

        raise LaunchError(f"cannot start the server: {program!r} is not found on PATH ({path})")
    return os.path.abspath(found)


def _system_binds() -> list[list[str]]:
    binds: list[list[str]] = []
    for path in _SYSTEM:
        if os.path.islink(path):
            binds.append([path, "link"])
        elif os.path.isdir(path):
            binds.append([path, "rx"])
    for name in _ETC:
        path = f"/etc/{name}"
        if os.path.islink(path) and name == "os-release":
            binds.append([path, "link"])
        elif os.path.exists(path):
            binds.append([path, "ro"])
    return binds


def _runtime_dirs(args: Iterable[str], cwd: str) -> Iterable[str]:
    """Install trees the command needs: for the executable and its script, the prefix,
    the prefix of what it links to, a venv's base and .pth paths, and the node_modules
    it lives in."""
    for arg in args:
        path = arg if os.path.isabs(arg) else os.path.join(cwd, arg)
        if not arg or arg.startswith("-") or not os.path.isfile(path):
            continue
        for candidate in {os.path.abspath(path), os.path.realpath(path)}:
            yield _prefix(candidate)
            yield from node_modules_of(candidate)
            yield from _interpreter_of(candidate)
        yield from _venv_paths(os.path.abspath(path))


def _prefix(path: str) -> str:
    parent = os.path.dirname(path)
    return os.path.dirname(parent) if os.path.basename(parent) == "bin" else parent


def _interpreter_of(path: str) -> Iterable[str]:
    """A script's #! interpreter, through `env` too."""
    try:
        with open(path, "rb") as f:
            first = f.readline(256)
    except OSError:
        return
    if not first.startswith(b"#!"):
        return
    words = first[2:].decode(errors="replace").split()
    if words and os.path.basename(words[0]) == "env" and len(words) > 1:
        words = [which(words[1]) or words[1]]
    if words and os.path.isabs(words[0]) and os.path.exists(words[0]):
        yield _prefix(os.path.realpath(words[0]))


def _venv_paths(exe: str) -> Iterable[str]:
    venv = _prefix(exe)
    if not os.path.isfile(os.path.join(venv, "pyvenv.cfg")):
        return
    yield venv
    # The interpreter the venv runs on: a console script may start it through an sh
    # trampoline (uv writes one when the #! line would be too long), not a #! line.
    python = os.path.join(venv, "bin", "python")
    if os.path.exists(python):
        yield _prefix(os.path.realpath(python))
    for pth in glob.glob(os.path.join(venv, "lib", "python*", "site-packages", "*.pth")):
        with open(pth, encoding="utf-8", errors="replace") as f:
            for raw in f:
                line = raw.strip()
                if line.startswith("/") and os.path.isdir(line):
                    yield line


def _covered(path: str) -> bool:
    return any(path == s or path.startswith(s + "/") for s in _SYSTEM) or path in ("/", "")


def _dedupe(binds: list[list[str]]) -> list[list[str]]:
    """One entry per path; the widest mode wins (rw over rx over ro)."""
    rank = {"link": 0, "ro": 1, "rx": 2, "rw": 3}
    best: dict[str, str] = {}
    for path, mode in binds:
        if path not in best or rank[mode] > rank[best[path]]:
            best[path] = mode
    return [[p, m] for p, m in best.items()]


def protected_paths(profile: Profile, state_dir: str) -> list[str]:
    home = os.path.expanduser("~")
    paths = [profile.source, os.path.splitext(profile.source)[0] + ".lock"]
    paths += [os.path.join(profile.project, p) for p in PROTECTED_IN_PROJECT]
    paths += [os.path.join(home, p) for p in _PROTECTED_IN_HOME]
    paths += [state_dir, profile.audit.path]
    return [p for p in paths if p.startswith("/")]


def rlimits(profile: Profile) -> dict[str, int]:
    """Soft = hard. Memory is RLIMIT_DATA, not RLIMIT_AS: V8, Go and the JVM reserve large
    address ranges they never touch, and RLIMIT_DATA counts only writable private memory."""
    sandbox = profile.sandbox
    limits = {"RLIMIT_CORE": 0}
    for name, value in (
        ("RLIMIT_DATA", sandbox.memory),
        ("RLIMIT_NPROC", sandbox.processes),
        ("RLIMIT_NOFILE", sandbox.open_files),
        ("RLIMIT_FSIZE", sandbox.file_size),
    ):
        if value is not None:
            limits[name] = int(value)
    if sandbox.cpu is not None:
        limits["RLIMIT_CPU"] = max(1, int(sandbox.cpu))
    return limits


_PRIVATE_WRITES = ("/tmp", "/dev/null", "/dev/zero", "/dev/full", "/dev/shm")


def _landlock_grants(binds: list[list[str]], guard: Guard) -> dict[str, list[str]]:
    read = ["/proc", "/dev"] + [p for p, m in binds if m == "ro"]
    execute = [p for p, m in binds if m == "rx"]
    write = list(_PRIVATE_WRITES)
    write += [p for p, m in binds if m == "rw" and p not in guard.sealed]
    write += guard.unsealed
    return {"read": read, "execute": execute, "write": write, "seal": list(guard.sealed)}


class Guard(NamedTuple):
    """How the jail keeps protected paths out of reach under a write grant that covers them.

    pins: existing directories between a write grant and an existing protected path. Each
    is bound onto itself: a mount point cannot be renamed or removed (EBUSY), so the server
    cannot move `.git` aside and plant a fresh `.git/hooks` in its place.

    sealed: existing directories in which a protected path that does not exist yet would be
    created (the project root for a missing `.mcp.json`), each with those paths. No mount
    can cover a name that does not exist without creating it on the host, so Landlock
    withholds the make rights there: existing entries can still be written, truncated and
    removed, and new names are made only by mcpwrap's seal broker (sandbox/broker.py),
    which refuses the protected ones. Landlock rights inherit downwards, so every directory
    from the write grant down to the one that needs it is sealed, and unsealed lists their
    other entries, which keep the full grant.
    """

    pins: tuple[str, ...]
    sealed: dict[str, tuple[str, ...]]
    unsealed: tuple[str, ...]


def guard_protected(
    write: Sequence[str], protect: Sequence[str], source: str, *, seal_all: bool = False
) -> Guard:
    """The pins and seals that keep `protect` read-only under the `write` grants. With
    seal_all (the reduced jail, which has no mounts): no pins, every chain sealed, and the
    protected entries of sealed directories left out of `unsealed`."""
    protected = set(protect)
    grants = sorted({w for w in write if os.path.isdir(w)}, key=len)
    pins: list[str] = []
    sealed: dict[str, list[str]] = {}
    for path in protect:
        for grant in grants:
            if grant == path or grant.startswith(path + "/"):
                _refuse_inside(grant, path, source)
        outer = next((g for g in grants if path.startswith(g.rstrip("/") + "/")), None)
        if outer is None:
            continue
        chain, missing = _walk(outer, path, protected)
        if (missing or seal_all) and chain:
            for directory in chain:
                sealed.setdefault(directory, [])
            sealed[chain[-1]].append(path)
        elif chain:
            pins += chain[1:]
    for directory in sealed:
        for private in () if seal_all else _PRIVATE_WRITES:
            if directory.startswith(private.rstrip("/") + "/"):
                _refuse_unsealable(directory, sealed, private)
    left_out = set(sealed) | (protected if seal_all else set())
    unsealed = tuple(e for d in sealed for e in _entries(d) if e not in left_out)
    return Guard(tuple(dict.fromkeys(pins)), {d: tuple(p) for d, p in sealed.items()}, unsealed)


def _walk(grant: str, path: str, protected: set[str]) -> tuple[list[str], bool]:
    """(the existing directories from grant down towards path, whether path is missing).
    A symlink or a file where a directory belongs counts as missing: the server could
    remove it and create the real thing. An existing protected directory on the way
    (`.mcpwrap/` above a lock file not written yet) is read-only already: empty chain."""
    chain = [grant]
    parts = path[len(grant.rstrip("/")) + 1 :].split("/")
    current = grant.rstrip("/")
    for i, part in enumerate(parts):
        current = f"{current}/{part}"
        if os.path.islink(current) or not os.path.lexists(current):
            return chain, True
        if i == len(parts) - 1:
            return chain, False
        if not os.path.isdir(current):
            return chain, True
        if current in protected:
            return [], False
        chain.append(current)
    return chain, False


def _entries(directory: str) -> list[str]:
    """A sealed directory's real files and directories. Symlinks are left out: a rule is
    set on what a path resolves to, and a link back to the sealed directory would unseal it."""
    try:
        with os.scandir(directory) as it:
            return [
                e.path
                for e in it
                if e.is_dir(follow_symlinks=False) or e.is_file(follow_symlinks=False)
            ]
    except OSError:
        return []


def _refuse_inside(grant: str, path: str, source: str) -> None:
    from mcpwrap.sandbox.launch import LaunchError

    raise LaunchError(
        f"{source}: [sandbox] write grant {grant} is inside {path}, which no server may "
        "change: remove the grant (mcpwrap keeps that path read-only whatever the profile "
        "says)"
    )


def _refuse_unsealable(directory: str, sealed: dict[str, list[str]], private: str) -> None:
    from mcpwrap.sandbox.launch import LaunchError

    missing = sorted({p for paths in sealed.values() for p in paths})
    raise LaunchError(
        f"cannot keep {', '.join(missing)} from being created: {directory} lies under the "
        f"jail's private {private}, whose rights Landlock would pass down to it. Create "
        "those paths yourself before the run, move the project out of "
        f"{private}, or grant write on subdirectories only"
    )
