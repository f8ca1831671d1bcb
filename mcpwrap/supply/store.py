"""mcpwrap's store: where this machine keeps what locks pin, and what it verified.

The store is ~/.cache/mcpwrap/store (or $XDG_CACHE_HOME/mcpwrap/store). Everything in it
can be made again by `mcpwrap sync`, and nothing in it is written into a lock: a lock
names an install by what it holds (`Install`), and each machine derives the directory:

    uv/<package>-<version>-<key>/      a relocatable venv (uv venv --relocatable): its
                                       console scripts find their python relative to
                                       themselves, so no file holds the directory's path;
                                       and pyc/, pyc.json: its byte code (bytecode.py)
    npm/<package>@<version>-<key>/     an npm prefix: package.json, package-lock.json and
                                       node_modules/ (Node resolves modules relative to
                                       each file)
    .tmp/                              installs in progress, renamed into place once
                                       verified: an install directory is complete or absent
    synced/<sha256 of the lock path>.json
                                       what this machine verified for one lock file (see
                                       `Synced`): `run` checks the lock against it

<key> is the start of the SHA-256 of the Install's canonical JSON: the same lock makes the
same directory on every machine, and a different install can never reuse it. A directory
is never changed after it is made, but for what is kept per install beside the venv (its
compiled byte code), which goes with the install and is verified, or made again, with it;
a changed lock makes another one.

This module is pure data and paths, plus reading and writing `Synced` records; it is
imported on `run`'s path and imports nothing heavy.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from mcpwrap.basics import sha
from mcpwrap.config.paths import _xdg

KINDS = ("uv", "npm")
_KEY_HEX = 16


class Wheel(NamedTuple):
    """A wheel a uv install is made of: the exact file, by name and hash."""

    name: str
    version: str
    file: str  # the wheel's file name (its tags say which platform it is for)
    sha256: str  # hex


class Install(NamedTuple):
    """What an npx/uvx command resolved to, independent of where a machine keeps it."""

    kind: str  # "uv" | "npm"
    package: str
    version: str
    runtime: str  # "cpython 3.11" (major.minor: wheels are built for it) | "node 20"
    platform: str  # uv: "linux-x86_64" (wheels with binaries are built for one); npm: ""
    entry: str  # the file to run, relative to the install: "bin/NAME" | "node_modules/.../x.js"
    wheels: tuple[Wheel, ...] = ()  # uv: every distribution installed
    lockfile: str = ""  # npm: the package-lock.json `npm ci` installs from (JSON text)


def root() -> str:
    """~/.cache/mcpwrap/store (or $XDG_CACHE_HOME/mcpwrap/store)."""
    return os.path.join(_xdg("XDG_CACHE_HOME", ".cache"), "store")


def key(install: Install) -> str:
    data = json.dumps(_plain(install), sort_keys=True, separators=(",", ":")).encode()
    return sha.hexdigest(data)[:_KEY_HEX]


def install_dir(store: str, install: Install) -> str:
    sep = "@" if install.kind == "npm" else "-"
    name = f"{_safe(install.package.lstrip('@'))}{sep}{_safe(install.version)}-{key(install)}"
    return os.path.join(store, install.kind, name)


def temp_root(store: str) -> str:
    return os.path.join(store, ".tmp")


def program(install: Install, directory: str, node: str) -> tuple[str, ...]:
    """The argv prefix that runs an install here: the venv's python and the console
    script (the script's own #! line would go through /bin/sh), or node and the bin."""
    entry = os.path.join(directory, install.entry)
    if install.kind == "uv":
        return (os.path.join(directory, "bin", "python"), entry)
    return (node, entry)


def _plain(install: Install) -> dict[str, Any]:
    data = install._asdict()
    data["wheels"] = [w._asdict() for w in install.wheels]
    return data


def _safe(text: str) -> str:
    """A file name made of the text's harmless characters."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "+", text).strip(".") or "package"


# --- what this machine verified ----------------------------------------------------------------


class Synced(NamedTuple):
    """The record `mcpwrap lock`, `approve` and `sync` write once a lock is verified here.

    `artifacts` are the plain data of artifacts.to_data, at this machine's paths: what
    `run` hashes before each start. They cover what the lock pins (verified against it
    when the record was written) and what it cannot pin for other machines: the runtime
    (node, the venv's base python) and files outside the project and the store.
    """

    lock: str  # the lock file's real path
    lock_sha256: str  # hex digest of the lock file's bytes: another lock is not verified
    install_dir: str  # the store directory of the install, or ""
    prefix: tuple[str, ...]  # what replaces the command's first `skip` words when it runs
    skip: int
    artifacts: Mapping[str, Any]


def synced_path(store: str, lock_path: str) -> str:
    name = sha.hexdigest(os.fsencode(os.path.realpath(lock_path)))[:32]
    return os.path.join(store, "synced", name + ".json")


def load_synced(store: str, lock_path: str) -> Synced | None:
    """The record for this lock file, or None (none, unreadable, or not one of ours)."""
    try:
        with open(synced_path(store, lock_path), "rb") as f:
            data = json.loads(f.read())
        record = Synced(
            lock=str(data["lock"]),
            lock_sha256=str(data["lock_sha256"]),
            install_dir=str(data["install_dir"]),
            prefix=tuple(str(w) for w in data["prefix"]),
            skip=int(data["skip"]),
            artifacts=dict(data["artifacts"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if record.lock == os.path.realpath(lock_path) else None


def save_synced(store: str, record: Synced) -> str:
    from mcpwrap.basics import atomicfile

    path = synced_path(store, record.lock)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = record._asdict()
    data["prefix"] = list(record.prefix)
    atomicfile.write(path, json.dumps(data, sort_keys=True, indent=1) + "\n")
    return path
