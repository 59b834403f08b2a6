"""Files written whole or not at all, and output directories checked before the work starts.

* ``write_json(path, obj)`` — one JSON file, written next to its place and moved in.
* ``check_output_dir(path)`` — raise ``OutputError`` unless ``path`` can be an output directory
  (not empty, not a file, writable); cheap and side-effect free, so a command calls it before
  minutes of computation rather than failing after them.
* ``staged_directory(out, stale)`` — a set of result files written into a hidden staging
  directory inside ``out`` and moved into place only when all of them are written: an interrupted
  save leaves ``out`` as it was (no half-written file), and result files of an earlier run that
  this one does not write (``stale``) are removed, so ``out`` never mixes two runs' results.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

#: prefix of the staging directories ``staged_directory`` makes inside an output directory
STAGING_PREFIX = ".fastsim-partial-"


class OutputError(ValueError):
    """An output directory that cannot be used (empty name, a file, not writable)."""


def write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> None:
    """``obj`` as JSON at ``path``, atomically: written next to it, then moved into place."""
    path = os.fspath(path)
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=indent, default=float)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def check_output_dir(path: str | os.PathLike) -> str:
    """``path`` as a string if it can be an output directory, else ``OutputError`` saying why.

    It must be a non-empty name; it, or the nearest of its parents that exists, must be a
    directory in which a file can be created (probed with a temporary file, removed at once).
    Nothing is left behind: a directory that does not exist yet is not created."""
    p = os.fspath(path)
    if not p.strip():
        raise OutputError("the output directory is empty ('')")
    here = os.path.abspath(p)
    while not os.path.lexists(here):
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    if not os.path.isdir(here):
        what = "is a file" if os.path.isfile(here) else "is not a directory"
        where = f"{p!r}" if here == os.path.abspath(p) else f"{p!r}: its parent {here!r}"
        raise OutputError(f"{where} {what}; an output directory is needed")
    try:
        fd, probe = tempfile.mkstemp(prefix=STAGING_PREFIX, dir=here)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        where = f"{p!r}" if here == os.path.abspath(p) else f"{p!r} (in {here!r}, the nearest existing parent)"
        raise OutputError(f"cannot write in {where}: {e.strerror or e}") from None
    return p


@contextlib.contextmanager
def staged_directory(out: str | os.PathLike, stale: Iterable[str] = (), *, last: str | None = None) -> Iterator[str]:
    """``with staged_directory(out, stale) as stage:`` write the result files into ``stage``.

    ``out`` is created if missing. On a normal exit every file in ``stage`` replaces its namesake
    in ``out`` (``os.replace``: each file arrives whole), ``last`` (a file that says the set is
    complete, e.g. a JSON report) after the others; then the names in ``stale`` that this set does
    not hold are removed from ``out``. On an exception (Ctrl-C included) the stage is removed and
    ``out`` keeps exactly what it had."""
    out = os.fspath(out)
    os.makedirs(out, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out)
    try:
        yield stage
        names = sorted(os.listdir(stage), key=lambda n: (n == last, n))
        for name in names:
            os.replace(os.path.join(stage, name), os.path.join(out, name))
        for name in set(stale) - set(names):
            target = os.path.join(out, name)
            if os.path.isfile(target) or os.path.islink(target):
                os.remove(target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
