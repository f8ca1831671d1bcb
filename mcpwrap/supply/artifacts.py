"""Hashes of what a server command executes, for the lock that is checked before each launch.

`collect` finds the files a command runs (its executable, a script's #! interpreter, an
interpreter's script) and the install trees they load code from (a venv, a node_modules
directory), and hashes them all. `compare` says, one sentence per change, how what is on
disk now differs from what the lock recorded. `to_data`/`from_data` turn the result into
plain TOML-ready values and back (pins.py stores them).

A tree has one digest over every entry in it, so nothing can be slipped in beside the
packages (a stray `.pth` file runs at Python's start-up), and one digest per package, so
that a change can be named. A venv package's RECORD also tells which of its files differ
from what the installer wrote.

A launch runs this every time, so file hashes are kept in a `StatCache` keyed by stat data.
"""

from __future__ import annotations

import contextlib
import json
import marshal
import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, NoReturn

from mcpwrap.basics.errors import MCPWrapError
from mcpwrap.basics.programs import which
from mcpwrap.basics.sha import sha256
from mcpwrap.supply.entrypoints import node_modules_of, script_of

ROLES = ("executable", "interpreter", "script")
KINDS = ("venv", "node_modules")
_CHUNK = 1 << 20
_JS_RUNTIMES = ("node", "nodejs", "deno", "bun")
# O_NONBLOCK: a fifo put where a file was a moment ago must not hang the launch.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SPECIAL = (
    (stat.S_ISSOCK, "s"),
    (stat.S_ISFIFO, "p"),
    (stat.S_ISCHR, "c"),
    (stat.S_ISBLK, "b"),
)


class ArtifactError(MCPWrapError):
    """A command whose artifacts cannot be hashed, or lock data that does not validate."""


class FileArtifact(NamedTuple):
    """One file that is executed."""

    role: str  # "executable" | "script" | "interpreter"
    path: str  # absolute, realpath'd
    sha256: str  # hex


class Package(NamedTuple):
    name: str  # node_modules: the path below the tree ("a/node_modules/b" when nested)
    version: str
    digest: str  # "sha256:<hex>" over this package's installed files
    integrity: str = ""  # npm's "integrity"; venv: "sha256:<hex>" of the RECORD file
    modified: tuple[str, ...] = ()  # not stored: venv files that differ from their RECORD


class Tree(NamedTuple):
    kind: str  # "venv" | "node_modules"
    path: str  # absolute (in a lock: relative to a placeholder, see portable.py)
    digest: str  # "sha256:<hex>" over every entry of the tree
    packages: tuple[Package, ...]  # sorted by name
    portable: str = ""  # "sha256:<hex>" over the entries no installer made (installer_made)


class Artifacts(NamedTuple):
    files: tuple[FileArtifact, ...]
    trees: tuple[Tree, ...]


# --- the stat cache ----------------------------------------------------------------------------


_Key = tuple[int, int, int, int, int]


def _key(st: os.stat_result) -> _Key:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class StatCache:
    """Content hashes of files, reused while a file's stat data is unchanged.

    A JSON file mapping an absolute path to [dev, ino, size, mtime_ns, ctime_ns, sha256].
    A hash is reused only when all five stat fields match. mtime can be set back with
    utime(), but ctime cannot be set by an unprivileged process: the kernel sets it to now
    on every write, chmod or rename, so a changed file always misses. A file whose ctime is
    within `settle` seconds of the cache's creation is not stored, because a write in the
    same tick of the file system's clock could leave ctime as it was (git's "racily clean"
    problem); the default covers file systems with whole-second timestamps.

    The file must live where the server cannot write (mcpwrap's state directory is kept
    read-only in the jail): whoever can edit it can make a changed file pass.
    """

    def __init__(self, path: str, *, settle: float = 2.0) -> None:
        self.path = path
        self.hits = 0
        self.misses = 0
        self._old_files: dict[str, list[Any]] | None = None  # read at the first lookup
        self._seen: dict[str, list[Any]] = {}
        self._trusted_before = time.time_ns() - int(settle * 1e9)
        # A small second file for the launch's fast path: the trees' signatures and the
        # few files hashed one by one (the executable, an interpreter, a script), so that a
        # launch whose trees all match never reads the big file.
        self._launch_path = os.path.splitext(path)[0] + ".launch.json"
        old = _load_cache(self._launch_path)
        self._old_trees = _section(old, "trees")
        self._old_direct = _section(old, "files")
        self._trees: dict[str, Any] = {}
        self._direct: dict[str, Any] = {}

    @property
    def _old(self) -> dict[str, list[Any]]:
        if self._old_files is None:
            self._old_files = _load_cache(self.path)
        return self._old_files

    def tree(self, root: str) -> tuple[str, str] | None:
        """(stat signature, digest) of a tree as last verified whole, if it was."""
        entry = self._old_trees.get(root)
        if isinstance(entry, list) and len(entry) == 2 and all(type(v) is str for v in entry):
            return entry[0], entry[1]
        return None

    def store_tree(self, root: str, signature: Signature, digest: str) -> None:
        """Remember that the tree with this stat signature has this digest; not when an
        entry changed within the settle time (see store)."""
        if signature.newest_ctime < self._trusted_before:
            self._trees[root] = [signature.value, digest]

    def keep_tree(self, root: str) -> None:
        """The tree matched its signature: keep the entry for the next launch."""
        self._trees[root] = self._old_trees[root]

    def lookup(self, path: str, st: os.stat_result, *, direct: bool = False) -> str | None:
        """The cached hash of `path` if its stat data is unchanged. `direct`: a file
        hashed on its own, not met in a tree's walk (kept in the small file)."""
        if direct:
            entry = self._direct.get(path) or self._old_direct.get(path)
        else:
            entry = self._seen.get(path) or self._direct.get(path) or self._old.get(path)
        if entry is not None and tuple(entry[:5]) == _key(st) and _valid_entry(entry):
            self.hits += 1
            (self._direct if direct else self._seen)[path] = entry
            return str(entry[5])
        self.misses += 1
        return None

    def store(self, path: str, st: os.stat_result, hexdigest: str, *, direct: bool = False) -> None:
        """Remember a hash computed from content read after `st` was taken."""
        if st.st_ctime_ns < self._trusted_before:
            (self._direct if direct else self._seen)[path] = [*_key(st), hexdigest]

    def save(self) -> bool:
        """Write the entries seen since this cache was opened (the others are stale)
        atomically; False if that failed: the cache only saves time, a launch does not
        depend on it."""
        saved = True
        if (self._trees, self._direct) != (self._old_trees, self._old_direct):
            saved = _write_json(self._launch_path, {"trees": self._trees, "files": self._direct})
            self._old_trees, self._old_direct = dict(self._trees), dict(self._direct)
        if self._old_files is None:
            return saved  # no file was looked up: every tree matched its signature
        if self._seen == self._old and os.path.exists(self.path):
            return saved  # every entry used and none changed: the file already says this
        if not _write_json(self.path, self._seen):
            return False
        self._old_files = dict(self._seen)
        return saved


