"""What the GPU benchmarks share (bench/gpu.py, analyze_gpu.py, mimic_gpu.py, prune_gpu.py):
the run's deadline, time-boxed rows, section guards, a timer, and tables printed row by row.

bench/device.sh sets two variables for each step:

* FASTSIM_BENCH_DEADLINE: epoch seconds by which the script must be done. Scripts check
  ``left()`` between rows and skip what no longer fits, with a row saying so; one row is cut by
  ``time_limit`` (SIGALRM), so a row that runs far too long (an op-bound kernel path) becomes a
  "timeout" row instead of eating the rest of the run.
* FASTSIM_BENCH_OUT: a folder; every table row is appended there to ``summary.md`` (Markdown,
  ready for bench/RESULTS.md) and to ``results.jsonl`` (one JSON object a row).

Rows are printed and flushed the moment they are measured, so a step killed by its time limit
still shows every row it finished.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import torch

OUT_DIR = os.environ.get("FASTSIM_BENCH_OUT") or None
DEADLINE = float(os.environ.get("FASTSIM_BENCH_DEADLINE") or "inf")
SCRIPT = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "?"


def left() -> float:
    """Seconds until the step's deadline (inf without one)."""
    return DEADLINE - time.time()


def _append(name: str, text: str) -> None:
    if OUT_DIR:
        os.makedirs(OUT_DIR, exist_ok=True)
        with open(os.path.join(OUT_DIR, name), "a", encoding="utf-8") as f:
            f.write(text)


def emit(line: str = "") -> None:
    """Print one line now (flushed) and append it to summary.md."""
    print(line, flush=True)
    _append("summary.md", line + "\n")


