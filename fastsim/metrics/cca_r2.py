"""Mean squared canonical correlation, R^2_CCA, over all layer pairs, exact and streaming.

Definition (``reference``): the canonical correlations rho_1 >= ... >= rho_m of the centered
inputs (Hotelling 1936), m = min(rank X~, rank Y~), and

    R^2_CCA = (1/m) sum_i rho_i^2 = tr(P_X P_Y) / m,

the "mean squared CCA correlation" of Kornblith et al. 2019 ("Similarity of neural network
representations revisited", Sec. 3; Yanai's generalized coefficient of determination up to its
normalization). In [0, 1]; invariant to invertible linear maps of either input.

Rank: constant features are dropped and the others standardized (CCA is invariant to both); the
numerical rank counts eigenvalues of the standardized covariance above ``RANK_RTOL`` (1e-10) of
the largest (``fastsim.core.spectral``): collinear features and dead units do not break it.
Where a layer spans all n - 1 directions of the centered samples (as soon as it has at least
n - 1 independent features), every canonical correlation is 1 whatever the other layer, and
the result would be meaningless: a ValueError says so; pass ``ridge > 0`` for the canonical ridge
(Vinod 1976): ``(R_a + ridge I)^-1/2 R_ab (R_b + ridge I)^-1/2`` on standardized features, m stays
min(rank X~, rank Y~) (the canonical correlations past it are 0).

Computation: per layer one eigendecomposition of its standardized covariance (the whitening,
shared by all pairs); per pair ``M = W_a^T C[a, b] W_b`` (two products) and R^2 = |M|_F^2 / m,
no SVD. The covariance blocks accumulate in float64 whatever the input dtype (whitening squares
the condition number), stream exactly and merge (``fastsim.accumulators.comoments``).

Degenerate input: a layer with no non-constant feature has no canonical correlation: NaN in its
row and column, with a DegenerateWarning.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..accumulators.comoments import CoMomentAccumulator, one_shot
from ..core.numpy_cca import canonical
from ..core.spectral import (
    RIDGE_HELP,
    Blocks,
    check_ridge,
    layer_whitenings,
    nan_layers,
    whitened_cross,
)
from .spec import Metric, Option

NAME = "cca_r2"


def reference(a: Any, b: Any, ridge: float = 0.0) -> float:
    """float64 NumPy mean of the squared canonical correlations (principal angles of the data's
    column spaces); NaN for a constant input."""
    rho, _, _ = canonical(a, b, ridge, NAME)
    return float(np.mean(rho**2)) if rho.size else float("nan")


def finish(state, dtype: torch.dtype, *, ridge: float) -> torch.Tensor:
    blocks = Blocks(state)
    ws = layer_whitenings(blocks, ridge, NAME)
    L = len(ws)
    out = np.eye(L)
    bad = [a for a, w in enumerate(ws) if w.rank == 0]
    for a in range(L):
        if a in bad:
            continue
        if ridge > 0:
            shrink = ws[a].evals / (ws[a].evals + ridge)
            out[a, a] = float(np.sum(shrink**2)) / ws[a].rank
        for b in range(a + 1, L):
            if b in bad:
                continue
            M = whitened_cross(blocks, ws[a], ws[b], a, b)
            value = float(np.sum(M * M)) / min(ws[a].rank, ws[b].rank)
            out[a, b] = out[b, a] = min(1.0, max(0.0, value))
    return nan_layers(out, bad, NAME)


class _Finish:
    def __init__(self, ridge: float):
        self.ridge = ridge

    def __call__(self, state, dtype):
        return finish(state, dtype, ridge=self.ridge)


def accumulator(*, ridge: float = 0.0, precision: str = "highest") -> CoMomentAccumulator:
    return CoMomentAccumulator(_Finish(check_ridge(ridge)), settings=(ridge,), float64=True, precision=precision,
                               check_finite=False, label=NAME)


def torch_matrix(layers: list[torch.Tensor], *, precision: str, ridge: float) -> torch.Tensor:
    return one_shot(accumulator(ridge=ridge, precision=precision), layers)


METRIC = Metric(
    name=NAME,
    title="mean squared canonical correlation (R2 CCA)",
    definition="(1/m) sum_i rho_i^2 of the canonical correlations of the centered inputs (Kornblith et al. 2019)",
    reference=reference,
    implementations={"torch": torch_matrix},
    options=(Option("ridge", 0.0, check_ridge, RIDGE_HELP),),
    min_samples=lambda opts: (3, " (CCA needs n > rank + 1)"),
    streaming="exact",
    accumulator=accumulator,
)
