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

from .config import LaunchConfig, is_aligned, make_config, unique
from .precision import (
    PTR_NAME,
    accumulation_dtype,
    dot_settings,
    interpreting,
    operand,
    tl_acc,
)


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


# ---- configurations ---------------------------------------------------------------------------

def launch_config(dtype: torch.dtype, precision: str, D: int, *, aligned: bool = True, interpret: bool = False) -> LaunchConfig:
    """The configuration upper_gram launches for an (n, D) tensor of `dtype` (float32 or float64)."""
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"upper_gram takes float32 or float64; got {dtype}")
    acc = accumulation_dtype(dtype)
    block = 64 if D >= 64 else 16
    constexprs = dict(ACC=tl_acc(acc), **dot_settings(acc, precision, interpret), BLOCK=block, BLOCK_K=32)
    runtime = {"u_ptr": PTR_NAME[dtype], "out_ptr": PTR_NAME[acc], "n": "i32", "D": "i32", "stride_u": "i32", "stride_out": "i32"}
    label = f"{str(dtype).replace('torch.', '')} {'-' if acc == torch.float64 else precision} D{'>=' if block == 64 else '<'}64"
    return make_config(upper_gram_kernel, runtime, constexprs, num_warps=4, num_stages=3, aligned=aligned, label=label)


def configs(exhaustive: bool = True) -> list[LaunchConfig]:
    """Every configuration upper_gram can launch on a GPU (exhaustive=False: the 64-wide tiles,
    aligned at every precision and float64, unaligned at "highest")."""
    out = []
    for dtype in (torch.float32, torch.float64):
        for precision in (("highest",) if dtype == torch.float64 else ("highest", "high", "medium")):
            for D in (16, 64):
                for aligned in (True, False):
                    if exhaustive or (D == 64 and (aligned or (precision == "highest" and dtype == torch.float32))):
                        out.append(launch_config(dtype, precision, D, aligned=aligned))
    return unique(out)


# ---- launcher ---------------------------------------------------------------------------------

def upper_gram(u: torch.Tensor, precision: str) -> torch.Tensor:
    """Symmetric (D, D) U^T U of an (n, D) float32/float64 tensor, from its upper-triangle tiles."""
    n, D = u.shape
    u = u if u.stride(1) == 1 else u.contiguous()
    acc = accumulation_dtype(u.dtype)
    out = torch.zeros(D, D, dtype=acc, device=u.device)
    if n == 0:
        return out
    cfg = launch_config(u.dtype, precision, D, aligned=is_aligned(u, u.stride(0), D), interpret=interpreting())
    tiles = triton.cdiv(D, cfg["BLOCK"])
    upper_gram_kernel[(tiles, tiles)](u, out, n, D, u.stride(0), out.stride(0), **cfg.launch_args())
    upper = torch.triu(out)
    return upper + torch.triu(out, 1).T
