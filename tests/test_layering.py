"""The package layering, read from the import statements of src/punie (lazy imports inside functions included).

Lower layers never import higher ones: eval results are rendered by report, not
the other way round; data is a leaf; the core never imports the CLI or its
display libraries; serve (which owns the OpenAI client) imports none of its users.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# package -> module prefixes it must not import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "punie.eval": ("punie.report", "punie.cli", "typer", "rich"),
    "punie.data": ("punie.report", "punie.eval", "punie.training", "punie.cli", "typer", "rich"),
    "punie.training": ("punie.cli", "typer", "rich"),
    "punie.models": ("punie.cli", "typer", "rich"),
    "punie.chat": ("punie.cli", "typer", "rich"),
    "punie.serve": ("punie.eval", "punie.traces", "punie.report", "punie.cli", "typer", "rich"),
    "punie.sweep": ("punie.report", "punie.cli", "typer", "rich"),
    "punie.planner": ("punie.cli", "typer", "rich"),
    "punie.dpo": ("punie.report", "punie.cli", "typer", "rich"),
}

# Imports that break a rule and are removed on another branch (module, imported): delete an entry once it is gone;
# the test fails while an entry is stale, so none outlives its import.
ALLOWED: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in the file; relative imports resolved against its package."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # ``from punie import report``
    return found


def import_graph() -> dict[str, set[str]]:
    return {module_name(path): imports_of(path) for path in sorted((SRC / "punie").rglob("*.py"))}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    found = {(module, imported) for module, imported_names in graph.items()
             for package, banned in FORBIDDEN.items() if _within(module, package)
             for imported in imported_names if any(_within(imported, prefix) for prefix in banned)}
    # ``from a.b import c`` reads as both a.b and a.b.c: name the module once
    return {(module, imported) for module, imported in found if (module, imported.rpartition(".")[0]) not in found}


def test_the_import_graph_is_read():
    """The rules below only mean something if the reader sees imports, lazy and ``from`` ones included."""
    graph = import_graph()
    assert "typer" in graph["punie.cli.eval"]
    assert "punie.report.eval_report" in graph["punie.cli.eval"]  # imported inside the command function
    assert "punie.serve.client.OpenAIClient" in graph["punie.eval.http"]
    assert violations({"punie.eval.runner": {"punie.report.eval_report"}}) == {
        ("punie.eval.runner", "punie.report.eval_report")}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layering(package):
    broken = {(m, i) for m, i in violations(import_graph()) if _within(m, package)} - ALLOWED
    assert not broken, "\n".join(f"{m} imports {i}, which {package} must not import" for m, i in sorted(broken))


def test_no_allowance_is_stale():
    found = violations(import_graph())
    stale = {entry for entry in ALLOWED if entry not in found}
    assert not stale, f"these imports are gone: delete them from ALLOWED: {sorted(stale)}"
