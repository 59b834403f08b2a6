"""Linear regression fit, R^2 of predicting one layer from another by least squares, over all
ordered layer pairs, exact and streaming.

Definition (``reference``): with centered inputs, entry (a, b) is the fraction of layer b's
variance that a least-squares linear map from layer a explains,

    R^2(a -> b) = 1 - min_B |Y~ - X~ B|_F^2 / |Y~|_F^2 = |Q_X^T Y~|_F^2 / |Y~|_F^2,

Q_X an orthonormal basis of X~'s columns (Kornblith et al. 2019, Sec. 3, "linear regression";
ReSi, Klabunde et al. 2024, computes it with the roles of its arguments the other way round).
Not symmetric: row a predicts column b. In [0, 1]; invariant to invertible linear maps of the
predictor and to orthogonal maps and scaling of the target.

Rank and ``ridge``: the predictor's constant features are dropped and the others standardized
(unit sum of squares); its numerical rank counts eigenvalues above ``RANK_RTOL`` of the largest
(``fastsim.core.spectral``). A predictor that spans all n - 1 centered directions fits anything
perfectly: with ridge = 0 a ValueError says so. ``ridge > 0`` is ridge regression on the
standardized predictor, B = (X^T X + ridge I)^-1 X^T Y~, and R^2 its in-sample fit,
1 - |Y~ - X^ B|^2 / |Y~|^2 = sum_i |g_i|^2 (lambda_i + 2 ridge) / (lambda_i + ridge)^2 / |Y~|^2
(g_i the projections of X^T Y~ on the eigenvectors).

Computation from the float64 covariance blocks alone (streams exactly, merges): per predictor
one eigendecomposition, then one product V^T D^-1/2 C[a, :] against all targets at once.

Degenerate input: a target with zero variance (the rule of linear CKA) has no R^2: NaN in its
column, with a DegenerateWarning. A constant predictor explains nothing: R^2 = 0 in its row.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..accumulators.comoments import CoMomentAccumulator, one_shot
from ..core.errors import warn_degenerate
from ..core.numpy_cca import basis, check_span, standardized
from ..core.numpy_reference import as64, pow2_scaled
from ..core.spectral import RIDGE_HELP, Blocks, check_ridge, layer_whitenings
from .spec import Metric, Option

NAME = "linear_regression"


def reference(a: Any, b: Any, ridge: float = 0.0) -> float:
    """float64 NumPy R^2 of the least-squares (ridge: ridge-regression) fit of b from a, from the
    residual of the fit itself; NaN where b has zero variance."""
    x = standardized(a)
    raw, _ = pow2_scaled(as64(b))
    y = raw - raw.mean(0)
    total = float(np.sum(y**2))
    if not total > (32 * np.finfo(np.float64).eps) ** 2 * float(np.sum(raw**2)):
        return float("nan")
    if x.shape[1] == 0:
        return 0.0
    if ridge == 0:
        q = basis(x)
        check_span(q, NAME, "least squares")
        fit = q @ (q.T @ y)
    else:
        B = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y)
        fit = x @ B
    return float(1.0 - np.sum((y - fit) ** 2) / total)


def finish(state, dtype: torch.dtype, *, ridge: float) -> torch.Tensor:
    blocks = Blocks(state)
    ws = layer_whitenings(blocks, ridge, NAME, "least squares")
    L = len(ws)
    bad = [int(b) for b in np.flatnonzero(blocks.degenerate())]
    out = np.zeros((L, L))
    for a in range(L):
        w = ws[a]
        if w.rank == 0:
            continue  # a constant predictor explains nothing
        left = (w.evecs / w.scale[:, None]).T  # (r, p'): V^T D^-1/2
        weight = 1.0 / w.evals if ridge == 0 else (w.evals + 2 * ridge) / (w.evals + ridge) ** 2
        for b in range(L):
            if b in bad:
                continue
            if b == a and ridge == 0:
                out[a, b] = 1.0
                continue
            G = left @ blocks.C(a, b)[w.keep]  # (r, q)
            value = float(((G * G).sum(1) * weight).sum()) / blocks.T[b]
            out[a, b] = min(1.0, max(0.0, value))
    if bad:  # a constant target has no R^2; a constant predictor explains nothing (0, defined)
        out[:, bad] = np.nan
        warn_degenerate(f"{NAME} is undefined (NaN) for target layer(s) {bad}: zero variance")
    return torch.from_numpy(out)


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
    title="linear regression R2 (row predicts column)",
    definition="1 - min_B |Y~ - X~ B|^2 / |Y~|^2: variance of column layer b explained by a least-squares fit from row layer a",
    reference=reference,
    implementations={"torch": torch_matrix},
    options=(Option("ridge", 0.0, check_ridge, RIDGE_HELP),),
    min_samples=lambda opts: (3, " (least squares needs n > rank + 1)"),
    streaming="exact",
    accumulator=accumulator,
    symmetric=False,
)
