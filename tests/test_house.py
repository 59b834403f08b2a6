"""The house rules that tools don't check: no module reaches into another module's private
(underscore) names. Layers and import cycles are checked by lint-imports (pyproject.toml), style by
ruff; kernels/ being a leaf by tests/kernels/test_kernel_leaf.py."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fastsim", "kernels")


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def sources():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def crossings(path: Path) -> list[str]:
    """`from M import _x` and `m._x` (m a module imported here) in one file."""
    tree = ast.parse(path.read_text(), str(path))
    modules: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if private(alias.name):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {'.' * node.level}{node.module or ''} import {alias.name}")
                elif node.level or (node.module or "").split(".")[0] in PACKAGES:
                    modules.add(alias.asname or alias.name)  # may be a module (from . import native)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr) and isinstance(node.value, ast.Name):
            if node.value.id in modules:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names():
    found = [line for path in sources() for line in crossings(path)]
    assert not found, "private names used across modules:\n" + "\n".join(found)
