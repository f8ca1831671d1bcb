"""A throwaway PostgreSQL cluster for the tests, from Debian's packages (postgresql).

    python3 tests/pgcluster.py start DIR    initdb in DIR, start it, print DIR/cluster.json
    python3 tests/pgcluster.py stop DIR     stop it (the files stay until DIR is removed)

tests/test_postgres.py starts its own and stops it at the end; with MCPWRAP_TEST_PG=DIR
it uses one started this way beforehand instead. Stdlib only, so that it also runs with
Debian's python3 outside the test venv.

The cluster listens on 127.0.0.1 only, at a free port, and on a unix socket in DIR. TCP
needs TLS (a self-signed certificate for IP 127.0.0.1, CA:TRUE so that clients can verify
the server with it as their root) and a SCRAM password; the socket trusts the superuser
for the tests' own set-up and checks. Every statement is logged (log_statement = all), so
a test can show that a statement never reached the database. As root, PostgreSQL refuses
to run, so it runs as the user `postgres` that Debian's package creates.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SUPERUSER = "pgadmin"


def _bindir() -> Path:
    """The newest server of Debian's layout (/usr/lib/postgresql/N/bin), else PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        sys.exit(
            "pgcluster: no PostgreSQL server found (initdb): on Debian, "
            "apt-get install postgresql (.ci/run does)"
        )
    return Path(initdb).parent


def _version(path: str) -> int:
    part = path.split("/")[4]
    return int(part) if part.isdigit() else 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_owner(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _run(argv: list[str], **kwargs: Any) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if done.returncode != 0:
        sys.exit(f"pgcluster: {' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")


def start(root: Path) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    _chown_to_owner(root)
    os.chmod(root, 0o755)  # the socket and the CA must be reachable by the tests
    bindir = _bindir()
    data, pwfile = root / "data", root / "pwfile"
    password = secrets.token_hex(16)
    pwfile.write_text(password + "\n")
    _chown_to_owner(pwfile)
    _run(
        _as_owner(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-instructions",
            ]
        )
    )
    pwfile.unlink()
    _certificate(root, data)
    port = _free_port()
    (data / "postgresql.auto.conf").write_text(
        f"listen_addresses = '127.0.0.1'\nport = {port}\n"
        f"unix_socket_directories = '{root}'\n"
        "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
        "log_statement = 'all'\nlog_connections = on\nfsync = off\n"
    )
    # TCP only with TLS and a password; the socket (the tests' own set-up) trusted.
    (data / "pg_hba.conf").write_text(
        "local all all trust\n"
        "hostssl all all 127.0.0.1/32 scram-sha-256\n"
        "hostnossl all all 0.0.0.0/0 reject\n"
    )
    for name in ("postgresql.auto.conf", "pg_hba.conf"):
        _chown_to_owner(data / name)
    log = root / "postgres.log"
    log.touch()
    _chown_to_owner(log)
    _run(_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "start"]))
    info = {
        "dir": str(root),
        "host": "127.0.0.1",
        "port": port,
        "socket_dir": str(root),
        "superuser": SUPERUSER,
        "superuser_password": password,
        "ca": str(root / "server.crt"),
        "log": str(log),
        "bindir": str(bindir),
    }
    (root / "cluster.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def _certificate(root: Path, data: Path) -> None:
    """A self-signed certificate for 127.0.0.1 that is its own CA (verify-full works)."""
    _run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "3",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-keyout",
            str(data / "server.key"),
            "-out",
            str(data / "server.crt"),
        ]
    )
    os.chmod(data / "server.key", 0o600)
    for name in ("server.key", "server.crt"):
        _chown_to_owner(data / name)
    shutil.copyfile(data / "server.crt", root / "server.crt")


def _chown_to_owner(path: Path) -> None:
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")  # created by Debian's postgresql package
        os.chown(path, owner.pw_uid, owner.pw_gid)


def stop(root: Path) -> None:
    info = json.loads((root / "cluster.json").read_text())
    pg_ctl = str(Path(info["bindir"]) / "pg_ctl")
    _run(_as_owner([pg_ctl, "-D", str(root / "data"), "-m", "immediate", "-w", "stop"]))


def psql(info: dict[str, Any], sql: str, db: str = "postgres") -> str:
    """Run SQL as the superuser over the socket; the output, unaligned, tuples only."""
    done = subprocess.run(
        [
            str(Path(info["bindir"]) / "psql"),
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            info["socket_dir"],
            "-p",
            str(info["port"]),
            "-U",
            info["superuser"],
            "-d",
            db,
            "-c",
            sql,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"psql failed ({done.returncode}) on {sql!r}: {done.stderr}")
    return done.stdout.strip()


def wait_ready(info: dict[str, Any], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            psql(info, "SELECT 1")
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("start", "stop"):
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[2]).resolve()
    if argv[1] == "start":
        print(json.dumps(start(root), indent=2))
    else:
        stop(root)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
