"""CPU threading that degrades gracefully on a busy machine.

torch runs each CPU operation as one OpenMP parallel region over its threads, and waits at the
end for all of them. When another program holds a core, the thread that shares it runs in time
slices, and every region waits for it: measured on a 2-core machine with one competing process,
linear CKA over 13 layers of 4096 x 768 went from 1.7 s to 22-27 s, about 2,500 element-wise
operations each waiting ~6 ms.

So the CPU paths here run their work as many independent tasks on a small pool of worker threads,
each task single-threaded inside torch (intra-op threads 1): a worker that the OS slows down
simply takes fewer tasks, nobody waits at a barrier, and an idle machine still keeps every core
busy. ``pool`` sets torch's intra-op thread count to 1 for the duration of the call (process
wide) and restores it; the workers are torch.get_num_threads() at entry. On GPU tensors, and
inside a worker, tasks run in order in the calling thread.

Large temporaries of many tasks should come from ``buffer``: reused within the call, per worker.
(Allocating and freeing a 16 MB tensor in each of 200 tasks on two worker threads grew the
process by 3.3 GB with glibc's malloc, which does not hand such blocks back to the next task of
another thread's arena; in the calling thread alone it stays flat.)
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

_state = threading.local()
_lock = threading.Lock()
_depth = 0  # pools open in this process (torch's thread count is process-wide)
_saved_threads = 1


def _inside_worker() -> bool:
    return getattr(_state, "worker", False)


def workers() -> int:
    """How many worker threads a pool opened now would use."""
    return 1 if _inside_worker() else max(1, torch.get_num_threads() if _depth == 0 else _saved_threads)


@contextlib.contextmanager
def pool(device: torch.device | str = "cpu") -> Iterator[Callable[[Callable[[T], R], Iterable[T]], Iterator[R]]]:
    """Within the block: ``pmap(fn, items)`` runs fn on every item (results in order, as an
    iterator), on worker threads that each run torch single-threaded. Sequential for non-CPU
    devices, inside a worker, and when torch has one thread."""
    global _depth, _saved_threads
    device = torch.device(device)
    if device.type != "cpu" or _inside_worker():
        yield _sequential
        return
    with _lock:
        if _depth == 0:
            _saved_threads = torch.get_num_threads()
            torch.set_num_threads(1)
        _depth += 1
        count = _saved_threads
    try:
        if count <= 1:
            yield _sequential
            return
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=count, thread_name_prefix="fastsim-pool", initializer=_mark_worker
        ) as executor:
            yield lambda fn, items: _parallel(executor, fn, items)
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                torch.set_num_threads(_saved_threads)


def _mark_worker() -> None:
    _state.worker = True


def buffer(name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialized tensor of `shape` for a task's temporary `name`: inside ``pool`` tasks,
    one storage per worker and name, reused by its later tasks and freed when the pool closes."""
    store = getattr(_state, "scratch", None)
    numel = 1
    for s in shape:
        numel *= int(s)
    if store is None:
        return torch.empty(shape, dtype=dtype, device=device)
    key = (name, dtype, str(device))
    buf = store.get(key)
    if buf is None or buf.numel() < numel:
        buf = store[key] = torch.empty(numel, dtype=dtype, device=device)
    return buf[:numel].view(shape)


def _with_scratch(fn, stores):
    def run(item):
        store = stores.setdefault(threading.get_ident(), {})
        previous = getattr(_state, "scratch", None)
        _state.scratch = store
        try:
            return fn(item)
        finally:
            _state.scratch = previous

    return run


def _sequential(fn, items):
    return map(_with_scratch(fn, {}), items)


def _parallel(executor, fn, items):
    """Submit every item at once (the workers take them in order, as they become free); yield
    the results in order."""
    run = _with_scratch(fn, {})
    futures = [executor.submit(run, item) for item in items]
    try:
        for f in futures:
            yield f.result()
    finally:
        for f in futures:
            f.cancel()


@contextlib.contextmanager
def single_threaded(device: torch.device | str = "cpu") -> Iterator[None]:
    """torch intra-op threads 1 inside the block (CPU only): for loops of small element-wise
    operations, each of which would otherwise wait at an OpenMP barrier for every thread."""
    global _depth, _saved_threads
    if torch.device(device).type != "cpu" or _inside_worker():
        yield
        return
    with _lock:
        if _depth == 0:
            _saved_threads = torch.get_num_threads()
            torch.set_num_threads(1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                torch.set_num_threads(_saved_threads)