def _write_json(path: str, value: object) -> bool:
    """Write `value` to `path` atomically; False if that failed."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.{os.getpid()}.tmp"
    data = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
    try:
        os.makedirs(directory, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, data)  # a regular file takes the whole write at once
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return False
    return True


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name)
    return value if isinstance(value, dict) else {}


def _load_cache(path: str) -> dict[str, Any]:
    """The cache's entries; a missing, unreadable or corrupt file is an empty cache."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    # Entries are checked when used (lookup), not all of them on every launch.
    return data


def _valid_entry(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 6
        and all(type(v) is int for v in value[:5])
        and isinstance(value[5], str)
        and _is_hex(value[5])
    )


# --- hashing -----------------------------------------------------------------------------------

# A tree entry: (type, value). Types: "f" file, "x" executable file (value: sha256 hex),
# "l" symlink (value: its target), "d" directory, "s"/"p"/"c"/"b" socket, fifo, devices.
_Entry = tuple[str, str]


class _Hasher:
    def __init__(self, cache: StatCache | None) -> None:
        self.cache = cache

    def file(self, path: str) -> str:
        """The sha256 of a regular file named by a resolved path."""
        try:
            st = os.stat(path)
        except OSError as exc:
            raise _unreadable(path, exc) from exc
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactError(f"{path}: not a regular file, so it cannot be run or hashed")
        return self._hash(
            path, st, lambda: os.open(path, _FILE_FLAGS & ~os.O_NOFOLLOW), direct=True
        )

    def at(self, dir_fd: int, name: str, path: str, st: os.stat_result) -> str:
        """The sha256 of the regular file `name` in an open directory (no symlink is
        followed: the walk never leaves the tree)."""
        return self._hash(path, st, lambda: os.open(name, _FILE_FLAGS, dir_fd=dir_fd))

    def _hash(
        self, path: str, st: os.stat_result, opener: Callable[[], int], *, direct: bool = False
    ) -> str:
        if self.cache is not None and (hit := self.cache.lookup(path, st, direct=direct)):
            return hit
        try:
            fd = opener()
        except OSError as exc:
            raise _unreadable(path, exc) from exc
        try:
            before = os.fstat(fd)  # before reading: a write during the read changes ctime
            if not stat.S_ISREG(before.st_mode):
                raise ArtifactError(f"{path}: changed while it was being hashed; run again")
            hexdigest = _hash_fd(fd, path)
        finally:
            os.close(fd)
        if self.cache is not None:
            self.cache.store(path, before, hexdigest, direct=direct)
        return hexdigest


def _hash_fd(fd: int, path: str) -> str:
    h = sha256()
    try:
        while chunk := os.read(fd, _CHUNK):
            h.update(chunk)
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    return str(h.hexdigest())


def _unreadable(path: str, exc: OSError) -> ArtifactError:
    if isinstance(exc, FileNotFoundError):
        return ArtifactError(f"{path}: missing (it was there a moment ago); run again")
    return ArtifactError(
        f"cannot read {path} to hash it ({exc.strerror}): mcpwrap checks every file the "
        "server runs against its lock; make it readable for this user (chmod a+r, or a+rx "
        "for a directory) or remove it"
    )


