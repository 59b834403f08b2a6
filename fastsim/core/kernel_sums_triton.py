"""The sums that HSIC needs, through the Triton kernels in ``fastsim.kernels``.

* Linear kernel, feature space: ``kernels.moments`` (one launch: every layer's scale, float64 mean,
  zero variance, NaN/Inf; ``moments.layer_summary``) and ``kernels.linear_cka`` (one fused pass
  over all rows that reduces each Gram tile to its layer pair's sum of squares): a few hundred
  torch ops per call, whatever n (tests/test_triton_op_count.py).
* Linear kernel in sample space, and the RBF kernel: ``kernels.kernel_tiles`` forms every layer's
  kernel tiles on the fly and reduces them to the off-diagonal pair sums and row sums (O(n L)
  extra memory), with the torch path's semantics (``kernel_sums.sample_stats``): the diagonal
  enters separately and exactly, and the RBF representation (K or K - 1, offsets, log_scale) is
  the one ``kernel_sums.rbf_plan`` decides for both backends. The layers are read through one
  (L, n, d) view when they are slices of one tensor, else stacked once (a copy of the data,
  narrower layers padded with zero columns, which change no dot product and no distance).

Precision: "highest" = 3xTF32 on GPUs (exact float32 under the interpreter), "high" = TF32,
"medium" = bf16 operands, in float32 for half and float32 input (the torch path works in float64
at "highest"); float64 inputs float64 throughout (``fastsim.kernels.precision``). Measured, max
|Triton - oracle| for float32 input (4 layers of 256 x 96, Gaussian and with massive activations;
tests/test_triton_precision.py under the interpreter, tests/test_triton_gpu_arithmetic.py with
the GPU's arithmetic emulated in torch):

=======================  ===========  ===================  ========  ========
path                     interpreter  GPU highest (emul.)  high      medium
=======================  ===========  ===================  ========  ========
linear, sample space     4e-8         8e-8                 6e-6      3e-5
linear, feature space    2e-8         1.3e-7               7e-6      3e-5
RBF, median sigma        1.4e-7       1.6e-7               9e-6      3e-5
RBF, 0.01x-1000x median  3e-7         7e-7                 3e-3      2e-3
=======================  ===========  ===================  ========  ========

float64 input: within 1e-11 of the torch backend, 1e-14 of mpmath on the sigma sweep.
"""

from __future__ import annotations

import torch

from . import budget
from .hsic import KernelStats, stats_from_offdiagonal
from .kernel_sums import RBFPlan
from .moments import Moments, Summary
from .scaling import scale_halves
from .triton_support import stacked_view


def linear_feature_stats(layers: list[torch.Tensor], summary: Summary, precision: str) -> KernelStats:
    """KernelStats of the linear kernels from one fused pass of ``kernels.linear_cka`` over all
    rows: S[a, b] = |X~_a^T X~_b|_F^2 and the per-sample squared norms, never a D x D Gram. The
    rows are scaled by the layer's power of two and centered by its mean in two float64 parts
    (``moments.layer_summary``: the first row, exact, plus the mean difference to it), so they
    are centered to the rounding of their spread however large their offset (float64 data of
    1 + 1e-15 noise included); the centered kernels' row sums are then 0 to rounding and the
    row-sum terms of HSIC vanish.

    Feature space cannot separate the kernels' diagonal from their off-diagonal part: the
    off-diagonal sums are S - P (``KernelStats.from_full``), which cancel where the diagonal
    dominates, sum_i |z_i|^4 against sum_{i != j} (z_i . z_j)^2. That ratio is about d_eff / n
    (d_eff the participation ratio of the covariance; the dispatch takes this path only for n
    above about the total width), so the cancellation costs at most a factor of a few over the
    rounding of S itself; measured (interpreter, float32 at "highest"): debiased CKA within
    2e-8 of the oracle on Gaussian layers and 2e-9 on layers with massive activations."""
    from ..kernels.linear_cka import linear_cka_sums

    n, L = layers[0].shape[0], len(layers)
    S, sq = linear_cka_sums(layers, summary.mean_hi, summary.scale, precision, summary.mean_lo)
    zero = torch.zeros(L, L, dtype=torch.float64)
    return KernelStats.from_full(n, S.cpu() / n**2, (sq @ sq.T).cpu() / n**2, zero, zero,
                                 torch.zeros(L, dtype=torch.float64), sq.sum(1).cpu() / n)


