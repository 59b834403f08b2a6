"""A model at inference: eval mode for a while, torch's CPU threads for a while, its parameter
count, and the time a call takes.

* ``device_for(spec)`` — the torch device a ``--device``-style string names, checked to exist here.
* ``eval_mode(*modules)`` — the modules in eval mode inside the block, each put back in the mode
  it had on exit (also when the body raises).
* ``torch_threads(n)`` — torch's CPU thread count set to ``n`` inside the block, then restored.
* ``count_parameters(module)`` — parameters the module holds now (shared ones once).
* ``Stopwatch(device)`` — wall time of a block of work; on CUDA it synchronizes before and after,
  so queued kernels are counted where they belong.
* ``time_call(fn, device, warmup, repeats)`` — median seconds per call after warm-up passes
  (CUDA events on CUDA, the stopwatch elsewhere), under ``torch.inference_mode``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch


def device_for(spec: str | torch.device | None) -> torch.device:
    """The device ``spec`` names (None: CUDA when available, else the CPU), checked to be usable
    here: ValueError saying why for a name torch does not know ("foo") and for a device this
    machine or this torch build lacks (``cuda`` on a CPU-only build, ``cuda:3`` with one GPU)."""
    if spec is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"{spec!r} is not a torch device (e.g. cpu, cuda, cuda:1): {e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise ValueError(f"{spec!r}: no CUDA device is usable here (torch {torch.__version__}, {build})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{spec!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"numbered from 0")
    elif dev.type == "meta":
        raise ValueError(f"{spec!r}: the meta device holds no values; a model cannot run on it")
    elif dev.type != "cpu":
        try:
            torch.empty(1, device=dev)
        except Exception as e:  # (each backend raises its own type, some with pages of detail)
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise ValueError(f"{spec!r}: torch cannot use this device here ({type(e).__name__}: {first})") from None
    return dev


@contextlib.contextmanager
def eval_mode(*modules: torch.nn.Module) -> Iterator[None]:
    """The modules in eval mode inside the block; each gets its own training mode back on exit."""
    was = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, training in zip(modules, was):
            m.train(training)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU thread count set to ``threads`` (None: left as it is) inside the block, then restored."""
    before = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        yield
    finally:
        torch.set_num_threads(before)


def count_parameters(module: torch.nn.Module) -> int:
    """Parameters the module holds now (shared ones once): inside ``fastsim.prune.skip_layers``
    the pruned count."""
    return sum(p.numel() for p in module.parameters())


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """``with Stopwatch(device) as sw: ...`` then ``sw.seconds``: the wall time of the block, CUDA
    synchronized before and after on a CUDA device."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.seconds = float("nan")

    def __enter__(self) -> Stopwatch:
        _synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        _synchronize(self.device)
        self.seconds = time.perf_counter() - self._start


def time_call(fn: Callable[[], object], device: torch.device, *, warmup: int, repeats: int) -> float:
    """Median seconds per call after warm-up (CUDA events on CUDA, wall clock elsewhere)."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / 1000)
            else:
                with Stopwatch(device) as sw:
                    fn()
                times.append(sw.seconds)
    return float(np.median(times))
