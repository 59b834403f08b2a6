"""The result dtype, the working dtype and the matmul precision modes.

* Result dtype (``compute_dtype``): float64 when any input is float64, else float32 (float16 and
  bfloat16 inputs are upcast chunk by chunk).
* ``precision`` decides how float32 (and half) inputs are worked on (``work_dtype``):

  - "highest": in float64. The torch paths convert each chunk to float64 (exact) and do every
    product and sum in float64: the result is the float64 computation on the input values, rounded
    to float32 at the end. Costs about 2x the float32 GEMM time on CPUs (float64 GEMM); on GPUs
    with slow float64 prefer the Triton backend, whose "highest" is 3xTF32 there.
  - "high": in float32, under ``torch.set_float32_matmul_precision("high")``: TF32 matmuls where
    the hardware has them (GPUs), plain float32 elsewhere (on CPUs "high" is "float32").
  - "medium": in float32, under ``torch.set_float32_matmul_precision("medium")``: bf16 products
    where the hardware has them: on GPUs, and on CPUs with AVX512-BF16 or AMX (oneDNN), where it
    gives numbers that differ from "high" (and on long sums can be *more* accurate: its blocked
    reductions accumulate differently). On CPUs without bf16 "medium" is "high".

  Measured error, max |fastsim - oracle| over all pairs (``python bench/cpu.py --accuracy``:
  5 layers of 512 x 192; oracle in NumPy longdouble on the values passed in; "massive": 2
  features per layer ~1000x the rest plus an offset of 300; torch 2.13 CPU, AVX512-BF16):

  ========================  =======  =======  =======  (float32 inputs; float64 inputs: 1e-16
  data, metric               highest  high     medium    to 5e-12 in every mode)
  ========================  =======  =======  =======
  Gaussian, cka / debiased   3.0e-8   3.0e-8   3.0e-8   (3e-8 = rounding the result to float32)
  Gaussian, rbf_cka / deb.   2.9e-8   3.0e-8   3.0e-8
  Gaussian, cosine           2.6e-8   2.6e-8   2.6e-8
  massive, cka / debiased    1.3e-9   2.5e-9   2.5e-9
  massive, rbf_cka / deb.    1.2e-9   3.3e-9   3.3e-9
  massive, cosine            2.3e-8   2.3e-8   2.3e-8
  ========================  =======  =======  =======

  Before the float64 pair sums (fastsim <= c45e608) float32 at the default "highest" was off by
  up to 5.6e-4 (Gaussian RBF CKA) and 1.7e-6 (linear), and "medium" differed from "high" on
  CPUs with bf16 because the long pair-sum matmuls went through oneDNN's bf16 path.

  The k-nearest-neighbour search always takes its candidates from a float32 (or TF32/bf16) matmul
  and then proves or re-ranks them exactly (``fastsim.core.knn``); "highest" adds the completeness
  check there. float64 inputs are worked on in float64 in every mode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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
