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
import shutil
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mcpwrap.profile import Network, Profile

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
_PROTECTED_IN_PROJECT = (
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
)
HOME_INSIDE = "/tmp/home"


def build(
    profile: Profile, argv: Sequence[str], env: Mapping[str, str], cwd: str, *, state_dir: str
) -> dict[str, Any]:
    """The trampoline's spec: a JSON-ready dict."""
    if profile.sandbox.network is Network.ALLOWLIST:
        from mcpwrap.launch import LaunchError

        raise LaunchError(
            f'{profile.source}: [sandbox] network = "allowlist" needs the egress proxy of a '
            'later mcpwrap release; use network = "none" (no network) or "host" (unconfined) '
            "until then"
        )
    exe = _which(argv[0], env.get("PATH", ""))
    runtime = sorted(set(_runtime_dirs([exe, *_script(exe, argv[1:])], cwd)))
    binds = _system_binds() + [[d, "rx"] for d in runtime if not _covered(d)]
    binds += [[p, "ro"] for p in profile.sandbox.read if os.path.exists(p)]
    binds += [[p, "rw"] for p in profile.sandbox.write if os.path.exists(p)]
    inside_env = {**env, "HOME": HOME_INSIDE, "TMPDIR": "/tmp"}
    return {
        "parent": os.getpid(),
        "uid": os.getuid(),
        "gid": os.getgid(),
        "exe": exe,
        "argv": list(argv),
        "env": inside_env,
        "cwd": cwd,
        "binds": _dedupe(binds),
        "protect": protected_paths(profile, state_dir),
        "rlimits": rlimits(profile),
        "landlock": _landlock_grants(binds),
        "seccomp": profile.sandbox.syscalls.value,
        "seccomp_cache": os.path.join(state_dir, "cache"),
        "host_network": profile.sandbox.network is Network.HOST,
    }


def _which(program: str, path: str) -> str:
    found = shutil.which(program, path=path) if "/" not in program else program
    if found is None or not os.path.exists(found):
        from mcpwrap.launch import LaunchError

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


_INTERPRETERS = ("python", "node", "nodejs", "deno", "bun", "ruby", "perl", "php", "sh", "bash")


def _script(exe: str, args: Sequence[str]) -> list[str]:
    """An interpreter's script: its first argument that is not an option. Only the
    executable and this script bring their install trees in; any other file the command
    names (a config, a key) is the profile's to grant, never implied."""
    name = os.path.basename(os.path.realpath(exe))
    if not name.startswith(_INTERPRETERS):
        return []
    for i, arg in enumerate(args):
        if arg in ("-m", "-c", "-e", "--eval"):
            return []
        if not arg.startswith("-") and (
            i == 0 or args[i - 1] not in ("-W", "-X", "-r", "--require")
        ):
            return [arg]
    return []


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
            yield from _node_modules(candidate)
            yield from _interpreter_of(candidate)
        yield from _venv_paths(os.path.abspath(path))


def _prefix(path: str) -> str:
    parent = os.path.dirname(path)
    return os.path.dirname(parent) if os.path.basename(parent) == "bin" else parent


def _node_modules(path: str) -> Iterable[str]:
    parts = path.split("/")
    if "node_modules" in parts:
        yield "/".join(parts[: len(parts) - parts[::-1].index("node_modules")])


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
        words = [shutil.which(words[1]) or words[1]]
    if words and os.path.isabs(words[0]) and os.path.exists(words[0]):
        yield _prefix(os.path.realpath(words[0]))


def _venv_paths(exe: str) -> Iterable[str]:
    venv = _prefix(exe)
    if not os.path.isfile(os.path.join(venv, "pyvenv.cfg")):
        return
    yield venv
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
    paths += [os.path.join(profile.project, p) for p in _PROTECTED_IN_PROJECT]
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


def _landlock_grants(binds: list[list[str]]) -> dict[str, list[str]]:
    read = ["/proc", "/dev"] + [p for p, m in binds if m == "ro"]
    execute = [p for p, m in binds if m == "rx"]
    write = ["/tmp", "/dev/null", "/dev/zero", "/dev/full", "/dev/shm"]
    write += [p for p, m in binds if m == "rw"]
    return {"read": read, "execute": execute, "write": write}
