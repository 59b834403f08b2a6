"""High-precision and exact oracles, independent of fastsim (tests only).

Every input value (a float16/32/64 number) is converted to a Fraction exactly; everything that can
be rational (centering, dot products, squared distances, HSIC of rational kernels) is computed in
exact rational arithmetic, and only what cannot be (square roots, exp) in mpmath at `DIGITS`
significant digits. So these are the values of the definitions on the exact inputs, far beyond
float64 resolution, for small n.
"""

from __future__ import annotations

import functools
from fractions import Fraction

import mpmath
import numpy as np

DIGITS = 60


def fractions_of(x) -> list[list[Fraction]]:
    """A 2-D array (NumPy or torch, any float dtype) as exact Fractions, row by row."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)  # float16/32 -> float64 is exact
    return [[Fraction(float(v)) for v in row] for row in x]


def _centered(rows):
    n, d = len(rows), len(rows[0])
    mean = [sum(r[j] for r in rows) / n for j in range(d)]
    return [[r[j] - mean[j] for j in range(d)] for r in rows]


def _dot(u, v):
    return sum(p * q for p, q in zip(u, v))


def linear_kernel_exact(x) -> list[list[Fraction]]:
    """K = Xc Xc^T of the exactly centered rows (centering changes neither HSIC estimator)."""
    c = _centered(fractions_of(x))
    return [[_dot(u, v) for v in c] for u in c]


def squared_distances_exact(x) -> list[list[Fraction]]:
    rows = fractions_of(x)
    return [[sum((p - q) ** 2 for p, q in zip(u, v)) for v in rows] for u in rows]


def hsic_kernels(K, L, debiased: bool):
    """HSIC of two n x n kernels (Fractions or mpf; not necessarily symmetric), biased (Gretton:
    tr(K H L H) / (n-1)^2) or unbiased (Song: A, B the kernels with zeroed diagonals,
    [tr(A B) + 1'A1 1'B1 / ((n-1)(n-2)) - 2/(n-2) 1'A B 1] / (n (n-3))), in the arithmetic of the
    entries (exact for Fractions)."""
    n = len(K)
    if not debiased:
        # tr(K H L H) = sum_ij (HKH)_ij L_ji, HKH = K - row means - column means + grand mean
        rk = [sum(row) / n for row in K]
        ck = [sum(K[i][j] for i in range(n)) / n for j in range(n)]
        gk = sum(rk) / n
        t = sum((K[i][j] - rk[i] - ck[j] + gk) * L[j][i] for i in range(n) for j in range(n))
        return t / (n - 1) ** 2
    A = [[K[i][j] if i != j else 0 for j in range(n)] for i in range(n)]
    B = [[L[i][j] if i != j else 0 for j in range(n)] for i in range(n)]
    t1 = sum(A[i][j] * B[j][i] for i in range(n) for j in range(n))
    t2 = sum(map(sum, A)) * sum(map(sum, B)) / ((n - 1) * (n - 2))
    col_a = [sum(A[i][j] for i in range(n)) for j in range(n)]
    row_b = [sum(row) for row in B]
    t3 = 2 * sum(c * r for c, r in zip(col_a, row_b)) / (n - 2)
    return (t1 + t2 - t3) / (n * (n - 3))


def _to_mpf(v):
    return mpmath.mpf(v.numerator) / v.denominator if isinstance(v, Fraction) else mpmath.mpf(v)


def cka_kernels(K, L, debiased: bool) -> float:
    """CKA of two kernels; NaN where a self term is <= 0."""
    with mpmath.workdps(DIGITS):
        kl, kk, ll = (_to_mpf(hsic_kernels(P, Q, debiased)) for P, Q in ((K, L), (K, K), (L, L)))
        if not (kk > 0 and ll > 0):
            return float("nan")
        return float(kl / mpmath.sqrt(kk * ll))


def linear_cka(a, b, debiased: bool = False) -> float:
    """Linear CKA in exact rational arithmetic (one square root in mpmath)."""
    return cka_kernels(linear_kernel_exact(a), linear_kernel_exact(b), debiased)


def median_sigma(x):
    """The median of the pairwise distances i < j (mpf; the mean of the two middle ones)."""
    d2 = squared_distances_exact(x)
    n = len(d2)
    vals = sorted(d2[i][j] for i in range(n) for j in range(i + 1, n))
    m = len(vals)
    with mpmath.workdps(DIGITS):
        if m % 2:
            return mpmath.sqrt(_to_mpf(vals[m // 2]))
        return (mpmath.sqrt(_to_mpf(vals[m // 2 - 1])) + mpmath.sqrt(_to_mpf(vals[m // 2]))) / 2


def rbf_kernel_mp(x, sigma):
    """exp(-|x_i - x_j|^2 / (2 sigma^2)) at DIGITS digits, from exact squared distances."""
    d2 = squared_distances_exact(x)
    with mpmath.workdps(DIGITS):
        s2 = 2 * mpmath.mpf(sigma) ** 2 if not isinstance(sigma, mpmath.mpf) else 2 * sigma**2
        return [[mpmath.exp(-_to_mpf(v) / s2) for v in row] for row in d2]


def rbf_cka(a, b, sigma=None, debiased: bool = False, relative: bool = False) -> float:
    """RBF CKA at DIGITS digits. sigma: a float (used for both) or None (each input's median
    distance); relative=True: sigma is a factor of each input's median distance."""
    with mpmath.workdps(DIGITS):
        kernels = []
        for x in (a, b):
            if sigma is None or relative:
                s = median_sigma(x) * (1 if sigma is None else mpmath.mpf(sigma))
            else:
                s = mpmath.mpf(sigma)
            kernels.append(rbf_kernel_mp(x, s))
        return cka_kernels(kernels[0], kernels[1], debiased)


# ---- cosine neighbours, exactly ---------------------------------------------------------------



def rbf_cka_sweep(a, b, factors) -> dict:
    """mpmath RBF CKA of the float64 and the float32 copies of (a, b) at sigma = factor x the
    median distance of each copy, biased and debiased: {(dtype, factor, debiased): (sigma, value)}."""
    out = {}
    for dtype in (np.float64, np.float32):
        a_, b_ = a.astype(dtype), b.astype(dtype)
        sigma = float(median_sigma(a_))
        for f in factors:
            for debiased in (False, True):
                out[dtype, f, debiased] = (sigma * f, rbf_cka(a_, b_, sigma * f, debiased))
    return out

def _cos_key(rows, i, j):
    """cos(x_i, x_j) as (dot, |x_j|^2) for a fixed i: comparisons over j need only dot / |x_j|."""
    return _dot(rows[i], rows[j]), _dot(rows[j], rows[j])


def _compare(p, q) -> int:
    """Sign of p_dot / sqrt(p_sq) - q_dot / sqrt(q_sq), exactly (a zero vector has cosine 0)."""
    (a, pa), (b, qb) = p, q
    # value = a / sqrt(pa) (0 if pa == 0)
    sa = 0 if pa == 0 else (a > 0) - (a < 0)
    sb = 0 if qb == 0 else (b > 0) - (b < 0)
    if sa != sb:
        return (sa > sb) - (sa < sb)
    if sa == 0:
        return 0
    # same sign s: compare |a| / sqrt(pa) with |b| / sqrt(qb): a^2 qb vs b^2 pa
    lhs, rhs = a * a * qb, b * b * pa
    c = (lhs > rhs) - (lhs < rhs)
    return c if sa > 0 else -c


def knn_exact(x, k: int) -> list[list[int]]:
    """Each sample's k most cosine-similar others, exact; ties to the smaller index."""
    rows = fractions_of(x)
    n = len(rows)
    out = []
    for i in range(n):
        keys = {j: _cos_key(rows, i, j) for j in range(n) if j != i}

        def cmp(j, l, keys=keys):
            c = _compare(keys[j], keys[l])
            return -c if c else (j > l) - (j < l)

        out.append(sorted(keys, key=functools.cmp_to_key(cmp))[:k])
    return out


def knn_is_determined(x, k: int) -> list[bool]:
    """Per row: whether the k-th and (k+1)-th exact similarities differ (no tie at the cut)."""
    rows = fractions_of(x)
    lists = knn_exact(x, k + 1)
    return [_compare(_cos_key(rows, i, l[k - 1]), _cos_key(rows, i, l[k])) != 0 for i, l in enumerate(lists)]


def mutual_knn(a, b, k: int) -> float:
    na, nb = knn_exact(a, k), knn_exact(b, k)
    return float(Fraction(sum(len(set(p) & set(q)) for p, q in zip(na, nb)), len(na) * k))


def cosine_kernel_mp(x):
    rows = fractions_of(x)
    with mpmath.workdps(DIGITS):
        norms = [mpmath.sqrt(_to_mpf(_dot(r, r))) for r in rows]
        return [
            [(_to_mpf(_dot(u, v)) / (nu * nv)) if nu > 0 and nv > 0 else mpmath.mpf(0) for v, nv in zip(rows, norms)]
            for u, nu in zip(rows, norms)
        ]


def cknna(a, b, k: int) -> float:
    """CKNNA (fastsim.metrics.cknna's definition) with exact neighbour sets and DIGITS-digit kernels."""
    n = len(fractions_of(a))
    na, nb = knn_exact(a, k), knn_exact(b, k)
    mk = [[1 if j in set(na[i]) else 0 for j in range(n)] for i in range(n)]
    ml = [[1 if j in set(nb[i]) else 0 for j in range(n)] for i in range(n)]
    with mpmath.workdps(DIGITS):
        K, L = cosine_kernel_mp(a), cosine_kernel_mp(b)
        mkK = [[mk[i][j] * K[i][j] for j in range(n)] for i in range(n)]
        mlL = [[ml[i][j] * L[i][j] for j in range(n)] for i in range(n)]
        mK = [[mk[i][j] * ml[i][j] * K[i][j] for j in range(n)] for i in range(n)]
        mL = [[mk[i][j] * ml[i][j] * L[i][j] for j in range(n)] for i in range(n)]
        kk = hsic_kernels(mkK, mkK, True)
        ll = hsic_kernels(mlL, mlL, True)
        if not (kk > 0 and ll > 0):
            return float("nan")
        return float(hsic_kernels(mK, mL, True) / mpmath.sqrt(kk * ll))


# ---- extended-precision oracles for larger inputs (n in the hundreds) -----------------------------
#
# NumPy's longdouble (80-bit on x86-64 Linux: 64-bit mantissa, 2048x float64's resolution) with
# the formulas written out directly: exact centering of the (exactly converted) inputs, explicit
# n x n kernels, the HSIC terms as sums. Independent of fastsim's code; far more accurate than the
# float32 results they check (1e-6).

LD = np.longdouble


def _ld(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(np.asarray(x, dtype=np.float64), dtype=LD)


def _hsic_ld(K: np.ndarray, L: np.ndarray, debiased: bool):
    n = K.shape[0]
    if not debiased:
        Kc = K - K.mean(0)[None, :] - K.mean(1)[:, None] + K.mean()
        return (Kc * L.T).sum() / (n - 1) ** 2
    A = K.copy()
    B = L.copy()
    np.fill_diagonal(A, 0)
    np.fill_diagonal(B, 0)
    t1 = (A * B.T).sum()
    t2 = A.sum() * B.sum() / ((n - 1) * (n - 2))
    t3 = 2 * (A.sum(0) * B.sum(1)).sum() / (n - 2)
    return (t1 + t2 - t3) / (n * (n - 3))


def _cka_ld(K, L, debiased) -> float:
    kl, kk, ll = _hsic_ld(K, L, debiased), _hsic_ld(K, K, debiased), _hsic_ld(L, L, debiased)
    if not (kk > 0 and ll > 0):
        return float("nan")
    return float(kl / np.sqrt(kk * ll))


def linear_kernel_ld(x) -> np.ndarray:
    y = _ld(x)
    y = y - y.mean(0)
    return y @ y.T


def rbf_kernel_ld(x, sigma=None) -> np.ndarray:
    """exp(-d2 / (2 sigma^2)) less its mean off-diagonal entry (an exact invariance of HSIC that
    keeps the near-1 regime from cancelling); sigma None: the median distance (pairs i < j)."""
    y = _ld(x)
    y = y - y.mean(0)
    sq = (y * y).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * (y @ y.T), 0)
    n = y.shape[0]
    if sigma is None:
        iu = np.triu_indices(n, 1)
        sigma = np.median(np.sqrt(d2[iu]))
    K = np.exp(-d2 / (2 * LD(sigma) ** 2))
    return K - (K.sum() - np.trace(K)) / (n * (n - 1))


def similarity_matrix_ld(layers, metric: str, debiased: bool = False, sigma=None) -> np.ndarray:
    """(L, L) linear CKA ("cka"), RBF CKA ("rbf_cka") or mean cosine ("cosine") in longdouble."""
    Lc = len(layers)
    out = np.empty((Lc, Lc))
    if metric == "cosine":
        units = []
        for x in layers:
            y = _ld(x)
            units.append(y / np.sqrt((y * y).sum(1))[:, None])
        for i in range(Lc):
            for j in range(Lc):
                out[i, j] = float((units[i] * units[j]).sum(1).mean())
        return out
    kernels = [linear_kernel_ld(x) if metric == "cka" else rbf_kernel_ld(x, sigma) for x in layers]
    for i in range(Lc):
        for j in range(i, Lc):
            out[i, j] = out[j, i] = _cka_ld(kernels[i], kernels[j], debiased)
    return out


def massive_layers(L=4, n=256, d=96, seed=0, big=500.0, dims=2, offset=0.0, dtype=np.float32):
    """Activations like a transformer's: each layer a nonlinear map of the previous plus a
    residual and noise; from the second layer on, `dims` features carry massive values (about
    `big` times the rest: a large per-feature constant with a few percent variation, as the
    "massive activations" of LLMs and Whisper), plus an optional offset on every feature."""
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, d))
    out = []
    for layer in range(L):
        W = g.standard_normal((d, d)) / np.sqrt(d)
        x = np.tanh(x @ W) + 0.5 * x + 0.3 * g.standard_normal((n, d))
        y = x.copy()
        if layer >= 1:
            idx = g.choice(d, dims, replace=False)
            y[:, idx] = big * np.sign(g.standard_normal(dims)) * (1 + 0.05 * g.standard_normal((n, dims)))
        out.append((y + offset).astype(dtype))
    return out


def gaussian_layers(L=4, n=256, d=96, seed=0, dtype=np.float32):
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, d))
    out = [x.astype(dtype)]
    for _ in range(L - 1):
        x = x + 0.5 * g.standard_normal((n, d))
        out.append(x.astype(dtype))
    return out
