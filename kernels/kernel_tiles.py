"""Sample-space CKA sums for all layer pairs from kernel-matrix tiles made on the fly.

Flash-attention style: no kernel matrix is ever stored. Program (ti, tj), with ti <= tj, owns a
(BLOCK_M x BLOCK_N) tile of every layer's n x n kernel matrix. It walks its rows SUB at a time,
and for each step:

1. Forms the L tiles with one batched dot over the feature axis, (L, SUB, d) @ (L, d, BLOCK_N),
   with operands at the requested precision (3xTF32 / TF32 / bf16 on GPUs; float32 accumulators).
   The rows are centered and scaled on load, from the per-layer mean and power-of-two scale.
2. For the RBF kernel, turns the Gram into exp(-|x - y|^2 / (2 sigma_l^2)), or into expm1 of
   the same argument for the layers marked shifted (K - 1, which keeps precision when the
   entries are near 1).
3. Adds the L x L products sum(K_a o K_b) of the tile with a second dot.
4. Adds each layer's row sums (and, for tiles off the diagonal, column sums) with atomics.

Off-diagonal tiles count twice, since the kernel matrices are symmetric. Memory outside the
inputs is O(n L): the row sums, and one L x L sum that every program adds into atomically.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .precision import dot_settings, operand


@triton.jit
def kernel_tile_kernel(
    x_ptr,
    mean_ptr,
    scale_ptr,
    sqn_ptr,
    coef_ptr,
    shift_ptr,
    sums_ptr,
    rows_ptr,
    n,
    d,
    num_layers,
    stride_l,
    stride_n,
    RBF: tl.constexpr,
    ACC: tl.constexpr,
    PRECISION: tl.constexpr,
    TO_BF16: tl.constexpr,
    EMULATE_BF16: tl.constexpr,
    L_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    SUB: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    ti = tl.program_id(0)
    tj = tl.program_id(1)
    if ti <= tj:
        layers = tl.arange(0, L_PAD).to(tl.int64)  # layer * stride_l can pass 2^31
        lmask = layers < num_layers
        cols = (tj * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
        cmask = cols < n
        # The power-of-two scale in two factors (each within float32's range), per layer.
        scale1 = tl.load(scale_ptr + 2 * layers, mask=lmask, other=0.0)
        scale2 = tl.load(scale_ptr + 2 * layers + 1, mask=lmask, other=0.0)
        coef = tl.load(coef_ptr + layers, mask=lmask, other=0.0)  # -1 / (2 sigma^2), scaled data
        shifted = tl.load(shift_ptr + layers, mask=lmask, other=0) != 0
        sqn_j = tl.load(sqn_ptr + layers[:, None] * n + cols[None, :], mask=lmask[:, None] & cmask[None, :], other=0.0)
        weight = tl.where(ti == tj, 1.0, 2.0)
        acc = tl.zeros([L_PAD, L_PAD], dtype=ACC)
        col_sums = tl.zeros([L_PAD, BLOCK_N], dtype=ACC)
        for r0 in range(0, BLOCK_M, SUB):
            rows = (ti * BLOCK_M + r0 + tl.arange(0, SUB)).to(tl.int64)
            rmask = rows < n
            g = tl.zeros([L_PAD, SUB, BLOCK_N], dtype=ACC)
            for d0 in range(0, d, BLOCK_D):
                ks = d0 + tl.arange(0, BLOCK_D)
                kmask = ks < d
                mu = tl.load(mean_ptr + layers[:, None] * d + ks[None, :], mask=lmask[:, None] & kmask[None, :], other=0.0)
                a_mask = lmask[:, None, None] & rmask[None, :, None] & kmask[None, None, :]
                a = tl.load(x_ptr + layers[:, None, None] * stride_l + rows[None, :, None] * stride_n + ks[None, None, :], mask=a_mask, other=0.0).to(ACC)
                a = tl.where(a_mask, a * scale1[:, None, None] * scale2[:, None, None] - mu[:, None, :], 0.0)
                b_mask = lmask[:, None, None] & kmask[None, :, None] & cmask[None, None, :]
                b = tl.load(x_ptr + layers[:, None, None] * stride_l + cols[None, None, :] * stride_n + ks[None, :, None], mask=b_mask, other=0.0).to(ACC)
                b = tl.where(b_mask, b * scale1[:, None, None] * scale2[:, None, None] - mu[:, :, None], 0.0)
                a = operand(a, ACC, TO_BF16, EMULATE_BF16)
                b = operand(b, ACC, TO_BF16, EMULATE_BF16)
                g += tl.dot(a, b, input_precision=PRECISION, out_dtype=ACC)
            valid = lmask[:, None, None] & rmask[None, :, None] & cmask[None, None, :]
            if RBF:
                sqn_i = tl.load(sqn_ptr + layers[:, None] * n + rows[None, :], mask=lmask[:, None] & rmask[None, :], other=0.0)
                d2 = tl.maximum(sqn_i[:, :, None] + sqn_j[:, None, :] - 2.0 * g, 0.0)
                d2 = tl.where(rows[None, :, None] == cols[None, None, :], 0.0, d2)
                arg = d2 * coef[:, None, None]
                e = tl.exp(arg)
                # expm1 for the shifted layers, accurate near 0 where exp(arg) - 1 cancels:
                # Kahan's (e - 1) * arg / log(e), exact at e == 1 (then expm1 = arg).
                # Far from 0 (e < 1/2) plain e - 1 is already accurate.
                kahan = (e - 1.0) * arg / tl.log(tl.where((e == 1.0) | (e < 0.5), 0.5, e))
                em1 = tl.where(e == 1.0, arg, tl.where(e < 0.5, e - 1.0, kahan))
                k = tl.where(shifted[:, None, None], em1, e)
            else:
                k = g
            k = tl.where(valid, k, 0.0)
            flat = tl.reshape(k, (L_PAD, SUB * BLOCK_N))
            acc += tl.dot(flat, tl.trans(flat), input_precision="ieee", out_dtype=ACC)
            tl.atomic_add(rows_ptr + layers[:, None] * n + rows[None, :], tl.sum(k, axis=2), mask=lmask[:, None] & rmask[None, :])
            col_sums += tl.sum(k, axis=1)
        if ti != tj:
            tl.atomic_add(rows_ptr + layers[:, None] * n + cols[None, :], col_sums, mask=lmask[:, None] & cmask[None, :])
        tl.atomic_add(sums_ptr + layers[:, None] * L_PAD + layers[None, :], acc * weight)


def kernel_tile_sums(
    x: torch.Tensor,
    mean: torch.Tensor,
    scale: torch.Tensor,  # (L, 2): two factors per layer whose product is its power-of-two scale
    sq_norms: torch.Tensor,
    coef: torch.Tensor | None,
    shifted: torch.Tensor | None,
    precision: str = "highest",
) -> tuple[torch.Tensor, torch.Tensor]:
    """For stacked layers x (L, n, d): (S (L, L) = sum over all (i, j) of K_a[i, j] K_b[i, j],
    R (L, n) row sums of each K), with K the linear kernel of the centered, scaled rows, or the RBF
    kernel when `coef` (per layer -1 / (2 sigma^2)) is given. float64 results."""
    L, n, d = x.shape
    if x.stride(2) != 1:
        x = x.contiguous()
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    rbf = coef is not None
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    l_pad = max(16, triton.next_power_of_2(L))
    # The batched operand is L_PAD x BLOCK_D x BLOCK_N: keep it within ~64 KB of shared memory.
    wide = l_pad >= 32 or acc == torch.float64
    block = 32 if interpret or wide else 64
    block_d = 16 if wide and not interpret else 32
    tiles = triton.cdiv(n, block)
    dev = x.device
    sums = torch.zeros(l_pad, l_pad, dtype=acc, device=dev)
    rows = torch.zeros(L, n, dtype=acc, device=dev)
    zeros = torch.zeros(L, dtype=acc, device=dev)
    kernel_tile_kernel[(tiles, tiles)](
        x,
        mean.to(acc).contiguous(),
        scale.to(acc).contiguous(),
        sq_norms.to(acc).contiguous(),
        (coef if rbf else zeros).to(acc).contiguous(),
        (shifted if rbf else zeros).to(torch.int32).contiguous(),
        sums,
        rows,
        n,
        d,
        L,
        x.stride(0),
        x.stride(1),
        RBF=rbf,
        ACC=tl.float64 if acc == torch.float64 else tl.float32,
        **dot_settings(acc, precision),
        L_PAD=l_pad,
        BLOCK_M=block,
        BLOCK_N=block,
        SUB=16,
        BLOCK_D=block_d,
        num_stages=1,
    )
    return sums.double()[:L, :L], rows.double()
