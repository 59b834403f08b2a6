"""Orthogonal Procrustes similarity over all layer pairs, exact and streaming.

Definition (``reference``): with the columns centered and each representation scaled to unit
Frobenius norm, X^ = X~ / |X~|_F and Y^ = Y~ / |Y~|_F (the narrower one padded with zero
columns), the Procrustes distance is the residual of the best rotation,

    d(X, Y) = min_{Q orthogonal} |X^ - Y^ Q|_F = sqrt(2 - 2 s),   s = |X~^T Y~|_* / (|X~|_F |Y~|_F),

(Schoenemann 1966 for the minimizer; the normalized form is Ding et al. 2021, "Grounding
representation similarity through statistical testing"; Williams et al. 2021, "Generalized shape
metrics on neural representations", use arccos(s)). The registered measure "procrustes" is the
similarity s in [0, 1] (1: equal up to rotation, translation and scale), so that heatmaps, block
detection and every other registered measure read "larger is more similar"; the distance is one
exact transform of it, ``distance(s) = sqrt(max(0, 2 - 2 s))`` (``reference_distance`` computes
it from its own definition, with the rotation).

Computation: s needs only the co-moment blocks: |X~|_F^2 = tr C[a, a] and the nuclear norm of
C[a, b] = X~^T Y~ (one SVD, values only, per pair of layers), so it streams exactly and merges
(``fastsim.accumulators.comoments``). The blocks accumulate in float64 at precision "highest" (in
the input's dtype at "high"/"medium"); the SVDs run in float64.

Degenerate input: a layer with zero variance (or variance lost in rounding, the rule of linear
CKA) has no Procrustes similarity: NaN in its row and column, with a DegenerateWarning.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..accumulators.comoments import CoMomentAccumulator, one_shot
from ..core.numpy_cca import zero_variance
from ..core.numpy_reference import centered_scaled
from ..core.spectral import Blocks, nan_layers, parallel_map, svdvals
from .spec import Metric


def _normalized(x: Any) -> np.ndarray:
    y, _ = centered_scaled(x)
    norm = np.linalg.norm(y)
    return y / norm if norm > 0 else y


def reference_distance(a: Any, b: Any) -> float:
    """float64 NumPy min over orthogonal Q of |X^ - Y^ Q|_F (module docs), with the rotation
    from the SVD of Y^T X^ (Schoenemann 1966); NaN for a zero-variance input."""
    if zero_variance(a) or zero_variance(b):
        return float("nan")
    x, y = _normalized(a), _normalized(b)
    width = max(x.shape[1], y.shape[1])
    x = np.pad(x, ((0, 0), (0, width - x.shape[1])))
    y = np.pad(y, ((0, 0), (0, width - y.shape[1])))
    u, _, vt = np.linalg.svd(y.T @ x)
    q = u @ vt  # argmin_Q |Y^ Q - X^|_F over orthogonal Q
    return float(np.linalg.norm(x - y @ q))


def reference(a: Any, b: Any) -> float:
    """float64 NumPy Procrustes similarity s = 1 - d^2 / 2, d the aligned residual of
    ``reference_distance``; NaN for a zero-variance input."""
    d = reference_distance(a, b)
    return float(1.0 - d * d / 2.0)


def distance(similarity: Any) -> Any:
    """The Procrustes distance sqrt(2 - 2 s) from the similarity s (a number, array or tensor)."""
    if isinstance(similarity, torch.Tensor):
        return torch.sqrt((2.0 - 2.0 * similarity).clamp_min(0.0))
    return np.sqrt(np.maximum(0.0, 2.0 - 2.0 * np.asarray(similarity, dtype=np.float64)))


def finish(state, dtype: torch.dtype) -> torch.Tensor:
    """(L, L) float64 CPU Procrustes similarities from a co-moment state."""
    blocks = Blocks(state)
    L = blocks.L
    bad = blocks.degenerate()
    out = np.eye(L)
    pairs = [(a, b) for a in range(L) for b in range(a + 1, L) if not (bad[a] or bad[b])]
    blocks.load()
    nuclear = parallel_map(lambda ab: float(svdvals(blocks.C(*ab)).sum()), pairs)  # one SVD per pair
    for (a, b), value in zip(pairs, nuclear):
        out[a, b] = out[b, a] = min(1.0, max(0.0, value / np.sqrt(blocks.T[a]) / np.sqrt(blocks.T[b])))
    return nan_layers(out, bad, "procrustes", "zero variance")


def accumulator(*, precision: str = "highest") -> CoMomentAccumulator:
    return CoMomentAccumulator(finish, settings=(), float64=precision == "highest", precision=precision,
                               check_finite=False, label="procrustes")


def torch_matrix(layers: list[torch.Tensor], *, precision: str) -> torch.Tensor:
    return one_shot(accumulator(precision=precision), layers)


METRIC = Metric(
    name="procrustes",
    title="orthogonal Procrustes similarity",
    definition="|X~^T Y~|_* / (|X~|_F |Y~|_F) of the centered inputs; the distance is sqrt(2 - 2 s) (Ding et al. 2021)",
    reference=reference,
    implementations={"torch": torch_matrix},
    min_samples=lambda opts: (2, ""),
    streaming="exact",
    accumulator=accumulator,
)
