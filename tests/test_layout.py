"""The import rules of docs/architecture.md: aexp never imports drivers or simulators (it finds
instruments by entry point), drivers never import simulators, simulators never import drivers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"aexp": {"drivers", "simulators"}, "drivers": {"simulators"}, "simulators": {"drivers"}}


def _imported_packages(path: Path) -> set[tuple[str, int]]:
    """Top-level package of every absolute import in a file (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module.split(".")[0], node.lineno))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_follow_the_rules(package: str) -> None:
    broken = [f"{path.relative_to(ROOT)}:{line} imports {name}"
              for path in sorted((ROOT / package).rglob("*.py"))
              for name, line in sorted(_imported_packages(path)) if name in FORBIDDEN[package]]
    assert not broken, "\n".join(broken)
