"""Mean canonical correlation over all layer pairs, exact and streaming.

Definition (``reference``): the canonical correlations rho_1 >= ... >= rho_m of the centered
inputs (Hotelling 1936), m = min(rank X~, rank Y~), and their mean

    rho_bar = (1/m) sum_i rho_i,

the "mean CCA correlation" of Raghu et al. 2017 (SVCCA, without its SVD step) and Kornblith et
al. 2019 (Sec. 3). In [0, 1]; invariant to invertible linear maps of either input.

Rank, the ``ridge`` option (canonical ridge, Vinod 1976), the error where a layer spans all n - 1
centered directions, and degenerate input (NaN, DegenerateWarning) are as for ``cca_r2``
(``fastsim.metrics.cca_r2``). Computation: per layer one whitening (shared by all pairs), per
pair ``M = W_a^T C[a, b] W_b`` and the sum of its singular values (one SVD, values only). The
float64 covariance blocks stream exactly and merge (``fastsim.accumulators.comoments``).
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
    parallel_map,
    svdvals,
    whitened_cross,
)
from .spec import Metric, Option

NAME = "cca_mean"


def reference(a: Any, b: Any, ridge: float = 0.0) -> float:
    """float64 NumPy mean canonical correlation (principal angles); NaN for a constant input."""
    rho, _, _ = canonical(a, b, ridge, NAME)
    return float(np.mean(rho)) if rho.size else float("nan")


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
            out[a, a] = float(np.sum(ws[a].evals / (ws[a].evals + ridge))) / ws[a].rank
    pairs = [(a, b) for a in range(L) for b in range(a + 1, L) if a not in bad and b not in bad]
    sums = parallel_map(lambda ab: float(svdvals(whitened_cross(blocks, ws[ab[0]], ws[ab[1]], *ab)).sum()), pairs)
    for (a, b), value in zip(pairs, sums):
        out[a, b] = out[b, a] = min(1.0, max(0.0, value / min(ws[a].rank, ws[b].rank)))
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
    title="mean canonical correlation",
    definition="(1/m) sum_i rho_i of the canonical correlations of the centered inputs (Raghu et al. 2017)",
    reference=reference,
    implementations={"torch": torch_matrix},
    options=(Option("ridge", 0.0, check_ridge, RIDGE_HELP),),
    min_samples=lambda opts: (3, " (CCA needs n > rank + 1)"),
    streaming="exact",
    accumulator=accumulator,
)
