"""The sums that HSIC needs (``fastsim.core.hsic.KernelStats``), computed from the data with torch.

* Linear kernel, feature space: the upper-triangle blocks of the stacked cross-covariance
  ``Xc_a^T Xc_b`` (d_a x d_b each), streamed over row chunks; ``sum(K_a o K_b) = |Xc_a^T Xc_b|_F^2``.
* Linear or RBF kernel, sample space: each layer's kernel matrix is produced in (b x b) blocks,
  only the blocks on or above the diagonal (the kernels are symmetric), and reduced at once to
  the pair sums, the row sums and the diagonal. At most one block row per layer is alive at a time.

The data are centered by the layer mean first (``fastsim.core.moments``; HSIC and CKA are
invariant to it, the biased and the unbiased estimator alike) so that large feature means cause
no cancellation. ``linear_uses_sample_space`` picks the cheaper linear path.
"""

from __future__ import annotations

import math

import torch

from . import budget
from .errors import warn_degenerate
from .hsic import KernelStats, stats_from_rows
from .moments import Moments

#: The median heuristic looks at the pairwise distances of at most this many samples, taken
#: evenly spaced through the data (all samples when n is smaller; then it is exact).
MEDIAN_SAMPLE = 2048


def pair_groups(dims: list[int], elem: int) -> list[list[tuple[int, int]]]:
    """The layer pairs (i <= j), in groups whose d_i x d_j accumulators fit the chunk budget
    together (a group holds at least one pair); each group costs one pass over the rows."""
    groups: list[list[tuple[int, int]]] = [[]]
    used = 0
    for i in range(len(dims)):
        for j in range(i, len(dims)):
            size = dims[i] * dims[j] * elem
            if groups[-1] and used + size > budget.CHUNK_BYTES:
                groups.append([])
                used = 0
            groups[-1].append((i, j))
            used += size
    return groups


def linear_uses_sample_space(n: int, dims: list[int]) -> bool:
    """Pick the cheaper of the two linear-CKA paths by multiply-adds (both exploit symmetry)."""
    L, D = len(dims), sum(dims)
    feature = n * (D * D + sum(d * d for d in dims)) / 2
    sample = n * n * (D + L * L) / 2
    return sample < feature


def linear_feature_stats(layers: list[torch.Tensor], mom: Moments, dt: torch.dtype) -> KernelStats:
    """KernelStats of the linear kernels from the cross-covariance blocks (feature space)."""
    n, L = layers[0].shape[0], len(layers)
    dev = layers[0].device
    dims = [x.shape[1] for x in layers]
    elem = torch.finfo(dt).bits // 8
    P, Q, X = (torch.zeros(L, L, dtype=torch.float64, device=dev) for _ in range(3))
    t, r = (torch.zeros(L, dtype=torch.float64, device=dev) for _ in range(2))
    S = torch.zeros(L, L, dtype=torch.float64)
    for g, group in enumerate(pair_groups(dims, elem)):
        acc = {pair: torch.zeros(dims[pair[0]], dims[pair[1]], dtype=dt, device=dev) for pair in group}
        needed = sorted({l for pair in group for l in pair} | (set(range(L)) if g == 0 else set()))
        for s, e in budget.row_chunks(n, 2 * sum(dims[l] for l in needed) * elem):
            Z = {l: mom.chunk(l, layers[l], s, e) for l in needed}
            if g == 0:  # the per-sample sums need one pass only
                diag = torch.stack([Z[l].square().sum(1) for l in range(L)], 1).double()  # (c, L): |xc_i|^2
                rows = torch.stack([mom.row_sums(l, Z[l]) for l in range(L)], 1)  # (c, L): K 1
                P += diag.T @ diag
                Q += rows.T @ rows
                X += rows.T @ diag
                t += diag.sum(0)
                r += rows.sum(0)
            for (i, j), a in acc.items():
                a.addmm_(Z[i].T, Z[j])
        for (i, j), a in acc.items():
            S[i, j] = S[j, i] = (a / n).square().sum(dtype=torch.float64).cpu()
        del acc
    return KernelStats(n, S, P.cpu() / n**2, Q.cpu() / n**2, X.cpu() / n**2, r.cpu() / n, t.cpu() / n)


def kernel_block(out, xi, xj, ni, nj, kernel: str, sigma: float, shifted: bool, same: bool) -> None:
    """Write one (b_i x b_j) block of a layer's kernel matrix into `out`.

    RBF with `shifted`: exp(.) - 1 (by expm1) instead of exp(.). Adding a constant to every
    entry of K leaves both HSIC estimators unchanged, and when sigma is large next to the
    distances the entries sit near 1, where the centering sums would cancel in float32; shifted,
    they sit near 0 with full relative precision.
    """
    torch.mm(xi, xj.T, out=out)
    if kernel == "linear":
        return
    # |x|^2 + |y|^2 - 2 x.y, clamped at 0, then exp(-d2 / (2 sigma^2)), all in place.
    out.mul_(-2.0).add_(ni[:, None]).add_(nj[None, :]).clamp_(min=0.0)
    if same:
        out.fill_diagonal_(0.0)
    out.mul_(-0.5 / sigma**2)
    out.expm1_() if shifted else out.exp_()


