"""The tree shows the architecture: a package per layer, imports in one direction.

commands -> relay -> (sandbox, supply, identity, audit) -> policy -> config -> basics, as
docs/ARCHITECTURE.md draws it. Every import counts, the ones inside functions (kept there
for start-up time) and the ones only type checkers read included."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "mcpwrap"

# Each layer and the layers it may import (besides itself and the root package, which
# holds only the version).
ALLOWED: Mapping[str, frozenset[str]] = {
    "basics": frozenset(),
    "config": frozenset({"basics"}),
    "policy": frozenset({"config", "basics"}),
    "audit": frozenset({"policy", "config", "basics"}),
    "identity": frozenset({"policy", "config", "basics"}),
    "supply": frozenset({"policy", "config", "basics"}),
    "sandbox": frozenset({"supply", "identity", "policy", "config", "basics"}),
    "clients": frozenset({"identity", "policy", "config", "basics"}),
    "relay": frozenset({"sandbox", "supply", "identity", "audit", "policy", "config", "basics"}),
    "commands": frozenset(
        {"relay", "sandbox", "supply", "identity", "audit", "clients", "policy", "config"}
        | {"basics"}
    ),
}
ENTRY = {"mcpwrap.__main__": "commands"}  # `python -m mcpwrap` is the cli


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name under mcpwrap, or None for the root package."""
    if module in ENTRY:
        return ENTRY[module]
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else None


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> Iterable[tuple[int, str]]:
    """(line, imported module) for every import of mcpwrap in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "mcpwrap":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            if node.module is None or node.module.split(".")[0] != "mcpwrap":
                continue
            if node.module == "mcpwrap":  # from mcpwrap import config: a package, or __version__
                for alias in node.names:
                    yield node.lineno, f"mcpwrap.{alias.name}"
            else:
                yield node.lineno, node.module


def violations(edges: Iterable[tuple[str, str, str]]) -> list[str]:
    """Each (where, importer, imported) that goes against the layers."""
    out = []
    for where, importer, imported in edges:
        src, dst = layer_of(importer), layer_of(imported)
        if dst is None or src == dst:
            continue
        if src is None:
            out.append(f"{where}: the root package {importer} imports {imported}")
        elif src not in ALLOWED:
            out.append(f"{where}: {importer} is in no layer; add mcpwrap/{src} to ALLOWED")
        elif dst not in ALLOWED[src]:
            out.append(f"{where}: {importer} ({src}) imports {imported} ({dst})")
    return out


def tree_edges() -> list[tuple[str, str, str]]:
    edges = []
    for path in sorted(ROOT.rglob("*.py")):
        importer = module_name(path)
        for line, imported in imports(path):
            edges.append((f"{path.relative_to(ROOT.parent)}:{line}", importer, imported))
    return edges


def test_imports_follow_the_layers() -> None:
    found = violations(tree_edges())
    assert not found, "imports against the layers:\n" + "\n".join(found)


def test_every_package_is_a_layer_and_no_module_sits_outside_them() -> None:
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(ALLOWED)
    loose = {p.name for p in ROOT.glob("*.py")} - {"__init__.py", "__main__.py"}
    assert not loose, f"modules outside every layer: {sorted(loose)}"


def test_the_layers_run_one_way() -> None:
    """No cycle: a layer never reaches itself through the ones it may import."""

    def reach(layer: str, seen: frozenset[str]) -> None:
        for below in ALLOWED[layer]:
            assert below not in seen, f"cycle through {below}"
            reach(below, seen | {below})

    for layer in ALLOWED:
        reach(layer, frozenset({layer}))


@pytest.mark.parametrize(
    ("importer", "imported", "wrong"),
    [
        ("mcpwrap.relay.core", "mcpwrap.policy.decisions", False),
        ("mcpwrap.policy.decisions", "mcpwrap.relay.core", True),
        ("mcpwrap.basics.sha", "mcpwrap.config.profile", True),
        ("mcpwrap.config.profile", "mcpwrap.basics.sha", False),
        ("mcpwrap.supply.artifacts", "mcpwrap.sandbox.spec", True),
        ("mcpwrap.sandbox.spec", "mcpwrap.supply.entrypoints", False),
        ("mcpwrap.audit.writer", "mcpwrap.relay.core", True),
        ("mcpwrap.relay.core", "mcpwrap.commands.run", True),
        ("mcpwrap.clients.apps", "mcpwrap.commands.wrap", True),
        ("mcpwrap.commands.cli", "mcpwrap", False),  # the version
        ("mcpwrap.clients.firststart", "mcpwrap", False),
        ("mcpwrap.relay.relay", "mcpwrap.relay.framing", False),
        ("mcpwrap", "mcpwrap.commands.cli", True),
        ("mcpwrap.newlayer.x", "mcpwrap.basics.sha", True),
    ],
)
def test_the_check_itself(importer: str, imported: str, wrong: bool) -> None:
    """The rule flags an import against the layers and only such an import."""
    assert bool(violations([("here", importer, imported)])) is wrong
