"""HSIC and CKA from a few sums: the one place where the estimators' formulas live.

For n x n kernels K (of layer a) and L (of layer b) with row sums R_K = K 1:

* Biased HSIC (Gretton et al. 2005): ``HSIC_0 = tr(K H L H) / (n-1)^2`` with
  ``tr(K H L H) = sum(K o L) - (2/n) R_K . R_L + (1^T K 1)(1^T L 1) / n^2``.
* Unbiased HSIC (Song et al. 2012), for kernels A, B with zeroed diagonals, n >= 4:
  ``HSIC_1 = [tr(A B) + (1^T A 1)(1^T B 1) / ((n-1)(n-2)) - 2/(n-2) 1^T A B 1] / (n (n-3))``.
  With A = K - diag K and B = L - diag L (symmetric): ``tr(A B) = sum_{i != j} K_ij L_ij``,
  ``1^T A 1`` the sum of A's row sums and ``1^T A B 1`` the dot product of the row sums. The sums
  are kept apart for the diagonal and the off-diagonal part (``KernelStats``), so the unbiased
  estimator never subtracts the diagonal from a sum that contains it.
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
    """Sums that determine HSIC of every layer pair; K_a is layer a's kernel.

    The diagonal and the off-diagonal part of each kernel are kept apart: D_a[i] = K_a[i, i] and
    O_a = K_a - diag(D_a), with row sums R_a = O_a 1. The unbiased estimator reads the off-diagonal
    part only, so it never forms sum(K o L) - sum_i K_ii L_ii (which cancels when the off-diagonal
    entries are small next to the diagonal: RBF kernels with a small sigma, or nearly orthogonal
    samples). Each layer's off-diagonal sums may be stored times a positive factor:
    ``exp(log_scale[a]) * stored`` is the true value (an RBF kernel whose entries would underflow is
    stored relative to its largest off-diagonal entry; the unbiased estimator is bilinear in the
    off-diagonal parts, so the factor cancels in CKA).

    All float64 on the CPU, scaled by 1/n^2 (matrices) or 1/n (vectors) to stay in range.
    """

    n: int
    S: torch.Tensor  # (L, L) sum_{i != j} O_a[i,j] O_b[i,j]
    P: torch.Tensor  # (L, L) sum_i D_a[i] D_b[i]
    Q: torch.Tensor  # (L, L) sum_i R_a[i] R_b[i]
    X: torch.Tensor  # (L, L) sum_i R_a[i] D_b[i]
    r: torch.Tensor  # (L,) sum_i R_a[i]
    t: torch.Tensor  # (L,) sum_i D_a[i]
    log_scale: torch.Tensor | None = None  # (L,) the true off-diagonal sums are exp(log_scale) * stored

    @classmethod
    def from_full(cls, n, S, P, Q, X, r, t) -> KernelStats:
        """From the sums of whole kernels (diagonal included): S = sum(K_a o K_b), row sums
        K 1 in Q = sum R_a R_b, X = sum R_a D_b, r = sum R_a (scaled as above). The off-diagonal
        sums are their differences (which cancel where the diagonal dominates)."""
        return cls(n, S - P, P, Q - X - X.T + P, X - P, r - t, t)

    def factors(self) -> torch.Tensor:
        """(L,) exp(log_scale): the true off-diagonal sums per stored unit (0 where it underflows)."""
        if self.log_scale is None:
            return torch.ones_like(self.t)
        return torch.exp(self.log_scale)


def stats_from_rows(n: int, S: torch.Tensor, diag: torch.Tensor, R: torch.Tensor) -> KernelStats:
    """KernelStats from sum(K_a o K_b) (L, L), the kernels' diagonals (L, n) and whole row sums (L, n)."""
    return KernelStats.from_full(
        n,
        S.cpu() / n**2,
        (diag @ diag.T).cpu() / n**2,
        (R @ R.T).cpu() / n**2,
        (R @ diag.T).cpu() / n**2,
        R.sum(1).cpu() / n,
        diag.sum(1).cpu() / n,
    )


def stats_from_offdiagonal(n: int, S: torch.Tensor, diag: torch.Tensor, R: torch.Tensor, log_scale=None) -> KernelStats:
    """KernelStats from the off-diagonal pair sums (L, L), the diagonals (L, n) and the
    off-diagonal row sums (L, n), all float64."""
    return KernelStats(
        n,
        S.cpu() / n**2,
        (diag @ diag.T).cpu() / n**2,
        (R @ R.T).cpu() / n**2,
        (R @ diag.T).cpu() / n**2,
        R.sum(1).cpu() / n,
        diag.sum(1).cpu() / n,
        None if log_scale is None else torch.as_tensor(log_scale, dtype=torch.float64).cpu(),
    )


def hsic_matrix(st: KernelStats, debiased: bool) -> torch.Tensor:
    """(L, L) HSIC of all pairs, each times the same positive factor (which cancels in CKA); with
    a ``log_scale``, the unbiased entry (a, b) is also divided by exp(log_scale[a] + log_scale[b])
    (which cancels in CKA as well)."""
    n = st.n
    if debiased:
        # A = O (zero diagonal): tr(A B) = S, 1^T A 1 = r, 1^T A B 1 = R_a . R_b = Q.
        h = unbiased_terms(st.S, st.r[:, None], st.r[None, :], st.Q, n)
    else:
        f = st.factors()
        ff = f[:, None] * f[None, :]
        S = ff * st.S + st.P
        Q = ff * st.Q + f[:, None] * st.X + (f[:, None] * st.X).T + st.P
        r = f * st.r + st.t
        h = biased_terms(S, Q, r[:, None], r[None, :], n)
    return (h + h.T) / 2  # symmetric in exact arithmetic; make it so after rounding


def normalized(cross: torch.Tensor, self_terms: torch.Tensor) -> torch.Tensor:
    """cross[i, j] / sqrt(self[i] self[j]) (self terms clamped at 0; callers mask the bad ones)."""
    s = self_terms.clamp_min(0)
    return cross / torch.sqrt(torch.outer(s, s))


def cka_from_hsic(
    h: torch.Tensor, bad_layers: torch.Tensor, debiased: bool, nonfinite: torch.Tensor | None = None
) -> torch.Tensor:
    """CKA of all pairs from their HSIC matrix; NaN rows and columns (with a DegenerateWarning)
    for the `bad_layers` (zero variance, zero bandwidth), the `nonfinite` ones (NaN or Inf in the
    input, with check_finite=False) and wherever a self term is <= 0. Biased CKA is clamped to
    [0, 1] (a cosine of PSD matrices, up to rounding); the diagonal is exactly 1."""
    self_h = torch.diagonal(h).clone()
    nonfinite = torch.zeros_like(bad_layers) if nonfinite is None else nonfinite.to(bad_layers.device)
    bad = bad_layers | nonfinite | ~(self_h > 0)
    out = normalized(h, self_h)
    if not debiased:
        out = out.clamp(0.0, 1.0)
    out.fill_diagonal_(1.0)
    out[bad, :] = float("nan")
    out[:, bad] = float("nan")
    if bool(nonfinite.any()):
        warn_degenerate(
            f"CKA is undefined (NaN) for input(s) {nonfinite.nonzero().flatten().tolist()}: they contain NaN "
            "or Inf (check_finite=False)"
        )
    rest = bad & ~nonfinite
    if bool(rest.any()):
        which = rest.nonzero().flatten().tolist()
        warn_degenerate(
            f"CKA is undefined (NaN) for input(s) {which}: zero variance (every sample equal), a "
            "non-positive self-HSIC estimate, or (RBF) a zero bandwidth"
        )
    return out
