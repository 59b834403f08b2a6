"""Per-feature extremes and exact float64 sums of all layers in one launch.

What a fused one-pass CKA path needs to know of its layers before the pass (the per-layer
power-of-two scale, the float64 mean, zero variance, NaN/Inf) from one read of the data, with a
few torch ops per call whatever L and n. For L layers X_a (n x d_a), read in place through a table
of data pointers, row strides and widths (as ``linear_cka``: no stacked copy), one launch gives
per feature j of every layer (the layers' features one after another, D = sum d_a):

    out[0, j] = min_i x_ij      out[1, j] = max_i x_ij       (NaN/Inf: see out[4])
    out[2, j] = x_0j            out[3, j] = sum_i (x_ij - x_0j) in float64
    out[4, j] = 1 if some x_ij is NaN or +-Inf, else 0

all float64. Zero variance is then min == max for every feature, exactly; the mean
x_0j + out[3, j] / n is accurate to the rounding of the spread, not of the offset (float64 inputs
with an offset of 1e15 and a spread of 1 keep their mean; for float16/bfloat16/float32 inputs each
difference is exact in float64).

Program t owns a tile of BD features of one layer (tiles aligned to the layers, as in
``linear_cka``) and walks all n rows, BK at a time; min and max in the input's accumulation dtype
(float32 for half and float32 inputs), the sums in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from .config import LaunchConfig, make_config, unique
from .layer_table import column_tiles, in_place, pointer_table
from .precision import INPUT_DTYPES, TL_DTYPE, accumulation_dtype, interpreting, tl_acc


@triton.jit
def column_moments_kernel(
    layer_ptr,  # (L, 4) int64: data pointer, row stride, width, first column of the layer in out
    tile_ptr,  # (T, 2) int32: layer, first column
    out_ptr,  # (5, D) float64
    n,
    total_cols,
    DTYPE: tl.constexpr,
    ACC: tl.constexpr,
    ALIGNED: tl.constexpr,
    BD: tl.constexpr,
    BK: tl.constexpr,
):
    t = tl.program_id(0)
    la = tl.load(tile_ptr + 2 * t)
    c0 = tl.load(tile_ptr + 2 * t + 1)
    p = tl.load(layer_ptr + 4 * la)
    stride = tl.load(layer_ptr + 4 * la + 1)
    width = tl.load(layer_ptr + 4 * la + 2)
    first_col = tl.load(layer_ptr + 4 * la + 3)
    ptr = p.to(tl.pointer_type(DTYPE))
    if ALIGNED:  # the launcher checked: data 16-byte aligned, row strides and widths multiples of 16
        ptr = tl.multiple_of(ptr, 16)
        stride = tl.multiple_of(stride, 16)
        width = tl.multiple_of(width, 16)
    cols = tl.multiple_of(c0, BD) + tl.arange(0, BD)
    cmask = cols < width
    x0 = tl.load(ptr + cols, mask=cmask, other=0.0).to(tl.float64)
    lo = tl.full([BD], float("inf"), ACC)
    hi = tl.full([BD], float("-inf"), ACC)
    total = tl.zeros([BD], dtype=tl.float64)
    bad = tl.zeros([BD], dtype=tl.int32)
    for k0 in range(0, n, BK):
        rows = (k0 + tl.arange(0, BK)).to(tl.int64)
        mask = (rows < n)[:, None] & cmask[None, :]
        x = tl.load(ptr + rows[:, None] * stride + cols[None, :], mask=mask, other=0.0).to(ACC)
        nonfinite = (x != x) | (tl.abs(x) == float("inf"))
        bad = tl.maximum(bad, tl.max(tl.where(mask & nonfinite, 1, 0), axis=0))
        lo = tl.minimum(lo, tl.min(tl.where(mask, x, float("inf")), axis=0))
        hi = tl.maximum(hi, tl.max(tl.where(mask, x, float("-inf")), axis=0))
        total += tl.sum(tl.where(mask, x.to(tl.float64) - x0[None, :], 0.0), axis=0)
    dst = out_ptr + first_col + cols
    tl.store(dst, lo.to(tl.float64), mask=cmask)
    tl.store(dst + total_cols, hi.to(tl.float64), mask=cmask)
    tl.store(dst + 2 * total_cols, x0, mask=cmask)
    tl.store(dst + 3 * total_cols, total, mask=cmask)
    tl.store(dst + 4 * total_cols, bad.to(tl.float64), mask=cmask)


# ---- configurations ---------------------------------------------------------------------------

BD = 64  # features per program
BK = 16  # rows per step
NUM_WARPS = 8


def launch_config(dtype: torch.dtype, *, aligned: bool = True, interpret: bool = False) -> LaunchConfig:
    """The configuration column_moments launches for layers of `dtype`."""
    bd, bk = (128, 4096) if interpret else (BD, BK)  # the interpreter's cost is per step
    constexprs = dict(DTYPE=TL_DTYPE[dtype], ACC=tl_acc(accumulation_dtype(dtype)), ALIGNED=bool(aligned), BD=bd, BK=bk)
    runtime = {"layer_ptr": "*i64", "tile_ptr": "*i32", "out_ptr": "*fp64", "n": "i32", "total_cols": "i32"}
    label = f"{str(dtype).replace('torch.', '')}{'' if aligned else ' unaligned'}"
    return make_config(column_moments_kernel, runtime, constexprs, num_warps=NUM_WARPS, num_stages=2,
                       aligned=aligned, label=label)


def configs(exhaustive: bool = True) -> list[LaunchConfig]:
    """Every configuration column_moments can launch on a GPU (exhaustive=False: float32 and
    float64, aligned and not)."""
    out = []
    for dtype in INPUT_DTYPES:
        for aligned in (True, False):
            if exhaustive or dtype in (torch.float32, torch.float64):
                out.append(launch_config(dtype, aligned=aligned))
    return unique(out)


# ---- launcher ---------------------------------------------------------------------------------

def column_moments(layers: Sequence[torch.Tensor]) -> torch.Tensor:
    """(5, D) float64 for L layers (n, d_a) on one device, D = sum d_a (see the module docs):
    per feature min, max, first row, sum of (x - first row), and 1 where some value is NaN/Inf.

    The layers are read in place if they share a dtype and have unit feature stride (a copy of
    the others)."""
    layers, dtype, aligned = in_place(layers)
    n, dev = layers[0].shape[0], layers[0].device
    table, offsets = pointer_table(layers)
    total = offsets[-1]
    out = torch.empty(5, total, dtype=torch.float64, device=dev)
    if n == 0:
        return out.copy_(torch.tensor([float("inf"), float("-inf"), 0.0, 0.0, 0.0], dtype=torch.float64)[:, None])
    cfg = launch_config(dtype, aligned=aligned, interpret=interpreting())
    tiles = column_tiles([x.shape[1] for x in layers], cfg["BD"])
    column_moments_kernel[(len(tiles),)](
        table.to(dev),
        torch.tensor(tiles, dtype=torch.int32).to(dev),
        out,
        n,
        total,
        **cfg.launch_args(),
    )
    return out
