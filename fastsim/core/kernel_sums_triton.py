"""The sums that HSIC needs, through the Triton kernels in ``fastsim.kernels``.

* Linear kernel, feature space: co-moment blocks of row chunks from the upper-triangle Gram
  tiles of ``kernels.comoment``, merged exactly (``fastsim.core.comoments``).
* Linear kernel in sample space, and the RBF kernel: ``kernels.kernel_tiles`` forms every layer's
  kernel tiles on the fly and reduces them to the pair sums and row sums (O(n L) extra memory).
  The layers are read through one (L, n, d) view when they are slices of one tensor, else stacked
  once (a copy of the data, narrower layers padded with zero columns, which change no dot product
  and no distance).

Precision: "highest" = 3xTF32 on GPUs (exact float32 under the interpreter), "high" = TF32,
"medium" = bf16 operands; accumulators float32 (float64 for float64 inputs).
"""

from __future__ import annotations

import torch

from . import budget
from .comoments import CoMoments
from .hsic import KernelStats, stats_from_rows
from .moments import Moments
from .scaling import scale_halves
from .triton_support import stacked_view


def linear_feature_stats(layers: list[torch.Tensor], dt: torch.dtype, precision: str) -> KernelStats:
    from ..kernels.comoment import upper_gram

    state = None
    dims = [x.shape[1] for x in layers]
    for s, e in budget.row_chunks(layers[0].shape[0], 3 * sum(dims) * 8):
        chunk = CoMoments.of_chunk([x[s:e] for x in layers], dt, precision, gram=upper_gram)
        state = chunk if state is None else state.merged(chunk)
    return state.kernel_stats()


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
