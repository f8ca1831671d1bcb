"""uv and npm, run on the host to fill the store: at lock time from a requirement, at sync
time from what a lock pins. fetch.py says which to run and where the result goes.

uv: a relocatable venv; `uv pip compile` resolves the requirements to exact versions and
wheel hashes (pylock.toml), `uv pip install --require-hashes --no-deps` installs exactly
those. A lock keeps the one wheel installed per distribution (found by its tags), and sync
installs that wheel again: uv refuses a file whose hash differs.

npm: `npm install` at lock time writes package-lock.json (every package at its version,
with its tarball's integrity); the lock keeps it, and sync installs from it with `npm ci`,
which checks each tarball's integrity.

The installers run with the caller's environment (registries, caches, proxies, npm_config_*
and UV_* settings apply) and the network. No package's code runs here: npm's install
scripts are disabled, and uv installs wheels only (building a source distribution would run
its build backend outside any jail).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from mcpwrap.basics.errors import LockError
from mcpwrap.supply.store import Wheel

NO_WHEEL = (
    "a package with no wheel is refused, because building it would run its code outside the jail"
)
STORE_PACKAGE = "mcpwrap-store"  # the npm prefix's own name: its lock file names it


# --- uv ---------------------------------------------------------------------------------------


class Dist(NamedTuple):
    name: str
    version: str
    info: str  # its .dist-info directory


def uv_venv(uv: str, venv: str, python: str | None, env: Mapping[str, str]) -> str:
    """A relocatable venv at `venv` (no file names its directory); its runtime, e.g.
    "cpython 3.11"."""
    flag = ["--python", python] if python else []
    run(
        [uv, "venv", "--quiet", "--no-project", "--relocatable", *flag, venv],
        env,
        doing=f"uv venv --relocatable {venv}" + (f" --python {python}" if python else ""),
        hint="check that uv finds that Python (uv python list); a lock names the Python "
        "version it needs, and `uv python install VERSION` installs one",
    )
    return venv_runtime(venv)


def venv_runtime(venv: str) -> str:
    cfg = _venv_cfg(venv)
    implementation = cfg.get("implementation", "cpython").lower()
    return f"{implementation} {'.'.join(cfg.get('version_info', '').split('.')[:2])}"


def _venv_cfg(venv: str) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with open(os.path.join(venv, "pyvenv.cfg"), encoding="utf-8") as f:
            for line in f:
                key, eq, value = line.partition("=")
                if eq:
                    out[key.strip()] = value.strip()
    except OSError as exc:
        raise LockError(f"{venv}/pyvenv.cfg: cannot read it: {exc.strerror}") from exc
    return out


def platform() -> str:
    """What wheels with binaries are built for, e.g. "linux-x86_64"."""
    return sysconfig.get_platform()


def uv_compile(
    uv: str, python: str, requirements: Sequence[str], flags: Sequence[str], env: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The resolution of `requirements` for `python`: pylock.toml's packages."""
    text = run(
        [
            uv,
            "pip",
            "compile",
            "--quiet",
            "--no-header",
            "--no-build",
            "--format",
            "pylock.toml",
            "--python",
            python,
            *flags,
            "-",
        ],
        env,
        doing=f"uv pip compile --no-build {' '.join(requirements)}",
        hint="check the package name and version, and that uv can reach its index (uv's "
        f"own settings apply: UV_INDEX_URL, uv.toml, proxies); {NO_WHEEL}",
        stdin="\n".join(requirements) + "\n",
    )
    try:
        packages = tomllib.loads(text).get("packages", [])
    except tomllib.TOMLDecodeError as exc:
        raise LockError(f"uv pip compile wrote no pylock.toml uv can read: {exc}") from exc
    return [p for p in packages if isinstance(p, dict)]


def hashed_requirements(packages: Sequence[Mapping[str, Any]]) -> list[str]:
    """`NAME==VERSION --hash=sha256:H ...` per package: any of its wheels for this Python."""
    lines = []
    for p in packages:
        name, version = str(p.get("name")), str(p.get("version"))
        hashes = [h for _, h in _wheel_files(p)]
        if not hashes:
            raise LockError(
                f"{name} {version} comes with no wheel uv could install (a source "
                f"distribution, a directory or a VCS checkout): {NO_WHEEL}, and a lock "
                "pins files by their hashes"
            )
        lines.append(f"{name}=={version} " + " ".join(f"--hash=sha256:{h}" for h in hashes))
    return lines


