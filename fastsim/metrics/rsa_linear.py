"""RSA with linear kernels: Pearson correlation of the two representational similarity matrices
over their upper triangles, over all layer pairs, exact and streaming, never forming an n x n
matrix.

Definition (``reference``): representational similarity analysis (Kriegeskorte et al. 2008,
"Representational similarity analysis - connecting the branches of systems neuroscience")
compares two inputs through their n x n similarity matrices. Here the similarity of samples i and
j is the linear kernel of the centered inputs, K_ij = x~_i . x~_j (the kernel linear CKA centers and
compares, Kornblith et al. 2019), and the comparison is Pearson's correlation of the entries
above the diagonal (i < j; the diagonal holds self-similarities, not comparisons):

    RSA = corr( {K_ij}_{i<j}, {L_ij}_{i<j} ).

In [-1, 1]; invariant to translation, rotation and isotropic scaling of either input.

Computation from the sums linear CKA uses (``fastsim.core.comoments``), with N = n (n - 1) / 2:
sum_{i<j} K_ij = (1^T K 1 - tr K) / 2 = -T_a / 2 (centered rows sum to 0),
sum_{i<j} K_ij L_ij = (|C[a, b]|_F^2 - P[a, b]) / 2 (P[a, b] = sum_i |x~_i|^2 |y~_i|^2), and
sum_{i<j} K_ij^2 likewise from C[a, a]; then the correlation of N values from their sums. It
streams exactly and merges; the blocks accumulate in float64 at precision "highest".

Degenerate input: where the upper triangle of an RSM has no variance (a layer with zero
variance, or fewer than 3 samples) the correlation is undefined: NaN in that layer's row and
column, with a DegenerateWarning. n >= 3.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..accumulators.comoments import CoMomentAccumulator, one_shot
from ..core.numpy_cca import zero_variance
from ..core.numpy_reference import centered_scaled
from ..core.spectral import EPS64, Blocks, nan_layers
from .spec import Metric

NAME = "rsa_linear"


def upper_correlation(K: np.ndarray, Lm: np.ndarray) -> float:
    """float64 Pearson correlation of the entries above the diagonal of two n x n matrices; NaN
    where either has no variance there."""
    iu = np.triu_indices(K.shape[0], 1)
    k, l_ = K[iu], Lm[iu]
    k, l_ = k - k.mean(), l_ - l_.mean()
    sk, sl = np.sqrt(np.sum(k * k)), np.sqrt(np.sum(l_ * l_))
    if not (sk > 0 and sl > 0):
        return float("nan")
    return float(np.sum(k * l_) / (sk * sl))


def reference(a: Any, b: Any) -> float:
    """float64 NumPy Pearson correlation of the upper triangles of the centered linear kernels."""
    if zero_variance(a) or zero_variance(b):
        return float("nan")
    (ya, _), (yb, _) = centered_scaled(a), centered_scaled(b)
    return upper_correlation(ya @ ya.T, yb @ yb.T)


def correlations(n: int, total: np.ndarray, cross: np.ndarray, bad: np.ndarray, what: str,
                 offset: np.ndarray | None = None) -> torch.Tensor:
    """(L, L) Pearson correlations over the N = n (n - 1) / 2 upper-triangle entries from their
    sums: total[a] = sum f_a, cross[a, b] = sum f_a f_b of the entries less a constant offset[a]
    (float64; Pearson ignores it); NaN rows and columns for `bad` layers and where an RSM has no
    variance (relative to the mean square of its entries)."""
    N = n * (n - 1) / 2
    cov = N * cross - np.outer(total, total)
    var = np.diagonal(cov).copy()
    off = np.zeros_like(total) if offset is None else offset
    mean_square = (np.diagonal(cross) + 2 * off * total + N * off**2) / N
    flat = var <= (32 * EPS64) ** 2 * N * N * np.abs(mean_square)
    s = np.sqrt(np.maximum(var, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.clip(cov / np.outer(s, s), -1.0, 1.0)
    np.fill_diagonal(out, 1.0)
    return nan_layers(out, bad | flat, what, "the similarity matrix has no variance off its diagonal")


def finish(state, dtype: torch.dtype) -> torch.Tensor:
    blocks = Blocks(state)
    L, n = blocks.L, blocks.n
    frob = np.empty((L, L))
    for a in range(L):
        for b in range(a, L):
            C = blocks.C(a, b)
            frob[a, b] = frob[b, a] = np.sum(C * C)
    return correlations(n, -blocks.T / 2, (frob - blocks.P) / 2, blocks.degenerate(), NAME)


def accumulator(*, precision: str = "highest") -> CoMomentAccumulator:
    return CoMomentAccumulator(finish, float64=precision == "highest", min_n=(3, " (one pair has no correlation)"),
                               precision=precision, check_finite=False, label=NAME)


def torch_matrix(layers: list[torch.Tensor], *, precision: str) -> torch.Tensor:
    return one_shot(accumulator(precision=precision), layers)


METRIC = Metric(
    name=NAME,
    title="RSA, linear kernel (Pearson)",
    definition="Pearson correlation of the upper triangles of the centered linear kernels x~_i . x~_j (Kriegeskorte et al. 2008)",
    reference=reference,
    implementations={"torch": torch_matrix},
    min_samples=lambda opts: (3, " (one pair has no correlation)"),
    streaming="exact",
    accumulator=accumulator,
)
