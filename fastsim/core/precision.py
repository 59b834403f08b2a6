"""The result dtype, the working dtype and the matmul precision modes.

* Result dtype (``compute_dtype``): float64 when any input is float64, else float32 (float16 and
  bfloat16 inputs are upcast chunk by chunk).
* ``precision`` decides how float32 (and half) inputs are worked on (``work_dtype``):

  - "highest": in float64. The torch paths convert each chunk to float64 (exact) and do every
    product and sum in float64: the result is the float64 computation on the input values, rounded
    to float32 at the end. Measured within 1e-6 of the float64 value (well below, see the table in
    ``tests/test_precision.py``), also on activations with massive outliers and large means. Costs
    about 1.5-2x the float32 time on CPUs (float64 GEMM); on GPUs with slow float64 prefer the
    Triton backend, whose "highest" is 3xTF32 there.
  - "high": in float32, under ``torch.set_float32_matmul_precision("high")``: TF32 matmuls where
    the hardware has them (GPUs), plain float32 elsewhere (on CPUs "high" is "float32").
  - "medium": in float32, under ``torch.set_float32_matmul_precision("medium")``: bf16 products
    where the hardware has them: on GPUs, and on CPUs with AVX512-BF16 or AMX (oneDNN), where it
    gives numbers that differ from "high" (and on long sums can be *more* accurate: its blocked
    reductions accumulate differently). On CPUs without bf16 "medium" is "high".

  The k-nearest-neighbour search always takes its candidates from a float32 (or TF32/bf16) matmul
  and then proves or re-ranks them exactly (``fastsim.core.knn``); "highest" adds the completeness
  check there. float64 inputs are worked on in float64 in every mode.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

PRECISIONS = ("highest", "high", "medium")


def compute_dtype(tensors) -> torch.dtype:
    """The accumulation dtype: float64 if any input is float64, else float32 (half inputs included)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def work_dtype(tensors, precision: str) -> torch.dtype:
    """The dtype the data are worked on in: float64 at "highest" or for float64 inputs, else float32."""
    return torch.float64 if precision == "highest" else compute_dtype(tensors)


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
