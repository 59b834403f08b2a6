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
``fastsim.core.scaling.unit_rows``) and their co-moments accumulated (``fastsim.core.comoments``);
about the origin (``CoMoments.shifted``) they give, with z the unit rows and N = n (n - 1) / 2,
sum_{i<j} K_ij = (|sum_i z_i|^2 - sum_i |z_i|^2) / 2 and
sum_{i<j} K_ij L_ij = (|sum_i z_ai z_bi^T|_F^2 - sum_i |z_ai|^2 |z_bi|^2) / 2; then the correlation
of N values from their sums (``rsa_linear.correlations``). Streams exactly and merges; float64
blocks at precision "highest".

Degenerate input: where an RSM has no variance above its diagonal (e.g. every sample of a layer
points the same way) the correlation is undefined: NaN in that layer's row and column, with a
DegenerateWarning. n >= 3.
"""

from __future__ import annotations

from typing import Any

import torch

from ..accumulators.comoments import CoMomentAccumulator, one_shot
from ..core.numpy_reference import cosine_similarities
from ..core.scaling import unit_rows
from ..core.spectral import block
from .rsa_linear import correlations, upper_correlation
from .spec import Metric

NAME = "rsa_cosine"


def reference(a: Any, b: Any) -> float:
    """float64 NumPy Pearson correlation of the upper triangles of the n x n cosine similarities."""
    return upper_correlation(cosine_similarities(a), cosine_similarities(b))


def unit(rows: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return unit_rows(rows, dtype)[0]


def finish(state, dtype: torch.dtype) -> torch.Tensor:
    L, n = len(state.mean), state.n
    raw = state.shifted([torch.zeros_like(mu) for mu in state.mean])  # moments about the origin
    frob = torch.empty(L, L, dtype=torch.float64)
    for a in range(L):
        for b in range(a, L):
            frob[a, b] = frob[b, a] = block(raw.C, a, b).square().sum().cpu()
    sums = torch.stack([(n * mu.double()).square().sum().cpu() for mu in state.mean])  # |sum_i z_i|^2
    total = (sums - raw.T.double().cpu()) / 2
    cross = (frob - raw.P.double().cpu()) / 2
    return correlations(n, total, cross, torch.zeros(L, dtype=torch.bool), NAME)


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
