"""Simulate a machine without some optional packages (the GPU machine has no soundfile, maybe no
matplotlib or tqdm): with this folder on PYTHONPATH, every Python process (pytest, the bench
scripts and their children) fails to import the top-level packages named in
FASTSIM_BLOCK_IMPORTS (comma-separated), as if they were not installed.

    PYTHONPATH=bench/simulate FASTSIM_BLOCK_IMPORTS=soundfile,matplotlib,tqdm python -m pytest --collect-only -q

bench/device.sh --cpu-dry-run uses it; nothing else does (this folder is not a package).
"""

import os
import sys

_BLOCKED = {name.strip() for name in os.environ.get("FASTSIM_BLOCK_IMPORTS", "").split(",") if name.strip()}


class _Hide:
    """Wraps a meta path finder: blocked names are not found (find_spec gives None, as for a
    package that is not installed; raising instead would break probes like transformers')."""

    def __init__(self, inner):
        self._inner = inner

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in _BLOCKED:
            return None
        find = getattr(self._inner, "find_spec", None)
        return find(fullname, path, target) if find else None

    def __getattr__(self, name):
        return getattr(self._inner, name)


if _BLOCKED:
    for _name in list(sys.modules):  # nothing should have imported them yet; be sure
        if _name.partition(".")[0] in _BLOCKED:
            del sys.modules[_name]
    sys.meta_path[:] = [_Hide(f) for f in sys.meta_path]
