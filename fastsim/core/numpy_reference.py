"""float64 NumPy primitives that the metric references (``fastsim.reference``) are built from.

Written to be obviously right, not fast: every kernel matrix here is a full n x n array, every
neighbour list comes from a full sort (of float64 distances, with exact integer arithmetic where
float64 cannot decide, so that the lists are those of the exact cosine similarities).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def as64(x: Any) -> np.ndarray:
    """A 2-D float64 NumPy array from a NumPy array or torch tensor."""
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().to("cpu").double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array (n, d); got shape {x.shape}")
    return x


def linear_kernel(x: Any) -> np.ndarray:
    x = as64(x)
    return x @ x.T


def squared_distances(x: np.ndarray) -> np.ndarray:
    diff = x[:, None, :] - x[None, :, :]
    return np.einsum("ijk,ijk->ij", diff, diff)


def median_sigma(x: Any) -> float:
    """Median of the pairwise Euclidean distances |x_i - x_j| over all pairs i < j."""
    x = as64(x)
    n = x.shape[0]
    iu = np.triu_indices(n, k=1)
    return float(np.median(np.sqrt(squared_distances(x)[iu])))


def rbf_kernel(x: Any, sigma: float | None = None) -> np.ndarray:
    """exp(-|x_i - x_j|^2 / (2 sigma^2)); sigma None: the median heuristic."""
    x = as64(x)
    if sigma is None:
        sigma = median_sigma(x)
    return np.exp(-squared_distances(x) / (2.0 * float(sigma) ** 2))


def hsic(K: np.ndarray, L: np.ndarray, debiased: bool = False) -> float:
    """HSIC of two n x n kernel matrices: biased (Gretton 2005) or unbiased (Song 2012), in matrix form."""
    K = np.asarray(K, dtype=np.float64)
    L = np.asarray(L, dtype=np.float64)
    n = K.shape[0]
    if not debiased:
        H = np.eye(n) - np.ones((n, n)) / n
        return float(np.trace(K @ H @ L @ H) / (n - 1) ** 2)
    if n < 4:
        raise ValueError(f"the unbiased HSIC estimator needs n >= 4 samples; got {n}")
    Kt = K - np.diag(np.diag(K))
    Lt = L - np.diag(np.diag(L))
    one = np.ones(n)
    term1 = np.trace(Kt @ Lt)
    term2 = (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * (one @ Kt @ Lt @ one)
    return float((term1 + term2 - term3) / (n * (n - 3)))


def pow2_scaled(x: np.ndarray) -> tuple[np.ndarray, float]:
    """x times the power of two 2**-e that brings its peak magnitude near 1, and that factor."""
    peak = float(np.abs(x).max()) if x.size else 0.0
    e = np.frexp(peak)[1] if peak > 0 else 0
    return np.ldexp(x, -e), float(np.ldexp(1.0, -e))


def centered_scaled(x: Any) -> tuple[np.ndarray, float]:
    """(x scaled by a power of two and centered, the factor): exact scaling (CKA is scale
    invariant) keeps squares in range; centering leaves both HSIC estimators unchanged (proved in
    exact arithmetic in tests/test_reference.py) and removes the cancellation of large means."""
    y, factor = pow2_scaled(as64(x))
    return y - y.mean(0), factor


def cka_of_kernels(K: np.ndarray, L: np.ndarray, debiased: bool) -> float:
    """HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)); NaN where a self term is <= 0."""
    kl, kk, ll = hsic(K, L, debiased), hsic(K, K, debiased), hsic(L, L, debiased)
    if not (kk > 0 and ll > 0):
        return float("nan")
    return float(kl / np.sqrt(kk * ll))


def scaled_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows times a power of two that brings their peak near 1 (exact, and squares cannot
    underflow or overflow), and the norms of the scaled rows."""
    peak = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(x.shape[0])
    exponent = np.frexp(np.where(peak > 0, peak, 1.0))[1]
    y = np.ldexp(x, -exponent[:, None])
    return y, np.sqrt(np.einsum("ij,ij->i", y, y))


def safe_cosine(dots: np.ndarray, den: np.ndarray) -> np.ndarray:
    """dots / den, 0 where den is 0 (a zero vector)."""
    return np.where(den > 0, dots / np.where(den > 0, den, 1.0), 0.0)


def cosine_similarities(x: Any) -> np.ndarray:
    """Full n x n cosine similarity; entry (i, j) is (y_i . y_j) / (|y_i| |y_j|) for the scaled rows
    y, each dot product its own sum, so equal vectors give bit-identical similarities."""
    y, norm = scaled_rows(as64(x))
    return safe_cosine(np.einsum("ik,jk->ij", y, y), norm[:, None] * norm[None, :])


# ---- cosine neighbours: the exact order ------------------------------------------------------------
#
# The neighbour sets are those of the exact cosine similarities of the input values (ties to the
# smaller index). float64 cannot always tell: with a feature offset of 1e8, 1 - cos is about
# 1e-16 for every pair, below float64's resolution of cos itself. So the order is decided on the
# distance between the float64 unit rows, delta = |u_i - u_j|^2 = 2 (1 - cos), which has no such
# cancellation and whose rounding error is bounded (``unit_distance_bound``); pairs whose error
# intervals overlap are ordered in exact integer arithmetic (``exact_cosine_keys``).


