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


@triton.jit
def layer_cosine_kernel(
    x_ptr,
    part_ptr,
    flag_ptr,
    n,
    d,
    num_layers,
    stride_l,
    stride_n,
    ACC: tl.constexpr,
    SAFE_LO: tl.constexpr,
    SAFE_HI: tl.constexpr,
    L_PAD: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """All-pairs cosine of BLOCK_N frames, each frame's L rows in one batched dot.

    x is (L, n, d) with unit feature stride. Per frame the (L x L) dot products accumulate over
    the feature axis; their diagonal gives the norms, so each frame's rows are normalized in
    registers and the data are read once. The program's sum over its frames goes to part_ptr
    (one L_PAD x L_PAD partial per program). Frames with a zero row or a squared norm outside
    [SAFE_LO, SAFE_HI] are left out and flagged for the caller to recompute with scaling.
    """
    pid = tl.program_id(0)
    frames = (pid * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    layers = tl.arange(0, L_PAD).to(tl.int64)  # layer * stride_l can pass 2^31
    acc = tl.zeros([BLOCK_N, L_PAD, L_PAD], dtype=ACC)
    for d0 in range(0, d, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        mask = (frames[:, None, None] < n) & (layers[None, :, None] < num_layers) & (cols[None, None, :] < d)
        offs = layers[None, :, None] * stride_l + frames[:, None, None] * stride_n + cols[None, None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
        acc += tl.dot(x, tl.trans(x, (0, 2, 1)), input_precision="ieee", out_dtype=ACC)
    eye = layers[:, None] == layers[None, :]
    sq = tl.sum(tl.where(eye[None, :, :], acc, 0.0), axis=2)  # (BLOCK_N, L_PAD) squared norms
    real = (layers[None, :] < num_layers) & (frames[:, None] < n)
    bad_row = real & ((sq < SAFE_LO) | (sq > SAFE_HI))
    bad = tl.max(bad_row.to(tl.int32), axis=1) > 0  # (BLOCK_N,)
    norm = tl.sqrt(tl.where(bad_row | ~real, 1.0, sq))
    cos = acc / (norm[:, :, None] * norm[:, None, :])
    keep = (~bad) & (frames < n)
    part = tl.sum(tl.where(keep[:, None, None], cos, 0.0), axis=0)
    tl.store(part_ptr + pid * L_PAD * L_PAD + layers[:, None] * L_PAD + layers[None, :], part)
    tl.store(flag_ptr + frames, bad.to(tl.int8), mask=frames < n)


def layer_cosine_sums(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For an (L, n, d) tensor: (sum over frames of the L x L cosine matrix, excluding flagged
    frames; flag (n,) int8, 1 where a frame needs the scaled recomputation)."""
    L, n, d = x.shape
    if x.stride(2) != 1:
        x = x.contiguous()
    acc = compute_dtype([x])
    l_pad = max(16, triton.next_power_of_2(L))
    block_n = 16
    block_d = 32
    grid = (triton.cdiv(n, block_n),)
    parts = torch.empty(grid[0], l_pad, l_pad, dtype=acc, device=x.device)
    flag = torch.empty(n, dtype=torch.int8, device=x.device)
    wide = acc == torch.float64
    layer_cosine_kernel[grid](
        x, parts, flag, n, d, L, x.stride(0), x.stride(1),
        ACC=tl.float64 if wide else tl.float32,
        SAFE_LO=2.0**-900 if wide else 2.0**-100,
        SAFE_HI=2.0**900 if wide else 2.0**100,
        L_PAD=l_pad,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
    )
    return parts.sum(0, dtype=torch.float64)[:L, :L], flag
