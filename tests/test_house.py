"""The house rules that tools don't check: no module reaches into another module's private
(underscore) names; no test module needs an optional package (soundfile, transformers, ...) to be
collected. Layers and import cycles are checked by lint-imports (pyproject.toml), style by
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


#: packages a machine running the tests may lack (the GPU machine has none of them): a test module
#: may import them only through pytest.importorskip or inside its tests, so collection survives
OPTIONAL = ("soundfile", "matplotlib", "transformers", "tqdm", "ctranslate2", "safetensors")


def top_level_optional_imports(path: Path) -> list[str]:
    """Plain `import x` / `from x import y` of an OPTIONAL package in a module's top-level body."""
    found = []
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        else:
            continue
        found += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in OPTIONAL]
    return found


def test_no_test_module_needs_an_optional_package_to_be_collected():
    found = [line for path in sorted((ROOT / "tests").rglob("*.py")) for line in top_level_optional_imports(path)]
    assert not found, "use pytest.importorskip for these:\n" + "\n".join(found)
