"""Per-sample cosine similarity of two (n, d) matrices in one pass over both.

Each program owns BLOCK_N rows and walks the feature axis in BLOCK_D steps, accumulating
a.b, |a|^2 and |b|^2 in registers (float32, or float64 for float64 inputs); the row cosine and a
zero-vector flag are written out, so the inputs are read once and nothing else is stored.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def row_cosine_kernel(
    a_ptr,
    b_ptr,
    cos_ptr,
    zero_ptr,
    n,
    d,
    stride_a,
    stride_b,
    ACC: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n
    dot = tl.zeros([BLOCK_N], dtype=ACC)
    na = tl.zeros([BLOCK_N], dtype=ACC)
    nb = tl.zeros([BLOCK_N], dtype=ACC)
    for d0 in range(0, d, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        mask = row_ok[:, None] & (cols[None, :] < d)
        x = tl.load(a_ptr + rows[:, None] * stride_a + cols[None, :], mask=mask, other=0.0).to(ACC)
        y = tl.load(b_ptr + rows[:, None] * stride_b + cols[None, :], mask=mask, other=0.0).to(ACC)
        dot += tl.sum(x * y, axis=1)
        na += tl.sum(x * x, axis=1)
        nb += tl.sum(y * y, axis=1)
    denom = tl.sqrt(na) * tl.sqrt(nb)
    is_zero = denom == 0
    cos = tl.where(is_zero, 0.0, dot / tl.where(is_zero, 1.0, denom))
    tl.store(cos_ptr + rows, cos, mask=row_ok)
    tl.store(zero_ptr + rows, is_zero.to(tl.int8), mask=row_ok)


def row_cosine(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos (n,), zero (n,) int8) for two (n, d) tensors with unit feature stride."""
    n, d = a.shape
    a = a if a.stride(1) == 1 else a.contiguous()
    b = b if b.stride(1) == 1 else b.contiguous()
    acc = torch.float64 if torch.float64 in (a.dtype, b.dtype) else torch.float32
    cos = torch.empty(n, dtype=acc, device=a.device)
    zero = torch.empty(n, dtype=torch.int8, device=a.device)
    block_n = 16
    block_d = min(256, triton.next_power_of_2(d))
    grid = (triton.cdiv(n, block_n),)
    row_cosine_kernel[grid](
        a, b, cos, zero, n, d, a.stride(0), b.stride(0),
        ACC=tl.float64 if acc == torch.float64 else tl.float32,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
    )
    return cos, zero