def _digest(records: Iterable[tuple[str, _Entry]]) -> str:
    """sha256 over length-prefixed (path, type, value) records: no two listings can
    produce the same bytes, whatever the names contain."""
    h = sha256()
    for rel, (kind, value) in records:
        name, data = os.fsencode(rel), os.fsencode(value)
        h.update(b"%d:%s%s%d:%s\n" % (len(name), name, kind.encode(), len(data), data))
    return "sha256:" + str(h.hexdigest())


def _sorted(entries: Mapping[str, _Entry]) -> list[tuple[str, _Entry]]:
    return sorted(entries.items(), key=lambda item: os.fsencode(item[0]))


def _walk(root: str, hasher: _Hasher) -> dict[str, _Entry]:
    """Every entry under `root`, by path relative to it. Directories are opened relative
    to their parent's descriptor with O_NOFOLLOW: a symlink swapped in mid-walk cannot
    lead the walk out of the tree."""
    try:
        fd = os.open(root, _DIR_FLAGS)
    except OSError as exc:
        raise _unreadable(root, exc) from exc
    walker = _Walker(root, hasher)
    try:
        walker.directory(fd, "", os.path.basename(root))
    finally:
        os.close(fd)
    return walker.out


class _Walker:
    def __init__(self, root: str, hasher: _Hasher) -> None:
        self.root = root
        self.hasher = hasher
        self.out: dict[str, _Entry] = {}

    def directory(self, fd: int, prefix: str, dirname: str) -> None:
        try:
            with os.scandir(fd) as it:
                items = list(it)
        except OSError as exc:
            raise _unreadable(os.path.join(self.root, prefix), exc) from exc
        for item in items:
            if not (item.name in ("__pycache__", ".cache") and _excluded(item, dirname)):
                self.entry(fd, prefix, item)

    def entry(self, fd: int, prefix: str, item: os.DirEntry[str]) -> None:
        rel = prefix + item.name
        path = os.path.join(self.root, rel)
        try:
            st = item.stat(follow_symlinks=False)
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                self.out[rel] = ("d", "")
                child = os.open(item.name, _DIR_FLAGS, dir_fd=fd)
                try:
                    self.directory(child, rel + "/", item.name)
                finally:
                    os.close(child)
            elif stat.S_ISLNK(mode):
                self.out[rel] = ("l", os.readlink(item.name, dir_fd=fd))
            elif stat.S_ISREG(mode):
                kind = "x" if mode & 0o111 else "f"
                self.out[rel] = (kind, self.hasher.at(fd, item.name, path, st))
            else:
                self.out[rel] = (next(t for test, t in _SPECIAL if test(mode)), "")
        except FileNotFoundError:
            self.out.pop(rel, None)  # removed since the listing: it is not there
        except OSError as exc:
            raise _unreadable(path, exc) from exc


def tree_digest(root: str) -> str:
    """The digest over every entry under `root`, as a Tree's (bytecode.py checks its
    byte code with it)."""
    return _digest(_sorted(_walk(root, _Hasher(None))))


class Signature(NamedTuple):
    """A tree's stat data in one hash: every entry's name, type, mode, device, inode,
    size, mtime and ctime. Equal signatures mean equal content for the reason StatCache
    gives (ctime cannot be set back), without reading or looking up each file."""

    value: str
    newest_ctime: int  # ns: the settle rule applies to the tree's newest entry


def signature(root: str) -> Signature:
    """The stat signature of the tree at `root`, walked as `_walk` walks it (no symlink
    followed, the same directories left out)."""
    try:
        fd = os.open(root, _DIR_FLAGS)
    except OSError as exc:
        raise _unreadable(root, exc) from exc
    rows: list[tuple[str, int, int, int, int, int, int]] = []
    newest = 0
    try:
        newest = _sign(fd, "", os.path.basename(root), rows, root)
    finally:
        os.close(fd)
    rows.sort()
    return Signature("sha256:" + sha256(marshal.dumps(rows)).hexdigest(), newest)


