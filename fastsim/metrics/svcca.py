"""SVCCA (Raghu et al. 2017, "SVCCA: Singular Vector Canonical Correlation Analysis for Deep
Learning Dynamics and Interpretability") over all layer pairs, exact and streaming.

Definition (``reference``): per input, the SVD of the centered data X~ = U S V^T; keep the top k
directions, k the smallest number whose squared singular values reach ``keep`` (default 0.99)
of the total variance sum_i s_i^2; the reduced data are U_k S_k. SVCCA is the mean canonical
correlation of the two reduced inputs, over m = min(k_a, k_b) correlations (the 99 % rule is the
one ReSi, Klabunde et al. 2024, uses; Raghu et al. keep "99 % of the variance" as well). The
reduced data have orthogonal columns, so the canonical correlations are the singular values of
U_k,a^T U_k,b. In [0, 1]. Not invariant to per-feature scaling (the SVD step is not).

Computation from the float64 covariance blocks alone (streams exactly, merges): per layer one
eigendecomposition C[a, a] = V Lambda V^T (Lambda = S^2; directions at or below ``RANK_RTOL`` of
the largest eigenvalue count as zero), W_a = V_k Lambda_k^-1/2; per pair the singular values of
W_a^T C[a, b] W_b (k_a x k_b). Where the cumulative variance lies within rounding of ``keep`` the
choice of k (and so the value) can differ from a float64 SVD of the data; where eigenvalues tie at
the cut, the kept subspace is not unique.

A layer whose k reaches n - 1 spans every centered direction (every canonical correlation 1): a
ValueError says so. Degenerate input: a layer with zero variance has no SVCCA: NaN in its row
and column, with a DegenerateWarning.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch

from ..accumulators.comoments import CoMomentAccumulator, one_shot
from ..core.numpy_cca import centered, zero_variance
from ..core.spectral import (
    RANK_RTOL,
    Blocks,
    constant_features,
    eigh_desc,
    nan_layers,
    parallel_map,
    svdvals,
)
from .spec import Metric, Option

NAME = "svcca"


def _keep(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) <= 1:
        raise ValueError(f"keep must be a fraction of the variance in (0, 1]; got {value!r}")
    return float(value)


def kept_count(variances: np.ndarray | torch.Tensor, keep: float) -> int:
    """The smallest k whose first k variances (descending) reach `keep` of their sum, at most the
    number above RANK_RTOL of the largest."""
    v = np.asarray(variances, dtype=np.float64)
    if v.size == 0 or not v[0] > 0:
        return 0
    rank = int((v > RANK_RTOL * v[0]).sum())
    k = int(np.searchsorted(np.cumsum(v) >= keep * v.sum(), True)) + 1
    return min(k, rank)


def _check_span(k: int, n: int, layer: str) -> None:
    if k > 0 and k >= n - 1:
        raise ValueError(
            f"{NAME}: {layer} keeps {k} directions, all n - 1 = {n - 1} directions of the centered samples, so "
            "every canonical correlation would be 1 whatever the other layer; use more samples or a smaller keep"
        )


def reference(a: Any, b: Any, keep: float = 0.99) -> float:
    """float64 NumPy SVCCA from the SVDs of the centered data (module docs); NaN for a
    zero-variance input."""
    if zero_variance(a) or zero_variance(b):
        return float("nan")
    bases = []
    for x in (a, b):
        y = centered(x)
        u, s, _ = np.linalg.svd(y, full_matrices=False)
        k = kept_count(s**2, keep)
        _check_span(k, y.shape[0], "an input")
        bases.append(u[:, :k])
    m = min(q.shape[1] for q in bases)
    if m == 0:
        return float("nan")
    rho = np.linalg.svd(bases[0].T @ bases[1], compute_uv=False)[:m]
    return float(np.mean(rho))


def finish(state, dtype: torch.dtype, *, keep: float) -> torch.Tensor:
    blocks = Blocks(state)
    L = blocks.L
    W, live = [], []
    for a in range(L):
        C = blocks.C(a, a)
        # constant features: their rounding residue must not become a direction
        alive = ~constant_features(np.diagonal(C), blocks.n, blocks.mean[a])
        live.append(alive)
        C = C[np.ix_(alive, alive)]
        if C.size == 0:
            W.append(None)
            continue
        w, v = eigh_desc((C + C.T) / 2)
        k = kept_count(np.maximum(w, 0.0), keep)
        _check_span(k, blocks.n, f"layer {a}")
        W.append(v[:, :k] / np.sqrt(w[:k])[None, :] if k else None)
    out = np.eye(L)
    bad = [a for a in range(L) if W[a] is None]
    pairs = [(a, b) for a in range(L) for b in range(a + 1, L) if a not in bad and b not in bad]

    def mean_rho(ab):
        a, b = ab
        rho = svdvals(W[a].T @ blocks.C(a, b)[np.ix_(live[a], live[b])] @ W[b])
        m = min(W[a].shape[1], W[b].shape[1])
        return float(rho[:m].sum()) / m

    blocks.load()
    for (a, b), value in zip(pairs, parallel_map(mean_rho, pairs)):
        out[a, b] = out[b, a] = min(1.0, max(0.0, value))
    return nan_layers(out, bad, NAME, "zero variance")


class _Finish:
    def __init__(self, keep: float):
        self.keep = keep

    def __call__(self, state, dtype):
        return finish(state, dtype, keep=self.keep)


def accumulator(*, keep: float = 0.99, precision: str = "highest") -> CoMomentAccumulator:
    return CoMomentAccumulator(_Finish(_keep(keep)), settings=(keep,), float64=True, precision=precision,
                               check_finite=False, label=NAME)


def torch_matrix(layers: list[torch.Tensor], *, precision: str, keep: float) -> torch.Tensor:
    return one_shot(accumulator(keep=keep, precision=precision), layers)


METRIC = Metric(
    name=NAME,
    title="SVCCA (99 % variance, mean CCA)",
    definition="mean canonical correlation after keeping the top singular directions with 99 % of the variance (Raghu et al. 2017)",
    reference=reference,
    implementations={"torch": torch_matrix},
    options=(Option("keep", 0.99, _keep, "fraction of each layer's variance its kept singular directions reach"),),
    min_samples=lambda opts: (3, " (CCA needs n > rank + 1)"),
    streaming="exact",
    accumulator=accumulator,
)
