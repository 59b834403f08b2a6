"""Projection-weighted CCA (PWCCA) over all layer pairs, exact and streaming.

Definition (``reference``; Morcos et al. 2018, "Insights on representational similarity in neural
networks with canonical correlation", Eq. 3): with the canonical correlations rho_i and the
unit-norm canonical variates h_i = X~ w_i of the first input (i <= m = min(rank X~, rank Y~)),

    PWCCA(X, Y) = sum_i alpha_i rho_i / sum_i alpha_i,   alpha_i = sum_j |<h_i, x~_j>|,

x~_j the j-th neuron's centered activations over the samples: each canonical direction weighs by
how much of the first input's neurons it accounts for. Not symmetric: entry (a, b) weighs by
layer a's neurons (Google's reference code instead picks the narrower layer, and in one branch
reads the first layer's activations with the second's indices; neither is followed here). In
[0, 1]. Where canonical correlations tie (other than all equal to 1, as for a layer with itself),
the canonical directions within the tie, and so the weights, are not unique: PWCCA itself is not
defined uniquely there.

Rank, the ``ridge`` option (canonical ridge, Vinod 1976; the variates are then normalized by their
actual norm, and one of numerically zero norm weighs 0), the error where a layer spans all n - 1 centered directions, and degenerate input
(NaN, DegenerateWarning) are as for ``cca_r2`` (``fastsim.metrics.cca_r2``).

Computation from the float64 covariance blocks alone (streams exactly, merges): per layer one
whitening W = D^-1/2 V (Lambda + ridge)^-1/2; per unordered pair one SVD M = W_a^T C[a, b] W_b =
U diag(rho) V^T, which serves both orders: with w_i = W_a u_i, <h_i, x~_j> = (C[a, a] w_i)_j /
|X~ w_i| and C[a, a] W_a = D^1/2 V Lambda (Lambda + ridge)^-1/2, so alpha needs no data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..accumulators.comoments import CoMomentAccumulator, one_shot
from ..core.numpy_cca import canonical, centered
from ..core.spectral import (
    RANK_RTOL,
    RIDGE_HELP,
    Blocks,
    Whitening,
    check_ridge,
    layer_whitenings,
    nan_layers,
    parallel_map,
    svd,
    whitened_cross,
)
from .spec import Metric, Option

NAME = "pwcca"


def reference(a: Any, b: Any, ridge: float = 0.0) -> float:
    """float64 NumPy PWCCA from the canonical variates of the data (module docs); NaN for a
    constant input."""
    rho, ha, _ = canonical(a, b, ridge, NAME)
    if not rho.size:
        return float("nan")
    alpha = np.abs(ha.T @ centered(a)).sum(1)
    return float(np.sum(alpha * rho) / np.sum(alpha))


def _weighted(w: Whitening, dirs: np.ndarray, rho: np.ndarray) -> float:
    """sum alpha_i rho_i / sum alpha_i for canonical directions `dirs` (r x m) of whitening w."""
    projections = w.covariance_times_W() @ dirs  # (p', m): C W u_i
    norms = np.sqrt((dirs**2 * (w.evals / (w.evals + w.ridge))[:, None]).sum(0))  # |X~ W u_i|
    live = norms**2 > RANK_RTOL * norms.max() ** 2  # a variate of numerically zero norm weighs 0
    alpha = np.where(live, np.abs(projections).sum(0) / np.where(live, norms, 1.0), 0.0)
    return float(np.sum(alpha * rho) / np.sum(alpha))


def finish(state, dtype: torch.dtype, *, ridge: float) -> torch.Tensor:
    blocks = Blocks(state)
    ws = layer_whitenings(blocks, ridge, NAME)
    L = len(ws)
    out = np.eye(L)
    bad = [a for a, w in enumerate(ws) if w.rank == 0]
    for a in range(L):
        if a in bad:
            continue
        if ridge > 0:  # with itself: the canonical directions are the eigenvectors
            r, p = ws[a].rank, ws[a].evals.size
            out[a, a] = _weighted(ws[a], np.eye(p, r), ws[a].evals[:r] / (ws[a].evals[:r] + ridge))

    def both_orders(ab):  # one SVD serves (a, b) and (b, a)
        a, b = ab
        U, rho, Vh = svd(whitened_cross(blocks, ws[a], ws[b], a, b))
        m = min(ws[a].rank, ws[b].rank)
        return _weighted(ws[a], U[:, :m], rho[:m]), _weighted(ws[b], Vh[:m].T, rho[:m])

    pairs = [(a, b) for a in range(L) for b in range(a + 1, L) if a not in bad and b not in bad]
    for (a, b), (ab, ba) in zip(pairs, parallel_map(both_orders, pairs)):
        out[a, b], out[b, a] = min(1.0, max(0.0, ab)), min(1.0, max(0.0, ba))
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
    title="projection-weighted CCA (PWCCA)",
    definition="sum_i alpha_i rho_i / sum_i alpha_i, alpha_i = sum_j |<h_i, x_j>| (Morcos et al. 2018)",
    reference=reference,
    implementations={"torch": torch_matrix},
    options=(Option("ridge", 0.0, check_ridge, RIDGE_HELP),),
    min_samples=lambda opts: (3, " (CCA needs n > rank + 1)"),
    streaming="exact",
    accumulator=accumulator,
    symmetric=False,
)
