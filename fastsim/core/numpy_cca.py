"""float64 NumPy canonical correlation analysis from the data matrices: the primitive that the
references of the CCA family (``fastsim.metrics.cca_r2``, ``cca_mean``, ``pwcca``,
``linear_regression``) are written from. Obviously right, not fast: SVDs of the n x d data.

Canonical correlations (Hotelling 1936) of centered X (n x p) and Y (n x q) are the cosines of the
principal angles between their column spaces (Bjorck & Golub 1973): with orthonormal bases Q_x,
Q_y of the spans, the singular values of Q_x^T Q_y. The bases come from the SVD of the data with
constant columns dropped and columns scaled to unit norm (CCA is invariant to both), keeping the
directions whose squared singular value exceeds ``RANK_RTOL`` times the largest (the same cut as
``fastsim.core.spectral``). With ridge > 0 it is the canonical ridge (Vinod 1976) on the
standardized columns: the singular values of (X^T X + ridge I)^-1/2 X^T Y (Y^T Y + ridge I)^-1/2,
the first m = min(rank X, rank Y) of them (the others are 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .numpy_reference import as64, pow2_scaled
from .spectral import RANK_RTOL


def centered(x: Any) -> np.ndarray:
    """x (float64) scaled by a power of two and centered."""
    y, _ = pow2_scaled(as64(x))
    return y - y.mean(0)


def standardized(x: Any) -> np.ndarray:
    """Centered columns scaled to unit norm; constant columns (variance lost in rounding) dropped."""
    raw, _ = pow2_scaled(as64(x))
    y = raw - raw.mean(0)
    ss = np.einsum("ij,ij->j", y, y)
    sq = np.einsum("ij,ij->j", raw, raw)
    keep = ss > (32 * np.finfo(np.float64).eps) ** 2 * sq
    y = y[:, keep]
    return y / np.sqrt(ss[keep])


def basis(y: np.ndarray) -> np.ndarray:
    """Orthonormal basis (n x r) of the numerical column span of y."""
    if y.shape[1] == 0:
        return np.zeros((y.shape[0], 0))
    u, s, _ = np.linalg.svd(y, full_matrices=False)
    if s[0] == 0:
        return u[:, :0]
    return u[:, s**2 > RANK_RTOL * s[0] ** 2]


def check_span(q: np.ndarray, label: str, role: str = "CCA") -> None:
    n, r = q.shape
    if r > 0 and r >= n - 1:
        raise ValueError(f"{label}: an input spans all n - 1 = {n - 1} directions of the centered samples "
                         f"(rank {r}); {role} would be trivially perfect; use more samples or ridge > 0")


def inverse_sqrt(S: np.ndarray, ridge: float) -> np.ndarray:
    w, v = np.linalg.eigh(S)
    return (v / np.sqrt(np.maximum(w, 0.0) + ridge)) @ v.T


def canonical(a: Any, b: Any, ridge: float = 0.0, label: str = "cca") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rho, h_a, h_b): the m = min(rank_a, rank_b) canonical correlations (descending) and the
    unit-norm canonical variates (a variate of numerically zero norm is left zero) of a and of b (n x m each). m = 0 for a constant input."""
    xa, xb = standardized(a), standardized(b)
    n = xa.shape[0]
    if ridge == 0:
        qa, qb = basis(xa), basis(xb)
        check_span(qa, label)
        check_span(qb, label)
        m = min(qa.shape[1], qb.shape[1])
        if m == 0:
            return np.zeros(0), np.zeros((n, 0)), np.zeros((n, 0))
        p, s, rt = np.linalg.svd(qa.T @ qb)
        return s[:m], qa @ p[:, :m], qb @ rt.T[:, :m]
    m = min(basis(xa).shape[1], basis(xb).shape[1])  # the canonical pairs the data support
    if m == 0:
        return np.zeros(0), np.zeros((n, 0)), np.zeros((n, 0))
    wa, wb = inverse_sqrt(xa.T @ xa, ridge), inverse_sqrt(xb.T @ xb, ridge)
    p, s, rt = np.linalg.svd(wa @ (xa.T @ xb) @ wb)
    ha, hb = xa @ (wa @ p[:, :m]), xb @ (wb @ rt.T[:, :m])
    return s[:m], unit_columns(ha), unit_columns(hb)


def unit_columns(h: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(h, axis=0)
    live = norm**2 > RANK_RTOL * (norm.max() ** 2 if norm.size else 0.0)
    return np.where(live, h / np.where(live, norm, 1.0), 0.0)


def zero_variance(x: Any) -> bool:
    """The zero-variance rule of the streaming states (``fastsim.core.spectral.degenerate_layers``):
    the sum of squared deviations is lost in rounding relative to the sum of squares."""
    raw, _ = pow2_scaled(as64(x))
    y = raw - raw.mean(0)
    return not float(np.sum(y * y)) > (32 * np.finfo(np.float64).eps) ** 2 * float(np.sum(raw * raw))