def _sign(fd: int, prefix: str, dirname: str, rows: list[Any], root: str) -> int:
    newest = 0
    try:
        with os.scandir(fd) as it:
            items = list(it)
    except OSError as exc:
        raise _unreadable(os.path.join(root, prefix), exc) from exc
    for item in items:
        if item.name in ("__pycache__", ".cache") and _excluded(item, dirname):
            continue
        rel = prefix + item.name
        try:
            st = item.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # removed since the listing: the digest will not match either
        except OSError as exc:
            raise _unreadable(os.path.join(root, rel), exc) from exc
        rows.append(
            (rel, st.st_mode, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        )
        newest = max(newest, st.st_ctime_ns)
        if stat.S_ISDIR(st.st_mode):
            try:
                child = os.open(item.name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise _unreadable(os.path.join(root, rel), exc) from exc
            try:
                newest = max(newest, _sign(child, rel + "/", item.name, rows, root))
            finally:
                os.close(child)
    return newest


def _excluded(item: os.DirEntry[str], parent: str) -> bool:
    """Directories that are never read as code: `__pycache__` (mcpwrap sets
    PYTHONPYCACHEPREFIX in the jail, so Python neither reads nor writes them) and
    `node_modules/.cache` (build tools' caches)."""
    if not item.is_dir(follow_symlinks=False):
        return False
    return item.name == "__pycache__" or (item.name == ".cache" and parent == "node_modules")


# --- collect -----------------------------------------------------------------------------------


def collect(
    argv: Sequence[str],
    *,
    cwd: str,
    path_env: str,
    cache: StatCache | None = None,
    known: Artifacts | None = None,
) -> Artifacts:
    """Hash what `argv` executes, started in `cwd` with PATH=`path_env`. Call
    `cache.save()` afterwards to keep the hashes for the next launch. With `known` (the
    lock's artifacts), a tree whose digest over every file matches is taken from it: the
    same files make the same packages, and reading each RECORD again would double the
    time a launch spends verifying."""
    if not argv or not argv[0]:
        raise ArtifactError("cannot hash the server command: it is empty")
    hasher = _Hasher(cache)
    exe = _resolve(argv[0], cwd, path_env)
    real_exe = os.path.realpath(exe)
    files = [FileArtifact("executable", real_exe, hasher.file(real_exe))]
    roots: list[tuple[str, str]] = [*_venvs(exe), *_containing_node_modules(exe)]
    interpreter = _shebang(real_exe, cwd, path_env)
    if interpreter is not None:
        real = os.path.realpath(interpreter)
        files.append(FileArtifact("interpreter", real, hasher.file(real)))
        roots += _venvs(interpreter)
        if _is_js(real):  # a node script started directly: Node resolves from its directory
            roots += _nearest_node_modules(exe)
    for arg in script_of(exe, argv[1:]):
        script = os.path.join(cwd, arg)
        if os.path.isfile(script):
            real = os.path.realpath(script)
            files.append(FileArtifact("script", real, hasher.file(real)))
            roots += [*_venvs(script), *_containing_node_modules(script)]
            if _is_js(real_exe):
                roots += _nearest_node_modules(script)
    return Artifacts(
        files=tuple(dict.fromkeys(files)),
        trees=tuple(_tree(kind, path, hasher, known) for kind, path in sorted(set(roots))),
    )


def _resolve(program: str, cwd: str, path_env: str) -> str:
    """The absolute, not yet resolved path `program` runs: the kernel's and the shell's
    lookup (relative PATH entries count from cwd)."""
    if "/" in program:
        found: str | None = os.path.join(cwd, program)
    else:
        dirs = [os.path.join(cwd, d or ".") for d in path_env.split(os.pathsep)]
        found = which(program, path=os.pathsep.join(dirs)) if path_env else None
    if found is None or not os.path.isfile(found):
        raise ArtifactError(
            f"cannot hash the server command: {program!r} is not found "
            + (f"(in {cwd})" if "/" in program else f"on PATH ({path_env or 'empty'})")
            + "; check the command, or the PATH mcpwrap runs it with"
        )
    return os.path.normpath(os.path.abspath(found))


def _shebang(path: str, cwd: str, path_env: str) -> str | None:
    """The interpreter a #! line names, through `env NAME` too; absolute, not resolved."""
    try:
        with open(path, "rb") as f:
            first = f.readline(256)
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="surrogateescape").split()
    if not words:
        return None
    if os.path.basename(words[0]) == "env":
        name = _env_program(words[1:])
        if name is None:
            return None
        try:
            return _resolve(name, cwd, path_env)
        except ArtifactError as exc:
            raise ArtifactError(f"{path}: its #! line runs {name!r}: {exc}") from exc
    interpreter = os.path.normpath(os.path.join(cwd, words[0]))
    if not os.path.isfile(interpreter):
        raise ArtifactError(f"{path}: its #! interpreter {words[0]} is missing")
    return interpreter


def _env_program(words: Sequence[str]) -> str | None:
    """The program `env` runs: its first word that is neither an option (with its value)
    nor a NAME=VALUE setting."""
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in ("-u", "--unset", "-C", "--chdir"):
            skip = True
        elif not word.startswith("-") and "=" not in word:
            return word
    return None


def _is_js(real: str) -> bool:
    return os.path.basename(real).startswith(_JS_RUNTIMES)


def _venvs(path: str) -> Iterator[tuple[str, str]]:
    """The venv a program is in: `<venv>/bin/<program>` with `<venv>/pyvenv.cfg`. Both the
    path as named (`.venv/bin/python` is a symlink out of the venv) and its real path (a
    pipx command links into one)."""
    for candidate in {os.path.abspath(path), os.path.realpath(path)}:
        parent = os.path.dirname(candidate)
        venv = os.path.dirname(parent)
        if os.path.basename(parent) == "bin" and os.path.isfile(f"{venv}/pyvenv.cfg"):
            yield "venv", os.path.realpath(venv)


def _containing_node_modules(path: str) -> Iterator[tuple[str, str]]:
    for candidate in {os.path.abspath(path), os.path.realpath(path)}:
        for tree in node_modules_of(candidate):
            if os.path.isdir(tree):
                yield "node_modules", os.path.realpath(tree)


def _nearest_node_modules(script: str) -> Iterator[tuple[str, str]]:
    """Where Node looks first for a script's requires: node_modules in its real directory
    or the closest one above."""
    real = os.path.realpath(script)
    if "node_modules" in real.split("/"):
        return  # inside a tree already: _containing_node_modules has it
    directory = os.path.dirname(real)
    while True:
        candidate = os.path.join(directory, "node_modules")
        if os.path.isdir(candidate):
            yield "node_modules", os.path.realpath(candidate)
            return
        if directory == "/":
            return
        directory = os.path.dirname(directory)


def _tree(kind: str, root: str, hasher: _Hasher, known: Artifacts | None = None) -> Tree:
    cache = hasher.cache
    signed = signature(root) if cache is not None and known is not None else None
    if signed is not None and cache is not None and known is not None:
        # The launch's fast path: the tree's stat data is what it was when its digest was
        # last computed from every file, so the digest is too.
        seen = cache.tree(root)
        for tree in known.trees if seen and seen[0] == signed.value else ():
            if (tree.kind, tree.path, tree.digest) == (kind, root, seen[1] if seen else ""):
                cache.keep_tree(root)
                return tree
    entries = _walk(root, hasher)
    digest = _digest(_sorted(entries))
    if signed is not None and cache is not None and signature(root) == signed:
        cache.store_tree(root, signed, digest)  # unchanged during the walk: trustworthy
    for tree in known.trees if known else ():
        if (tree.kind, tree.path, tree.digest) == (kind, root, digest):
            return tree
    if kind == "venv":
        packages = _venv_packages(root, entries, hasher)
    else:
        packages = _node_packages(root, entries)
    archived = {rel: e for rel, e in entries.items() if not installer_made(kind, rel)}
    return Tree(kind, root, digest, tuple(sorted(packages)), _digest(_sorted(archived)))


# Files an installer writes for the machine it runs on, beside what the archives hold: a
# venv's pyvenv.cfg (which Python, where), bin/ (links to it, console scripts, activate
# scripts), the RECORD/INSTALLER/REQUESTED of each package; npm's node_modules/.bin links
# and its hidden lock file. Another machine's installer writes them differently.
_INSTALLER_FILES = ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "uv_cache.json")


