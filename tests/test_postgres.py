"""The Postgres case end to end: profiles/postgres.toml over a real PostgreSQL server.

The database is Debian's PostgreSQL (tests/pgcluster.py: this module starts its own and
stops it, or uses the one MCPWRAP_TEST_PG names), reached over
TLS (verify-full) with a SCRAM password that the profile takes from a real Secret Service
(gnome-keyring on a private bus). The MCP server is mcp-postgres-server from PyPI, in its
own venv (.cache/peers), in the jail, with one egress: a tcp: forward to the database.

The curated profile is used as written but for what must name this run's database: its
port, database, role and keyring entry are substituted in the copy under the test's
project. The database logs every statement it receives (log_statement = all), so "refused
before the server sees it" is checked where it matters: the statement never reached the
database, and the data is unchanged.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pgcluster
import pytest
from offline import offline_env
from wrapped import MCPWRAP, REPO, Wrapped, audit_records, py_peer

from mcpwrap.identity import tokens

CURATED = REPO / "profiles" / "postgres.toml"
READ_TOOLS = ["describe_table", "list_schemas", "list_tables", "query"]
STACKED = "SELECT 1; COMMIT; DROP SCHEMA public CASCADE"


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    given = os.environ.get("MCPWRAP_TEST_PG")
    if given:
        info = json.loads((Path(given) / "cluster.json").read_text())
        pgcluster.wait_ready(info)
        yield info
        return
    # Not under the pytest tmp dir: as root that is mode 0700, and the server runs as
    # the user postgres.
    root = Path(tempfile.mkdtemp(prefix="mcpwrap-pg-", dir="/var/tmp"))
    try:
        try:
            info = pgcluster.start(root)
        except SystemExit as exc:
            pytest.fail(str(exc), pytrace=False)
        pgcluster.wait_ready(info)
        yield info
        pgcluster.stop(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


class Database:
    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info
        suffix = secrets.token_hex(4)
        self.name, self.role = f"app_{suffix}", f"mcp_{suffix}"
        self.password = secrets.token_urlsafe(24)
        pgcluster.psql(info, f"CREATE ROLE {self.role} LOGIN PASSWORD '{self.password}'")
        pgcluster.psql(info, f"CREATE DATABASE {self.name} OWNER {self.role}")
        self.sql(
            "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);"
            "INSERT INTO items (name) VALUES ('apple'), ('pear');"
            f"ALTER TABLE items OWNER TO {self.role};"
            f"ALTER SEQUENCE items_id_seq OWNER TO {self.role}"
        )

    def sql(self, text: str) -> str:
        return pgcluster.psql(self.info, text, db=self.name)

    def names(self) -> list[str]:
        return self.sql("SELECT name FROM items ORDER BY id").splitlines()

    def log(self) -> str:
        return Path(self.info["log"]).read_text(errors="replace")

    def drop(self) -> None:
        pgcluster.psql(self.info, f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        pgcluster.psql(self.info, f"DROP ROLE IF EXISTS {self.role}")


@pytest.fixture
def db(cluster: dict[str, Any]) -> Iterator[Database]:
    made = Database(cluster)
    yield made
    made.drop()


@pytest.fixture
def project(tmp_path: Path, db: Database, keyring_env: dict[str, str]) -> Path:
    """A project with the curated profile (for this run's database) and the server's CA;
    the password stored in the keyring with `mcpwrap secret set`."""
    root = tmp_path / "project"
    (root / ".mcpwrap").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    port = str(db.info["port"])
    text = CURATED.read_text()
    for old, new in (
        ('POSTGRES_PORT = "5432"', f'POSTGRES_PORT = "{port}"'),
        ('"tcp:127.0.0.1:5432"', f'"tcp:127.0.0.1:{port}"'),
        ('POSTGRES_DB = "postgres"', f'POSTGRES_DB = "{db.name}"'),
        ('POSTGRES_USER = "mcp"', f'POSTGRES_USER = "{db.role}"'),
        ("keyring:mcpwrap-postgres/mcp", f"keyring:mcpwrap-postgres/{db.role}"),
    ):
        assert old in text, f"profiles/postgres.toml no longer has {old}"
        text = text.replace(old, new)
    (root / ".mcpwrap" / "postgres.toml").write_text(text)
    shutil.copyfile(db.info["ca"], root / ".mcpwrap" / "postgres-ca.crt")
    stored = subprocess.run(
        [*MCPWRAP, "secret", "set", f"keyring:mcpwrap-postgres/{db.role}"],
        input=db.password,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **keyring_env},
    )
    assert stored.returncode == 0, stored.stderr
    return root


def _run(project: Path, env: dict[str, str], token: str | None = None) -> Wrapped:
    full = {**env, **({"MCPWRAP_TOKEN": token} if token else {})}
    return Wrapped(Path("postgres"), [str(py_peer("mcp-postgres-server"))], cwd=project, env=full)


def _listed(w: Wrapped) -> list[str]:
    return sorted(t["name"] for t in w.recv_id(w.request("tools/list"))["result"]["tools"])


def _text(reply: dict[str, Any]) -> str:
    if "error" in reply:
        return str(reply["error"]["message"])
    return "".join(str(c.get("text", "")) for c in reply["result"]["content"])


def _refused(reply: dict[str, Any], rule: str) -> None:
    assert "error" in reply or reply["result"].get("isError") is True, reply
    assert rule in _text(reply), reply


def _calls(state: Path) -> list[dict[str, Any]]:
    return [r for r in audit_records(state / "mcpwrap" / "audit.jsonl") if r["event"] == "call"]


def _token(classes: frozenset[str]) -> str:
    from mcpwrap.config import paths

    scope = tokens.Scope("acme", ("*",), classes, None, None)
    return tokens.issue(
        scope, lifetime=3600, not_before=None, name=None, state_dir=paths.state_dir()
    )[1]


def test_reads_work_writes_and_stacked_statements_are_refused_before_the_database(
    project: Path, db: Database, keyring_env: dict[str, str]
) -> None:
    with _run(project, keyring_env) as w:
        w.initialize()
        assert _listed(w) == READ_TOOLS  # execute (write) hidden: no token
        rows = _text(w.call("query", {"sql": "SELECT id, name FROM items ORDER BY id"}))
        assert "apple" in rows and "pear" in rows
        tls = _text(
            w.call("query", {"sql": "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"})
        )
        assert "true" in tls.lower(), tls  # the session to the database is TLS
        assert "items" in _text(w.call("list_tables", {"schema": "public"}))

        _refused(
            w.call("execute", {"sql": "INSERT INTO items (name) VALUES ('x_write')"}),
            "auth.required",
        )
        _refused(w.call("query", {"sql": STACKED}), "tools.query.args.sql")
        _refused(
            w.call("query", {"sql": "DELETE FROM items WHERE name = 'x_delete'"}),
            "tools.query.args.sql",
        )
        cte = (
            "WITH gone AS (DELETE FROM items WHERE name <> 'x_cte' RETURNING *) SELECT * FROM gone"
        )
        _refused(w.call("query", {"sql": cte}), "tools.query.args.sql")
        _refused(
            w.call("list_tables", {"schema": "public; DROP TABLE items"}),
            "tools.list_tables.args.schema",
        )
        assert w.close() == 0

    assert db.names() == ["apple", "pear"]
    assert db.sql("SELECT count(*) FROM pg_namespace WHERE nspname = 'public'") == "1"
    log = db.log()
    assert "SELECT id, name FROM items ORDER BY id" in log  # the control: reads arrive
    for never in ("DROP SCHEMA", "x_write", "x_delete", "x_cte", "DROP TABLE"):
        assert never not in log, never
    refused = {
        r["tool"]: r["rule"]
        for r in _calls(project.parent / "xdg" / "state")
        if r["decision"] == "refuse"
    }
    assert refused["execute"] == "auth.required"


def test_a_write_token_opens_execute_and_the_read_rules_still_hold(
    project: Path, db: Database, keyring_env: dict[str, str]
) -> None:
    with _run(project, keyring_env, _token(frozenset({"read"}))) as w:
        w.initialize()
        assert _listed(w) == READ_TOOLS
        _refused(
            w.call("execute", {"sql": "INSERT INTO items (name) VALUES ('x_reader')"}),
            "token.class",
        )
    with _run(project, keyring_env, _token(frozenset({"read", "write"}))) as w:
        w.initialize()
        assert _listed(w) == sorted([*READ_TOOLS, "execute"])
        done = w.call("execute", {"sql": "INSERT INTO items (name) VALUES ('kiwi')"})
        assert "error" not in _text(done).lower(), done
        _refused(w.call("query", {"sql": STACKED}), "tools.query.args.sql")
        assert "kiwi" in _text(w.call("query", {"sql": "SELECT name FROM items"}))
    assert db.names() == ["apple", "pear", "kiwi"]
    log = db.log()
    assert "x_reader" not in log and "DROP SCHEMA" not in log


def test_the_server_reaches_the_database_and_nothing_else(
    project: Path, db: Database, keyring_env: dict[str, str]
) -> None:
    """One egress entry, the tcp: forward; the records name it and nothing else."""
    with _run(project, keyring_env) as w:
        w.initialize()
        assert "apple" in _text(w.call("query", {"sql": "SELECT name FROM items"}))
        assert w.close() == 0
    records = audit_records(project.parent / "xdg" / "state" / "mcpwrap" / "audit.jsonl")
    egress = [r for r in records if r.get("event") == "egress"]
    assert egress, "the database connection left no egress record"
    assert {r["endpoint"] for r in egress} == {f"127.0.0.1:{db.info['port']}"}, egress
    assert all(r["decision"] == "allow" for r in egress), egress


def test_locked_from_uvx_it_runs_offline_and_reaches_level_4(
    project: Path, db: Database, keyring_env: dict[str, str]
) -> None:
    """The profile's own command line: `uvx --with 'mcp<2' mcp-postgres-server`, locked
    (offline, from the wheels scripts/test put in .cache/uv), then run from the store."""
    server = ["uvx", "--with", "mcp<2", "mcp-postgres-server==0.1.2"]
    env = {**offline_env(), **keyring_env}
    locked = subprocess.run(
        [*MCPWRAP, "lock", "--profile", "postgres", "--yes", "--", *server],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert locked.returncode == 0, locked.stderr
    assert (project / ".mcpwrap" / "postgres.lock").is_file()
    with Wrapped(Path("postgres"), server, cwd=project, env=env) as w:
        w.initialize()
        assert _listed(w) == READ_TOOLS
        assert "pear" in _text(w.call("query", {"sql": "SELECT name FROM items"}))
    checked = subprocess.run(
        [*MCPWRAP, "check", "--format", "json", "postgres"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = json.loads(checked.stdout)["profiles"][0]
    assert report["level"]["value"] == 4, report
