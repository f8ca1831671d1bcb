"""sql = "read-only": PostgreSQL's own parser decides what a statement does."""

from __future__ import annotations

import os

import pytest

from mcpwrap.config.profile import Constraint
from mcpwrap.policy.constraints import check_value
from mcpwrap.policy.sql import read_only_problem

READS = [
    "SELECT 1",
    "select * from users where id = 3",
    "SELECT a FROM t UNION SELECT b FROM u",
    "VALUES (1), (2)",
    "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
    "SHOW search_path",
    "EXPLAIN SELECT * FROM t",
    "SELECT count(*), lower(name) FROM t GROUP BY 2",
    "SELECT $$DELETE FROM t$$",  # a string, not a statement
    "SELECT 1 -- ; DROP TABLE t",  # a comment
    "SELECT 1;",  # one statement with its terminator
    '/* DROP */ SELECT "delete" FROM t',
]

REFUSED = [
    ("SELECT 1; COMMIT; DROP SCHEMA public CASCADE", "exactly one statement"),
    ("SELECT 1; SELECT 2", "exactly one statement"),
    ("", "exactly one statement"),
    ("DROP TABLE t", "DROP is not a read"),
    ("DELETE FROM t", "DELETE is not a read"),
    ("UPDATE t SET a = 1", "UPDATE is not a read"),
    ("INSERT INTO t VALUES (1)", "INSERT is not a read"),
    ("COMMIT", "transaction control"),
    ("BEGIN", "transaction control"),
    ("SET search_path = evil", "SET is not a read"),
    ("COPY t TO '/tmp/x'", "COPY is not a read"),
    ("DO $$ BEGIN DELETE FROM t; END $$", "DO is not a read"),
    ("CALL proc()", "CALL is not a read"),
    ("WITH gone AS (DELETE FROM t RETURNING *) SELECT * FROM gone", "a DELETE inside"),
    ("WITH x AS (UPDATE t SET a = 1 RETURNING a) SELECT a FROM x", "a UPDATE inside"),
    ("SELECT * INTO copy FROM t", "SELECT INTO"),
    ("SELECT * FROM t FOR UPDATE", "locks rows"),
    ("EXPLAIN ANALYZE DELETE FROM t", "EXPLAIN ANALYZE"),
    ("EXPLAIN (ANALYZE) SELECT 1", "EXPLAIN ANALYZE"),
    ("SELECT pg_sleep(100)", "pg_sleep()"),
    ("SELECT nextval('s')", "nextval()"),
    ("SELECT pg_catalog.pg_terminate_backend(1)", "pg_terminate_backend()"),
    ("SELECT PG_READ_FILE('/etc/passwd')", "pg_read_file()"),
    ("SELECT lo_import('/etc/passwd')", "lo_import()"),
    ("SELECT pg_advisory_lock(1)", "pg_advisory_lock()"),
    ("SELECT * FROM dblink('host=x', 'DELETE FROM t') AS r(a int)", "dblink()"),
    ("SELECT query_to_xml('DELETE FROM t RETURNING 1', true, true, '')", "query_to_xml()"),
    ("SELECT (SELECT set_config('role', 'admin', false))", "set_config()"),
    ("SELEC 1", "not valid PostgreSQL"),
]


@pytest.mark.parametrize("sql", READS)
def test_reads_pass(sql: str) -> None:
    assert read_only_problem(sql) is None


@pytest.mark.parametrize(("sql", "why"), REFUSED, ids=[r[0][:40] for r in REFUSED])
def test_everything_else_is_refused_with_the_reason(sql: str, why: str) -> None:
    problem = read_only_problem(sql)
    assert problem is not None and why in problem, problem


def test_deeply_nested_sql_does_not_crash() -> None:
    sql = "SELECT " + "(" * 500 + "1" + ")" * 500
    assert read_only_problem(sql) is None or "not valid" in str(read_only_problem(sql))


def test_as_an_argument_constraint() -> None:
    constraint = Constraint(sql="read-only")
    ok = check_value("SELECT 1", constraint, cwd=os.getcwd(), resolve=os.path.realpath)
    assert ok is None
    bad = check_value("DROP TABLE t", constraint, cwd=os.getcwd(), resolve=os.path.realpath)
    assert bad is not None and "not a read-only statement: DROP is not a read" in bad
    wrong = check_value(5, constraint, cwd=os.getcwd(), resolve=os.path.realpath)
    assert wrong is not None and "expected SQL text" in wrong
