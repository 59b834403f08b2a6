"""The accumulation dtype and the matmul precision modes.

* Accumulation: float64 when any input is float64, else float32 (float16 and bfloat16 inputs are
  upcast chunk by chunk).
* ``precision``: the meaning of ``torch.set_float32_matmul_precision`` for float32 work inside
  one call: "highest" full float32, "high" TF32, "medium" bf16 internally (where the hardware has
  them). float64 work is unaffected.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

PRECISIONS = ("highest", "high", "medium")


def compute_dtype(tensors) -> torch.dtype:
    """The accumulation dtype: float64 if any input is float64, else float32 (half inputs included)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


@contextlib.contextmanager
def matmul_precision(precision: str) -> Iterator[None]:
    """Run float32 matmuls under `torch.set_float32_matmul_precision(precision)`, then restore it.

    The setting is process-wide while the call runs: calls from several threads with different
    precisions can see each other's setting.
    """
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)
