"""Only mcpwrap/audit/recorder.py writes audit records: every other module hands its decisions to
it. An AST scan of mcpwrap/ for `.write(` on anything that is, or looks like, an AuditWriter."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mcpwrap"
ALLOWED = {
    PACKAGE / "audit" / "recorder.py",
    PACKAGE / "audit" / "writer.py",
}  # the writer itself, and its one user
# Names an AuditWriter goes by; a writer bound from AuditWriter(...) is found by binding.
WRITER_NAMES = {"audit", "_audit", "writer", "_writer", "audit_writer", "log_writer"}


def _bound_writers(tree: ast.AST) -> set[str]:
    """Names (and attribute names) bound from AuditWriter(...) anywhere in the module,
    including `with AuditWriter(...) as x` and annotations `x: AuditWriter`."""
    names: set[str] = set()

    def is_writer(value: ast.AST | None) -> bool:
        if not isinstance(value, ast.Call):
            return False
        f = value.func
        return (isinstance(f, ast.Name) and f.id == "AuditWriter") or (
            isinstance(f, ast.Attribute) and f.attr == "AuditWriter"
        )

    def target_names(target: ast.AST) -> set[str]:
        if isinstance(target, ast.Name):
            return {target.id}
        if isinstance(target, ast.Attribute):
            return {target.attr}
        return set()

    def annotated_writer(annotation: ast.AST | None) -> bool:
        return annotation is not None and "AuditWriter" in ast.unparse(annotation)

    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and is_writer(node.value):
            for target in node.targets:
                names |= target_names(target)
        elif isinstance(node, ast.AnnAssign) and (
            is_writer(node.value) or annotated_writer(node.annotation)
        ):
            names |= target_names(node.target)
        elif isinstance(node, ast.withitem) and is_writer(node.context_expr):
            if node.optional_vars is not None:
                names |= target_names(node.optional_vars)
        elif isinstance(node, ast.arg) and annotated_writer(node.annotation):
            names.add(node.arg)
    return names


def writes(source: str) -> list[int]:
    """Lines of `X.write(...)` where X is an AuditWriter by binding or by name."""
    tree = ast.parse(source)
    writers = _bound_writers(tree) | WRITER_NAMES
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr != "write":
            continue
        owner = node.func.value
        name = (
            owner.id
            if isinstance(owner, ast.Name)
            else owner.attr
            if isinstance(owner, ast.Attribute)
            else None
        )
        if name in writers:
            found.append(node.lineno)
    return found


def test_only_the_recorder_writes_audit_records() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path not in ALLOWED
        for line in writes(path.read_text())
    ]
    assert offenders == [], (
        "audit records are written by mcpwrap/audit/recorder.py only; call one of its functions "
        f"(or Recorder) instead: {offenders}"
    )


def test_the_scan_finds_each_way_of_writing() -> None:
    runner = (PACKAGE / "commands" / "run.py").read_text()
    assert writes(runner) == []
    # What runner.py did before the recorder: it must be caught again if it comes back.
    assert writes(runner + "\naudit.write({'event': 'pins'})\n")
    assert writes("with AuditWriter(p, session='s') as log:\n    log.write({})\n") == [2]
    assert writes("self.chain = AuditWriter(p, session='s')\nself.chain.write({})\n") == [2]
    assert writes("def f(out: AuditWriter) -> None:\n    out.write({})\n") == [2]
    assert writes("self._audit.write(record, prefix=prefix)\n") == [1]
    # Not an audit writer: stderr, a file.
    assert writes("sys.stderr.write('x')\nf.write('y')\nself._log.write('z')\n") == []
