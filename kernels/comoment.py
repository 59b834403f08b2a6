"""Upper-triangle Gram tiles of a chunk of stacked, centered hidden states: G = U^T U.

U is (n, D), the L layers' centered rows side by side (D = sum of their widths). The grid is
(tiles, tiles) over D; a program whose row tile lies below its column tile exits at once, so
only the tiles on or above the diagonal are computed: half the FLOPs of the full Gram. Every
entry (r, c) with r <= c is written; ``upper_gram`` mirrors them into a symmetric matrix.

Precision modes: see kernels/precision.py.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .precision import dot_settings, operand


@triton.jit
def upper_gram_kernel(
    u_ptr,
    out_ptr,
    n,
    D,
    stride_u,
    stride_out,
    ACC: tl.constexpr,
    PRECISION: tl.constexpr,
    TO_BF16: tl.constexpr,
    EMULATE_BF16: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    ti = tl.program_id(0)
    tj = tl.program_id(1)
    if ti <= tj:
        rows = (ti * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
        cols = (tj * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
        acc = tl.zeros([BLOCK, BLOCK], dtype=ACC)
        for k0 in range(0, n, BLOCK_K):
            ks = (k0 + tl.arange(0, BLOCK_K)).to(tl.int64)
            a = tl.load(u_ptr + ks[:, None] * stride_u + rows[None, :], mask=(ks[:, None] < n) & (rows[None, :] < D), other=0.0)
            b = tl.load(u_ptr + ks[:, None] * stride_u + cols[None, :], mask=(ks[:, None] < n) & (cols[None, :] < D), other=0.0)
            a = operand(a, ACC, TO_BF16, EMULATE_BF16)
            b = operand(b, ACC, TO_BF16, EMULATE_BF16)
            acc += tl.dot(tl.trans(a), b, input_precision=PRECISION, out_dtype=ACC)
        mask = (rows[:, None] < D) & (cols[None, :] < D)
        tl.store(out_ptr + rows[:, None] * stride_out + cols[None, :], acc, mask=mask)


def upper_gram(u: torch.Tensor, precision: str) -> torch.Tensor:
    """Symmetric (D, D) U^T U of an (n, D) float32/float64 tensor, from its upper-triangle tiles."""
    n, D = u.shape
    u = u if u.stride(1) == 1 else u.contiguous()
    acc = torch.float64 if u.dtype == torch.float64 else torch.float32
    out = torch.zeros(D, D, dtype=acc, device=u.device)
    if n == 0:
        return out
    block = 64 if D >= 64 else 16
    tiles = triton.cdiv(D, block)
    upper_gram_kernel[(tiles, tiles)](
        u, out, n, D, u.stride(0), out.stride(0),
        ACC=tl.float64 if acc == torch.float64 else tl.float32,
        **dot_settings(acc, precision),
        BLOCK=block,
        BLOCK_K=32,
    )
    upper = torch.triu(out)
    return upper + torch.triu(out, 1).T