def sample_stats(
    layers: list[torch.Tensor],
    mom: Moments,
    dt: torch.dtype,
    kernel: str,
    sigmas: list[float],
    shifted: list[bool] | None = None,
) -> KernelStats:
    """KernelStats from each layer's kernel blocks (linear or RBF), made on the fly."""
    n, L = layers[0].shape[0], len(layers)
    dev = layers[0].device
    elem = torch.finfo(dt).bits // 8
    # Block edge b: L kernel blocks of b x b within the chunk budget, and at least ~8 block rows
    # (down to b = 512), since the diagonal blocks are computed whole: with B block rows the
    # work is (B + 1) / B times the upper triangle's.
    b = int(math.sqrt(budget.CHUNK_BYTES / (L * elem)))
    b = min(b, max(512, -(-n // 8)))
    b = max(1, min(n, b, budget.rows_per_chunk(4 * sum(x.shape[1] for x in layers) * elem, n)))
    starts = list(range(0, n, b))
    S = torch.zeros(L, L, dtype=torch.float64, device=dev)
    diag = torch.empty(L, n, dtype=torch.float64, device=dev)
    R = torch.zeros(L, n, dtype=torch.float64, device=dev)
    shifted = shifted or [False] * L
    rbf_diag = torch.tensor([0.0 if s else 1.0 for s in shifted], dtype=torch.float64, device=dev)

    def load(s: int):
        e = min(n, s + b)
        xs = [mom.chunk(l, x, s, e) for l, x in enumerate(layers)]
        return xs, [x.square().sum(1) for x in xs], e

    for s in starts:
        xi, ni, e = load(s)
        if kernel == "rbf":
            diag[:, s:e] = rbf_diag[:, None]
        else:
            diag[:, s:e] = torch.stack(ni).double()
            R[:, s:e] = torch.stack([mom.row_sums(l, z) for l, z in enumerate(xi)])
        for s2 in starts[starts.index(s) :]:
            same = s2 == s
            xj, nj, e2 = (xi, ni, e) if same else load(s2)
            K = torch.empty(L, e - s, e2 - s2, dtype=dt, device=dev)
            for l in range(L):
                kernel_block(K[l], xi[l], xj[l], ni[l], nj[l], kernel, sigmas[l], shifted[l], same)
            flat = K.reshape(L, -1)
            S += (1.0 if same else 2.0) * (flat @ flat.T).double()
            if kernel == "rbf":
                R[:, s:e] += K.sum(2).double()
                if not same:
                    R[:, s2:e2] += K.sum(1).double()
            del K, flat
    return stats_from_rows(n, S, diag, R)


def linear_stats(layers: list[torch.Tensor], mom: Moments, dt: torch.dtype) -> KernelStats:
    """KernelStats of the linear kernels by the cheaper of the feature- and sample-space paths."""
    if linear_uses_sample_space(layers[0].shape[0], [x.shape[1] for x in layers]):
        return sample_stats(layers, mom, dt, "linear", [1.0] * len(layers))
    return linear_feature_stats(layers, mom, dt)


def median_sigma(x: torch.Tensor, scale: float = 1.0) -> float:
    """Median pairwise Euclidean distance (pairs i < j) of `x * scale` over an evenly spaced
    sample of rows; `scale` (a power of two) keeps float64 squares in range. NaN if not finite."""
    n = x.shape[0]
    if n > MEDIAN_SAMPLE:
        idx = torch.linspace(0, n - 1, MEDIAN_SAMPLE, device=x.device).round().long()
        x = x[idx]
    xs = x.double() * scale
    xs = xs - xs.mean(0)
    sq = xs.square().sum(1)
    m = xs.shape[0]
    iu = torch.triu_indices(m, m, offset=1, device=x.device)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (xs @ xs.T))[iu[0], iu[1]].clamp_min_(0.0)
    # The expansion |x|^2 + |y|^2 - 2 x.y cancels for close pairs (relative error about
    # eps (|x|^2 + |y|^2) / d2): take those pairs' distances from the differences instead.
    close = (d2 <= 1e-4 * (sq[iu[0]] + sq[iu[1]])).nonzero().flatten()
    for chunk in close.split(budget.rows_per_chunk(xs.shape[1] * 8 * 2, max(1, close.numel()))):
        i, j = iu[0][chunk], iu[1][chunk]
        d2[chunk] = (xs[i] - xs[j]).square().sum(1)
    dist = d2.sqrt_()
    if not bool(torch.isfinite(dist).all()):
        return float("nan")
    N = dist.numel()
    lo = torch.kthvalue(dist, (N - 1) // 2 + 1).values
    if N % 2 or int((dist <= lo).sum()) > N // 2:
        return float(lo)  # odd count, or the two middle values are equal
    return float((lo + dist[dist > lo].min()) / 2)


def rbf_bandwidths(layers: list[torch.Tensor], mom: Moments, sigma: float | None):
    """Per layer (sigma on the scaled data, whether to store K - 1, sigma == 0 mask).

    Distances are taken on the scaled data, so a given sigma is scaled alike. K is shifted by -1
    where a typical entry exp(-mean d2 / (2 sigma^2)) is above 1/2; the mean squared distance
    between samples is twice the centered second moment.
    """
    sigmas = [float(sigma) * c if sigma is not None else median_sigma(x, c) for x, c in zip(layers, mom.scale)]
    zero_sigma = torch.tensor([not s > 0 for s in sigmas])
    if bool(zero_sigma.any()) and sigma is None:
        warn_degenerate(
            f"the median pairwise distance of input(s) {zero_sigma.nonzero().flatten().tolist()} is 0 "
            "(over half the samples coincide): RBF CKA is NaN there; pass sigma explicitly"
        )
    safe = [s if s > 0 else 1.0 for s in sigmas]
    shifted = [math.exp(-float(t) / s**2) > 0.5 for t, s in zip(mom.centered, safe)]
    return safe, shifted, zero_sigma
