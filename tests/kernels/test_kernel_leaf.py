"""kernels/ is a leaf: no module imports from fastsim or from above the package."""

import ast
from pathlib import Path

KERNELS = Path(__file__).resolve().parents[2] / "kernels"


def test_kernels_import_nothing_from_fastsim():
    bad = []
    for path in sorted(KERNELS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level > 1 or (node.level == 0 and (node.module or "").split(".")[0] in ("fastsim", "kernels")):
                    bad.append(f"{path.name}:{node.lineno}")
            elif isinstance(node, ast.Import):
                if any(a.name.split(".")[0] == "fastsim" for a in node.names):
                    bad.append(f"{path.name}:{node.lineno}")
    assert not bad, bad
