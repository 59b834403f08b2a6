"""The precision modes shared by the Triton kernels' matmul operands.

"highest": float32 operands, as 3xTF32 on GPUs (exact float32 "ieee" under the interpreter);
"high": TF32; "medium": bf16 operands. Accumulators are float32, float64 for float64 inputs
(whose dots are float64 throughout, whatever the mode).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


def dot_settings(acc: torch.dtype, precision: str) -> dict:
    """The constexpr arguments PRECISION, TO_BF16 and EMULATE_BF16 for a kernel's operands."""
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if acc == torch.float64:
        return {"PRECISION": "ieee", "TO_BF16": False, "EMULATE_BF16": interpret}
    mode = {"highest": "ieee" if interpret else "tf32x3", "high": "tf32", "medium": "ieee"}[precision]
    return {"PRECISION": mode, "TO_BF16": precision == "medium", "EMULATE_BF16": interpret}


@triton.jit
def operand(x, ACC: tl.constexpr, TO_BF16: tl.constexpr, EMULATE_BF16: tl.constexpr):
    """x as a dot operand: rounded to bf16 for "medium" (back in ACC when the interpreter, whose
    bf16 dot is unreliable, emulates it), else unchanged."""
    if TO_BF16:
        x = x.to(tl.bfloat16)
        if EMULATE_BF16:
            x = x.to(ACC)
    return x