def installer_made(kind: str, rel: str) -> bool:
    """Whether the entry at `rel` in a tree was made by the installer, not unpacked from
    a package's archive (a lock pins the archives' content for every machine; the rest is
    verified on each machine against what it recorded)."""
    parts = rel.split("/")
    if kind == "venv":
        return parts[0] != "lib" or (
            len(parts) == 5
            and parts[2] == "site-packages"
            and parts[3].endswith(".dist-info")
            and parts[4] in _INSTALLER_FILES
        )
    return rel == ".package-lock.json" or any(
        part == ".bin" and (i == 0 or parts[i - 1] == "node_modules")
        for i, part in enumerate(parts)
    )


# --- venv packages -----------------------------------------------------------------------------


def _venv_packages(root: str, entries: Mapping[str, _Entry], hasher: _Hasher) -> list[Package]:
    packages = []
    for rel, (kind, _) in entries.items():
        parts = rel.split("/")
        if (
            kind == "d"
            and len(parts) == 4
            and parts[0] == "lib"
            and parts[1].startswith("python")
            and parts[2] == "site-packages"
            and parts[3].endswith(".dist-info")
        ):
            packages.append(_dist(root, rel, entries, hasher))
    return packages


def _dist(root: str, dist_info: str, entries: Mapping[str, _Entry], hasher: _Hasher) -> Package:
    """One installed distribution, read from its .dist-info directory."""
    site = os.path.dirname(dist_info)
    name, version = _metadata(_read(root, f"{dist_info}/METADATA", entries), dist_info)
    record = _read(root, f"{dist_info}/RECORD", entries)
    listed: list[tuple[str, _Entry]] = []
    modified: list[str] = []
    for path, expected in _record_rows(record):
        in_tree = os.path.normpath(os.path.join(site, path))
        if "__pycache__" in in_tree.split("/") or in_tree == f"{dist_info}/RECORD":
            continue
        entry = _entry_at(root, in_tree, entries, hasher)
        if expected is not None and (entry[0] not in ("f", "x") or entry[1] != expected):
            modified.append(path)
        # The digest covers what the wheel put there (the same on every machine); the
        # tree's digest and the RECORD check above cover what the installer wrote.
        if not installer_made("venv", in_tree):
            listed.append((path, entry))
    listed.sort(key=lambda item: os.fsencode(item[0]))
    return Package(
        name=name,
        version=version,
        digest=_digest(listed),
        integrity="" if record is None else "sha256:" + str(sha256(record).hexdigest()),
        modified=tuple(sorted(modified)),
    )


