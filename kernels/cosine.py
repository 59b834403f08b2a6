"""Per-sample cosine similarity of two (n, d) matrices in one pass over both.

Each program owns BLOCK_N rows and walks the feature axis in BLOCK_D steps, accumulating
a.b, |a|^2, |b|^2 and the peak magnitudes in registers (float32, or float64 when an input is
float64); the row cosine and a flag are written out, so the inputs are read once and nothing else
is stored. Flag 1: a zero vector (cosine 0 by definition). Flag 2: a peak so small or large that
the squares may under- or overflow in the accumulator; the caller recomputes those rows with
scaling (fastsim.metrics.cosine).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .config import LaunchConfig, is_aligned, make_config, unique
from .precision import INPUT_DTYPES, PTR_NAME, accumulation_dtype, next_pow2, tl_acc


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


@triton.jit
def layer_norms_kernel(
    x_ptr,
    sq_ptr,
    flag_ptr,
    n,
    d,
    num_layers,
    stride_l,
    stride_n,
    ACC: tl.constexpr,
    SAFE_LO: tl.constexpr,
    SAFE_HI: tl.constexpr,
    G: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Squared norms (L, n) of every frame's rows, and the frame flags (1: some squared norm
    outside [SAFE_LO, SAFE_HI], a zero row included), for layer_cosine_kernel over several
    groups of layers."""
    pid = tl.program_id(0)
    frames = (pid * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    fmask = frames < n
    bad = tl.zeros([BLOCK_N], dtype=tl.int32)
    for g0 in range(0, num_layers, G):
        layers = (g0 + tl.arange(0, G)).to(tl.int64)
        lmask = layers < num_layers
        sq = tl.zeros([BLOCK_N, G], dtype=ACC)
        for d0 in range(0, d, BLOCK_D):
            cols = d0 + tl.arange(0, BLOCK_D)
            mask = fmask[:, None, None] & lmask[None, :, None] & (cols[None, None, :] < d)
            offs = layers[None, :, None] * stride_l + frames[:, None, None] * stride_n + cols[None, None, :]
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
            sq += tl.sum(x * x, axis=2)
        real = fmask[:, None] & lmask[None, :]
        bad = tl.maximum(bad, tl.max((real & ((sq < SAFE_LO) | (sq > SAFE_HI))).to(tl.int32), axis=1))
        tl.store(sq_ptr + layers[None, :] * n + frames[:, None], sq, mask=real)
    tl.store(flag_ptr + frames, bad.to(tl.int8), mask=fmask)


@triton.jit
def layer_cosine_kernel(
    x_ptr,
    sq_ptr,
    flag_ptr,
    pairs_ptr,
    part_ptr,
    n,
    d,
    num_layers,
    stride_l,
    stride_n,
    ACC: tl.constexpr,
    SAFE_LO: tl.constexpr,
    SAFE_HI: tl.constexpr,
    G: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    NORMS_GIVEN: tl.constexpr,
):
    """All-pairs cosine of the frames, BLOCK_N frames at a time, for one pair of layer groups.

    x is (L, n, d) with unit feature stride. Program (p, q) takes the frame blocks p, p + P,
    p + 2P, ... (P programs on axis 0) and the layer groups (ga, gb) of pair q; per frame the
    (G x G) dot products of the two groups' rows accumulate over the feature axis (one batched
    dot per BLOCK_D features), are normalized in registers and summed over the frames, so the
    data are read once per group pair. The program's sum goes to part_ptr[q, p] (G x G).

    With one group (NORMS_GIVEN false) the squared norms are the diagonal of the dot products
    and the program writes the frame flags: 1 where a row is zero or its squared norm is outside
    [SAFE_LO, SAFE_HI]. With several groups layer_norms_kernel has written the squared norms
    and the flags first. Flagged frames are left out of the sums (the caller recomputes them).
    """
    pid = tl.program_id(0)
    pair = tl.program_id(1)
    programs = tl.num_programs(0)
    ga = tl.load(pairs_ptr + 2 * pair)
    gb = tl.load(pairs_ptr + 2 * pair + 1)
    la = (ga * G + tl.arange(0, G)).to(tl.int64)  # layer * stride_l can pass 2^31
    lb = (gb * G + tl.arange(0, G)).to(tl.int64)
    part = tl.zeros([BLOCK_N, G, G], dtype=ACC)
    for f0 in range(pid * BLOCK_N, n, programs * BLOCK_N):
        frames = (f0 + tl.arange(0, BLOCK_N)).to(tl.int64)
        fmask = frames < n
        acc = tl.zeros([BLOCK_N, G, G], dtype=ACC)
        for d0 in range(0, d, BLOCK_D):
            cols = d0 + tl.arange(0, BLOCK_D)
            base = frames[:, None, None] * stride_n + cols[None, None, :]
            cmask = fmask[:, None, None] & (cols[None, None, :] < d)
            xa = tl.load(x_ptr + la[None, :, None] * stride_l + base, mask=cmask & (la[None, :, None] < num_layers), other=0.0).to(ACC)
            if ga == gb:
                xb = xa
            else:
                xb = tl.load(x_ptr + lb[None, :, None] * stride_l + base, mask=cmask & (lb[None, :, None] < num_layers), other=0.0).to(ACC)
            acc += tl.dot(xa, tl.trans(xb, (0, 2, 1)), input_precision="ieee", out_dtype=ACC)
        real_a = fmask[:, None] & (la[None, :] < num_layers)
        real_b = fmask[:, None] & (lb[None, :] < num_layers)
        if NORMS_GIVEN:
            sq_a = tl.load(sq_ptr + la[None, :] * n + frames[:, None], mask=real_a, other=1.0)
            sq_b = tl.load(sq_ptr + lb[None, :] * n + frames[:, None], mask=real_b, other=1.0)
            bad = tl.load(flag_ptr + frames, mask=fmask, other=0) != 0
        else:
            eye = tl.arange(0, G)[:, None] == tl.arange(0, G)[None, :]
            sq_a = tl.sum(tl.where(eye[None, :, :], acc, 0.0), axis=2)  # (BLOCK_N, G) squared norms
            sq_b = sq_a
            bad_row = real_a & ((sq_a < SAFE_LO) | (sq_a > SAFE_HI))
            bad = tl.max(bad_row.to(tl.int32), axis=1) > 0  # (BLOCK_N,)
            tl.store(flag_ptr + frames, bad.to(tl.int8), mask=fmask)
        ok_a = real_a & (sq_a >= SAFE_LO) & (sq_a <= SAFE_HI)
        ok_b = real_b & (sq_b >= SAFE_LO) & (sq_b <= SAFE_HI)
        norm_a = tl.sqrt(tl.where(ok_a, sq_a, 1.0))
        norm_b = tl.sqrt(tl.where(ok_b, sq_b, 1.0))
        cos = acc / (norm_a[:, :, None] * norm_b[:, None, :])
        keep = (~bad) & fmask
        part += tl.where(keep[:, None, None], cos, 0.0)
    g = tl.arange(0, G)
    out = part_ptr + (pair * programs + pid).to(tl.int64) * G * G
    tl.store(out + g[:, None] * G + g[None, :], tl.sum(part, axis=0))


# ---- configurations ---------------------------------------------------------------------------

#: row_cosine: rows per program and the widest feature chunk (half that for float64 accumulators)
ROW_BLOCK_N, ROW_BLOCK_D = 16, 128


def row_launch_config(dtype_a: torch.dtype, dtype_b: torch.dtype, d: int, *, aligned: bool = True) -> LaunchConfig:
    """The configuration row_cosine launches for (n, d) inputs of these dtypes."""
    acc = accumulation_dtype(dtype_a, dtype_b)
    wide = acc == torch.float64
    constexprs = dict(
        ACC=tl_acc(acc),
        # Peaks within [2^-e, 2^e] keep d <= 2^20 squares inside the accumulator's normal range.
        SAFE_LO=2.0**-450 if wide else 2.0**-50,
        SAFE_HI=2.0**450 if wide else 2.0**50,
        BLOCK_N=ROW_BLOCK_N,
        BLOCK_D=min(ROW_BLOCK_D // (2 if wide else 1), max(16, next_pow2(d))),
    )
    runtime = {"a_ptr": PTR_NAME[dtype_a], "b_ptr": PTR_NAME[dtype_b], "cos_ptr": PTR_NAME[acc], "zero_ptr": "*i8",
               "n": "i32", "d": "i32", "stride_a": "i32", "stride_b": "i32"}
    label = f"{str(dtype_a).replace('torch.', '')}/{str(dtype_b).replace('torch.', '')} d<={constexprs['BLOCK_D']}"
    return make_config(row_cosine_kernel, runtime, constexprs, num_warps=4, num_stages=2, aligned=aligned, label=label)


#: layer_cosine: (layers per group, frames per step, feature chunk, warps) by accumulator
_LAYER_TILES = {False: (32, 8, 16, 8), True: (16, 8, 16, 8)}
#: programs on the frame axis: enough to fill a large GPU several times over
LAYER_PROGRAMS = 1024


def layer_cosine_config_limits(dtype: torch.dtype) -> tuple[float, float]:
    """The range [SAFE_LO, SAFE_HI] of squared row norms layer_cosine_sums takes as they are
    (frames with a squared norm outside it in any layer are flagged)."""
    wide = accumulation_dtype(dtype) == torch.float64
    return (2.0**-900, 2.0**900) if wide else (2.0**-100, 2.0**100)


def layer_launch_config(dtype: torch.dtype, num_layers: int, *, aligned: bool = True) -> LaunchConfig:
    """The configuration layer_cosine_sums launches for (L, n, d) input of `dtype`: the layers
    go in groups of G; with more than one group (NORMS_GIVEN) layer_norms_kernel runs first,
    with the configuration ``layer_norms_config`` gives."""
    acc = accumulation_dtype(dtype)
    wide = acc == torch.float64
    G, block_n, block_d, warps = _LAYER_TILES[wide]
    G = min(G, max(16, next_pow2(num_layers)))
    lo, hi = layer_cosine_config_limits(dtype)
    constexprs = dict(
        ACC=tl_acc(acc),
        SAFE_LO=lo,
        SAFE_HI=hi,
        G=G,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
        NORMS_GIVEN=num_layers > G,
    )
    runtime = {"x_ptr": PTR_NAME[dtype], "sq_ptr": PTR_NAME[acc], "flag_ptr": "*i8", "pairs_ptr": "*i32",
               "part_ptr": PTR_NAME[acc], "n": "i32", "d": "i32", "num_layers": "i32", "stride_l": "i32", "stride_n": "i32"}
    label = f"{str(dtype).replace('torch.', '')} L{'>' if num_layers > G else '<='}{G}"
    return make_config(layer_cosine_kernel, runtime, constexprs, num_warps=warps, num_stages=1, aligned=aligned, label=label)


def layer_norms_config(dtype: torch.dtype, *, aligned: bool = True) -> LaunchConfig:
    acc = accumulation_dtype(dtype)
    lo, hi = layer_cosine_config_limits(dtype)
    constexprs = dict(
        ACC=tl_acc(acc),
        SAFE_LO=lo,
        SAFE_HI=hi,
        G=16,
        BLOCK_N=8,
        BLOCK_D=32,
    )
    runtime = {"x_ptr": PTR_NAME[dtype], "sq_ptr": PTR_NAME[acc], "flag_ptr": "*i8",
               "n": "i32", "d": "i32", "num_layers": "i32", "stride_l": "i32", "stride_n": "i32"}
    return make_config(layer_norms_kernel, runtime, constexprs, num_warps=4, num_stages=2, aligned=aligned,
                       label=str(dtype).replace("torch.", ""))


def configs(exhaustive: bool = True) -> list[LaunchConfig]:
    """Every configuration row_cosine and layer_cosine_sums can launch on a GPU (exhaustive=False:
    float32 and float64 inputs at the widest chunks and every layer grouping; the half inputs
    differ only in their loads)."""
    dtypes = INPUT_DTYPES if exhaustive else (torch.float32, torch.float64)
    out = []
    for aligned in (True, False):
        for da in dtypes:
            for db in dtypes if exhaustive else (da,):
                for d in (16, 32, 64, 128):
                    if exhaustive or d == 128:
                        out.append(row_launch_config(da, db, d, aligned=aligned))
        for dt in dtypes:
            for L in (16, 32, 33):  # one group of 16, one group of 32, several groups
                if exhaustive or L > 16 or not aligned:
                    out.append(layer_launch_config(dt, L, aligned=aligned))
            if exhaustive or not aligned:
                out.append(layer_norms_config(dt, aligned=aligned))
    return unique(out)


# ---- launchers --------------------------------------------------------------------------------

def row_cosine(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos (n,), flag (n,) int8: 0 ok, 1 zero vector, 2 needs rescaling) for two (n, d) tensors."""
    n, d = a.shape
    a = a if a.stride(1) == 1 else a.contiguous()
    b = b if b.stride(1) == 1 else b.contiguous()
    acc = accumulation_dtype(a.dtype, b.dtype)
    cos = torch.empty(n, dtype=acc, device=a.device)
    zero = torch.empty(n, dtype=torch.int8, device=a.device)
    cfg = row_launch_config(a.dtype, b.dtype, d, aligned=is_aligned(a, b, a.stride(0), b.stride(0), d))
    grid = (triton.cdiv(n, cfg["BLOCK_N"]),)
    row_cosine_kernel[grid](a, b, cos, zero, n, d, a.stride(0), b.stride(0), **cfg.launch_args())
    return cos, zero


def layer_cosine_sums(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For an (L, n, d) tensor: (sum over frames of the L x L cosine matrix, excluding flagged
    frames, float64; flag (n,) int8, 1 where a frame needs the scaled recomputation)."""
    L, n, d = x.shape
    if x.stride(2) != 1:
        x = x.contiguous()
    acc = accumulation_dtype(x.dtype)
    dev = x.device
    aligned = is_aligned(x, x.stride(0), x.stride(1), d)
    cfg = layer_launch_config(x.dtype, L, aligned=aligned)
    G = cfg["G"]
    groups = triton.cdiv(L, G)
    flag = torch.zeros(n, dtype=torch.int8, device=dev)
    sq = torch.empty(L if cfg["NORMS_GIVEN"] else 1, n, dtype=acc, device=dev)
    if n and cfg["NORMS_GIVEN"]:
        ncfg = layer_norms_config(x.dtype, aligned=aligned)
        layer_norms_kernel[(triton.cdiv(n, ncfg["BLOCK_N"]),)](
            x, sq, flag, n, d, L, x.stride(0), x.stride(1), **ncfg.launch_args())
    ga, gb = torch.triu_indices(groups, groups, device=dev)
    pairs = torch.stack([ga, gb], 1).to(torch.int32).contiguous()
    programs = max(1, min(triton.cdiv(n, cfg["BLOCK_N"]), LAYER_PROGRAMS))
    parts = torch.empty(pairs.shape[0], programs, G, G, dtype=acc, device=dev)
    layer_cosine_kernel[(programs, pairs.shape[0])](
        x, sq, flag, pairs, parts, n, d, L, x.stride(0), x.stride(1), **cfg.launch_args())
    block = parts.sum(1, dtype=torch.float64)  # (pairs, G, G)
    total = torch.zeros(groups, groups, G, G, dtype=torch.float64, device=dev)
    total[gb, ga] = block.transpose(1, 2)
    total[ga, gb] = block
    total = total.permute(0, 2, 1, 3).reshape(groups * G, groups * G)
    return total[:L, :L], flag
