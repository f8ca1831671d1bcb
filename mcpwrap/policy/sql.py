"""`sql = "read-only"`: a statement PostgreSQL itself would parse, that only reads.

The text is parsed by PostgreSQL's own parser (libpg_query, through pglast), never by a
regex: comments, dollar quoting, nested CTEs and odd spacing are what the server will see.
Admitted: exactly one statement, a SELECT (VALUES, set operations), SHOW, or EXPLAIN
without ANALYZE of one; nowhere in the tree a data-modifying statement (a CTE may hold a
DELETE), SELECT INTO, a row lock (FOR UPDATE/SHARE), or a call to a function known to
have side effects or to read the server's files. The list of functions is a deny-list:
an extension's own side-effecting function can get through, so a read-only database
role remains the stronger wall; this check is the one mcpwrap can apply before the
server sees the call.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

MODIFYING = frozenset({"InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"})
# Side effects (locks, sequences, notifications, backends, config, WAL, replication,
# large objects, other databases), or reading the server's own files.
SIDE_EFFECTS = frozenset(
    {
        "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile",
        "set_config", "nextval", "setval", "pg_notify", "pg_sleep", "pg_sleep_for",
        "pg_sleep_until", "pg_switch_wal", "pg_create_restore_point", "pg_promote",
        "pg_backup_start", "pg_backup_stop", "pg_start_backup", "pg_stop_backup",
        "pg_logical_emit_message", "pg_drop_replication_slot", "pg_copy_physical_replication_slot",
        "pg_copy_logical_replication_slot", "pg_replication_origin_create",
        "pg_replication_origin_drop", "pg_read_file", "pg_read_binary_file", "pg_ls_dir",
        "pg_stat_file", "pg_ls_logdir", "pg_ls_waldir", "pg_ls_tmpdir", "pg_file_write",
        "pg_file_rename", "pg_file_unlink", "pg_import_system_collations", "txid_current",
        "pg_current_xact_id", "query_to_xml", "query_to_json", "cursor_to_xml",
        "table_to_xml", "pg_stat_reset", "pg_stat_reset_shared",
        "pg_stat_reset_single_table_counters",
    }
)  # fmt: skip
SIDE_EFFECT_PREFIXES = (
    "lo_", "dblink", "pg_advisory", "pg_try_advisory", "pg_create_", "pg_log_",
)  # fmt: skip
_READING = frozenset({"SelectStmt", "VariableShowStmt", "ExplainStmt"})


def read_only_problem(sql: str) -> str | None:
    """None if `sql` is one statement that only reads; else what is wrong."""
    from pglast import parser

    try:
        tree = json.loads(parser.parse_sql_json(sql))
    except parser.ParseError as exc:
        return f"not valid PostgreSQL: {exc}"
    stmts = tree.get("stmts", [])
    if len(stmts) != 1:
        return f"exactly one statement is allowed, this is {len(stmts)}"
    ((kind, body),) = stmts[0]["stmt"].items()
    if kind not in _READING:
        return f"{_name(kind)} is not a read"
    if kind == "ExplainStmt" and _analyze(body):
        return "EXPLAIN ANALYZE runs the statement"
    return _tree_problem(body)


def _tree_problem(node: object) -> str | None:
    for key, value in _walk(node):
        if key in MODIFYING:
            return f"a {_name(key)} inside the statement"
        if key == "intoClause":
            return "SELECT INTO creates a table"
        if key == "lockingClause":
            return "FOR UPDATE/SHARE locks rows"
        if key in ("TransactionStmt", "VariableSetStmt"):
            return f"{_name(key)} inside the statement"
        if key == "FuncCall":
            name = _function(value)
            if name in SIDE_EFFECTS or name.startswith(SIDE_EFFECT_PREFIXES):
                return f"function {name}() has side effects or reads the server's files"
    return None


def _walk(node: object) -> Iterator[tuple[str, Any]]:
    """Every (key, value) in the tree, depth first, without recursion (deep SQL nests)."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                yield key, value
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def _function(call: Any) -> str:
    """The function's own name, schema dropped and case folded (as PostgreSQL does for
    unquoted names; a quoted "PG_SLEEP" would name another function)."""
    parts = call.get("funcname", []) if isinstance(call, dict) else []
    last = parts[-1] if parts else {}
    return str(last.get("String", {}).get("sval", "")).lower()


def _analyze(body: dict[str, Any]) -> bool:
    for option in body.get("options", []):
        name = option.get("DefElem", {}).get("defname", "")
        if name == "analyze":
            return True
    return False


def _name(kind: str) -> str:
    """InsertStmt -> INSERT, TransactionStmt -> transaction control."""
    special = {
        "TransactionStmt": "transaction control (BEGIN, COMMIT, ...)",
        "VariableSetStmt": "SET",
        "CopyStmt": "COPY",
        "DoStmt": "DO",
        "CallStmt": "CALL",
    }
    if kind in special:
        return special[kind]
    return kind.removesuffix("Stmt").upper()