def _read(root: str, rel: str, entries: Mapping[str, _Entry]) -> bytes | None:
    """A small metadata file of the tree, if it is a regular file there."""
    if entries.get(rel, ("", ""))[0] not in ("f", "x"):
        return None
    try:
        fd = os.open(os.path.join(root, rel), _FILE_FLAGS)
    except OSError as exc:
        raise _unreadable(os.path.join(root, rel), exc) from exc
    with open(fd, "rb") as f:
        return f.read()


def _metadata(data: bytes | None, dist_info: str) -> tuple[str, str]:
    """Name and Version from METADATA's headers, else from the directory's name."""
    stem = os.path.basename(dist_info).removesuffix(".dist-info")
    fallback_name, _, fallback_version = stem.partition("-")
    headers: dict[str, str] = {}
    for line in (data or b"").decode("utf-8", errors="replace").splitlines():
        if not line.strip():
            break  # the headers end at the first blank line; the description follows
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("name", "version"):
            headers.setdefault(key.strip().lower(), value.strip())
    return headers.get("name") or fallback_name, headers.get("version") or fallback_version


def _record_rows(record: bytes | None) -> Iterator[tuple[str, str | None]]:
    """(path relative to site-packages, expected sha256 hex or None) per RECORD row."""
    if record is None:
        return
    import base64
    import binascii
    import csv

    for row in csv.reader(record.decode("utf-8", errors="surrogateescape").splitlines()):
        if not row or not row[0]:
            continue
        algorithm, _, encoded = (row[1] if len(row) > 1 else "").partition("=")
        expected = None
        if algorithm == "sha256" and encoded:
            try:
                expected = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).hex()
            except (binascii.Error, ValueError):
                expected = "invalid"  # matches no file: reported as modified
        yield row[0], expected


def _entry_at(root: str, rel: str, entries: Mapping[str, _Entry], hasher: _Hasher) -> _Entry:
    """A RECORD path's entry: from the walk, or read directly when it points outside the
    tree (an absolute path in RECORD)."""
    if not rel.startswith("../") and not os.path.isabs(rel):
        return entries.get(rel, ("missing", ""))
    path = os.path.normpath(os.path.join(root, rel))
    try:
        st = os.lstat(path)
    except OSError:
        return ("missing", "")
    if stat.S_ISREG(st.st_mode):
        return ("x" if st.st_mode & 0o111 else "f", hasher.file(path))
    return ("other", "")


# --- node packages -----------------------------------------------------------------------------


def _node_packages(root: str, entries: Mapping[str, _Entry]) -> list[Package]:
    """Packages from npm's hidden lock file (`.package-lock.json`: versions and
    integrity), and any other directory with a package.json in a package's place (an
    extraneous package is a package too: it shows up as added)."""
    locked = _hidden_lock(root, entries)
    names = {rel for rel in locked if rel in entries}
    names |= {
        rel
        for rel, (kind, _) in entries.items()
        if kind == "d" and _package_of(rel) == rel and f"{rel}/package.json" in entries
    }
    owned: dict[str, list[tuple[str, _Entry]]] = {name: [] for name in names}
    for rel, entry in entries.items():
        owner = _package_of(rel)
        if owner in owned:
            owned[owner].append((rel[len(owner) + 1 :], entry))
    packages = []
    for name in names:
        if name in locked:
            version, integrity = locked[name]
        else:
            version, integrity = _package_json_version(root, name, entries), ""
        digest = _digest(sorted(owned[name], key=lambda item: os.fsencode(item[0])))
        packages.append(Package(name, version, digest, integrity))
    return packages


def _package_of(rel: str) -> str | None:
    """The package an entry of the tree belongs to: the path of the directory after the
    last node_modules (two levels for a @scope). Entries of node_modules itself (`.bin`,
    `.package-lock.json`, a scope directory) belong to none."""
    parts = ["node_modules", *rel.split("/")]
    last = len(parts) - 1 - parts[::-1].index("node_modules")
    head = parts[last + 1 : last + 2]
    if not head or head[0].startswith("."):
        return None
    end = last + 3 if head[0].startswith("@") else last + 2
    if len(parts) < end:
        return None
    return "/".join(parts[1:end])


def _hidden_lock(root: str, entries: Mapping[str, _Entry]) -> dict[str, tuple[str, str]]:
    """{package path: (version, integrity)} from node_modules/.package-lock.json."""
    data = _read(root, ".package-lock.json", entries)
    try:
        doc = json.loads(data) if data is not None else {}
    except ValueError:
        return {}  # npm rewrites it; a broken one counts as absent (the tree digest has it)
    packages = doc.get("packages") if isinstance(doc, dict) else None
    out: dict[str, tuple[str, str]] = {}
    for key, value in (packages if isinstance(packages, dict) else {}).items():
        if key.startswith("node_modules/") and isinstance(value, dict):
            version, integrity = value.get("version", ""), value.get("integrity", "")
            out[key.removeprefix("node_modules/")] = (
                version if isinstance(version, str) else "",
                integrity if isinstance(integrity, str) else "",
            )
    return out