def sample_stats(
    layers: list[torch.Tensor], mom: Moments, dt: torch.dtype, precision: str, plan: RBFPlan | None = None
) -> KernelStats:
    """KernelStats of the linear kernels (plan None) or of the RBF kernels represented as `plan`
    says (``kernel_sums.rbf_plan``, the decision the torch path reads too: K or K - 1, offsets,
    log_scale), from the kernel tiles of ``kernels.kernel_tiles`` (dtype `dt` of ``mom``).

    As in the torch path (``kernel_sums.sample_stats``) the tiles' pair sums and row sums are of
    the off-diagonal entries only, and the diagonal enters separately and exactly: the squared
    norms |z_i|^2 of the centered rows (as the kernel forms them) in float64, or the RBF's 1 (0
    for K - 1). The linear kernel's off-diagonal row sums z_i . (sum_j z_j) - |z_i|^2 are formed
    here in float64 from the residual sum of the centered rows (0 up to the rounding of the mean)."""
    from ..kernels.kernel_tiles import kernel_tile_sums

    n, L = layers[0].shape[0], len(layers)
    dims = [x.shape[1] for x in layers]
    dev = layers[0].device
    x = stacked_view(layers)
    if x is None:  # one (L, n, max d) copy; zero columns change no dot product or distance
        same = len({t.dtype for t in layers}) == 1
        x = torch.zeros(L, n, max(dims), dtype=layers[0].dtype if same else dt, device=dev)
        for l, t in enumerate(layers):
            x[l, :, : dims[l]] = t
    width = x.shape[2]
    mean = torch.zeros(L, width, dtype=dt, device=dev)
    residual = torch.zeros(L, width, dtype=torch.float64, device=dev)
    for l, (mu, res) in enumerate(zip(mom.mean, mom.residual)):
        mean[l, : dims[l]] = mu
        residual[l, : dims[l]] = res
    halves = [scale_halves(c) for c in mom.scale]
    scale = torch.tensor(halves, dtype=torch.float64, device=dev)
    first = torch.tensor([h[0] for h in halves], dtype=dt, device=dev)[:, None, None]
    second = torch.tensor([h[1] for h in halves], dtype=dt, device=dev)[:, None, None]
    # The diagonal |z_i|^2 (and for the linear kernel its off-diagonal row sums) in float64, from
    # the rows centered as ``moments.centered`` and the kernel center them (same operations, same
    # rounding), a few row chunks of all layers at once.
    sq = torch.empty(L, n, dtype=torch.float64, device=dev)
    R = torch.zeros(L, n, dtype=torch.float64, device=dev)
    for s, e in budget.row_chunks(n, 2 * L * width * 8):
        z = (x[:, s:e].to(dt) * first).mul_(second).sub_(mean[:, None, :]).double()
        sq[:, s:e] = torch.linalg.vecdot(z, z)
        if plan is None:
            R[:, s:e] = torch.bmm(z, residual[:, :, None])[..., 0] - sq[:, s:e]
        del z
    if plan is None:
        S, _ = kernel_tile_sums(x, mean, scale, sq, precision=precision)
        return stats_from_offdiagonal(n, S, sq, R)
    S, R = kernel_tile_sums(x, mean, scale, sq, plan.sigma, plan.offset, plan.shifted, precision, _centers(plan, mom))
    diag = (~plan.shifted).double().to(dev)[:, None].expand(L, n)
    return stats_from_offdiagonal(n, S, diag, R, plan.log_scale())


def _centers(plan: RBFPlan, mom: Moments) -> torch.Tensor:
    """Per layer a constant near the mean off-diagonal entry of the stored kernel, which the
    kernel tiles subtract before their float32 sums (only their rounding depends on it):
    exp(-t), or expm1(-t) for K - 1, with t = 2 x the centered second moment / (2 sigma^2) (the
    mean squared distance over 2 sigma^2); 0 for the kernels stored relative to their nearest pair."""
    t = -plan.coef * 2 * mom.centered
    c = torch.where(plan.shifted, torch.expm1(-t), torch.exp(-t))
    return torch.nan_to_num(torch.where(plan.offset > 0, torch.zeros_like(c), c), nan=0.0, posinf=0.0, neginf=0.0)
