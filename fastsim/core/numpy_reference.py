"""float64 NumPy primitives that the metric references (``fastsim.reference``) are built from.

Written to be obviously right, not fast: every kernel matrix here is a full n x n array, every
neighbour list comes from a full sort.
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


def knn_indices(x: Any, k: int) -> np.ndarray:
    """(n, k) indices of each sample's k most cosine-similar other samples (ties: smaller index)."""
    x = as64(x)
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must satisfy 1 <= k < n = {n}; got {k}")
    sims = cosine_similarities(x)
    out = np.empty((n, k), dtype=np.int64)
    idx = np.arange(n)
    for i in range(n):
        s = sims[i].copy()
        s[i] = -np.inf
        order = np.lexsort((idx, -s))  # primary key: -similarity; ties: index
        out[i] = order[:k]
    return out


def knn_mask(x: Any, k: int) -> np.ndarray:
    """n x n 0/1 matrix: M[i, j] = [j is one of i's k nearest neighbours]."""
    x = as64(x)
    n = x.shape[0]
    mask = np.zeros((n, n))
    mask[np.arange(n)[:, None], knn_indices(x, k)] = 1.0
    return mask