def _mantissas(row: np.ndarray) -> list[int]:
    """The float64 values of `row` as Python integers times one common power of two."""
    m, e = np.frexp(row)
    mant = (m * 2.0**53).astype(np.int64)
    e = e.astype(np.int64) - 53
    nz = mant != 0
    if not nz.any():
        return [0] * row.shape[0]
    base = int(e[nz].min())
    return [int(v) << int(p - base) if v else 0 for v, p in zip(mant.tolist(), e.tolist())]


def exact_cosine_keys(anchor: np.ndarray, others: np.ndarray) -> list:
    """Exact keys, ordered as cos(anchor, others[j]): sign(a) a^2 / q with a = anchor . other (as
    integers with a common power of two) and q = |other|^2, a Fraction (0 for a zero vector, whose
    cosine is 0). The positive factors 1 / |anchor| and the powers of two are common to every j."""
    from fractions import Fraction

    a = _mantissas(np.asarray(anchor, dtype=np.float64))
    keys = []
    for row in np.asarray(others, dtype=np.float64):
        b = _mantissas(row)
        q = sum(v * v for v in b)
        dot = sum(p * v for p, v in zip(a, b))
        keys.append(Fraction(0) if q == 0 or dot == 0 else Fraction((1 if dot > 0 else -1) * dot * dot, q))
    return keys


def unit_distance_bound(delta: np.ndarray, d: int) -> np.ndarray:
    """A bound on |computed - exact| for delta = |u_i - u_j|^2 of float64 unit rows formed as
    y / |y| (y the row times a power of two) and summed in any order: the norms' relative error
    h = (d + 4) u, each unit component's rounding u, the subtraction, squares and sum
    ((d + 2) u relative): (3d + 10) u delta + 4 u sqrt(delta) + ((4 (d + 4) + 2) u)^2, times 1.1,
    plus the subnormal floor. Increasing in delta."""
    u = 2.0**-53
    delta = np.maximum(delta, 0.0)
    return 1.1 * ((3 * d + 10) * u * delta + 4 * u * np.sqrt(delta) + ((4 * (d + 4) + 2) * u) ** 2) + 4 * d * 2.0**-1074


def unit_rows64(x: np.ndarray) -> np.ndarray:
    """float64 unit rows y / |y|, y each row scaled by a power of two (exact); zero rows stay 0."""
    y, norm = scaled_rows(x)
    return y / np.where(norm > 0, norm, 1.0)[:, None]


def unit_distances(units: np.ndarray, zero: np.ndarray, i: int) -> np.ndarray:
    """delta[j] = |u_i - u_j|^2 = 2 (1 - cos); 2 (cosine 0) where either row is zero."""
    diff = units - units[i]
    delta = np.einsum("ij,ij->i", diff, diff)
    return np.where(zero | zero[i], 2.0, delta)


def exact_order(
    anchor: np.ndarray, rows: np.ndarray, cols: np.ndarray, delta: np.ndarray, bound: np.ndarray
) -> np.ndarray:
    """Sample indices `cols` (values `rows`, one per index) ordered by exact cosine with `anchor`
    (descending), ties to the smaller index, given their float64 distances and bounds: runs whose
    intervals [delta - bound, delta + bound] overlap are ordered by exact keys, the rest by delta."""
    order = np.lexsort((cols, delta))
    cols, delta, bound, rows = cols[order], delta[order], bound[order], rows[order]
    out, start = [], 0
    reach = -np.inf
    for p in range(len(cols) + 1):
        if p == len(cols) or (p > start and delta[p] - bound[p] > reach):
            run = cols[start:p]
            if len(run) > 1:
                keys = exact_cosine_keys(anchor, rows[start:p])
                run = [c for _, c in sorted(zip(keys, run.tolist()), key=lambda t: (-t[0], t[1]))]
            out.extend(int(c) for c in run)
            start = p
            reach = -np.inf
        if p < len(cols):
            reach = max(reach, delta[p] + bound[p])
    return np.asarray(out, dtype=np.int64)


def knn_indices(x: Any, k: int) -> np.ndarray:
    """(n, k) indices of each sample's k most cosine-similar other samples, in that order, exactly:
    by the exact cosine similarity of the input values, ties to the smaller index (a zero vector
    has similarity 0 with everything). float64 unit-row distances decide wherever their proven
    error bound separates two samples, exact integer arithmetic where it does not."""
    x = as64(x)
    n, d = x.shape
    if not 1 <= k < n:
        raise ValueError(f"k must satisfy 1 <= k < n = {n}; got {k}")
    units = unit_rows64(x)
    zero = ~np.any(x != 0, axis=1)
    out = np.empty((n, k), dtype=np.int64)
    idx = np.arange(n)
    for i in range(n):
        delta = unit_distances(units, zero, i)
        delta[i] = np.inf
        bound = np.where(zero | zero[i], 0.0, unit_distance_bound(delta, d))
        bound[i] = 0.0
        order = np.lexsort((idx, delta))
        top = order[k - 1]
        keep = delta - bound <= delta[top] + bound[top]  # every sample that may be among the first k
        keep[i] = False
        out[i] = exact_order(x[i], x[keep], idx[keep], delta[keep], bound[keep])[:k]
    return out


def knn_mask(x: Any, k: int) -> np.ndarray:
    """n x n 0/1 matrix: M[i, j] = [j is one of i's k nearest neighbours]."""
    x = as64(x)
    n = x.shape[0]
    mask = np.zeros((n, n))
    mask[np.arange(n)[:, None], knn_indices(x, k)] = 1.0
    return mask
