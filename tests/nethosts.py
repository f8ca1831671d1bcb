"""A test host: a network namespace behind a veth pair, with documentation-range
addresses, running real servers (tests/fixtures/nethost_server.py) that log what reaches
them. Network tests send traffic to loopback or to such hosts only, never elsewhere.

  host end   198.51.100.N+1/30  (mcpwrap's egress proxy dials from here)
  namespace  198.51.100.N+2/30, and one private address (10.198.51.N+2/32) routed to it
             so that a test of a name that resolves to a private address sends nothing
             past this machine even if the refusal it checks were gone

N is the first /30 of 198.51.100.0/24 no other test host holds (normally 0: the host
is 198.51.100.2). Needs root (ip netns, veth); a failure to build it fails the test with
the reason, never skips. Teardown kills the servers and removes the namespace and the
veth, and a later run sweeps what a killed run left behind.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

SERVER = Path(__file__).parent / "fixtures" / "nethost_server.py"
NAMES = ("api.example.test", "git.example.test", "other.example.test", "internal.example.test")
PREFIX = "mcpwrap-t-"
_LOCK = "/tmp/mcpwrap-nethosts.lock"
_GIT_FILE = "hello from the test host's git repository\n"


class NetHost(NamedTuple):
    netns: str
    address: str  # the namespace's documentation-range address
    gateway: str  # the host end of the veth
    private: str  # a private-range address of the namespace (routed over the veth only)
    ca: Path  # the test CA's certificate (PEM), in `files`
    files: Path  # what a jailed client may be granted to read: the CA, nothing secret
    log: Path  # the servers' JSON lines: every connection and request they received
    http: int
    https: int
    echo: int
    git_file: str  # README of the served repository

    def hosts(self, **override: str) -> dict[str, str]:
        """The test names (all at the namespace's address), for MCPWRAP_TEST_HOSTS."""
        return {**dict.fromkeys(NAMES, self.address), **override}

    def seen(self) -> list[dict[str, Any]]:
        """Everything the servers logged so far."""
        text = self.log.read_text(encoding="utf-8") if self.log.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line.strip()]


class _Mark:
    """What the servers log from now on: mark = host_mark(host); ...; mark.new()."""

    def __init__(self, host: NetHost) -> None:
        self.host, self.start = host, len(host.seen())

    def new(self) -> list[dict[str, Any]]:
        # The servers log before they answer; a tiny grace for a connection whose
        # client gave up first.
        time.sleep(0.05)
        return self.host.seen()[self.start :]


def mark(host: NetHost) -> _Mark:
    return _Mark(host)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep() -> None:
    """Remove the namespaces of test runs that died without their teardown."""
    listed = _ip("netns", "list", check=False).stdout
    for name in re.findall(rf"^({PREFIX}(\d+))\b", listed, flags=re.MULTILINE):
        if not _alive(int(name[1])):
            _remove(name[0], _veth(int(name[1]))[0])


def _veth(pid: int) -> tuple[str, str]:
    return f"mwt{pid}h", f"mwt{pid}n"  # at most 15 characters


def _remove(netns: str, host_end: str) -> None:
    pids = _ip("netns", "pids", netns, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), 9)
    _ip("netns", "delete", netns, check=False)
    _ip("link", "delete", host_end, check=False)  # gone with the namespace's end already


def _free_block() -> int:
    """The first /30 of 198.51.100.0/24 with no address on this machine."""
    shown = _ip("-4", "-o", "addr").stdout + _ip("-4", "route", "show", "table", "all").stdout
    found = re.findall(r"\d+\.\d+\.\d+\.\d+(?:/\d+)?", shown)
    used = set(found) | {f.split("/")[0] for f in found}
    for base in range(0, 256, 4):
        block = {f"198.51.100.{base + i}" for i in (1, 2)} | {
            f"198.51.100.{base}/30",
            f"10.198.51.{base + 2}",
        }
        if not block & used:
            return base
    raise RuntimeError("no free /30 left in 198.51.100.0/24")


