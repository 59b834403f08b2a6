"""The sums that HSIC needs, through the Triton kernels in ``fastsim.kernels``.

* Linear kernel, feature space: ``kernels.linear_cka``, one fused pass over all rows that reduces
  each Gram tile to its layer pair's sum of squares (a few hundred torch ops per call, whatever n).
* Linear kernel in sample space, and the RBF kernel: ``kernels.kernel_tiles`` forms every layer's
  kernel tiles on the fly and reduces them to the pair sums and row sums (O(n L) extra memory).
  The layers are read through one (L, n, d) view when they are slices of one tensor, else stacked
  once (a copy of the data, narrower layers padded with zero columns, which change no dot product
  and no distance).

Precision: "highest" = 3xTF32 on GPUs (exact float32 under the interpreter) with float32 sums of
short row chunks flushed into float64, "high" = TF32, "medium" = bf16 operands; float64 inputs
float64 throughout (``fastsim.kernels.precision``).
"""

from __future__ import annotations

import torch

from . import budget
from .hsic import KernelStats, stats_from_rows
from .moments import Moments, layer_moments
from .scaling import scale_halves
from .triton_support import stacked_view


def linear_feature_stats(
    layers: list[torch.Tensor], dt: torch.dtype, precision: str, mom: Moments | None = None
) -> KernelStats:
    """KernelStats of the linear kernels from one fused pass of ``kernels.linear_cka`` over all
    rows: S[a, b] = |X~_a^T X~_b|_F^2 and the per-sample squared norms, never a D x D Gram. The
    rows are scaled by the layer's power of two and centered by its float64 mean (the rounded
    mean plus the residual), so the centered kernels' row sums are 0 to rounding and the row-sum
    terms of HSIC vanish."""
    from ..kernels.linear_cka import linear_cka_sums

    if mom is None:
        mom = layer_moments(layers, dt)
    n, L = layers[0].shape[0], len(layers)
    means = [mu.double() + res / n for mu, res in zip(mom.mean, mom.residual)]
    S, sq = linear_cka_sums(layers, means, mom.scale, precision)
    zero = torch.zeros(L, L, dtype=torch.float64)
    return KernelStats.from_full(n, S.cpu() / n**2, (sq @ sq.T).cpu() / n**2, zero, zero,
                                 torch.zeros(L, dtype=torch.float64), sq.sum(1).cpu() / n)


def sample_stats(
    layers: list[torch.Tensor],
    mom: Moments,
    dt: torch.dtype,
    precision: str,
    sigmas: list[float] | None = None,
    shifted: list[bool] | None = None,
) -> KernelStats:
    """Linear kernels (sigmas None) or RBF kernels with per-layer sigmas (on the scaled data) and
    shifted flags (store K - 1)."""
    from ..kernels.kernel_tiles import kernel_tile_sums

    n, L = layers[0].shape[0], len(layers)
    dims = [x.shape[1] for x in layers]
    dev = layers[0].device
    sq = torch.empty(L, n, dtype=torch.float64, device=dev)
    for s, e in budget.row_chunks(n, 2 * sum(dims) * 8):
        for l, x in enumerate(layers):
            sq[l, s:e] = mom.chunk(l, x, s, e).double().square().sum(1)
    x = stacked_view(layers)
    if x is None:  # one (L, n, max d) copy; zero columns change no dot product or distance
        x = torch.zeros(L, n, max(dims), dtype=layers[0].dtype, device=dev)
        for l, t in enumerate(layers):
            x[l, :, : dims[l]] = t
    mean = torch.zeros(L, x.shape[2], dtype=dt, device=dev)
    for l, mu in enumerate(mom.mean):
        mean[l, : dims[l]] = mu
    scale = torch.tensor([scale_halves(c) for c in mom.scale], dtype=torch.float64, device=dev)
    if sigmas is not None:
        coef = torch.tensor([-0.5 / s**2 for s in sigmas], dtype=torch.float64, device=dev)
        shift = torch.tensor(shifted, device=dev)
        S, R = kernel_tile_sums(x, mean, scale, sq, coef, shift, precision)
        diag = (1.0 - shift.double())[:, None].expand(L, n)
    else:
        S, R = kernel_tile_sums(x, mean, scale, sq, None, None, precision)
        diag = sq
    return stats_from_rows(n, S, diag, R)