def _package_json_version(root: str, name: str, entries: Mapping[str, _Entry]) -> str:
    try:
        doc = json.loads(_read(root, f"{name}/package.json", entries) or b"{}")
    except ValueError:
        return ""
    version = doc.get("version") if isinstance(doc, dict) else None
    return version if isinstance(version, str) else ""


# --- compare -----------------------------------------------------------------------------------


def compare(locked: Artifacts, current: Artifacts) -> list[str]:
    """One sentence per difference, sorted; [] when what runs is what the lock recorded."""
    return sorted(_compare_files(locked.files, current.files) + _compare_trees(locked, current))


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:8] + "…"


def _compare_files(locked: Sequence[FileArtifact], current: Sequence[FileArtifact]) -> list[str]:
    old = {(f.role, f.path): f for f in locked}
    new = {(f.role, f.path): f for f in current}
    out = [f"{role} {path}: missing" for role, path in old.keys() - new.keys()]
    out += [f"{role} {path} is not in the lock" for role, path in new.keys() - old.keys()]
    for key in old.keys() & new.keys():
        was, now = old[key].sha256, new[key].sha256
        if was != now:
            out.append(
                f"{key[0]} {key[1]}: content changed "
                f"(sha256 {_short(was)} in the lock, now {_short(now)})"
            )
    return out


def _label(tree: Tree) -> str:
    return f"venv {tree.path}" if tree.kind == "venv" else f"node_modules tree {tree.path}"


def _compare_trees(locked: Artifacts, current: Artifacts) -> list[str]:
    old = {(t.kind, t.path): t for t in locked.trees}
    new = {(t.kind, t.path): t for t in current.trees}
    out = [f"{_label(old[key])} is gone" for key in old.keys() - new.keys()]
    out += [f"{_label(new[key])} is not in the lock" for key in new.keys() - old.keys()]
    for key in old.keys() & new.keys():
        out += _compare_tree(old[key], new[key])
    return out


def _compare_tree(was: Tree, now: Tree) -> list[str]:
    label = _label(now)
    old = {p.name: p for p in was.packages}
    new = {p.name: p for p in now.packages}
    out = [f"{label}: package {n} {old[n].version} was removed" for n in old.keys() - new.keys()]
    out += [f"{label}: package {n} {new[n].version} was added" for n in new.keys() - old.keys()]
    for name in old.keys() & new.keys():
        change = _compare_package(old[name], new[name], now.kind, was.digest != now.digest)
        if change:
            out.append(f"{label}: {change}")
    if not out and was.digest != now.digest:
        hint = (
            "a stray .pth file or script, or compiled byte code?"
            if now.kind == "venv"
            else "a .bin link or a directory that is no package?"
        )
        out.append(f"{label}: files outside any package changed ({hint})")
    return out


def _compare_package(was: Package, now: Package, kind: str, tree_changed: bool) -> str:
    if was.version != now.version:
        return f"package {now.name}: version {was.version} in the lock, now {now.version}"
    if was.integrity != now.integrity:
        if kind == "venv":
            return f"package {now.name} {now.version}: its RECORD changed (reinstalled?)"
        return (
            f"package {now.name} {now.version}: integrity {was.integrity[:15]}… in the lock, "
            f"now {now.integrity[:15]}…"
        )
    # `modified` also covers what the installer wrote (console scripts), which the
    # package's digest leaves out; the tree's digest says whether anything changed at all.
    if tree_changed and now.modified:
        return f"package {now.name} {now.version} changed: {_differ(now.modified)}"
    if was.digest == now.digest:
        return ""
    return (
        f"package {now.name} {now.version} changed: its files differ from the lock "
        f"({was.digest[:15]}… in the lock, now {now.digest[:15]}…)"
    )


def _differ(paths: Sequence[str], shown: int = 5) -> str:
    if len(paths) == 1:
        return f"{paths[0]} differs from its RECORD"
    if len(paths) <= shown:
        return f"{', '.join(paths[:-1])} and {paths[-1]} differ from its RECORD"
    rest = len(paths) - shown
    return f"{', '.join(paths[:shown])} and {rest} more files differ from its RECORD"


# --- to and from plain data --------------------------------------------------------------------


def to_data(a: Artifacts) -> dict[str, Any]:
    """TOML-ready: strings, lists and tables only (`modified` is not stored: it is what
    collect finds)."""
    return {
        "files": [{"role": f.role, "path": f.path, "sha256": f.sha256} for f in a.files],
        "trees": [
            {
                "kind": t.kind,
                "path": t.path,
                "digest": t.digest,
                **({"portable": t.portable} if t.portable else {}),
                "packages": [
                    {
                        "name": p.name,
                        "version": p.version,
                        "digest": p.digest,
                        **({"integrity": p.integrity} if p.integrity else {}),
                    }
                    for p in t.packages
                ],
            }
            for t in a.trees
        ],
    }


