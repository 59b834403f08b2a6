"""HSIC and CKA from a few sums: the one place where the estimators' formulas live.

For n x n kernels K (of layer a) and L (of layer b) with row sums R_K = K 1:

* Biased HSIC (Gretton et al. 2005): ``HSIC_0 = tr(K H L H) / (n-1)^2`` with
  ``tr(K H L H) = sum(K o L) - (2/n) R_K . R_L + (1^T K 1)(1^T L 1) / n^2``.
* Unbiased HSIC (Song et al. 2012), for kernels A, B with zeroed diagonals, n >= 4:
  ``HSIC_1 = [tr(A B) + (1^T A 1)(1^T B 1) / ((n-1)(n-2)) - 2/(n-2) 1^T A B 1] / (n (n-3))``.
  For symmetric K, L with A = K - diag K, B = L - diag L: ``tr(A B) = sum(K o L) - sum_i K_ii L_ii``,
  ``1^T A 1 = 1^T K 1 - tr K`` and ``1^T A B 1 = (R_K - diag K) . (R_L - diag L)``.
* CKA (Kornblith et al. 2019): ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``, NaN where a self
  term is <= 0 (zero variance, or a non-positive unbiased estimate).

Every caller (torch and Triton CKA, the streaming state, CKNNA over neighbour lists) reduces its
data to these sums and calls the functions here; ``fastsim.reference`` keeps the matrix form
(``tr(K H L H)`` with explicit n x n matrices) as the independent oracle.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import warn_degenerate


def biased_terms(sum_products, cross, total_a, total_b, n: int):
    """``tr(K H L H) = (n-1)^2 HSIC_0`` from sum(K o L), R_K . R_L and the totals 1^T K 1, 1^T L 1."""
    return sum_products - (2.0 / n) * cross + total_a * total_b / n**2


def unbiased_terms(trace, total_a, total_b, cross, n: int):
    """``n (n-3) HSIC_1`` from tr(A B), 1^T A 1, 1^T B 1 and 1^T A B 1 of zero-diagonal kernels.

    Works elementwise on tensors (broadcasting) and on Python floats. Any common positive scale
    of the sums carries through to the result."""
    return trace + total_a * total_b / ((n - 1) * (n - 2)) - (2.0 / (n - 2)) * cross


@dataclass
class KernelStats:
    """Sums that determine HSIC of every layer pair; K_a is layer a's kernel, R_a its row sums.

    All float64 on the CPU, scaled by 1/n^2 (matrices) or 1/n (vectors) to stay in range.
    """

    n: int
    S: torch.Tensor  # (L, L) sum_ij K_a[i,j] K_b[i,j]
    P: torch.Tensor  # (L, L) sum_i K_a[i,i] K_b[i,i]
    Q: torch.Tensor  # (L, L) sum_i R_a[i] R_b[i]
    X: torch.Tensor  # (L, L) sum_i R_a[i] K_b[i,i]
    r: torch.Tensor  # (L,) sum_i R_a[i]
    t: torch.Tensor  # (L,) sum_i K_a[i,i]


def stats_from_rows(n: int, S: torch.Tensor, diag: torch.Tensor, R: torch.Tensor) -> KernelStats:
    """KernelStats from sum(K_a o K_b) (L, L), the kernels' diagonals (L, n) and row sums (L, n)."""
    return KernelStats(
        n,
        S.cpu() / n**2,
        (diag @ diag.T).cpu() / n**2,
        (R @ R.T).cpu() / n**2,
        (R @ diag.T).cpu() / n**2,
        R.sum(1).cpu() / n,
        diag.sum(1).cpu() / n,
    )


def hsic_matrix(st: KernelStats, debiased: bool) -> torch.Tensor:
    """(L, L) HSIC of all pairs, each times the same positive factor (which cancels in CKA)."""
    n = st.n
    if not debiased:
        h = biased_terms(st.S, st.Q, st.r[:, None], st.r[None, :], n)
    else:
        rt = st.r - st.t
        h = unbiased_terms(st.S - st.P, rt[:, None], rt[None, :], st.Q - st.X - st.X.T + st.P, n)
    return (h + h.T) / 2  # symmetric in exact arithmetic; make it so after rounding


def normalized(cross: torch.Tensor, self_terms: torch.Tensor) -> torch.Tensor:
    """cross[i, j] / sqrt(self[i] self[j]) (self terms clamped at 0; callers mask the bad ones)."""
    s = self_terms.clamp_min(0)
    return cross / torch.sqrt(torch.outer(s, s))


def cka_from_hsic(h: torch.Tensor, bad_layers: torch.Tensor, debiased: bool) -> torch.Tensor:
    """CKA of all pairs from their HSIC matrix; NaN rows and columns (with a DegenerateWarning)
    for the `bad_layers` and wherever a self term is <= 0. Biased CKA is clamped to [0, 1]
    (a cosine of PSD matrices, up to rounding); the diagonal is exactly 1."""
    self_h = torch.diagonal(h).clone()
    bad = bad_layers | ~(self_h > 0)
    out = normalized(h, self_h)
    if not debiased:
        out = out.clamp(0.0, 1.0)
    out.fill_diagonal_(1.0)
    out[bad, :] = float("nan")
    out[:, bad] = float("nan")
    if bool(bad.any()):
        which = bad.nonzero().flatten().tolist()
        warn_degenerate(
            f"CKA is undefined (NaN) for input(s) {which}: zero variance, a non-positive "
            "self-HSIC estimate, or (RBF) a zero bandwidth"
        )
    return out
