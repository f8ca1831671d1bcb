"""Fetch what `npx PKG` or `uvx PKG` would run, once, at lock time, into mcpwrap's store.

npx and uvx resolve and download their package every time they start (or at least ask
the registry), which a jail with no network cannot allow and a lock cannot pin. So
`mcpwrap lock` resolves the exact version here, installs it with npm or uv into a fresh
directory of the store (~/.cache/mcpwrap/store), and records the installed entry point;
`mcpwrap run` then starts that directly, offline. A directory of the store is never
changed after it is made: a new lock makes a new one.

    store/npm/<name>@<version>-<random>/node_modules/<name>/...   (npm install --prefix)
    store/uv/<name>-<random>/bin/<command>                         (uv venv + uv pip install)

The installers run on the host with the caller's environment (registries, caches, proxies,
npm_config_* and UV_* settings apply) and the network; the package's own code does not
run here: npm's install scripts are disabled, and uv installs wheels without running them
(an sdist is built by its build backend, as uvx would).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from mcpwrap import discovery
from mcpwrap.errors import LockError
from mcpwrap.paths import _xdg


class Resolved(NamedTuple):
    run: tuple[str, ...]  # the command to execute at run time (absolute paths)
    launcher: str  # "npx" | "uvx" | "" (the command is used as given)
    package: str  # e.g. "@modelcontextprotocol/server-filesystem", "mcp-server-time", ""
    version: str  # the exact installed version, or ""


def store_dir() -> str:
    """Installed npx/uvx packages: ~/.cache/mcpwrap/store (or $XDG_CACHE_HOME/mcpwrap/store)."""
    return os.path.join(_xdg("XDG_CACHE_HOME", ".cache"), "store")


def resolve(argv: Sequence[str], *, store: str, env: Mapping[str, str]) -> Resolved:
    """What `argv` runs, installed: for `npx ...`, `uvx ...` and `uv tool run ...`, the
    package fetched into `store` and its entry point; anything else as it is."""
    kind = discovery.downloader(argv)
    if kind == "npx":
        return _npx(argv[0], argv[1:], store, env)
    if kind == "uvx":
        skip = 3 if os.path.basename(argv[0]) == "uv" else 1
        return _uvx(argv[0], argv[skip:], store, env)
    return Resolved(tuple(argv), "", "", "")


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


def _npx(npx: str, args: Sequence[str], store: str, env: Mapping[str, str]) -> Resolved:
    cmd = _parse_npx(args)
    # npx links to npm's bin/npx-cli.js; its `npm` there is a shim for Windows shells.
    npm = _companion(
        "npm", npx, env, "npm comes with Node.js: install it or put it on PATH", ["npm-cli.js"]
    )
    node = _node(npx, env)
    root = os.path.join(store, "npm")
    _makedirs(root)
    # Installed under a temporary name, renamed once the version is known: Node finds
    # a package's modules relative to its files, so the directory may move before use.
    work = tempfile.mkdtemp(prefix=".install-", dir=root)
    try:
        _run(
            # --ignore-scripts: install scripts would run here, on the host, outside any
            # jail and with the user's full rights. Never run them. (A package that needs
            # one, e.g. to build a native addon, fails later, in the jail, visibly.)
            [
                npm,
                "install",
                "--prefix",
                work,
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                *cmd.npm_flags,
                cmd.spec,
            ],
            env,
            doing=f"npm install {cmd.spec} (into {root})",
            hint="check the package name and version, and that npm can reach its registry "
            "(npm's own settings apply: npm_config_registry, .npmrc, proxies)",
        )
        name = _npm_installed_name(work, cmd.spec)
        package_dir = os.path.join(work, "node_modules", *name.split("/"))
        manifest = _read_json(os.path.join(package_dir, "package.json"))
        version = manifest.get("version")
        if not isinstance(version, str) or not version:
            raise LockError(
                f"{package_dir}/package.json: no version; is {cmd.spec} an npm package?"
            )
        relative = _npm_bin(name, version, manifest, cmd.command)
        _npm_script(work, package_dir, relative, name, version)
        final = os.path.join(root, f"{_safe(name.lstrip('@'))}@{_safe(version)}-{_random()}")
        os.rename(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    package_dir = os.path.join(final, "node_modules", *name.split("/"))
    script = _npm_script(final, package_dir, relative, name, version)
    return Resolved((node, script, *cmd.args), "npx", name, version)


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


def _uvx(uvx: str, args: Sequence[str], store: str, env: Mapping[str, str]) -> Resolved:
    cmd = _parse_uvx(args)
    uv = _companion(
        "uv", uvx, env, "install uv (https://docs.astral.sh/uv/) or put it on PATH", ["uv"]
    )
    root = os.path.join(store, "uv")
    _makedirs(root)
    # Never renamed: the console scripts uv writes name the venv's python by absolute path.
    venv = tempfile.mkdtemp(prefix=f"{_safe(cmd.name or cmd.command)}-", dir=root)
    try:
        python = ["--python", cmd.python] if cmd.python else []
        _run(
            [uv, "venv", "--quiet", "--no-project", *python, venv],
            env,
            doing=f"uv venv {venv}" + (f" --python {cmd.python}" if cmd.python else ""),
            hint="check that uv finds that Python (uv python list), or name one with "
            "`uvx --python P ...`",
        )
        bin_dir = os.path.join(venv, "bin")
        before = set(os.listdir(bin_dir))
        python_exe = os.path.join(bin_dir, "python")
        # --no-build: building a source distribution runs its code (setup.py, a build
        # backend) here, outside any jail, as npm's install scripts would.
        install = [uv, "pip", "install", "--no-build", "--python", python_exe, *cmd.uv_flags]
        wanted = [cmd.requirement, *cmd.extra]
        _run(
            [*install, *wanted],
            env,
            doing=f"uv pip install --no-build {' '.join(wanted)} (into a new venv in {root})",
            hint="check the package name and version, and that uv can reach its index "
            "(uv's own settings apply: UV_INDEX_URL, uv.toml, proxies); a package with no "
            "wheel is refused, because building it would run its code outside the jail",
        )
        name, version, info = _installed_dist(venv, cmd)
        exe = os.path.join(bin_dir, cmd.command)
        if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
            own = _console_scripts(info) or set(os.listdir(bin_dir)) - before
            raise LockError(
                f"uvx: {name} {version} has no command {cmd.command!r} (its commands: "
                f"{', '.join(sorted(own)) or 'none'}); write the command as "
                f"`uvx --from {cmd.requirement} COMMAND ARGS...`"
            )
    except BaseException:
        shutil.rmtree(venv, ignore_errors=True)
        raise
    return Resolved((exe, *cmd.args), "uvx", name, version)


def _installed_dist(venv: str, cmd: _UvxCommand) -> tuple[str, str, str]:
    """(name, version) of the installed distribution the requirement names, or, for a
    --from that does not name one (a URL, a path), the one that provides the command."""
    found: list[tuple[str, str, str]] = []  # (name, version, dist-info dir)
    for site in sorted(_glob_dirs(os.path.join(venv, "lib"), "python", "site-packages")):
        for entry in sorted(os.listdir(site)):
            if entry.endswith(".dist-info"):
                info = os.path.join(site, entry)
                name, version = _metadata(info)
                if name and version:
                    found.append((name, version, info))
    if cmd.name is not None:
        for name, version, info in found:
            if _normalize(name) == _normalize(cmd.name):
                return name, version, info
        raise LockError(
            f"uv pip install {cmd.requirement} (into {venv}) installed no distribution "
            f"named {cmd.name} (found: {', '.join(n for n, _, _ in found) or 'none'})"
        )
    for name, version, info in found:
        if cmd.command in _console_scripts(info):
            return name, version, info
    raise LockError(
        f"uvx --from {cmd.requirement}: no installed distribution provides the command "
        f"{cmd.command!r} (in {venv}); check the command name"
    )


def _normalize(name: str) -> str:
    """PEP 503."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _metadata(dist_info: str) -> tuple[str, str]:
    name = version = ""
    try:
        with open(os.path.join(dist_info, "METADATA"), encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break  # the headers end at the first empty line
                key, _, value = line.partition(":")
                if key == "Name":
                    name = value.strip()
                elif key == "Version":
                    version = value.strip()
    except OSError:
        pass
    return name, version


def _console_scripts(dist_info: str) -> set[str]:
    names: set[str] = set()
    section = ""
    try:
        with open(os.path.join(dist_info, "entry_points.txt"), encoding="utf-8") as f:
            for raw in f:
                line = raw.strip()
                if line.startswith("["):
                    section = line.strip("[]").strip()
                elif "=" in line and section in ("console_scripts", "gui_scripts"):
                    names.add(line.partition("=")[0].strip())
    except OSError:
        pass
    return names


def _glob_dirs(lib: str, prefix: str, child: str) -> list[str]:
    try:
        entries = os.listdir(lib)
    except OSError:
        return []
    paths = (os.path.join(lib, e, child) for e in entries if e.startswith(prefix))
    return [p for p in paths if os.path.isdir(p)]


# --- shared -----------------------------------------------------------------------------------


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


def _run(argv: Sequence[str], env: Mapping[str, str], *, doing: str, hint: str) -> None:
    try:
        done = subprocess.run(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            check=False,
        )
    except OSError as exc:
        raise LockError(f"{doing}: cannot run {argv[0]}: {exc.strerror or exc}") from exc
    if done.returncode != 0:
        output = done.stderr.strip() or done.stdout.strip() or "(no output)"
        tail = "\n".join("  " + line for line in output.splitlines()[-15:])
        raise LockError(
            f"{doing} failed (exit status {done.returncode}):\n{tail}\n"
            f"command: {shlex.join(argv)}\n{hint}"
        )


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise LockError(f"{path}: cannot read it after the install: {exc.strerror}") from exc
    except ValueError as exc:
        raise LockError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise LockError(f"{path}: expected a JSON object")
    return data


def _makedirs(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise LockError(f"cannot create the store directory {path}: {exc.strerror}") from exc


def _safe(text: str) -> str:
    """A file name made of the text's harmless characters."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "+", text).strip(".") or "package"


def _random() -> str:
    return os.urandom(4).hex()
