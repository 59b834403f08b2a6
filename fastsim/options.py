"""Option values shared by every metric: backends, precision modes and the memory budget."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from typing import Iterator

import torch

BACKENDS = ("auto", "torch", "triton", "cuda")
PRECISIONS = ("highest", "high", "medium")
KERNELS = ("linear", "rbf")


class DegenerateWarning(RuntimeWarning):
    """A metric is undefined for valid but degenerate input (zero variance, zero vectors).

    The affected value is NaN (CKA) or the documented substitute (cosine of a zero vector is 0).
    """


def _chunk_bytes_from_env() -> int:
    raw = os.environ.get("FASTSIM_CHUNK_MB")
    if raw is None:
        return 256 * 2**20
    try:
        mb = float(raw)
    except ValueError:
        raise ValueError(f"FASTSIM_CHUNK_MB must be a number of MiB, got {raw!r}") from None
    if not mb > 0:
        raise ValueError(f"FASTSIM_CHUNK_MB must be > 0, got {raw!r}")
    return int(mb * 2**20)


#: Upper bound, in bytes, on the temporary blocks (slices of n x n matrices, converted row chunks)
#: one call allocates at a time. Set it with the environment variable FASTSIM_CHUNK_MB or assign it.
CHUNK_BYTES = _chunk_bytes_from_env()


def rows_per_chunk(bytes_per_row: int, total_rows: int, minimum: int = 1) -> int:
    """How many rows of `bytes_per_row` bytes fit in the chunk budget (at least `minimum`)."""
    rows = CHUNK_BYTES // max(int(bytes_per_row), 1)
    return int(max(minimum, min(total_rows, rows)))


def compute_dtype(tensors) -> torch.dtype:
    """The accumulation dtype: float64 if any input is float64, else float32 (half inputs included)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def row_chunks(n: int, bytes_per_row: int):
    """(start, end) row ranges whose temporaries, `bytes_per_row` each, fit the chunk budget."""
    step = rows_per_chunk(bytes_per_row, n)
    for start in range(0, n, step):
        yield start, min(n, start + step)


def warn_degenerate(message: str) -> None:
    """Issue a DegenerateWarning attributed to the caller's line outside the fastsim package."""
    frame, level = sys._getframe(1), 2  # stacklevel 2 is the caller of this function
    while frame is not None and frame.f_globals.get("__name__", "").startswith("fastsim"):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, DegenerateWarning, stacklevel=level)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
    return value


@contextlib.contextmanager
def matmul_precision(precision: str) -> Iterator[None]:
    """Run float32 matmuls under `torch.set_float32_matmul_precision(precision)`, then restore it.

    The setting is process-wide while the call runs: calls from several threads with different
    precisions can see each other's setting.

    "highest": full float32; "high": TF32 (or 3xbf16) where the hardware has it; "medium": bf16
    internally where the hardware has it. float64 matmuls are not affected. On this project's CPU
    builds of torch the three modes give the same float32 results.
    """
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)