def _wheel_files(package: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(file name, sha256) of each wheel pylock.toml lists for a package."""
    out = []
    for wheel in package.get("wheels") or []:
        where = str(wheel.get("name") or wheel.get("url") or wheel.get("path") or "")
        digest = (wheel.get("hashes") or {}).get("sha256")
        if where and isinstance(digest, str):
            out.append((where.rsplit("/", 1)[-1], digest))
    return out


def uv_install(
    uv: str, python: str, requirements: Sequence[str], flags: Sequence[str], env: Mapping[str, str]
) -> None:
    """Install exactly `requirements` (each pinned with its hashes), nothing else."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="mcpwrap-req-") as req:
        req.write("\n".join(requirements) + "\n")
        req.flush()
        run(
            # --link-mode=copy: uv would hard-link files from its cache, and a change to
            # one copy would then be a change to the other.
            [
                uv,
                "pip",
                "install",
                "--quiet",
                "--link-mode=copy",
                "--no-build",
                "--no-deps",
                "--require-hashes",
                "--python",
                python,
                *flags,
                "-r",
                req.name,
            ],
            env,
            doing=f"uv pip install --require-hashes ({len(requirements)} distributions)",
            hint="uv refuses a file whose hash is not the pinned one, and a platform the "
            "pinned wheel is not built for; check that uv can reach its index (UV_INDEX_URL, "
            f"uv.toml, proxies); {NO_WHEEL}",
        )


def installed(venv: str) -> list[Dist]:
    """The distributions installed in a venv, by their METADATA."""
    found = []
    lib = os.path.join(venv, "lib")
    for site in sorted(_site_packages(lib)):
        for entry in sorted(os.listdir(site)):
            if entry.endswith(".dist-info"):
                info = os.path.join(site, entry)
                name, version = metadata(info)
                if name and version:
                    found.append(Dist(name, version, info))
    return found


def _site_packages(lib: str) -> list[str]:
    try:
        entries = os.listdir(lib)
    except OSError:
        return []
    paths = (os.path.join(lib, e, "site-packages") for e in entries if e.startswith("python"))
    return [p for p in paths if os.path.isdir(p)]


def installed_wheels(venv: str, packages: Sequence[Mapping[str, Any]]) -> tuple[Wheel, ...]:
    """Which of the resolution's wheels each installed distribution came from: the one
    whose tags are those of its WHEEL file. Every installed distribution must be one the
    resolution named, at its version."""
    listed = {normalize(str(p.get("name"))): p for p in packages}
    wheels = []
    for dist in installed(venv):
        package = listed.get(normalize(dist.name))
        if package is None or str(package.get("version")) != dist.version:
            raise LockError(
                f"{venv}: {dist.name} {dist.version} is installed but the resolution does "
                "not name it at that version"
            )
        tags = wheel_tags(dist.info)
        files = [(f, h) for f, h in _wheel_files(package) if filename_tags(f) == tags]
        if len(files) != 1:
            raise LockError(
                f"{dist.name} {dist.version}: cannot tell which wheel was installed (its "
                f"tags {', '.join(sorted(tags)) or 'none'}; the index lists "
                f"{', '.join(f for f, _ in _wheel_files(package)) or 'no wheel'})"
            )
        wheels.append(Wheel(dist.name, dist.version, *files[0]))
    return tuple(sorted(wheels, key=lambda w: normalize(w.name)))


def check_wheels(venv: str, wheels: Sequence[Wheel]) -> None:
    """After a sync: the installed distributions are the locked ones, from the locked
    wheel files (their tags), and nothing else."""
    want = {normalize(w.name): w for w in wheels}
    have = {normalize(d.name): d for d in installed(venv)}
    for name in sorted(want.keys() | have.keys()):
        wheel, dist = want.get(name), have.get(name)
        if dist is None:
            assert wheel is not None
            raise LockError(f"{wheel.name} {wheel.version} is locked but was not installed")
        if wheel is None:
            raise LockError(f"{dist.name} {dist.version} was installed but is not locked")
        if dist.version != wheel.version or wheel_tags(dist.info) != filename_tags(wheel.file):
            raise LockError(
                f"{dist.name}: installed {dist.version} "
                f"({', '.join(sorted(wheel_tags(dist.info)))}), locked {wheel.file}"
            )


def wheel_tags(dist_info: str) -> frozenset[str]:
    try:
        with open(os.path.join(dist_info, "WHEEL"), encoding="utf-8") as f:
            return frozenset(
                line.partition(":")[2].strip() for line in f if line.startswith("Tag:")
            )
    except OSError:
        return frozenset()


def filename_tags(filename: str) -> frozenset[str]:
    """The tags a wheel's file name stands for: NAME-VER[-BUILD]-PY-ABI-PLAT.whl, each of
    the last three a dot-separated set."""
    parts = filename.removesuffix(".whl").split("-")
    if len(parts) < 5:
        return frozenset()
    pys, abis, plats = (p.split(".") for p in parts[-3:])
    return frozenset(f"{py}-{abi}-{plat}" for py in pys for abi in abis for plat in plats)


def metadata(dist_info: str) -> tuple[str, str]:
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


def console_scripts(dist_info: str) -> set[str]:
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


def normalize(name: str) -> str:
    """PEP 503."""
    return re.sub(r"[-_.]+", "-", name).lower()


# --- npm --------------------------------------------------------------------------------------

# What `npm ci` reads of a package-lock.json entry; the rest (licenses, funding, engines)
# would only make the lock longer.
_NPM_FIELDS = frozenset(
    {"version", "resolved", "integrity", "link", "name", "bin", "hasInstallScript"}
    | {"dependencies", "optionalDependencies", "peerDependencies", "peerDependenciesMeta"}
    | {"optional", "peer", "dev", "devOptional", "os", "cpu", "libc", "inBundle"}
    | {"bundleDependencies"}
)


def npm_prefix(work: str) -> None:
    """An npm prefix with a fixed name: npm writes its directory's name into the lock
    files otherwise, and a store directory's name differs on every machine."""
    with open(os.path.join(work, "package.json"), "w", encoding="utf-8") as f:
        json.dump({"name": STORE_PACKAGE, "private": True}, f)


def npm_install(
    npm: str, work: str, spec: str, flags: Sequence[str], env: Mapping[str, str]
) -> None:
    run(
        # --ignore-scripts: install scripts would run here, on the host, outside any jail
        # and with the user's full rights. Never run them. (A package that needs one, e.g.
        # to build a native addon, fails later, in the jail, visibly.) Registry URLs are
        # kept in the lock file: `npm ci` on another machine fetches the same tarballs.
        [
            npm,
            "install",
            "--prefix",
            work,
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--omit-lockfile-registry-resolved=false",
            *flags,
            spec,
        ],
        env,
        doing=f"npm install {spec} (into {os.path.dirname(work)})",
        hint="check the package name and version, and that npm can reach its registry "
        "(npm's own settings apply: npm_config_registry, .npmrc, proxies)",
    )


def npm_lockfile(work: str) -> str:
    """The prefix's package-lock.json, cut to what `npm ci` needs, as stable JSON."""
    doc = read_json(os.path.join(work, "package-lock.json"))
    packages = doc.get("packages")
    if not isinstance(packages, dict):
        raise LockError(f"{work}/package-lock.json: no packages")
    doc["packages"] = {
        path: {k: v for k, v in entry.items() if k in _NPM_FIELDS}
        for path, entry in packages.items()
        if isinstance(entry, dict)
    }
    return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def npm_ci(npm: str, work: str, lockfile: str, env: Mapping[str, str]) -> None:
    """Install exactly what `lockfile` names (npm checks every tarball's integrity)."""
    doc = json.loads(lockfile)
    root = doc.get("packages", {}).get("", {})
    manifest = {"name": STORE_PACKAGE, "private": True, "dependencies": root.get("dependencies")}
    with open(os.path.join(work, "package.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    with open(os.path.join(work, "package-lock.json"), "w", encoding="utf-8") as f:
        f.write(lockfile)
    run(
        [npm, "ci", "--prefix", work, "--ignore-scripts", "--no-audit", "--no-fund"],
        env,
        doing=f"npm ci (into {os.path.dirname(work)})",
        hint="npm refuses a tarball whose integrity is not the locked one; check that npm "
        "can reach its registry (npm_config_registry, .npmrc, proxies)",
    )


def check_npm(work: str, lockfile: str) -> None:
    """After a sync: node_modules holds the locked packages, at their versions and
    integrity, and no other."""
    want = json.loads(lockfile).get("packages", {})
    have = read_json(os.path.join(work, "node_modules", ".package-lock.json")).get("packages")
    have = have if isinstance(have, dict) else {}
    for path in sorted((want.keys() | have.keys()) - {""}):
        a, b = want.get(path) or {}, have.get(path) or {}
        if not b:
            raise LockError(f"{path} {a.get('version')} is locked but npm did not install it")
        if not a:
            raise LockError(f"{path} {b.get('version')} was installed but is not locked")
        for field in ("version", "integrity"):
            if a.get(field) != b.get(field):
                raise LockError(
                    f"{path}: {field} {a.get(field)} in the lock, {b.get(field)} installed"
                )


def node_runtime(node: str, env: Mapping[str, str]) -> str:
    """ "node 20": the major version of this node."""
    version = run([node, "--version"], env, doing=f"{node} --version", hint="").strip()
    major = version.lstrip("v").split(".")[0]
    if not major.isdigit():
        raise LockError(f"{node} --version says {version!r}, not a Node.js version")
    return f"node {major}"


# --- shared -----------------------------------------------------------------------------------


def run(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    doing: str,
    hint: str,
    stdin: str | None = None,
) -> str:
    """Run an installer; its stdout. A failure carries the end of its own explanation."""
    try:
        done = subprocess.run(
            list(argv),
            env=dict(env),
            input=stdin,
            stdin=subprocess.DEVNULL if stdin is None else None,
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
    return done.stdout


def read_json(path: str) -> dict[str, Any]:
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


def remove(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
