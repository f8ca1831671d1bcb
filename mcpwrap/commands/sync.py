"""`mcpwrap sync`: make this machine's store match a lock, and verify it.

A lock names what a server is (store.Install: every package at its exact version, with
the hashes of the files it came from; the hashes of what it runs); this machine keeps it in
its store. `sync` installs exactly that, once, with the same installers as `mcpwrap lock`
(no install scripts, no source builds; each refuses a file whose hash differs), verifies
every hash the lock holds, and records what this machine verified (store.Synced). Nothing
else downloads: `mcpwrap run` refuses a lock this machine has not verified.

The helpers here (what a lock runs on this machine, and recording it) are shared with
`lock` and `approve`.
"""

from __future__ import annotations

import os
import sys
from typing import NamedTuple

from mcpwrap.basics.errors import LockError
from mcpwrap.config import paths
from mcpwrap.config.profile import Profile
from mcpwrap.sandbox import launch
from mcpwrap.supply import artifacts, lockstate, pins, portable, store
from mcpwrap.supply.artifacts import Artifacts


class SyncOptions(NamedTuple):
    profile: str | None
    command: tuple[str, ...]
    project: str | None = None  # --project: the directory {project} names


class Here(NamedTuple):
    """What a lock runs on this machine."""

    prefix: tuple[str, ...]  # replaces the command's first `skip` words
    skip: int
    install_dir: str  # the install's store directory, or ""
    found: Artifacts  # the hashes of what it runs, at this machine's paths


def sync(options: SyncOptions) -> int:
    profile = load(options.profile, options.command, options.project)
    name = options.profile or paths.profile_arg(profile.source)
    path = paths.find_lock(profile.source, paths.served(profile))
    lock = pins.load(path, name)
    if lock is not None and lock.remote is not None:
        # Nothing of a remote server is on this machine: `run` checks its key and tools.
        print(
            f"{path}: a lock of the remote server {lock.remote.url}: nothing to install or "
            f"verify here; `mcpwrap run --profile {name}` checks the server's key and tool "
            "definitions against it at each start"
        )
        return 0
    argv = locked_command(profile, lock, options.command, path, name)
    assert lock is not None
    fetched = _install(lock, argv) if lock.install is not None else ""
    here = here_for(lock, argv, profile, path, name)
    in_store, other = lockstate.split(
        lock.artifacts, lockstate.view(here.found, profile.project, here.install_dir), in_install
    )
    if in_store:
        if fetched:
            from mcpwrap.supply import installers

            installers.remove(fetched)
        raise LockError(
            f"{path}: what was installed for {lock.package} {lock.version} does not match the "
            f"lock, so it was removed:{lockstate.listed(in_store)}\nThe registry served "
            "other files under the locked versions, or the installer's cache holds changed "
            "ones (`uv cache clean`, `npm cache verify`). If the new files are expected, lock "
            f"again: {lockstate.lock_command(name, argv)}"
        )
    if other:
        raise LockError(
            f"{path}: this copy of the project does not match the lock:"
            f"{lockstate.listed(other)}\nIf you made this change, review and accept it with "
            f"{lockstate.approve_command(name)}."
        )
    changed = machine_changes(lock, here, profile.project)
    if changed:
        # What the lock cannot pin changed since this machine verified it: a change to
        # show and accept, as `run` says, not to record in passing.
        raise LockError(
            f"{path}: the server changed since this machine verified it:"
            f"{lockstate.listed(changed)}\nIf you made this change, review and accept it "
            f"with {lockstate.approve_command(name)}."
        )
    run = [*here.prefix, *argv[here.skip :]]
    here = with_bytecode(lock.install, here, run, profile, lock=path, name=name)
    remember(lock, here)
    what = f"{lock.package} {lock.version}: " if lock.install else ""
    print(
        f"{path}: {what}{_count(lock.artifacts)} verified against the lock; "
        f"`mcpwrap run --profile {name}` starts it offline"
    )
    return 0


def load(profile: str | None, command: tuple[str, ...], project: str | None) -> Profile:
    return paths.load(profile, command, project=project)


def locked_command(
    profile: Profile,
    lock: pins.Lock | None,
    given: tuple[str, ...],
    path: str,
    name: str,
) -> list[str]:
    """The locked command, for this machine; a command given on the command line or in
    the profile must be the locked one."""
    argv = list(given) or list(profile.server.command or ())
    if lock is None:
        shown = argv or ["CMD", "..."]
        raise LockError(
            f"{path}: there is no lock; lock it first: {lockstate.lock_command(name, shown)}"
        )
    cwd = profile.working_dir()
    home = os.path.expanduser("~")
    if argv:
        argv = launch.server_argv(profile, given)
        normalized = portable.normalize_command(argv, cwd=cwd, project=profile.project, home=home)
        if normalized != lock.command:
            raise LockError(lockstate.other_command(path, lock.command, argv, name))
        return argv
    return portable.expand_command(lock.command, project=profile.project, home=home)


def here_for(lock: pins.Lock, argv: list[str], profile: Profile, path: str, name: str) -> Here:
    """What the lock runs here, hashed. The install must be in the store (else: sync)."""
    from mcpwrap.supply import fetch

    prefix: tuple[str, ...] = ()
    install_dir = ""
    if lock.install is not None:
        install_dir = store.install_dir(store.root(), lock.install)
        if not os.path.isdir(install_dir):
            why = f"the store has no {lock.package} {lock.version} ({install_dir})"
            raise LockError(lockstate.not_synced(path, why, name))
        prefix = fetch.entry(lock.install, install_dir, os.environ)
    skip = fetch.skip(argv)
    found = collect([*prefix, *argv[skip:]], profile, path)
    return Here(prefix, skip, install_dir, found)