def from_data(
    data: object, *, source: str, where: str = "artifacts", symbolic: bool = False
) -> Artifacts:
    """Validate what to_data wrote (read back from `source`, under the key `where`).
    Paths are absolute, or with `symbolic` (a lock) start with a placeholder."""
    v = _Validator(source, symbolic)
    table = v.table(data, where, required=("files", "trees"))
    files = tuple(
        _file_from(v, item, f"{where}.files[{i}]")
        for i, item in enumerate(v.array(table["files"], f"{where}.files"))
    )
    v.unique([(f.role, f.path) for f in files], f"{where}.files", "file")
    trees = tuple(
        _tree_from(v, item, f"{where}.trees[{i}]")
        for i, item in enumerate(v.array(table["trees"], f"{where}.trees"))
    )
    v.unique([(t.kind, t.path) for t in trees], f"{where}.trees", "tree")
    return Artifacts(files, trees)


def _file_from(v: _Validator, data: object, where: str) -> FileArtifact:
    table = v.table(data, where, required=("role", "path", "sha256"))
    return FileArtifact(
        role=v.choice(table["role"], f"{where}.role", ROLES),
        path=v.path(table["path"], f"{where}.path"),
        sha256=v.hex(table["sha256"], f"{where}.sha256"),
    )


def _tree_from(v: _Validator, data: object, where: str) -> Tree:
    table = v.table(
        data, where, required=("kind", "path", "digest", "packages"), optional=("portable",)
    )
    packages = tuple(
        _package_from(v, item, f"{where}.packages[{i}]")
        for i, item in enumerate(v.array(table["packages"], f"{where}.packages"))
    )
    v.unique([p.name for p in packages], f"{where}.packages", "package")
    return Tree(
        kind=v.choice(table["kind"], f"{where}.kind", KINDS),
        path=v.path(table["path"], f"{where}.path"),
        digest=v.digest(table["digest"], f"{where}.digest"),
        packages=tuple(sorted(packages)),
        portable=v.digest(table["portable"], f"{where}.portable") if "portable" in table else "",
    )


def _package_from(v: _Validator, data: object, where: str) -> Package:
    table = v.table(data, where, required=("name", "version", "digest"), optional=("integrity",))
    name = v.text(table["name"], f"{where}.name")
    if not name:
        v.fail(f"{where}.name", "expected a package name", name)
    return Package(
        name=name,
        version=v.text(table["version"], f"{where}.version"),
        digest=v.digest(table["digest"], f"{where}.digest"),
        integrity=v.text(table.get("integrity", ""), f"{where}.integrity"),
    )


class _Validator:
    """Checks of plain data that name the source and the key path of what is wrong."""

    def __init__(self, source: str, symbolic: bool = False) -> None:
        self.source = source
        self.symbolic = symbolic

    def fail(self, where: str, expected: str, got: object) -> NoReturn:
        raise ArtifactError(f"{self.source}: {where}: {expected}, got {_shown(got)}")

    def table(
        self,
        data: object,
        where: str,
        *,
        required: Sequence[str],
        optional: Sequence[str] = (),
    ) -> Mapping[str, object]:
        if not isinstance(data, dict):
            self.fail(where, "expected a table", data)
        for key in required:
            if key not in data:
                raise ArtifactError(f"{self.source}: {where}.{key}: missing")
        for key in sorted(set(data) - set(required) - set(optional), key=str):
            raise ArtifactError(
                f"{self.source}: {where}.{key}: unknown key (was the lock edited by hand?)"
            )
        return data

    def array(self, data: object, where: str) -> list[object]:
        if not isinstance(data, list):
            self.fail(where, "expected an array", data)
        return data

    def text(self, data: object, where: str) -> str:
        if not isinstance(data, str):
            self.fail(where, "expected a string", data)
        return data

    def choice(self, data: object, where: str, choices: Sequence[str]) -> str:
        if data not in choices:
            self.fail(where, f"expected one of {', '.join(choices)}", data)
        return str(data)

    def path(self, data: object, where: str) -> str:
        if self.symbolic:
            if not isinstance(data, str) or not (data in _PLACES or data.startswith(_UNDER)):
                self.fail(where, "expected a path under {project} or {install}", data)
        elif not isinstance(data, str) or not data.startswith("/"):
            self.fail(where, "expected an absolute path", data)
        return data

    def hex(self, data: object, where: str) -> str:
        if not isinstance(data, str) or not _is_hex(data):
            self.fail(where, "expected 64 lowercase hex digits (a sha256)", data)
        return data

    def digest(self, data: object, where: str) -> str:
        if not isinstance(data, str) or not _is_digest(data):
            self.fail(where, "expected a string like sha256:<hex>", data)
        return data

    def unique(self, keys: Sequence[object], where: str, what: str) -> None:
        seen: set[object] = set()
        for i, key in enumerate(keys):
            if key in seen:
                raise ArtifactError(f"{self.source}: {where}[{i}]: the same {what} again")
            seen.add(key)


_HEX = re.compile(r"[0-9a-f]{64}")
_PLACES = ("{project}", "{install}")
_UNDER = tuple(p + "/" for p in _PLACES)


def _is_hex(text: str) -> bool:
    return _HEX.fullmatch(text) is not None


def _is_digest(text: str) -> bool:
    return text.startswith("sha256:") and _is_hex(text[7:])


def _shown(value: object) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
