"""Files written whole or not at all."""

from __future__ import annotations

import json
import os
from typing import Any


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """``obj`` as JSON (indent 2) at ``path``, atomically: written next to it, then moved into place."""
    path = os.fspath(path)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)