def collect(run: list[str], profile: Profile, lock_path: str) -> Artifacts:
    """The hashes of what `run` executes, as `mcpwrap run` finds it (its PATH)."""
    path_env = profile.server.env.get("PATH", os.environ.get("PATH", ""))
    cache = artifacts.StatCache(paths.artifact_cache(lock_path))
    found = artifacts.collect(run, cwd=profile.working_dir(), path_env=path_env, cache=cache)
    cache.save()  # the first run after this starts warm
    return found


def with_bytecode(
    install: store.Install | None,
    here: Here,
    run: list[str],
    profile: Profile,
    *,
    lock: str,
    name: str,
) -> Here:
    """A uv install's byte code, compiled from its files once they are verified
    (bytecode.py); what runs is hashed again if it was compiled now: the venv holds it."""
    if install is None or install.kind != "uv":
        return here
    from mcpwrap.supply import bytecode

    top = os.path.realpath(here.install_dir)
    venv = [t for t in here.found.trees if t.kind == "venv" and t.path == top]
    if not venv:
        raise LockError(
            f"{lock}: {here.install_dir} is not the venv its entry point runs in; install it "
            f"again from the lock: {lockstate.sync_command(name)}"
        )
    if not bytecode.ensure(here.install_dir, venv[0].portable):
        return here
    return here._replace(found=collect(run, profile, lock))


def bytecode_for(profile: Profile, install: store.Install | None, install_dir: str) -> str | None:
    """The byte code a jailed server of this install reads (lockstate.jail_env)."""
    if not profile.sandbox.enforce or install is None or install.kind != "uv":
        return None
    from mcpwrap.supply import bytecode

    return bytecode.cache_dir(install_dir)


def in_install(path: str) -> bool:
    return lockstate.symbolic_store(path)


def remember(lock: pins.Lock, here: Here) -> None:
    """Record what this machine verified for `lock` (the lock as written: its digest)."""
    store.save_synced(
        store.root(),
        store.Synced(
            lock=os.path.realpath(lock.path),
            lock_sha256=lock.sha256,
            install_dir=here.install_dir,
            prefix=here.prefix,
            skip=here.skip,
            artifacts=artifacts.to_data(here.found),
        ),
    )


def machine_changes(lock: pins.Lock, here: Here, project: str) -> list[str]:
    """How what the lock cannot pin (the runtime, files outside the project and the store)
    differs from what this machine verified for this lock before; [] if it never did."""
    record = store.load_synced(store.root(), lock.path)
    if record is None or record.lock_sha256 != lock.sha256:
        return []
    try:
        was = artifacts.from_data(record.artifacts, source=lock.path)
    except artifacts.ArtifactError:
        return []
    places = [os.path.realpath(project)] + ([here.install_dir] if here.install_dir else [])
    outside = [portable.under(p) for p in places]

    def machine(path: str) -> bool:
        return not any(inside(path) for inside in outside)

    return [
        f"this machine: {change}"
        for change in artifacts.compare(
            portable.select(was, machine), portable.select(here.found, machine)
        )
    ]


def _install(lock: pins.Lock, argv: list[str]) -> str:
    """Put the lock's install in the store unless a verified copy is there; the directory
    if this call installed it."""
    from mcpwrap.supply import fetch, installers

    assert lock.install is not None
    directory = store.install_dir(store.root(), lock.install)
    if os.path.isdir(directory):
        found = _hashes(lock, directory, argv)
        wrong = lockstate.split(lock.artifacts, found, in_install)[0]
        if not wrong:
            return ""
        sys.stderr.write(
            f"mcpwrap: {directory} differs from the lock:{lockstate.listed(wrong)}\n"
            "mcpwrap: installing it again\n"
        )
        installers.remove(directory)
    size = len(lock.install.wheels) or lock.install.lockfile.count('"integrity"')
    sys.stderr.write(
        f"mcpwrap: installing {lock.package} {lock.version} and its dependencies "
        f"({size} packages, each checked against the lock's hash) into {directory}\n"
    )
    return fetch.install(lock.install, launcher=argv[0], store=store.root(), env=os.environ)


def _hashes(lock: pins.Lock, directory: str, argv: list[str]) -> Artifacts:
    """The install's part of what the lock pins, as the store has it now."""
    from mcpwrap.supply import fetch

    assert lock.install is not None
    prefix = fetch.entry(lock.install, directory, os.environ)
    cache = artifacts.StatCache(paths.artifact_cache(lock.path))  # here_for reads them next
    try:
        found = artifacts.collect(
            [*prefix, *argv[fetch.skip(argv) :]],
            cwd=os.getcwd(),
            path_env=os.environ.get("PATH", ""),
            cache=cache,
        )
    except artifacts.ArtifactError:
        return Artifacts((), ())  # broken: every pinned file is reported missing
    cache.save()
    return portable.view(found, [(portable.INSTALL, os.path.realpath(directory))])


def _count(found: Artifacts) -> str:
    packages = sum(len(t.packages) for t in found.trees)
    parts = [f"{packages} packages"] if packages else []
    parts += [f"{len(found.files)} files"] if found.files else []
    return " and ".join(parts) or "the tool definitions (nothing else is pinned)"
