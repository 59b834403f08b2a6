"""Per-sample cosine similarity of two (n, d) matrices in one pass over both.

Each program owns BLOCK_N rows and walks the feature axis in BLOCK_D steps, accumulating
a.b, |a|^2, |b|^2 and the peak magnitudes in registers (float32, or float64 when an input is
float64); the row cosine and a flag are written out, so the inputs are read once and nothing else
is stored. Flag 1: a zero vector (cosine 0 by definition). Flag 2: a peak so small or large that
the squares may under- or overflow in the accumulator; the caller recomputes those rows with
scaling (fastsim.backends.triton_cosine).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..options import compute_dtype


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
    SAFE_LO: tl.constexpr,
    SAFE_HI: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = (pid * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)  # 64-bit offsets: n * stride may pass 2^31
    row_ok = rows < n
    dot = tl.zeros([BLOCK_N], dtype=ACC)
    na = tl.zeros([BLOCK_N], dtype=ACC)
    nb = tl.zeros([BLOCK_N], dtype=ACC)
    pa = tl.zeros([BLOCK_N], dtype=ACC)
    pb = tl.zeros([BLOCK_N], dtype=ACC)
    for d0 in range(0, d, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        mask = row_ok[:, None] & (cols[None, :] < d)
        x = tl.load(a_ptr + rows[:, None] * stride_a + cols[None, :], mask=mask, other=0.0).to(ACC)
        y = tl.load(b_ptr + rows[:, None] * stride_b + cols[None, :], mask=mask, other=0.0).to(ACC)
        dot += tl.sum(x * y, axis=1)
        na += tl.sum(x * x, axis=1)
        nb += tl.sum(y * y, axis=1)
        pa = tl.maximum(pa, tl.max(tl.abs(x), axis=1))
        pb = tl.maximum(pb, tl.max(tl.abs(y), axis=1))
    is_zero = (pa == 0) | (pb == 0)
    peak_lo = tl.minimum(pa, pb)
    peak_hi = tl.maximum(pa, pb)
    rescue = (~is_zero) & ((peak_lo < SAFE_LO) | (peak_hi > SAFE_HI))
    denom = tl.sqrt(na) * tl.sqrt(nb)
    cos = tl.where(is_zero | rescue, 0.0, dot / tl.where(is_zero | rescue, 1.0, denom))
    tl.store(cos_ptr + rows, cos, mask=row_ok)
    tl.store(zero_ptr + rows, is_zero.to(tl.int8) + 2 * rescue.to(tl.int8), mask=row_ok)


def row_cosine(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos (n,), flag (n,) int8: 0 ok, 1 zero vector, 2 needs rescaling) for two (n, d) tensors."""
    n, d = a.shape
    a = a if a.stride(1) == 1 else a.contiguous()
    b = b if b.stride(1) == 1 else b.contiguous()
    acc = compute_dtype([a, b])
    cos = torch.empty(n, dtype=acc, device=a.device)
    zero = torch.empty(n, dtype=torch.int8, device=a.device)
    block_n = 16
    block_d = min(256, triton.next_power_of_2(d))
    grid = (triton.cdiv(n, block_n),)
    row_cosine_kernel[grid](
        a, b, cos, zero, n, d, a.stride(0), b.stride(0),
        ACC=tl.float64 if acc == torch.float64 else tl.float32,
        # Peaks within [2^-e, 2^e] keep d <= 2^20 squares inside the accumulator's normal range.
        SAFE_LO=2.0**-450 if acc == torch.float64 else 2.0**-50,
        SAFE_HI=2.0**450 if acc == torch.float64 else 2.0**50,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
    )
    return cos, zero
