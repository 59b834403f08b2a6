"""RSA with cosine kernels: Pearson correlation of the two cosine-similarity matrices over their
upper triangles, over all layer pairs, exact and streaming, never forming an n x n matrix.

Definition (``reference``): representational similarity analysis (Kriegeskorte et al. 2008) with
the cosine similarity of the samples' vectors as the RSM, K_ij = cos(x_i, x_j) (a zero vector
has similarity 0 with everything, as in fastsim's other cosine measures), compared by Pearson's
correlation of the entries above the diagonal (i < j). The vectors are not centered (centering
each row by a mean that is known only after the last sample would make the kernel non-streamable;
for the centered linear kernel see ``rsa_linear``). In [-1, 1]; invariant to rotation and to
any positive scaling of individual samples.

Computation: every chunk's rows are scaled to unit length (exact power-of-two prescaling,
``fastsim.core.scaling.unit_rows``) and their co-moments about the mean accumulated
(``fastsim.core.comoments``). Pearson's correlation ignores the constant |mu|^2 in
K_ij = |mu|^2 + mu.w_i + mu.w_j + w_i.w_j (w_i = z_i - mu, z the unit rows), and the sums of the rest
over the pairs i != j are moments about the mean (no cancellation against |mu|^2, which nearly
parallel samples would cause): with s_i = mu_a.w_i, sum_{i!=j} f_ij = -T_a and
sum_{i!=j} f_ij g_ij = (2n - 4) mu_a^T C[a, b] mu_b + |C[a, b]|_F^2 - 2 mu_a.V[b, a] - 2 mu_b.V[a, b]
- P[a, b] (T, V, P the second, third and fourth moments of the state). Then the correlation of
N = n (n - 1) / 2 values from their sums (``rsa_linear.correlations``). Streams exactly and
merges; float64 blocks at precision "highest".

Degenerate input: where an RSM has no variance above its diagonal (e.g. every sample of a layer
points the same way) the correlation is undefined: NaN in that layer's row and column, with a
DegenerateWarning. n >= 3.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..accumulators.comoments import CoMomentAccumulator, one_shot
from ..core.numpy_cca import zero_variance
from ..core.numpy_reference import as64, cosine_similarities, scaled_rows
from ..core.scaling import unit_rows
from ..core.spectral import Blocks
from .rsa_linear import correlations, upper_correlation
from .spec import Metric

NAME = "rsa_cosine"


def reference(a: Any, b: Any) -> float:
    """float64 NumPy Pearson correlation of the upper triangles of the n x n cosine similarities;
    NaN where a layer's unit rows have no variance (all samples point one way)."""
    for x in (a, b):
        y, norm = scaled_rows(as64(x))
        if zero_variance(y / np.where(norm > 0, norm, 1.0)[:, None]):
            return float("nan")
    return upper_correlation(cosine_similarities(a), cosine_similarities(b))


def unit(rows: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return unit_rows(rows, dtype)[0]


def finish(state, dtype: torch.dtype) -> torch.Tensor:
    blocks = Blocks(state)
    L, n, mu = blocks.L, blocks.n, blocks.mean
    cross = np.empty((L, L))
    for a in range(L):
        for b in range(a, L):
            C = blocks.C(a, b)
            m = mu[a] @ C @ mu[b]
            third = mu[a] @ blocks.V(b, a) + mu[b] @ blocks.V(a, b)
            cross[a, b] = cross[b, a] = ((2 * n - 4) * m + np.sum(C * C) - 2 * third - blocks.P[a, b]) / 2
    offset = np.array([m @ m for m in mu])  # |mu|^2: K_ij - f_ij
    return correlations(n, -blocks.T / 2, cross, blocks.degenerate(), NAME, offset)


def accumulator(*, precision: str = "highest") -> CoMomentAccumulator:
    return CoMomentAccumulator(finish, rows=unit, float64=precision == "highest",
                               min_n=(3, " (one pair has no correlation)"), precision=precision, check_finite=False,
                               label=NAME)


def torch_matrix(layers: list[torch.Tensor], *, precision: str) -> torch.Tensor:
    return one_shot(accumulator(precision=precision), layers)


METRIC = Metric(
    name=NAME,
    title="RSA, cosine kernel (Pearson)",
    definition="Pearson correlation of the upper triangles of the cosine-similarity matrices cos(x_i, x_j) (Kriegeskorte et al. 2008)",
    reference=reference,
    implementations={"torch": torch_matrix},
    min_samples=lambda opts: (3, " (one pair has no correlation)"),
    streaming="exact",
    accumulator=accumulator,
)
