"""Sample-space CKA sums for all layer pairs from kernel-matrix tiles made on the fly.

Flash-attention style: no kernel matrix is ever stored. The layers are split into groups of
G (16 for float32 accumulators, 8 when the data are not 16-aligned; 8 and 4 for float64, see
_TILES); program (ti, tj, p), with ti <= tj and p a pair of layer groups (ga <= gb), owns a
(BLOCK x BLOCK) tile of the n x n kernel matrices of the layers of both groups. It walks the tile
in (SUB_M x SUB_N) steps, and for each step:

1. Forms the G tiles of group ga with one batched dot over the feature axis,
   (G, SUB_M, d) @ (G, d, SUB_N), operands at the requested precision (3xTF32 / TF32 / bf16 on
   GPUs; float32 accumulators, float64 for float64 input). The rows are centered and scaled on
   load, from the per-layer mean and power-of-two scale. Likewise group gb when gb != ga.
2. For the RBF kernel, turns the Gram into exp(c (d2 - o)) with d2 = |x - y|^2 clamped at o:
   c = -1 / (2 sigma_l^2) given as two factors (each within the accumulator's range, so that no
   sigma over- or underflows it; the product (d2 - o) c1 c2 is formed left to right), o the
   layer's offset (its kernel divided by exp(c o), so that its largest off-diagonal entry is
   about 1 where the entries would underflow), or expm1 of the same argument for the layers
   marked shifted (K - 1, which keeps precision when the entries are near 1).
3. Zeroes the diagonal entries (i == j): every sum here is of the off-diagonal part O of each
   kernel; the diagonal (|x_i|^2, or the RBF's 1) is known exactly to the caller. (RBF) Subtracts
   a per-layer constant c from the off-diagonal entries, near their mean (the caller's estimate),
   so that the float32 sums below add small numbers of both signs instead of their large
   constant part; the launcher adds c back in float64 (exact algebra). Measured: float32 tile
   sums of exp(.) entries around 0.4 cost up to 1e-5 in RBF CKA through the cancellation of
   HSIC's centering; with c, 2e-8.
4. Adds the G x G products sum(O_a o O_b) of the step with a second dot, batched over the SUB_M
   rows ((G x SUB_N) @ (SUB_N x G) each; a single dot over all SUB_M * SUB_N entries would hold
   its operands in registers and spill), in float32 as 3xTF32 on GPUs (float64 for float64).
5. (RBF, ga == gb only) Adds each layer's off-diagonal row sums (and, for tiles off the diagonal,
   column sums). The linear kernel's row sums are z_i . (sum_j z_j) - |z_i|^2, which the caller
   forms exactly from the centered rows' residual sum.

Off-diagonal tiles count twice, since the kernel matrices are symmetric. The pair sums and the
row sums are added atomically in float64. Memory outside the inputs is O(n L). With L layers in
g = ceil(L / G) groups, the kernel tiles of a group are formed g times (once per group pair it
is in): with one group (L <= G) every tile is formed once; L = 25 at G = 16 forms 64 layer tiles
for 25 layers (2.6x the Gram work), L = 81 forms 576 (7x). The pair sums are cheap beside the
Gram (G / d of it), so the recomputation is the price of fitting any L in registers.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .config import LaunchConfig, is_aligned, make_config, unique
from .precision import (
    INPUT_DTYPES,
    PTR_NAME,
    accumulation_dtype,
    dot_settings,
    interpreting,
    operand,
    tl_acc,
)


@triton.jit
def _group_tiles(
    x_ptr, mean_ptr, scale_ptr, sqn_ptr, coef_ptr, off_ptr, center_ptr, shift_ptr,
    g0, rows, rmask, cols, cmask, n, d, num_layers, stride_l, stride_n,
    RBF: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr, TO_BF16: tl.constexpr,
    EMULATE_BF16: tl.constexpr, G: tl.constexpr, SUB_M: tl.constexpr, SUB_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """The (G, SUB_M, SUB_N) off-diagonal kernel tiles of layers g0 .. g0 + G - 1 (zero outside
    the data and on the diagonal i == j)."""
    layers = (g0 + tl.arange(0, G)).to(tl.int64)  # layer * stride_l can pass 2^31
    lmask = layers < num_layers
    # The power-of-two scale in two factors (each within float32's range), per layer.
    scale1 = tl.load(scale_ptr + 2 * layers, mask=lmask, other=0.0)
    scale2 = tl.load(scale_ptr + 2 * layers + 1, mask=lmask, other=0.0)
    g = tl.zeros([G, SUB_M, SUB_N], dtype=ACC)
    for d0 in range(0, d, BLOCK_D):
        ks = d0 + tl.arange(0, BLOCK_D)
        kmask = ks < d
        mu = tl.load(mean_ptr + layers[:, None] * d + ks[None, :], mask=lmask[:, None] & kmask[None, :], other=0.0)
        # Outside the data x and mu load as 0, so a padded layer or feature adds 0; a row past n
        # gives -mu, whose entries the caller's mask drops.
        a_mask = lmask[:, None, None] & rmask[None, :, None] & kmask[None, None, :]
        a = tl.load(x_ptr + layers[:, None, None] * stride_l + rows[None, :, None] * stride_n + ks[None, None, :], mask=a_mask, other=0.0).to(ACC)
        a = a * scale1[:, None, None] * scale2[:, None, None] - mu[:, None, :]
        b_mask = lmask[:, None, None] & kmask[None, :, None] & cmask[None, None, :]
        b = tl.load(x_ptr + layers[:, None, None] * stride_l + cols[None, None, :] * stride_n + ks[None, :, None], mask=b_mask, other=0.0).to(ACC)
        b = b * scale1[:, None, None] * scale2[:, None, None] - mu[:, :, None]
        a = operand(a, ACC, TO_BF16, EMULATE_BF16)
        b = operand(b, ACC, TO_BF16, EMULATE_BF16)
        g += tl.dot(a, b, input_precision=PRECISION, out_dtype=ACC)
    valid = lmask[:, None, None] & rmask[None, :, None] & cmask[None, None, :]
    valid = valid & (rows[None, :, None] != cols[None, None, :])  # the off-diagonal part
    if RBF:
        # -1 / (2 sigma^2) of the scaled data as two factors, and the offset (0 for shifted layers)
        c1 = tl.load(coef_ptr + 2 * layers, mask=lmask, other=0.0)
        c2 = tl.load(coef_ptr + 2 * layers + 1, mask=lmask, other=0.0)
        off = tl.load(off_ptr + layers, mask=lmask, other=0.0)
        center = tl.load(center_ptr + layers, mask=lmask, other=0.0)
        shifted = tl.load(shift_ptr + layers, mask=lmask, other=0) != 0
        sqn_i = tl.load(sqn_ptr + layers[:, None] * n + rows[None, :], mask=lmask[:, None] & rmask[None, :], other=0.0)
        sqn_j = tl.load(sqn_ptr + layers[:, None] * n + cols[None, :], mask=lmask[:, None] & cmask[None, :], other=0.0)
        # d2 clamped at the offset (the smallest squared distance, 0 if none): below it is rounding
        d2 = tl.maximum(sqn_i[:, :, None] + sqn_j[:, None, :] - 2.0 * g, off[:, None, None])
        arg = (d2 - off[:, None, None]) * c1[:, None, None] * c2[:, None, None]
        e = tl.exp(arg)
        # expm1 for the shifted layers, accurate near 0 where exp(arg) - 1 cancels:
        # Kahan's (e - 1) * arg / log(e), exact at e == 1 (then expm1 = arg).
        # Far from 0 (e < 1/2) plain e - 1 is already accurate.
        kahan = (e - 1.0) * arg / tl.log(tl.where((e == 1.0) | (e < 0.5), 0.5, e))
        em1 = tl.where(e == 1.0, arg, tl.where(e < 0.5, e - 1.0, kahan))
        k = tl.where(shifted[:, None, None], em1, e) - center[:, None, None]
    else:
        k = g
    return tl.where(valid, k, 0.0)


@triton.jit
def kernel_tile_kernel(
    x_ptr,
    mean_ptr,
    scale_ptr,
    sqn_ptr,
    coef_ptr,
    off_ptr,
    center_ptr,
    shift_ptr,
    pairs_ptr,
    sums_ptr,
    rows_ptr,
    n,
    d,
    num_layers,
    stride_l,
    stride_n,
    stride_sums,
    RBF: tl.constexpr,
    ACC: tl.constexpr,
    PRECISION: tl.constexpr,
    PAIR_PRECISION: tl.constexpr,
    TO_BF16: tl.constexpr,
    EMULATE_BF16: tl.constexpr,
    G: tl.constexpr,
    BLOCK: tl.constexpr,
    SUB_M: tl.constexpr,
    SUB_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    ti = tl.program_id(0)
    tj = tl.program_id(1)
    if ti <= tj:
        pair = tl.program_id(2)
        ga = tl.load(pairs_ptr + 2 * pair)
        gb = tl.load(pairs_ptr + 2 * pair + 1)
        la = (ga * G + tl.arange(0, G)).to(tl.int64)
        lb = (gb * G + tl.arange(0, G)).to(tl.int64)
        la_ok = la < num_layers
        weight = tl.where(ti == tj, 1.0, 2.0)
        # The pair sums as SUB_M batched (G x SUB_N) @ (SUB_N x G) dots: a dot over the whole
        # (SUB_M * SUB_N) tile would hold its operands in registers and spill.
        acc3 = tl.zeros([SUB_M, G, G], dtype=ACC)
        for r0 in range(0, BLOCK, SUB_M):
            rows = (ti * BLOCK + r0 + tl.arange(0, SUB_M)).to(tl.int64)
            rmask = rows < n
            row_sums = tl.zeros([G, SUB_M], dtype=ACC)
            for c0 in range(0, BLOCK, SUB_N):
                cols = (tj * BLOCK + c0 + tl.arange(0, SUB_N)).to(tl.int64)
                cmask = cols < n
                ka = _group_tiles(x_ptr, mean_ptr, scale_ptr, sqn_ptr, coef_ptr, off_ptr, center_ptr, shift_ptr, ga * G, rows, rmask, cols, cmask,
                                  n, d, num_layers, stride_l, stride_n, RBF, ACC, PRECISION, TO_BF16, EMULATE_BF16, G, SUB_M, SUB_N, BLOCK_D)
                if ga == gb:
                    acc3 += tl.dot(tl.permute(ka, (1, 0, 2)), tl.permute(ka, (1, 2, 0)), input_precision=PAIR_PRECISION, out_dtype=ACC)
                    if RBF:
                        row_sums += tl.sum(ka, axis=2)
                        if ti != tj:
                            tl.atomic_add(rows_ptr + la[:, None] * n + cols[None, :], tl.sum(ka, axis=1).to(tl.float64),
                                          mask=la_ok[:, None] & cmask[None, :])
                else:
                    kb = _group_tiles(x_ptr, mean_ptr, scale_ptr, sqn_ptr, coef_ptr, off_ptr, center_ptr, shift_ptr, gb * G, rows, rmask, cols, cmask,
                                      n, d, num_layers, stride_l, stride_n, RBF, ACC, PRECISION, TO_BF16, EMULATE_BF16, G, SUB_M, SUB_N, BLOCK_D)
                    acc3 += tl.dot(tl.permute(ka, (1, 0, 2)), tl.permute(kb, (1, 2, 0)), input_precision=PAIR_PRECISION, out_dtype=ACC)
            if RBF and ga == gb:
                tl.atomic_add(rows_ptr + la[:, None] * n + rows[None, :], row_sums.to(tl.float64), mask=la_ok[:, None] & rmask[None, :])
        acc = tl.sum(acc3, axis=0)
        tl.atomic_add(sums_ptr + la[:, None] * stride_sums + lb[None, :], (acc * weight).to(tl.float64))
        if ga != gb:
            tl.atomic_add(sums_ptr + lb[:, None] * stride_sums + la[None, :], tl.trans(acc * weight).to(tl.float64))


# ---- configurations ---------------------------------------------------------------------------

#: layers per group, rows x columns of a step, feature chunk, by accumulator and alignment. The
#: per-thread registers grow with G * SUB_M * SUB_N (kernel tiles, operands, their 3xTF32 halves);
#: these are the largest tiles that compile without spills for sm_80 and sm_90 under Triton 3.6
#: and 3.9 (fastsim.kernels.targets). Unaligned launches (strides or d not multiples of 16) load
#: element by element, with a pointer per element: they take half the layers per group.
_TILES = {
    # (float64 accumulator, aligned): (G, SUB_M, SUB_N, BLOCK_D)
    (False, True): (16, 16, 16, 16),
    (False, False): (8, 16, 16, 16),
    (True, True): (8, 8, 16, 16),
    (True, False): (4, 16, 16, 16),
}
BLOCK = 64  # the (BLOCK x BLOCK) sample tile of one program
NUM_WARPS = 8


def _runtime(dtype: torch.dtype) -> dict:
    acc = PTR_NAME[accumulation_dtype(dtype)]
    return {
        "x_ptr": PTR_NAME[dtype], "mean_ptr": acc, "scale_ptr": acc, "sqn_ptr": acc, "coef_ptr": acc,
        "off_ptr": acc, "center_ptr": acc, "shift_ptr": "*i32", "pairs_ptr": "*i32", "sums_ptr": "*fp64", "rows_ptr": "*fp64",
        "n": "i32", "d": "i32", "num_layers": "i32", "stride_l": "i32", "stride_n": "i32", "stride_sums": "i32",
    }


def launch_config(dtype: torch.dtype, precision: str, rbf: bool, *, aligned: bool = True, interpret: bool = False) -> LaunchConfig:
    """The configuration kernel_tile_sums launches for stacked layers of `dtype` (any number of
    layers: they go in groups of the configuration's G)."""
    acc = accumulation_dtype(dtype)
    wide = acc == torch.float64
    G, sub_m, sub_n, block_d = _TILES[(wide, aligned)]
    if interpret:  # fewer, larger steps (the interpreter's cost is per step); the same layer groups
        sub_m = sub_n = BLOCK // 2
    settings = dot_settings(acc, precision, interpret)
    # The pair sums' dot: float32 products as 3xTF32 on GPUs whatever the mode (float64: exact).
    pair = "ieee" if wide or interpret else "tf32x3"
    constexprs = dict(RBF=bool(rbf), ACC=tl_acc(acc), PRECISION=settings["PRECISION"], PAIR_PRECISION=pair,
                      TO_BF16=settings["TO_BF16"], EMULATE_BF16=settings["EMULATE_BF16"],
                      G=G, BLOCK=BLOCK, SUB_M=sub_m, SUB_N=sub_n, BLOCK_D=block_d)
    label = f"{str(dtype).replace('torch.', '')} {'-' if wide else precision} {'rbf' if rbf else 'linear'}{'' if aligned else ' unaligned'}"
    return make_config(kernel_tile_kernel, _runtime(dtype), constexprs, num_warps=NUM_WARPS, num_stages=1,
                       aligned=aligned, label=label)


def configs(exhaustive: bool = True) -> list[LaunchConfig]:
    """Every configuration the dispatch can pick on a GPU (exhaustive=False: the RBF kernel for
    float32 "highest" and float64 aligned and not, float32 "medium" and bfloat16 "highest"; the
    linear kernel for float32 "highest")."""
    out = []
    for dtype in INPUT_DTYPES:
        for precision in (("highest",) if dtype == torch.float64 else ("highest", "high", "medium")):
            for rbf in (True, False):
                for aligned in (True, False):
                    if not exhaustive:
                        keep = rbf and precision == "highest" and dtype in (torch.float32, torch.float64)
                        keep |= aligned and (dtype, precision) in ((torch.float32, "medium"), (torch.bfloat16, "highest"))
                        keep |= not rbf and dtype == torch.float32 and precision == "highest" and aligned
                        if not keep:
                            continue
                    out.append(launch_config(dtype, precision, rbf, aligned=aligned))
    return unique(out)


# ---- launcher ---------------------------------------------------------------------------------

def rbf_factors(sigma, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(L, 2) float64: per layer two factors whose product is -1 / (2 sigma^2), each within the
    range of `dtype` (the accumulator's): c1 = -(1/2) m^-2 2^-e, c2 = 2^-e for sigma = m 2^e.
    Neither sigma^2 nor its reciprocal is formed, so no sigma over- or underflows them (where
    |-1 / (2 sigma^2)| itself is beyond about 2^+-240 in float32, every product with a squared
    distance of the accumulator's range rounds to 0 or -inf either way, and the factors stop there)."""
    limit = 1000 if dtype == torch.float64 else 120
    out = []
    for s in (float(v) for v in sigma):
        if not (s > 0 and math.isfinite(s)):
            raise ValueError(f"sigma must be positive and finite; got {s!r}")
        m, e = math.frexp(s)
        k = max(-limit, min(limit, -e))
        out.append((-0.5 / m / m * 2.0**k, 2.0**k))
    return torch.tensor(out, dtype=torch.float64).reshape(-1, 2)


def kernel_tile_sums(
    x: torch.Tensor,
    mean: torch.Tensor,
    scale: torch.Tensor,  # (L, 2): two factors per layer whose product is its power-of-two scale
    sq_norms: torch.Tensor,
    sigma=None,
    offset: torch.Tensor | None = None,
    shifted: torch.Tensor | None = None,
    precision: str = "highest",
    center: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For stacked layers x (L, n, d): (S (L, L) = sum over i != j of O_a[i, j] O_b[i, j],
    R (L, n) off-diagonal row sums of each O), with O the off-diagonal part of K, the linear
    kernel of the centered, scaled rows, or the RBF kernel when `sigma` (per layer, on the scaled
    rows) is given. float64 results; R is computed for the RBF kernel only (zeros for the linear
    one, whose row sums are z_i . sum_j z_j - |z_i|^2).

    mean (L, d): per-layer mean of the scaled rows; sq_norms (L, n): squared norms of the
    centered scaled rows (used by the RBF kernel); offset (L,): per layer a squared distance o,
    the kernel then being exp(-(max(d2, o) - o) / (2 sigma^2)) (default 0); shifted (L,) bool:
    layers whose kernel is formed as K - 1 (expm1; their offset must be 0); center (L,): per layer
    a constant near the mean off-diagonal entry (of K, or of K - 1 for the shifted layers), which
    the kernel subtracts before its float32 sums and which is added back here in float64: any
    finite value gives the same sums in exact arithmetic, a good one far smaller rounding."""
    L, n, d = x.shape
    if x.stride(2) != 1:
        x = x.contiguous()
    acc = accumulation_dtype(x.dtype)
    rbf = sigma is not None
    aligned = is_aligned(x, x.stride(0), x.stride(1), d)
    cfg = launch_config(x.dtype, precision, rbf, aligned=aligned, interpret=interpreting())
    G = cfg["G"]
    groups = triton.cdiv(L, G)
    dev = x.device
    ga, gb = torch.triu_indices(groups, groups)
    pairs = torch.stack([ga, gb], 1).to(torch.int32).contiguous().to(dev)
    l_pad = groups * G
    sums = torch.zeros(l_pad, l_pad, dtype=torch.float64, device=dev)
    rows = torch.zeros(L, n, dtype=torch.float64, device=dev)
    if rbf:
        coef = rbf_factors(sigma, acc).to(device=dev, dtype=acc)
        off = torch.zeros(L, dtype=acc, device=dev) if offset is None else offset.to(device=dev, dtype=acc).contiguous()
        shift = torch.zeros(L, dtype=torch.int32, device=dev) if shifted is None else shifted.to(device=dev, dtype=torch.int32).contiguous()
        c = torch.zeros(L, dtype=acc, device=dev) if center is None else center.to(device=dev, dtype=acc).contiguous()
    else:
        coef = torch.zeros(L, 2, dtype=acc, device=dev)
        off = torch.zeros(L, dtype=acc, device=dev)
        shift = torch.zeros(L, dtype=torch.int32, device=dev)
        c = off
    tiles = triton.cdiv(n, BLOCK)
    if tiles > 65535:
        raise ValueError(f"the sample-space kernel takes up to {65535 * BLOCK} samples; got n = {n}")
    kernel_tile_kernel[(tiles, tiles, pairs.shape[0])](
        x,
        mean.to(acc).contiguous(),
        scale.to(acc).contiguous(),
        sq_norms.to(acc).contiguous(),
        coef,
        off,
        c,
        shift,
        pairs,
        sums,
        rows,
        n,
        d,
        L,
        x.stride(0),
        x.stride(1),
        sums.stride(0),
        **cfg.launch_args(),
    )
    S = sums[:L, :L]
    if rbf and center is not None:
        # The kernel summed O' = O - c off the diagonal: S = S' + c_b r'_a + c_a r'_b + n (n-1) c_a c_b,
        # R = R' + (n - 1) c, in float64 (c as the kernel rounded it).
        c = c.double()
        r = rows.sum(1)
        S = S + c[None, :] * r[:, None] + c[:, None] * r[None, :] + (n * (n - 1)) * torch.outer(c, c)
        rows = rows + (n - 1) * c[:, None]
    return S, rows
