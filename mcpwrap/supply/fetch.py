"""Fetch what `npx PKG` or `uvx PKG` would run, once, into mcpwrap's store.

npx and uvx resolve and download their package every time they start (or at least ask
the registry), which a jail with no network cannot allow and a lock cannot pin. So
`mcpwrap lock` resolves the exact version here (`resolve`), installs it with npm or uv into
the store (store.py) and returns what the lock pins about it (`store.Install`: every
package at its version, with the hashes of the files it came from) and the entry point
`mcpwrap run` starts, offline. On another machine `mcpwrap sync` installs the same thing
again from the lock (`install`), and the installers refuse any file whose hash differs.

The installers run on the host with the caller's environment and the network; the
package's own code never runs here (installers.py).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from mcpwrap.basics.errors import LockError
from mcpwrap.config import discovery
from mcpwrap.supply import installers
from mcpwrap.supply.installers import read_json as _read_json
from mcpwrap.supply.store import Install, install_dir, program, temp_root


class Resolved(NamedTuple):
    run: tuple[str, ...]  # the command to execute at run time (absolute paths)
    launcher: str  # "npx" | "uvx" | "" (the command is used as given)
    package: str  # e.g. "@modelcontextprotocol/server-filesystem", "mcp-server-time", ""
    version: str  # the exact installed version, or ""
    skip: int = 0  # how many words of the command `prefix` replaces
    prefix: tuple[str, ...] = ()  # the entry point: run = prefix + command[skip:]
    install: Install | None = None
    directory: str = ""  # the install's store directory


def resolve(argv: Sequence[str], *, store: str, env: Mapping[str, str]) -> Resolved:
    """What `argv` runs, installed: for `npx ...`, `uvx ...` and `uv tool run ...`, the
    package fetched into `store` and its entry point; anything else as it is."""
    kind = discovery.downloader(argv)
    if kind == "npx":
        return _npx(argv[0], argv[1:], store, env)._replace(skip=skip(argv))
    if kind == "uvx":
        return _uvx(argv[0], argv[_lead(argv) :], store, env)._replace(skip=skip(argv))
    return Resolved(tuple(argv), "", "", "")


def skip(argv: Sequence[str]) -> int:
    """How many words of an npx/uvx command name the launcher and the package (the rest
    are the server's arguments); 0 for any other command."""
    kind = discovery.downloader(argv)
    if kind == "npx":
        return len(argv) - len(_parse_npx(argv[1:]).args)
    if kind == "uvx":
        return len(argv) - len(_parse_uvx(argv[_lead(argv) :]).args)
    return 0


def _lead(argv: Sequence[str]) -> int:
    return 3 if os.path.basename(argv[0]) == "uv" else 1


def install(locked: Install, *, launcher: str, store: str, env: Mapping[str, str]) -> str:
    """Install what a lock pins into the store (sync): exactly the locked files, each
    checked against its hash by the installer; the install's directory."""
    final = install_dir(store, locked)
    work = _work_dir(store, locked.kind)
    try:
        if locked.kind == "uv":
            _sync_uv(locked, launcher, work, env)
        else:
            _sync_npm(locked, launcher, work, env)
        return _place(work, final)
    except BaseException:
        installers.remove(work)
        raise


def entry(locked: Install, directory: str, env: Mapping[str, str]) -> tuple[str, ...]:
    """The argv prefix that starts an install on this machine."""
    node = _node("npx", env) if locked.kind == "npm" else ""
    return program(locked, directory, node)


# --- npx --------------------------------------------------------------------------------------

_NPX_FLAGS = ("-y", "--yes", "-q", "--quiet", "--prefer-offline", "--offline")
_NPX_FORM = "`npx -y PACKAGE ARGS...` (or `npx -y -p PACKAGE COMMAND ARGS...`)"


class _NpxCommand(NamedTuple):
    spec: str  # PKG[@SPEC] as npm install takes it
    command: str | None  # with -p/--package: the bin to run
    args: tuple[str, ...]
    npm_flags: tuple[str, ...]  # --offline / --prefer-offline, passed on to npm


def _parse_npx(args: Sequence[str]) -> _NpxCommand:
    options, rest = _options(args, "npx", _NPX_FORM, flags=_NPX_FLAGS, valued=("-p", "--package"))
    packages = [value for option, value in options if option in ("-p", "--package")]
    flags = [option for option, _ in options if option in ("--offline", "--prefer-offline")]
    if len(packages) > 1:
        raise LockError(
            f"npx with several packages ({', '.join(packages)}) cannot be locked: "
            f"mcpwrap lock installs one package; write the command as {_NPX_FORM}"
        )
    if packages:
        if not rest:
            raise LockError(
                f"npx -p {packages[0]} names no command to run; write the command as {_NPX_FORM}"
            )
        return _NpxCommand(packages[0], rest[0], rest[1:], tuple(flags))
    if not rest or not rest[0]:
        raise LockError(f"npx names no package; write the command as {_NPX_FORM}")
    return _NpxCommand(rest[0], None, rest[1:], tuple(flags))


def _npx(npx: str, args: Sequence[str], root: str, env: Mapping[str, str]) -> Resolved:
    cmd = _parse_npx(args)
    # npx links to npm's bin/npx-cli.js; its `npm` there is a shim for Windows shells.
    npm = _npm(npx, env)
    node = _node(npx, env)
    runtime = installers.node_runtime(node, env)
    work = _work_dir(root, "npm")
    try:
        installers.npm_prefix(work)
        installers.npm_install(npm, work, cmd.spec, cmd.npm_flags, env)
        name = _npm_installed_name(work, cmd.spec)
        package_dir = os.path.join(work, "node_modules", *name.split("/"))
        manifest = _read_json(os.path.join(package_dir, "package.json"))
        version = manifest.get("version")
        if not isinstance(version, str) or not version:
            raise LockError(
                f"{package_dir}/package.json: no version; is {cmd.spec} an npm package?"
            )
        relative = _npm_bin(name, version, manifest, cmd.command)
        script = _npm_script(work, package_dir, relative, name, version)
        locked = Install(
            kind="npm",
            package=name,
            version=version,
            runtime=runtime,
            platform="",
            entry=os.path.relpath(script, os.path.realpath(work)),
            lockfile=installers.npm_lockfile(work),
        )
        # Node finds a package's modules relative to its files: the directory may move.
        final = _place(work, install_dir(root, locked))
    except BaseException:
        installers.remove(work)
        raise
    prefix = program(locked, final, node)
    return Resolved((*prefix, *cmd.args), "npx", name, version, 0, prefix, locked, final)


def _sync_npm(locked: Install, launcher: str, work: str, env: Mapping[str, str]) -> None:
    node = _node(launcher, env)
    have = installers.node_runtime(node, env)
    if _major(have) < _major(locked.runtime):
        raise LockError(
            f"{locked.package} {locked.version} was locked with {locked.runtime}; {node} is "
            f"{have}: install Node.js {_major(locked.runtime)} or newer (or put it on PATH)"
        )
    installers.npm_ci(_npm(launcher, env), work, locked.lockfile, env)
    installers.check_npm(work, locked.lockfile)


def _major(runtime: str) -> int:
    number = runtime.rpartition(" ")[2]
    return int(number) if number.isdigit() else 0


def _npm(launcher: str, env: Mapping[str, str]) -> str:
    return _companion(
        "npm", launcher, env, "npm comes with Node.js: install it or put it on PATH", ["npm-cli.js"]
    )


def _npm_script(prefix: str, package_dir: str, relative: str, name: str, version: str) -> str:
    """The bin's file, resolved: it must exist, inside the installed tree."""
    script = os.path.realpath(os.path.join(package_dir, relative))
    if not script.startswith(os.path.realpath(prefix) + os.sep):
        raise LockError(f"{name}@{version}: its bin {relative!r} points outside the package")
    if not os.path.isfile(script):
        raise LockError(
            f"{name}@{version}: its bin {relative} is not in the package ({script} is missing); "
            "the package is broken, or needs a build step (install scripts are not run)"
        )
    return script


def _npm_installed_name(prefix: str, spec: str) -> str:
    """The name the package got in node_modules: the one dependency `npm install` wrote to
    PREFIX/package.json (which works for any spec: a name, a tarball, a git URL, an alias)."""
    deps = _read_json(os.path.join(prefix, "package.json")).get("dependencies")
    if isinstance(deps, dict) and len(deps) == 1:
        return str(next(iter(deps)))
    at = spec.find("@", 1)
    return spec[:at] if at > 0 else spec


def _npm_bin(name: str, version: str, manifest: Mapping[str, Any], command: str | None) -> str:
    """The package's bin, chosen as npx chooses it: the only one, else the one named after
    the package (without its scope); with -p, the one named by the command."""
    unscoped = name.rsplit("/", 1)[-1]
    declared = manifest.get("bin")
    if isinstance(declared, str):
        bins = {unscoped: declared}
    elif isinstance(declared, dict):
        bins = {str(k): v for k, v in declared.items() if isinstance(v, str)}
    else:
        bins = {}
    listed = ", ".join(sorted(bins)) or "none"
    if command is not None:
        if command in bins:
            return bins[command]
        raise LockError(
            f"{name}@{version} has no bin named {command!r} (its bins: {listed}); "
            "mcpwrap lock runs a bin of the package itself"
        )
    if len(bins) == 1:
        return next(iter(bins.values()))
    if unscoped in bins:
        return bins[unscoped]
    if not bins:
        raise LockError(f"{name}@{version} declares no bin in its package.json: npx cannot run it")
    raise LockError(
        f"{name}@{version} has several bins ({listed}) and none is named {unscoped}: "
        f"say which with `npx -y -p {name}@{version} BIN ARGS...`"
    )


def _node(npx: str, env: Mapping[str, str]) -> str:
    path = env.get("PATH", os.defpath)
    found = shutil.which("node", path=path)
    if found is None:
        beside = os.path.join(os.path.dirname(_where(npx, env) or npx), "node")
        if os.path.isfile(beside) and os.access(beside, os.X_OK):
            found = beside
    if found is None:
        raise LockError(
            f"node is not on PATH ({path}): an npx package runs with node; "
            "install Node.js or put it on PATH"
        )
    return os.path.abspath(found)


# --- uvx --------------------------------------------------------------------------------------

_UVX_FORM = "`uvx [--from SPEC] [--with REQ]... [--python P] PACKAGE ARGS...`"
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_AT_VERSION = re.compile(rf"^({_NAME}(?:\[[^\]]*\])?)@([^@/:\s]+)$")
_REQUIREMENT_NAME = re.compile(rf"^\s*({_NAME})\s*(?:$|[\[(<>=!~;@\s])")


class _UvxCommand(NamedTuple):
    requirement: str  # what uv pip install takes
    name: str | None  # its distribution name, when the requirement names it
    command: str
    args: tuple[str, ...]
    python: str | None
    uv_flags: tuple[str, ...]  # --offline, passed on to uv
    extra: tuple[str, ...] = ()  # --with: installed beside it (e.g. "mcp<2")


def _parse_uvx(args: Sequence[str]) -> _UvxCommand:
    options, rest = _options(
        args,
        "uvx",
        _UVX_FORM,
        flags=("-q", "--quiet", "--offline"),
        valued=("--from", "--python", "-p", "--with", "-w"),
    )
    source: str | None = None
    python: str | None = None
    extra: list[str] = []
    for option, value in options:
        if option == "--from":
            source = value
        elif option in ("--python", "-p"):
            python = value
        elif option in ("--with", "-w"):
            extra += [req.strip() for req in value.split(",") if req.strip()]
    flags = [option for option, _ in options if option == "--offline"]
    if not rest or not rest[0]:
        raise LockError(f"uvx names no package; write the command as {_UVX_FORM}")
    target = _requirement(rest[0])
    match = _REQUIREMENT_NAME.match(target)
    if match is None:
        raise LockError(
            f"uvx {rest[0]}: not a package name (NAME, NAME==VERSION or NAME@VERSION); "
            f"for another source write the command as `uvx --from SOURCE COMMAND ARGS...`"
        )
    command = match.group(1)
    if source is None:
        return _UvxCommand(target, command, command, rest[1:], python, tuple(flags), tuple(extra))
    requirement = _requirement(source)
    named = _REQUIREMENT_NAME.match(requirement)
    url = "://" in requirement.split(" @ ")[0] or requirement.startswith((".", "/", "~"))
    name = named.group(1) if named and not url else None
    return _UvxCommand(requirement, name, command, rest[1:], python, tuple(flags), tuple(extra))


def _requirement(spec: str) -> str:
    """uvx's NAME@VERSION as a requirement: NAME==VERSION (NAME@latest: NAME)."""
    match = _AT_VERSION.match(spec)
    if match is None:
        return spec
    name, version = match.groups()
    return name if version == "latest" else f"{name}=={version}"


def _uvx(uvx: str, args: Sequence[str], root: str, env: Mapping[str, str]) -> Resolved:
    cmd = _parse_uvx(args)
    uv = _uv(uvx, env)
    # Never renamed until complete; relocatable, so its scripts do not name the directory.
    venv = _work_dir(root, "uv")
    try:
        runtime = installers.uv_venv(uv, venv, cmd.python, env)
        python = os.path.join(venv, "bin", "python")
        wanted = [cmd.requirement, *cmd.extra]
        resolution = installers.uv_compile(uv, python, wanted, cmd.uv_flags, env)
        hashed = installers.hashed_requirements(resolution)
        installers.uv_install(uv, python, hashed, cmd.uv_flags, env)
        name, version, info = _installed_dist(venv, cmd)
        exe = os.path.join(venv, "bin", cmd.command)
        if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
            own = installers.console_scripts(info)
            raise LockError(
                f"uvx: {name} {version} has no command {cmd.command!r} (its commands: "
                f"{', '.join(sorted(own)) or 'none'}); write the command as "
                f"`uvx --from {cmd.requirement} COMMAND ARGS...`"
            )
        locked = Install(
            kind="uv",
            package=name,
            version=version,
            runtime=runtime,
            platform=installers.platform(),
            entry=f"bin/{cmd.command}",
            wheels=installers.installed_wheels(venv, resolution),
        )
        final = _place(venv, install_dir(root, locked))
    except BaseException:
        installers.remove(venv)
        raise
    prefix = program(locked, final, "")
    return Resolved((*prefix, *cmd.args), "uvx", name, version, 0, prefix, locked, final)


def _sync_uv(locked: Install, launcher: str, venv: str, env: Mapping[str, str]) -> None:
    here = installers.platform()
    if locked.platform != here:
        raise LockError(
            f"{locked.package} {locked.version} was locked on {locked.platform}, whose "
            f"wheels this machine ({here}) cannot use: lock it again here with `mcpwrap lock`"
        )
    uv = _uv(launcher, env)
    implementation, _, version = locked.runtime.partition(" ")
    runtime = installers.uv_venv(uv, venv, f"{implementation}{version}", env)
    if runtime != locked.runtime:
        raise LockError(
            f"{locked.package} {locked.version} needs {locked.runtime} (its wheels are built "
            f"for it); uv found {runtime}: install it (`uv python install {version}`)"
        )
    hashed = [f"{w.name}=={w.version} --hash=sha256:{w.sha256}" for w in locked.wheels]
    installers.uv_install(uv, os.path.join(venv, "bin", "python"), hashed, (), env)
    installers.check_wheels(venv, locked.wheels)


def _uv(launcher: str, env: Mapping[str, str]) -> str:
    return _companion(
        "uv", launcher, env, "install uv (https://docs.astral.sh/uv/) or put it on PATH", ["uv"]
    )


def _installed_dist(venv: str, cmd: _UvxCommand) -> tuple[str, str, str]:
    """(name, version) of the installed distribution the requirement names, or, for a
    --from that does not name one (a URL, a path), the one that provides the command."""
    found = installers.installed(venv)
    if cmd.name is not None:
        for dist in found:
            if installers.normalize(dist.name) == installers.normalize(cmd.name):
                return dist
        raise LockError(
            f"uv pip install {cmd.requirement} (into {venv}) installed no distribution "
            f"named {cmd.name} (found: {', '.join(d.name for d in found) or 'none'})"
        )
    for dist in found:
        if cmd.command in installers.console_scripts(dist.info):
            return dist
    raise LockError(
        f"uvx --from {cmd.requirement}: no installed distribution provides the command "
        f"{cmd.command!r} (in {venv}); check the command name"
    )


# --- shared -----------------------------------------------------------------------------------


def _work_dir(root: str, kind: str) -> str:
    """A new, empty directory for an install in progress, in the store's .tmp (on the
    same file system as its final place: a rename moves it there at once)."""
    temp = temp_root(root)
    try:
        os.makedirs(temp, exist_ok=True)
        return tempfile.mkdtemp(prefix=f"{kind}-", dir=temp)
    except OSError as exc:
        raise LockError(f"cannot create a directory in the store ({temp}): {exc.strerror}") from exc


def _place(work: str, final: str) -> str:
    """Move a finished install to its place. An install already there was made from the
    same pins; it is replaced, so that what the caller verifies next is this one."""
    os.makedirs(os.path.dirname(final), exist_ok=True)
    if os.path.exists(final):
        aside = tempfile.mkdtemp(prefix="old-", dir=os.path.dirname(work))
        os.rename(final, os.path.join(aside, "old"))
        installers.remove(aside)
    os.rename(work, final)
    return final


def _options(
    args: Sequence[str],
    tool: str,
    form: str,
    *,
    flags: Sequence[str],
    valued: Sequence[str],
) -> tuple[list[tuple[str, str]], tuple[str, ...]]:
    """A launcher's leading options, as (option, value) pairs ("" for a flag; a value as
    the next argument or after `=`), and the arguments after them (an ending `--` dropped).
    An option not listed is an error: guessing at its meaning could change what runs."""
    found: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        option, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if option in valued:
            if not eq:
                if i + 1 >= len(args):
                    raise LockError(
                        f"{tool} option {arg} needs a value; write the command as {form}"
                    )
                i += 1
                value = args[i]
            found.append((option, value))
        elif arg in flags:
            found.append((arg, ""))
        else:
            raise LockError(
                f"{tool} option {arg} is not understood by mcpwrap lock; "
                f"write the command as {form}"
            )
        i += 1
    return found, tuple(args[i:])


def _where(program: str, env: Mapping[str, str]) -> str | None:
    """The launcher as given, made absolute (looked up on PATH when it has no slash)."""
    if "/" in program:
        return os.path.abspath(program)
    return shutil.which(program, path=env.get("PATH", os.defpath))


def _companion(
    tool: str, launcher: str, env: Mapping[str, str], install: str, real: Sequence[str]
) -> str:
    """`tool` (npm, uv) installed with the launcher: beside it as given (a bin directory
    of links), else among `real` beside the file it links to, else on PATH."""
    given = _where(launcher, env)
    if given is not None:
        candidates = [os.path.join(os.path.dirname(given), tool)]
        candidates += [os.path.join(os.path.dirname(os.path.realpath(given)), n) for n in real]
        for candidate in candidates:
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
    path = env.get("PATH", os.defpath)
    found = shutil.which(tool, path=path)
    if found is None:
        raise LockError(
            f"{tool} is not beside {launcher} nor on PATH ({path}): mcpwrap lock installs "
            f"{os.path.basename(launcher)} packages with {tool}; {install}"
        )
    return os.path.abspath(found)
