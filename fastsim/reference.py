"""NumPy float64 oracles for every fastsim metric.

Written to be obviously right, not fast: every kernel matrix here is a full n x n array, every
neighbour list comes from a full sort. Use them to test fastsim (and your own code) on small
inputs. Inputs are converted to float64 NumPy arrays of shape (n, d).

Definitions
-----------
Centering matrix ``H = I - 11^T / n``.

* Biased HSIC (Gretton et al. 2005): ``HSIC_0(K, L) = tr(K H L H) / (n - 1)^2``.
* Unbiased HSIC (Song et al. 2012), with ``K~, L~`` the kernels with zeroed diagonals, n >= 4::

      HSIC_1(K, L) = [ tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1 ] / (n (n-3))

* CKA (Kornblith et al. 2019): ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``; "debiased" CKA uses
  HSIC_1 throughout. Undefined (NaN) when a denominator term is <= 0, e.g. a representation with
  zero variance.
* Linear kernel ``K = X X^T``. RBF kernel ``K_ij = exp(-|x_i - x_j|^2 / (2 sigma^2))``.
* Median heuristic (``sigma=None``): sigma is the median of the Euclidean distances |x_i - x_j| over
  all pairs i < j (NumPy's median: the mean of the two middle values for an even count). Note
  Kornblith et al.'s code takes the median of the full squared-distance matrix, diagonal zeros
  included; fastsim excludes the diagonal.
* Cosine: the mean over samples i of cos(a_i, b_i); a sample where either vector is zero
  contributes 0.
* Mutual kNN (Huh et al. 2024): N_a(i) are the k samples j != i with the largest cosine
  similarity cos(a_i, a_j) (a zero vector has similarity 0 with everything), ties broken by the
  smaller index j; the score is the mean over i of |N_a(i) & N_b(i)| / k.
* CKNNA (Huh et al. 2024, platonic-rep's ``cknna`` with its defaults ``unbiased=True``,
  ``distance_agnostic=False``, on unit rows): with the cosine kernels K, L and the 0/1 masks
  M_K[i, j] = [j in N_a(i)], M_L[i, j] = [j in N_b(i)] (the kNN sets above, self excluded, ties to
  the smaller index) and M = M_K * M_L (directed: row i's shared neighbours),
  ``CKNNA = HSIC_1(M*K, M*L) / sqrt(HSIC_1(M_K*K, M_K*K) HSIC_1(M_L*L, M_L*L))`` with HSIC_1 as
  above (the masked kernels are not symmetric; the trace term is tr(K~ L~)). platonic-rep adds
  1e-6 to the denominator; fastsim does not, and returns NaN where a self term is <= 0.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = [
    "linear_kernel",
    "rbf_kernel",
    "median_sigma",
    "hsic",
    "cka",
    "cosine",
    "knn_indices",
    "mutual_knn",
    "cknna",
    "similarity_matrix",
]


def _as64(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().to("cpu").double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array (n, d); got shape {x.shape}")
    return x


def linear_kernel(x: Any) -> np.ndarray:
    x = _as64(x)
    return x @ x.T


def _squared_distances(x: np.ndarray) -> np.ndarray:
    diff = x[:, None, :] - x[None, :, :]
    return np.einsum("ijk,ijk->ij", diff, diff)


def median_sigma(x: Any) -> float:
    """Median of the pairwise Euclidean distances |x_i - x_j| over all pairs i < j."""
    x = _as64(x)
    n = x.shape[0]
    iu = np.triu_indices(n, k=1)
    return float(np.median(np.sqrt(_squared_distances(x)[iu])))


def rbf_kernel(x: Any, sigma: float | None = None) -> np.ndarray:
    x = _as64(x)
    if sigma is None:
        sigma = median_sigma(x)
    return np.exp(-_squared_distances(x) / (2.0 * float(sigma) ** 2))


def hsic(K: np.ndarray, L: np.ndarray, debiased: bool = False) -> float:
    """HSIC of two n x n kernel matrices: biased (Gretton 2005) or unbiased (Song 2012)."""
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


def _kernel(x: np.ndarray, kernel: str, sigma: float | None) -> np.ndarray:
    """The kernel matrix that CKA uses; for RBF it is K - 1, formed as expm1(-d^2 / (2 sigma^2)).

    Adding a constant to every entry of K leaves both HSIC estimators unchanged (tested in exact
    arithmetic in tests/test_reference.py), and K - 1 keeps full relative precision where sigma is
    large next to the distances and K itself would round to 1.
    """
    if kernel == "linear":
        return linear_kernel(x)
    if kernel == "rbf":
        if sigma is None:
            sigma = median_sigma(x)
        return np.expm1(-_squared_distances(x) / (2.0 * float(sigma) ** 2))
    raise ValueError(f"kernel must be 'linear' or 'rbf'; got {kernel!r}")


def _pow2_scaled(x: np.ndarray) -> tuple[np.ndarray, float]:
    """x times the power of two 2**-e that brings its peak magnitude near 1, and that factor."""
    peak = float(np.abs(x).max()) if x.size else 0.0
    e = np.frexp(peak)[1] if peak > 0 else 0
    return np.ldexp(x, -e), float(np.ldexp(1.0, -e))


def _sigmas(sigma: Any) -> tuple[float | None, float | None]:
    if isinstance(sigma, (tuple, list)):
        return sigma[0], sigma[1]
    return sigma, sigma


def cka(a: Any, b: Any, kernel: str = "linear", sigma: Any = None, debiased: bool = False) -> float:
    """CKA between two representations of the same n samples; NaN where undefined.

    The inputs are scaled by a power of two (exact; CKA is scale invariant) so that squares stay
    in float64's range, then centered (feature means subtracted). Both HSIC estimators are exactly
    invariant to centering (the RBF kernel trivially; for the linear kernel see the
    exact-arithmetic test in tests/test_reference.py), and without it float64 cancels badly when
    features have large means.
    """
    (a, a_factor), (b, b_factor) = _pow2_scaled(_as64(a)), _pow2_scaled(_as64(b))
    a, b = a - a.mean(0), b - b.mean(0)
    sa, sb = _sigmas(sigma)
    sa = None if sa is None else sa * a_factor
    sb = None if sb is None else sb * b_factor
    K, L = _kernel(a, kernel, sa), _kernel(b, kernel, sb)
    kl, kk, ll = hsic(K, L, debiased), hsic(K, K, debiased), hsic(L, L, debiased)
    if not (kk > 0 and ll > 0):
        return float("nan")
    return float(kl / np.sqrt(kk * ll))


def _scaled_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows times a power of two that brings their peak near 1 (exact, and squares cannot
    underflow or overflow), and the norms of the scaled rows."""
    peak = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(x.shape[0])
    exponent = np.frexp(np.where(peak > 0, peak, 1.0))[1]
    y = np.ldexp(x, -exponent[:, None])
    return y, np.sqrt(np.einsum("ij,ij->i", y, y))


