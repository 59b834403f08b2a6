"""Dtype and precision policy shared by the Triton kernels (a leaf: imports nothing from fastsim).

Precision modes of float32 matmul operands:

* "highest": float32 operands, as 3xTF32 on GPUs (exact float32 "ieee" under the interpreter);
* "high": TF32;
* "medium": bf16 operands.

Accumulators are float32, float64 when an input is float64 (whose dots are float64 throughout,
whatever the mode). float16/bfloat16 inputs are widened to float32 on load.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

PRECISIONS = ("highest", "high", "medium")

#: torch dtype -> Triton dtype, and -> the pointer type name of a kernel signature
TL_DTYPE = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32, torch.float64: tl.float64}
PTR_NAME = {torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.float32: "*fp32", torch.float64: "*fp64"}
#: every floating input dtype a launcher takes
INPUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def interpreting() -> bool:
    """Whether Triton kernels run on the CPU interpreter (TRITON_INTERPRET=1) in this process."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'highest', 'high' or 'medium'; got {precision!r}")
    return precision


def accumulation_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """float64 if any input is float64, else float32 (half inputs included)."""
    return torch.float64 if any(d == torch.float64 for d in dtypes) else torch.float32


def tl_acc(acc: torch.dtype):
    return tl.float64 if acc == torch.float64 else tl.float32


def dot_settings(acc: torch.dtype, precision: str, interpret: bool | None = None) -> dict:
    """The constexpr arguments PRECISION, TO_BF16 and EMULATE_BF16 for a kernel's operands.

    interpret: whether the kernel runs on the interpreter (default: this process's setting);
    the configurations compiled for GPUs pass False."""
    check_precision(precision)
    interpret = interpreting() if interpret is None else interpret
    if acc == torch.float64:
        return {"PRECISION": "ieee", "TO_BF16": False, "EMULATE_BF16": interpret}
    mode = {"highest": "ieee" if interpret else "tf32x3", "high": "tf32", "medium": "ieee"}[precision]
    return {"PRECISION": mode, "TO_BF16": precision == "medium", "EMULATE_BF16": interpret}


def next_pow2(x: int) -> int:
    return triton.next_power_of_2(max(int(x), 1))


@triton.jit
def operand(x, ACC: tl.constexpr, TO_BF16: tl.constexpr, EMULATE_BF16: tl.constexpr):
    """x as a dot operand: rounded to bf16 for "medium" (back in ACC when the interpreter, whose
    bf16 dot is unreliable, emulates it), else unchanged."""
    if TO_BF16:
        x = x.to(tl.bfloat16)
        if EMULATE_BF16:
            x = x.to(ACC)
    return x