def record(obj: dict[str, Any]) -> None:
    """One JSON line into results.jsonl (non-finite floats as null)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    _append("results.jsonl", json.dumps(clean({"script": SCRIPT, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **obj})) + "\n")


def fmt(v: Any, kind: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, float) and not math.isfinite(v):
        return "-"
    if kind == "s":
        return f"{v:.4g}"
    if kind == "e":
        return f"{v:.1e}"
    if kind == "x":
        return f"{v:.2f}x"
    if kind == "%":
        return f"{100 * v:.0f}%"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


#: rows and sections that failed or timed out in this script (finish() turns them into the exit code)
PROBLEMS: list[str] = []
SKIPPED: list[str] = []


def _tally(where: str, status: Any) -> None:
    if isinstance(status, str):
        if status.startswith(("error", "timeout", "FAILED", "failed")) or "FAILED" in status:
            PROBLEMS.append(f"{where}: {status}")
        elif status.startswith(("skipped", "stopped")):
            SKIPPED.append(f"{where}: {status}")


def finish() -> int:
    """The script's exit code: 1 when a row or section failed or timed out, 3 when all went well
    but some were skipped for time (device.sh's recap says which), else 0. Prints the tally."""
    emit()
    emit(f"> {SCRIPT}: {len(PROBLEMS)} failed or timed-out rows/sections, {len(SKIPPED)} skipped for time")
    for p in PROBLEMS:
        print(f"  {p}", flush=True)
    return 1 if PROBLEMS else 3 if SKIPPED else 0


class Table:
    """A Markdown table whose rows print as they come: Table(title, [(key, header, kind), ...])."""

    def __init__(self, title: str, columns: list[tuple[str, str, str]]):
        self.title, self.columns = title, columns
        emit()
        emit(f"### {title}")
        emit()
        emit("| " + " | ".join(h for _, h, _ in columns) + " |")
        emit("|" + "|".join("---" if kind in ("", "txt") else "---:" for _, _, kind in columns) + "|")
        record({"table": title, "columns": [k for k, _, _ in columns]})

    def row(self, **values: Any) -> None:
        _tally(f"{self.title.split(':')[0]} / {values.get(self.columns[0][0])}", values.get("status"))
        emit("| " + " | ".join(fmt(values.get(k), kind) for k, _, kind in self.columns) + " |")
        record({"table": self.title, **values})

    def note(self, text: str) -> None:
        emit(f"> {text}")
        record({"table": self.title, "note": text})


def note(text: str) -> None:
    emit(f"> {text}")
    record({"note": text})


class RowTimeout(BaseException):
    """Raised by time_limit; not an Exception, so no `except Exception` on the way swallows it.
    by_deadline: the step's deadline cut it (the row was not too slow: time ran out)."""

    def __init__(self, message: str, by_deadline: bool = False):
        super().__init__(message)
        self.by_deadline = by_deadline


def outcome(exc: BaseException) -> str:
    """A row's status for what stopped it: 'stopped: ...' (the step's deadline: skipped for
    time), 'timeout: ...' (over the row's own limit) or 'error: ...'."""
    if isinstance(exc, RowTimeout):
        return f"stopped: {exc}" if exc.by_deadline else f"timeout: {exc}"
    return f"error: {describe(exc)}"


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise RowTimeout in the main thread after `seconds` (capped by the deadline). Python code
    is interrupted between bytecodes; a single long kernel or C call is interrupted when it
    returns. Fires again every 5 s in case something swallowed it."""
    own = seconds if seconds is not None else math.inf
    limit = min(own, left() - 2)
    by_deadline = limit < own
    if not math.isfinite(limit) or not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        if by_deadline:
            raise RowTimeout(f"the step's deadline came after {max(limit, 0.5):.0f} s", by_deadline=True)
        raise RowTimeout(f"over its limit of {limit:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(limit, 0.5), 5.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def free(device: torch.device | str) -> None:
    """Drop what the last row left behind (after a failure: its tensors, the cached blocks)."""
    gc.collect()
    if torch.device(device).type == "cuda":
        with contextlib.suppress(Exception):
            torch.cuda.synchronize()
        torch.cuda.empty_cache()


def timer(device: torch.device | str) -> Callable[[Callable[[], Any], int], float]:
    """run(fn, repeat): best of `repeat` calls after one warm-up (CUDA events on CUDA)."""
    dev = torch.device(device)

    def run(fn: Callable[[], Any], repeat: int) -> float:
        return measure(fn, dev, repeat=repeat)

    return run


def measure(fn: Callable[[], Any], device: torch.device | str, repeat: int = 3, budget: float = 10.0) -> float:
    """Best seconds of up to `repeat` calls after one warm-up call; stops repeating once the timed
    calls have taken `budget` seconds (a slow row is timed once, not three times)."""
    dev = torch.device(device)
    t0 = time.perf_counter()
    fn()
    sync(dev)
    warm = time.perf_counter() - t0
    best, spent = math.inf, 0.0
    for _ in range(max(1, repeat)):
        if dev.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            t = start.elapsed_time(end) / 1e3
        else:
            t1 = time.perf_counter()
            fn()
            t = time.perf_counter() - t1
        best = min(best, t)
        spent += t
        if spent + warm > budget:
            break
    return best


def describe(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:160]


@contextlib.contextmanager
def section(name: str, device: torch.device | str = "cpu", need: float = 0.0) -> Iterator[bool]:
    """Guard one benchmark section: an exception prints its traceback and a note, and the script
    goes on with the next section. Yields False (and notes the skip) when fewer than `need`
    seconds are left before the deadline."""
    if left() < need:
        SKIPPED.append(name)
        note(f"{name}: skipped, {max(left(), 0):.0f} s left before the deadline (needs ~{need:.0f} s)")
        yield False
        return
    print(f"\n# --- {name} ({'no deadline' if not math.isfinite(left()) else f'{left():.0f} s left'})", flush=True)
    start = time.perf_counter()
    try:
        yield True
    except RowTimeout as exc:
        if exc.by_deadline:
            SKIPPED.append(name)
            note(f"{name}: stopped after {time.perf_counter() - start:.1f} s: {exc}")
        else:
            PROBLEMS.append(f"{name}: {describe(exc)}")
            note(f"{name}: FAILED after {time.perf_counter() - start:.1f} s: {describe(exc)}")
    except Exception as exc:
        traceback.print_exc()
        PROBLEMS.append(f"{name}: {describe(exc)}")
        note(f"{name}: FAILED after {time.perf_counter() - start:.1f} s: {describe(exc)}")
    finally:
        free(device)


def skip_row(need: float) -> str | None:
    """A reason to skip the next row, or None when `need` seconds are left."""
    if left() < need:
        return f"skipped: {max(left(), 0):.0f} s left"
    return None


def optional_import(*names: str) -> Any:
    """The first module of `names` that imports (for names that move between fastsim versions)."""
    import importlib

    errors = []
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise ImportError("; ".join(errors))