def _cos(dots: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.where(den > 0, dots / np.where(den > 0, den, 1.0), 0.0)


def cosine(a: Any, b: Any) -> float:
    """Mean over samples of cos(a_i, b_i); zero vectors contribute 0."""
    (ya, na), (yb, nb) = _scaled_rows(_as64(a)), _scaled_rows(_as64(b))
    return float(np.mean(_cos(np.einsum("ij,ij->i", ya, yb), na * nb)))


def cosine_similarities(x: Any) -> np.ndarray:
    """Full n x n cosine similarity; entry (i, j) is (y_i . y_j) / (|y_i| |y_j|) for the scaled rows
    y, each dot product its own sum, so equal vectors give bit-identical similarities."""
    y, norm = _scaled_rows(_as64(x))
    return _cos(np.einsum("ik,jk->ij", y, y), norm[:, None] * norm[None, :])


def knn_indices(x: Any, k: int) -> np.ndarray:
    """(n, k) indices of each sample's k most cosine-similar other samples (ties: smaller index)."""
    x = _as64(x)
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


def mutual_knn(a: Any, b: Any, k: int = 10) -> float:
    """Mean over samples of |N_a(i) & N_b(i)| / k (Huh et al. 2024)."""
    na, nb = knn_indices(a, k), knn_indices(b, k)
    shared = [len(set(ra.tolist()) & set(rb.tolist())) for ra, rb in zip(na, nb)]
    return float(np.mean(shared) / k)


def _knn_mask(x: np.ndarray, k: int) -> np.ndarray:
    n = x.shape[0]
    mask = np.zeros((n, n))
    mask[np.arange(n)[:, None], knn_indices(x, k)] = 1.0
    return mask


def cknna(a: Any, b: Any, k: int = 10) -> float:
    """CKNNA (Huh et al. 2024): unbiased HSIC of the cosine kernels restricted to the mutual kNN
    pairs, normalised by the self terms (see the module docstring); NaN where a self term <= 0."""
    a, b = _as64(a), _as64(b)
    if a.shape[0] < 4:
        raise ValueError(f"cknna uses the unbiased HSIC estimator and needs n >= 4 samples; got {a.shape[0]}")
    K, L = cosine_similarities(a), cosine_similarities(b)
    mk, ml = _knn_mask(a, k), _knn_mask(b, k)
    m = mk * ml
    kk = hsic(mk * K, mk * K, debiased=True)
    ll = hsic(ml * L, ml * L, debiased=True)
    if not (kk > 0 and ll > 0):
        return float("nan")
    return float(hsic(m * K, m * L, debiased=True) / np.sqrt(kk * ll))


def similarity_matrix(layers: Sequence[Any], metric: str, **options: Any) -> np.ndarray:
    """The (L, L) matrix of `metric` ("cka", "cosine", "mutual_knn" or "cknna") over all layer pairs.

    Entry (i, j) is ``metric(layers[i], layers[j], **options)``; for CKA each layer's kernel
    matrix is formed once and shared by its pairs (the same arithmetic as ``cka``).
    """
    layers = [_as64(x) for x in layers]
    L = len(layers)
    out = np.empty((L, L))
    if metric == "cka":
        kernel, sigma, debiased = options.get("kernel", "linear"), options.get("sigma"), options.get("debiased", False)
        if isinstance(sigma, (list, tuple)):
            raise ValueError("similarity_matrix takes one sigma for all layers (or None)")
        scaled = [_pow2_scaled(x) for x in layers]
        kernels = [
            _kernel(y - y.mean(0), kernel, None if sigma is None else sigma * f) for y, f in scaled
        ]
        self_hsic = [hsic(K, K, debiased) for K in kernels]
        for i in range(L):
            for j in range(L):
                ok = self_hsic[i] > 0 and self_hsic[j] > 0
                h = hsic(kernels[i], kernels[j], debiased)
                out[i, j] = h / np.sqrt(self_hsic[i] * self_hsic[j]) if ok else float("nan")
        return out
    fn = {"cosine": cosine, "mutual_knn": mutual_knn, "cknna": cknna}[metric]
    for i in range(L):
        for j in range(L):
            out[i, j] = fn(layers[i], layers[j], **options)
    return out
