"""Feature-space linear CKA sums of all layer pairs in one pass over the rows, fused.

For L layers X_a (n x d_a), each scaled by a power of two s_a and centered by its mean mu_a on
load (X~_a = s_a X_a - mu_a), one launch computes

    S[a, b] = |X~_a^T X~_b|_F^2 for all a <= b      (the sums linear CKA needs, float64)
    sq[a, i] = |X~_a[i]|^2                             (per-sample squared norms, float64)

without ever storing the D x D Gram (D = sum of the widths). The features of each layer are cut
into tiles of BT columns, aligned to the layer (a layer of width d takes ceil(d / BT) tiles, the
last one masked), so a tile belongs to one layer. Program (t1, t2), t1 <= t2, computes its
BT x BT Gram tile over ALL n rows (BK rows a step), squares it and adds the sum to S[a, b] of
the layers of its two tiles (twice for an off-diagonal tile of one layer's own block, whose
mirror image is not computed). Diagonal tiles also add their columns' share of the squared norms.

Layers are read in place through a table of data pointers, row strides, widths and mean
offsets (no stacked copy; layers of different widths and strides, in separate allocations, are
fine). They must share one dtype: the launcher converts the others, a copy of those only.

Precision ("highest" / "high" / "medium", float32 accumulators, see kernels/precision.py):
* "highest": the rows are centered in float64 and rounded once to float32; products are 3xTF32
  on GPUs (exact float32 under the interpreter); each tile accumulates CHUNK rows in float32 and
  then flushes into a float64 accumulator, so the sum over n rows loses no more than a sum over
  CHUNK rows. Gram entries are independent sums, so massive feature dims (100-1000x the others)
  do not pollute the small entries, and large means are removed in float64 before rounding.
* "high": TF32 products, float32 centering and accumulation; "medium": bf16 operands.
* float64 input: float64 throughout.

The program order groups tile pairs into SB x SB super-blocks, so that the programs running at
the same time share their column tiles in L2 (the rows stream through once per super-block).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from .config import LaunchConfig, make_config, unique
from .layer_table import column_tiles, in_place, pointer_table
from .precision import (
    INPUT_DTYPES,
    TL_DTYPE,
    accumulation_dtype,
    dot_settings,
    interpreting,
    operand,
    tl_acc,
)


@triton.jit
def _centered(x_ptr, stride, width, mu_off, s1, s2, mean_ptr, rows, rmask, cols,
              DTYPE: tl.constexpr, ACC: tl.constexpr, CENTER64: tl.constexpr, ALIGNED: tl.constexpr):
    """The (BK, BT) block of scaled, centered rows (0 outside the rows and the layer's width),
    and the same in float64 when CENTER64. The scale is s1 * s2 (float64 factors, each within
    float32's range, so that a float32 product by one, then the other, neither overflows nor
    flushes where the scaled value is normal)."""
    ptr = x_ptr.to(tl.pointer_type(DTYPE))
    if ALIGNED:  # the launcher checked: data 16-byte aligned, row strides and widths multiples of 16
        ptr = tl.multiple_of(ptr, 16)  # (on the pointer: the integer's hint does not survive the cast)
        stride = tl.multiple_of(stride, 16)
        width = tl.multiple_of(width, 16)
        mu_off = tl.multiple_of(mu_off, 16)
    cmask = cols < width
    mask = rmask[:, None] & cmask[None, :]
    x = tl.load(ptr + rows[:, None] * stride + cols[None, :], mask=mask, other=0.0)
    # The mean as two float64 parts hi + lo (hi: a value of the data, e.g. its first row)
    mu = tl.load(mean_ptr + 2 * (mu_off + cols), mask=cmask, other=0.0)
    mu_lo = tl.load(mean_ptr + 2 * (mu_off + cols) + 1, mask=cmask, other=0.0)
    if CENTER64:
        # (x - hi) is exact where x and hi are within a factor of 2 (an offset larger than the
        # spread), so the rows are centered to the rounding of the spread, not of the offset
        u64 = tl.where(mask, (x.to(tl.float64) * (s1 * s2) - mu[None, :]) - mu_lo[None, :], 0.0)
        u = u64.to(ACC)
    else:
        u = tl.where(mask, x.to(ACC) * s1.to(ACC) * s2.to(ACC) - (mu + mu_lo).to(ACC)[None, :], 0.0)
        u64 = u
    return u, u64


@triton.jit
def _step(acc, k0, n, pa, sa, wa, ma, a1, a2, pb, sb, wb, mb, b1, b2, mean_ptr, sq_ptr, la, cols_a, cols_b, diag,
          DTYPE: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr, TO_BF16: tl.constexpr,
          EMULATE_BF16: tl.constexpr, CENTER64: tl.constexpr, ALIGNED: tl.constexpr, BK: tl.constexpr):
    """acc plus the Gram tile of rows k0 .. k0 + BK - 1 (and, on a diagonal tile, their norms).

    A diagonal tile loads its block twice (the second from cache) rather than passing it through
    a branch: a tensor yielded by a branch into the dot broke Triton 3.6's layout pass for sm_80."""
    rows = (k0 + tl.arange(0, BK)).to(tl.int64)
    rmask = rows < n
    a, a64 = _centered(pa, sa, wa, ma, a1, a2, mean_ptr, rows, rmask, cols_a, DTYPE, ACC, CENTER64, ALIGNED)
    b, _ = _centered(pb, sb, wb, mb, b1, b2, mean_ptr, rows, rmask, cols_b, DTYPE, ACC, CENTER64, ALIGNED)
    if diag:
        if CENTER64:
            sq = tl.sum(a64 * a64, axis=1)
        else:  # the norms from rows centered in float64 whatever the mode (a reload, from cache)
            _, c64 = _centered(pa, sa, wa, ma, a1, a2, mean_ptr, rows, rmask, cols_a, DTYPE, ACC, True, ALIGNED)
            sq = tl.sum(c64 * c64, axis=1)
        tl.atomic_add(sq_ptr + la.to(tl.int64) * n + rows, sq, mask=rmask)
    a = operand(a, ACC, TO_BF16, EMULATE_BF16)
    b = operand(b, ACC, TO_BF16, EMULATE_BF16)
    return tl.dot(tl.trans(a), b, acc, input_precision=PRECISION, out_dtype=ACC)


@triton.jit
def linear_cka_kernel(
    layer_ptr,  # (L, 4) int64: data pointer, row stride, width, offset of the layer's mean in mean_ptr
    mean_ptr,  # (D, 2) float64: per feature the mean of the scaled rows as hi + lo, layer after layer
    scale_ptr,  # (L, 2) float64: two factors of each layer's power-of-two scale
    tile_ptr,  # (T, 2) int32: layer, first column
    block_ptr,  # (super-block pairs, 2) int32: I <= J
    sums_ptr,  # (L, L) float64, a <= b filled
    sq_ptr,  # (L, n) float64
    n,
    num_layers,
    num_tiles,
    sb,
    DTYPE: tl.constexpr,
    ACC: tl.constexpr,
    PRECISION: tl.constexpr,
    TO_BF16: tl.constexpr,
    EMULATE_BF16: tl.constexpr,
    CENTER64: tl.constexpr,
    FLUSH: tl.constexpr,
    ALIGNED: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    CHUNK: tl.constexpr,
):
    pid = tl.program_id(0)  # one axis (2^31 programs): super-block major, so neighbours share tiles
    blk = pid // (sb * sb)
    local = pid % (sb * sb)
    t1 = tl.load(block_ptr + 2 * blk) * sb + local // sb
    t2 = tl.load(block_ptr + 2 * blk + 1) * sb + local % sb
    if (t1 <= t2) & (t2 < num_tiles):
        la = tl.load(tile_ptr + 2 * t1)
        lb = tl.load(tile_ptr + 2 * t2)
        cols_a = tl.multiple_of(tl.load(tile_ptr + 2 * t1 + 1), BT) + tl.arange(0, BT)  # tiles start at multiples of BT
        cols_b = tl.multiple_of(tl.load(tile_ptr + 2 * t2 + 1), BT) + tl.arange(0, BT)
        pa = tl.load(layer_ptr + 4 * la)
        sa = tl.load(layer_ptr + 4 * la + 1)
        wa = tl.load(layer_ptr + 4 * la + 2)
        ma = tl.load(layer_ptr + 4 * la + 3)
        pb = tl.load(layer_ptr + 4 * lb)
        sb_ = tl.load(layer_ptr + 4 * lb + 1)
        wb = tl.load(layer_ptr + 4 * lb + 2)
        mb = tl.load(layer_ptr + 4 * lb + 3)
        a1 = tl.load(scale_ptr + 2 * la)
        a2 = tl.load(scale_ptr + 2 * la + 1)
        b1 = tl.load(scale_ptr + 2 * lb)
        b2 = tl.load(scale_ptr + 2 * lb + 1)
        diag = t1 == t2
        if FLUSH:
            # float32 sums of CHUNK rows, flushed into float64
            total = tl.zeros([BT, BT], dtype=tl.float64)
            for r0 in range(0, n, CHUNK):
                acc = tl.zeros([BT, BT], dtype=ACC)
                for k0 in range(r0, tl.minimum(r0 + CHUNK, n), BK):
                    acc = _step(acc, k0, n, pa, sa, wa, ma, a1, a2, pb, sb_, wb, mb, b1, b2, mean_ptr, sq_ptr, la,
                                cols_a, cols_b, diag, DTYPE, ACC, PRECISION, TO_BF16, EMULATE_BF16, CENTER64, ALIGNED, BK)
                total += acc.to(tl.float64)
        else:
            total = tl.zeros([BT, BT], dtype=ACC)
            for k0 in range(0, n, BK):
                total = _step(total, k0, n, pa, sa, wa, ma, a1, a2, pb, sb_, wb, mb, b1, b2, mean_ptr, sq_ptr, la,
                              cols_a, cols_b, diag, DTYPE, ACC, PRECISION, TO_BF16, EMULATE_BF16, CENTER64, ALIGNED, BK)
        t64 = total.to(tl.float64)
        part = tl.sum(tl.sum(t64 * t64, axis=1), axis=0)
        weight = tl.where((la == lb) & (t1 != t2), 2.0, 1.0)
        tl.atomic_add(sums_ptr + la.to(tl.int64) * num_layers + lb, part * weight)


# ---- configurations ---------------------------------------------------------------------------

#: (tile width BT, rows per step BK, warps, stages) by (float64 input, precision); CHUNK rows per
#: float32 partial sum at "highest".
_TILES = {
    (False, "highest"): (64, 16, 8, 3),
    (False, "high"): (128, 16, 8, 2),
    (False, "medium"): (128, 16, 8, 2),
    (True, "highest"): (64, 16, 8, 2),
}
CHUNK = 256
#: tiles per side of a super-block of programs (at most SB*SB programs share SB + SB tiles)
SUPER = 16


def launch_config(dtype: torch.dtype, precision: str, *, aligned: bool = True, interpret: bool = False) -> LaunchConfig:
    """The configuration linear_cka_sums launches for layers of `dtype` (float16, bfloat16,
    float32 or float64; any number and widths of layers)."""
    acc = accumulation_dtype(dtype)
    wide = acc == torch.float64
    bt, bk, warps, stages = _TILES[(wide, "highest" if wide else precision)]
    settings = dot_settings(acc, precision, interpret)
    constexprs = dict(
        DTYPE=TL_DTYPE[dtype],
        ACC=tl_acc(acc),
        PRECISION=settings["PRECISION"],
        TO_BF16=settings["TO_BF16"],
        EMULATE_BF16=settings["EMULATE_BF16"],
        CENTER64=wide or precision == "highest",
        FLUSH=not wide and precision == "highest",
        ALIGNED=bool(aligned),
        BT=bt,
        BK=bk,
        CHUNK=CHUNK,
    )
    runtime = {"layer_ptr": "*i64", "mean_ptr": "*fp64", "scale_ptr": "*fp64", "tile_ptr": "*i32", "block_ptr": "*i32",
               "sums_ptr": "*fp64", "sq_ptr": "*fp64", "n": "i32", "num_layers": "i32", "num_tiles": "i32", "sb": "i32"}
    label = f"{str(dtype).replace('torch.', '')} {'-' if wide else precision}{'' if aligned else ' unaligned'}"
    return make_config(linear_cka_kernel, runtime, constexprs, num_warps=warps, num_stages=stages, label=label)


def configs(exhaustive: bool = True) -> list[LaunchConfig]:
    """Every configuration linear_cka_sums can launch on a GPU (exhaustive=False: aligned float32
    at every precision, float64 and bfloat16 "highest", and unaligned float32 "highest")."""
    out = []
    for dtype in INPUT_DTYPES:
        for precision in (("highest",) if dtype == torch.float64 else ("highest", "high", "medium")):
            for aligned in (True, False):
                keep = (aligned and (dtype == torch.float32 or precision == "highest")) or (dtype == torch.float32 and precision == "highest")
                if exhaustive or (keep and dtype != torch.float16):
                    out.append(launch_config(dtype, precision, aligned=aligned))
    return unique(out)


# ---- launcher ---------------------------------------------------------------------------------

def _halves(scale: float) -> tuple[float, float]:
    """Two factors, each within float32's range, whose product is the power of two `scale`."""
    m, e = math.frexp(scale)
    if m != 0.5:
        raise ValueError(f"scales must be powers of two; got {scale!r}")
    k = e - 1
    return 2.0 ** (k // 2), 2.0 ** (k - k // 2)


@functools.lru_cache(maxsize=64)
def _super_blocks(num_tiles: int, sb: int) -> torch.Tensor:
    nb = triton.cdiv(num_tiles, sb)
    i, j = torch.triu_indices(nb, nb)
    return torch.stack([i, j], 1).to(torch.int32).contiguous()


def linear_cka_sums(
    layers: Sequence[torch.Tensor],
    means: Sequence[torch.Tensor],
    scales: Sequence[float] | torch.Tensor,
    precision: str = "highest",
    means_lo: Sequence[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, sq) for L layers X_a (n, d_a) on one device, any widths:

    S (L, L) float64, symmetric: S[a, b] = |X~_a^T X~_b|_F^2, with X~_a = scales[a] * X_a - means[a];
    sq (L, n) float64: sq[a, i] = |X~_a[i]|^2.

    means: per layer the (d_a,) mean of the scaled rows (any float dtype; float64 recommended,
    it is used as given); scales: per layer a power of two (float64 values; 1.0 for none);
    means_lo: optional per layer (d_a,) float64 low parts, the mean being means + means_lo beyond
    float64's resolution (the rows are centered as (s x - means) - means_lo in float64: with
    means a value near the data, such as its first row, exactly to the rounding of the spread)."""
    layers, dtype, aligned = in_place(layers)
    L, n, dev = len(layers), layers[0].shape[0], layers[0].device
    if len(means) != L:
        raise ValueError(f"one mean per layer: {L} layers, {len(means)} means")
    cfg = launch_config(dtype, precision, aligned=aligned, interpret=interpreting())
    sums = torch.zeros(L, L, dtype=torch.float64, device=dev)
    sq = torch.zeros(L, n, dtype=torch.float64, device=dev)
    widths = [x.shape[1] for x in layers]
    tiles = column_tiles(widths, cfg["BT"])
    if n == 0 or not tiles:
        return sums, sq
    table, offsets = pointer_table(layers)
    hi = torch.cat([torch.as_tensor(m, device=dev).flatten() for m in means]).to(torch.float64)
    lo = torch.zeros_like(hi) if means_lo is None else torch.cat([torch.as_tensor(m, device=dev).flatten() for m in means_lo]).to(torch.float64)
    if hi.numel() != offsets[-1] or lo.numel() != offsets[-1]:
        raise ValueError(f"means must have the layers' widths {widths}")
    mean = torch.stack([hi, lo], 1)  # (D, 2)
    scales = [float(v) for v in (scales.tolist() if torch.is_tensor(scales) else scales)]
    if len(scales) != L:
        raise ValueError(f"one scale per layer: {L} layers, {len(scales)} scales")
    scale = torch.tensor([_halves(v) for v in scales], dtype=torch.float64)
    sb = min(SUPER, triton.next_power_of_2(len(tiles)))
    blocks = _super_blocks(len(tiles), sb)
    linear_cka_kernel[(sb * sb * blocks.shape[0],)](
        table.to(dev),
        mean,
        scale.to(dev),
        torch.tensor(tiles, dtype=torch.int32).to(dev),
        blocks.to(dev),
        sums,
        sq,
        n,
        L,
        len(tiles),
        sb,
        **cfg.launch_args(),
    )
    return sums + sums.triu(1).T, sq