def _certificates(where: Path, ca_path: Path) -> tuple[Path, Path]:
    """A test CA (written to ca_path) and a server certificate it signs for NAMES."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2))

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("mcpwrap test CA"))
        .issuer_name(name("mcpwrap test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(NAMES[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in NAMES]), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path, key_path = where / "server.pem", where / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _git_repository(where: Path) -> Path:
    """A bare repository with one commit, packed and ready for git's dumb HTTP protocol."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(where),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.test",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.test",
    }
    work, bare = where / "work", where / "repo.git"

    def git(*args: str, cwd: Path = where) -> None:
        subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)

    git("init", "-q", "-b", "main", str(work))
    (work / "README").write_text(_GIT_FILE)
    git("add", "README", cwd=work)
    git("commit", "-q", "-m", "test host repository", cwd=work)
    git("clone", "-q", "--bare", "--no-local", str(work), str(bare))
    git("repack", "-q", "-a", "-d", cwd=bare)
    git("update-server-info", cwd=bare)
    return bare


def _start_servers(netns: str, log: Path, tls: tuple[Path, Path], git: Path, err: Path) -> Any:
    argv = ["ip", "netns", "exec", netns, sys.executable, str(SERVER), "--log", str(log)]
    argv += ["--tls", *map(str, tls), "--git", str(git)]
    with open(err, "wb") as stderr:
        server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr)
    assert server.stdout is not None
    ready, _, _ = select.select([server.stdout], [], [], 15)
    line = server.stdout.readline() if ready else b""
    if line.strip() != b"ready":
        server.kill()
        server.wait()
        raise RuntimeError(f"the test host's servers did not start: {err.read_text()[-2000:]}")
    return server


@contextlib.contextmanager
def build(base: Path) -> Iterator[NetHost]:
    """Build the host, yield it, and tear it all down whatever happens."""
    if os.geteuid() != 0:
        pytest.fail(
            "the test host needs root (ip netns add, a veth pair): run these tests as root",
            pytrace=False,
        )
    if shutil.which("ip") is None:
        pytest.fail("`ip` is not on PATH: install iproute2 (.ci/run does)", pytrace=False)
    pid = os.getpid()
    netns, (host_end, ns_end) = f"{PREFIX}{pid}", _veth(pid)
    files, private_dir = base / "files", base / "server"
    files.mkdir()
    private_dir.mkdir()
    server = None
    try:
        try:
            with open(_LOCK, "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                _sweep()
                n = _free_block()
                gateway, address = f"198.51.100.{n + 1}", f"198.51.100.{n + 2}"
                private = f"10.198.51.{n + 2}"
                _ip("netns", "add", netns)
                _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end, "netns", netns)
                _ip("addr", "add", f"{gateway}/30", "dev", host_end)
                _ip("link", "set", host_end, "up")
                _ip("-n", netns, "link", "set", "lo", "up")
                _ip("-n", netns, "addr", "add", f"{address}/30", "dev", ns_end)
                _ip("-n", netns, "addr", "add", f"{private}/32", "dev", ns_end)
                _ip("-n", netns, "link", "set", ns_end, "up")
                _ip("route", "add", f"{private}/32", "dev", host_end, "src", gateway)
            ca = files / "ca.pem"
            tls = _certificates(private_dir, ca)
            git = _git_repository(private_dir)
            log = base / "requests.jsonl"
            server = _start_servers(netns, log, tls, git, base / "servers.err")
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            pytest.fail(f"cannot build the test host (netns {netns}): {exc}", pytrace=False)
        yield NetHost(netns, address, gateway, private, ca, files, log, 80, 443, 7007, _GIT_FILE)
    finally:
        if server is not None:
            server.kill()
            server.wait()
        _remove(netns, host_end)
