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
from dataclasses import dataclass

import torch

from . import budget, threads
from .errors import warn_degenerate
from .hsic import KernelStats, stats_from_offdiagonal
from .moments import Moments
from .scaling import scale_halves

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
    """KernelStats of the linear kernels from the cross-covariance blocks (feature space). On the
    CPU the layers' chunks and the pairs' block updates are tasks of a worker pool."""
    n, L = layers[0].shape[0], len(layers)
    dev = layers[0].device
    dims = [x.shape[1] for x in layers]
    elem = torch.finfo(dt).bits // 8
    P, Q, X = (torch.zeros(L, L, dtype=torch.float64, device=dev) for _ in range(3))
    t, r = (torch.zeros(L, dtype=torch.float64, device=dev) for _ in range(2))
    S = torch.zeros(L, L, dtype=torch.float64)
    def load(l: int, s: int, e: int, first: bool):
        z = mom.chunk(l, layers[l], s, e)
        if not first:
            return z, None, None
        return z, torch.linalg.vecdot(z, z).double(), mom.row_sums(l, z)  # |xc_i|^2, K 1

    def update(a: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor) -> None:
        a.addmm_(zi.T, zj)

    with threads.pool(dev) as pmap:
        for g, group in enumerate(pair_groups(dims, elem)):
            acc = {pair: torch.zeros(dims[pair[0]], dims[pair[1]], dtype=dt, device=dev) for pair in group}
            needed = sorted({l for pair in group for l in pair} | (set(range(L)) if g == 0 else set()))
            for s, e in budget.row_chunks(n, 2 * sum(dims[l] for l in needed) * elem):
                loaded = dict(zip(needed, pmap(lambda l, s=s, e=e, g=g: load(l, s, e, g == 0), needed)))
                if g == 0:  # the per-sample sums need one pass only
                    diag = torch.stack([loaded[l][1] for l in range(L)], 1)  # (c, L)
                    rows = torch.stack([loaded[l][2] for l in range(L)], 1)  # (c, L)
                    P += diag.T @ diag
                    Q += rows.T @ rows
                    X += rows.T @ diag
                    t += diag.sum(0)
                    r += rows.sum(0)
                jobs = [(acc[(i, j)], loaded[i][0], loaded[j][0]) for i, j in group]
                list(pmap(lambda job: update(*job), jobs))
                del loaded, jobs
            norms = pmap(lambda a: (a / n).square().sum(dtype=torch.float64).cpu(), [acc[pair] for pair in group])
            for (i, j), v in zip(group, norms):
                S[i, j] = S[j, i] = v
            del acc
    return KernelStats.from_full(n, S, P.cpu() / n**2, Q.cpu() / n**2, X.cpu() / n**2, r.cpu() / n, t.cpu() / n)


def _block_edge(n: int, L: int, elem: int, width: int, tasks: int = 1) -> int:
    """Block edge b: L kernel blocks of b x b for each of `tasks` concurrent tasks within the chunk
    budget, and at least ~8 block rows (down to b = 512), since the diagonal blocks are computed
    whole: with B block rows the work is (B + 1) / B times the upper triangle's."""
    b = int(math.sqrt(budget.CHUNK_BYTES / (tasks * L * elem)))
    b = min(b, max(512, -(-n // 8)))
    return max(1, min(n, b, budget.rows_per_chunk(4 * tasks * width * elem, n)))


class _Loader:
    """Rows [s, e) of every layer, scaled and centered (``Moments.chunk``), with their squared
    norms in float64. Layers of one width are handled as one (L, b, d) stack (a few large
    operations instead of a few per layer)."""

    def __init__(self, layers: list[torch.Tensor], mom: Moments):
        self.layers, self.mom = layers, mom
        self.stacked = len({x.shape[1] for x in layers}) == 1 and len({x.dtype for x in layers}) == 1
        if self.stacked:
            dev, dt = layers[0].device, mom.dtype
            halves = [scale_halves(c) for c in mom.scale]
            self.first = torch.tensor([h[0] for h in halves], dtype=dt, device=dev)[:, None, None]
            self.second = torch.tensor([h[1] for h in halves], dtype=dt, device=dev)[:, None, None]
            self.mean = torch.stack(mom.mean)[:, None, :]

    def __call__(self, s: int, e: int, name: str = "z"):
        """(chunks, float64 squared norms (L, e - s)); chunks one (L, e - s, d) tensor (in the
        task's reusable buffer `name`) or a list."""
        if self.stacked:
            x0 = self.layers[0]
            z = threads.buffer(name, (len(self.layers), e - s, x0.shape[1]), self.mom.dtype, x0.device)
            for l, x in enumerate(self.layers):
                z[l].copy_(x[s:e])
            z = z.mul_(self.first).mul_(self.second).sub_(self.mean)
            return z, torch.linalg.vecdot(z, z).double()
        zs = []
        for l, x in enumerate(self.layers):
            first, second = scale_halves(self.mom.scale[l])  # as Moments.chunk, in a reused buffer
            z = threads.buffer(f"{name}{l}", (e - s, x.shape[1]), self.mom.dtype, x.device).copy_(x[s:e])
            zs.append(z.mul_(first).mul_(second).sub_(self.mom.mean[l]))
        return zs, torch.stack([torch.linalg.vecdot(z, z) for z in zs]).double()


def _pair_blocks(n: int, b: int):
    """(s, e, s2, e2) of the kernel blocks on and above the diagonal, block row by block row."""
    starts = list(range(0, n, b))
    for i, s in enumerate(starts):
        for s2 in starts[i:]:
            yield s, min(n, s + b), s2, min(n, s2 + b)


def _gram(out: torch.Tensor, zi, zj) -> torch.Tensor:
    """out[l] = zi[l] zj[l]^T for every layer (one batched matmul when stacked)."""
    if isinstance(zi, torch.Tensor):
        return torch.bmm(zi, zj.transpose(1, 2), out=out)
    for l, (a, c) in enumerate(zip(zi, zj)):
        torch.mm(a, c.T, out=out[l])
    return out


@dataclass
class RBFPlan:
    """How each layer's RBF kernel is represented in the blocks (``rbf_plan``): the one decision,
    read by the torch blocks here and by the Triton kernel tiles (``kernel_sums_triton``).

    coef: -1 / (2 sigma^2) per layer; shifted: store K - 1 = expm1(.) (sigma large next to the
    distances: entries near 1, whose centering would cancel); else exp(coef (d2 - offset)), the
    kernel divided by exp(coef offset), so that its largest off-diagonal entry is about 1 even where
    exp(coef d2) underflows (sigma small next to the distances; the unbiased estimator is bilinear
    in the off-diagonal entries, so the factor cancels; the biased one gets it back)."""

    coef: torch.Tensor  # (L,) float64
    shifted: torch.Tensor  # (L,) bool
    offset: torch.Tensor  # (L,) float64 squared distance subtracted before exp (0 for shifted)
    sigma: torch.Tensor | None = None  # (L,) float64, on the scaled data: coef = -1 / (2 sigma^2)

    def log_scale(self) -> torch.Tensor:
        return self.coef * self.offset


def _rbf_block(K: torch.Tensor, d2_of, plan: RBFPlan, same: bool) -> None:
    """K (L, bi, bj) holds the Gram blocks x_i . x_j; turn them into the planned kernel entries."""
    L = K.shape[0]
    sq_i, sq_j = d2_of
    # coef (d2 - offset) with d2 = |x|^2 + |y|^2 - 2 x.y, in place, all layers at once; d2 is
    # clamped at the offset (the smallest squared distance, 0 if none), below which it is rounding.
    coef = plan.coef.to(K.dtype)[:, None, None]
    offset = plan.offset.to(K.dtype)[:, None, None]
    K.mul_(-2.0).add_(sq_i.to(K.dtype)[:, :, None]).add_(sq_j.to(K.dtype)[:, None, :])
    K.clamp_(min=offset).sub_(offset).mul_(coef)
    if same:
        K.diagonal(dim1=1, dim2=2).zero_()
    shifted = plan.shifted.tolist()
    if all(shifted):
        K.expm1_()
    elif not any(shifted):
        K.exp_()
    else:
        for l in range(L):
            K[l].expm1_() if shifted[l] else K[l].exp_()
    if same:  # the pair sums are of the off-diagonal entries; the diagonal enters separately
        K.diagonal(dim1=1, dim2=2).zero_()


def sample_stats(
    layers: list[torch.Tensor], mom: Moments, dt: torch.dtype, kernel: str, plan: RBFPlan | None = None
) -> KernelStats:
    """KernelStats from each layer's kernel blocks (linear, or RBF as `plan` says), made on the fly
    in dtype `dt` (the dtype of ``mom``).

    Only the blocks on and above the diagonal are formed; on the diagonal blocks the diagonal is
    zeroed before the pair sums, so the sums are of the off-diagonal entries (``KernelStats``), and
    the diagonal (|x_i|^2, or the RBF's 1) enters separately, in float64. On the CPU each block
    is one task of a worker pool (``fastsim.core.threads``)."""
    n, L = layers[0].shape[0], len(layers)
    dev = layers[0].device
    elem = torch.finfo(dt).bits // 8
    load = _Loader(layers, mom)
    S = torch.zeros(L, L, dtype=torch.float64, device=dev)
    R = torch.zeros(L, n, dtype=torch.float64, device=dev)  # off-diagonal row sums
    diag = torch.empty(L, n, dtype=torch.float64, device=dev)

    def block(pair):
        s, e, s2, e2 = pair
        same = s2 == s
        zi, ni = load(s, e, "zi")
        zj, nj = (zi, ni) if same else load(s2, e2, "zj")
        K = threads.buffer("K", (L, e - s, e2 - s2), dt, dev)
        _gram(K, zi, zj)
        extra = None
        if kernel == "rbf":
            _rbf_block(K, (ni, nj), plan, same)
        elif same:
            K.diagonal(dim1=1, dim2=2).zero_()
            # K 1 = z_i . (sum_j z_j) (the residual of the rounded mean), less the diagonal
            zl = zi if isinstance(zi, list) else list(zi)
            extra = ni, torch.stack([mom.row_sums(l, z) for l, z in enumerate(zl)]) - ni
        # The pair sums run over b^2 entries: in float32 their rounding (amplified by the centering,
        # which cancels most of them) cost up to 1e-3 in RBF CKA; so they are always float64.
        flat = K.view(L, -1)
        if flat.dtype != torch.float64:
            flat = threads.buffer("K64", flat.shape, torch.float64, dev).copy_(flat)
        part = (flat @ flat.T) * (1.0 if same else 2.0)
        rows = cols = None
        if kernel == "rbf":
            rows = K.sum(2, dtype=torch.float64)
            cols = None if same else K.sum(1, dtype=torch.float64)
        return pair, part, rows, cols, extra

    with threads.pool(dev) as pmap:
        b = _block_edge(n, L, elem, max(x.shape[1] for x in layers) * L, threads.workers())
        for (s, e, s2, e2), part, rows, cols, extra in pmap(block, list(_pair_blocks(n, b))):
            S += part
            if rows is not None:
                R[:, s:e] += rows
            if cols is not None:
                R[:, s2:e2] += cols
            if extra is not None:
                diag[:, s:e], R[:, s:e] = extra
    if kernel == "rbf":
        diag[:] = (~plan.shifted).double().to(dev)[:, None]
    return stats_from_offdiagonal(n, S, diag, R, None if plan is None else plan.log_scale())


def min_sq_distances(layers: list[torch.Tensor], mom: Moments, dt: torch.dtype, which: list[int]) -> torch.Tensor:
    """(len(which),) float64: the smallest squared distance between two different samples of each
    listed layer (scaled, centered data; one pass over the Gram blocks of those layers)."""
    sub = [layers[l] for l in which]
    m = Moments(
        [mom.scale[l] for l in which], [mom.mean[l] for l in which], mom.centered[which], mom.raw[which],
        [mom.residual[l] for l in which], mom.dtype, mom.constant[which], mom.nonfinite[which],
    )
    n, L = sub[0].shape[0], len(sub)
    dev = sub[0].device
    load = _Loader(sub, m)

    def block(pair):
        s, e, s2, e2 = pair
        same = s2 == s
        zi, ni = load(s, e, "zi")
        zj, nj = (zi, ni) if same else load(s2, e2, "zj")
        K = threads.buffer("K", (L, e - s, e2 - s2), dt, dev)
        _gram(K, zi, zj)
        K.mul_(-2.0).add_(ni.to(dt)[:, :, None]).add_(nj.to(dt)[:, None, :]).clamp_(min=0.0)
        if same:
            K.diagonal(dim1=1, dim2=2).fill_(math.inf)
        return K.view(L, -1).amin(1).double()

    best = torch.full((L,), math.inf, dtype=torch.float64, device=dev)
    with threads.pool(dev) as pmap:
        b = _block_edge(n, L, torch.finfo(dt).bits // 8, max(x.shape[1] for x in sub) * L, threads.workers())
        for part in pmap(block, list(_pair_blocks(n, b))):
            best = torch.minimum(best, part)
    return best.cpu()


def rbf_plan(
    layers: list[torch.Tensor], mom: Moments, dt: torch.dtype, sigmas: list[float], shifted: list[bool]
) -> RBFPlan:
    """The representation of each layer's RBF kernel (``RBFPlan``), chosen by the data.

    K - 1 where a typical entry exp(-mean d2 / (2 sigma^2)) is above 1/2 (``rbf_bandwidths``), else
    K itself; and for those, if the nearest two samples' entry exp(-min d2 / (2 sigma^2)) would be
    so small that products of entries underflow in `dt`, the kernel is stored relative to that
    entry (the minimum is found exactly by one more pass over the Gram blocks of those layers)."""
    coef = torch.tensor([-0.5 / s / s for s in sigmas], dtype=torch.float64)  # s**2 may overflow
    flags = torch.tensor(shifted, dtype=torch.bool)
    offset = torch.zeros(len(sigmas), dtype=torch.float64)
    # A lower bound of the smallest squared distance of each layer: 0 (no information) unless the
    # typical squared distance, 2 x the centered second moment, is far out of range.
    limit = {torch.float64: 150.0, torch.float32: 20.0}.get(dt, 20.0)
    typical = -coef * 2 * mom.centered
    candidates = [l for l in range(len(sigmas)) if not shifted[l] and float(typical[l]) > limit]
    if candidates:
        found = min_sq_distances(layers, mom, dt, candidates)
        for l, m in zip(candidates, found.tolist()):
            if -float(coef[l]) * m > limit and math.isfinite(m):
                offset[l] = m
    return RBFPlan(coef, flags, offset, torch.tensor([float(s) for s in sigmas], dtype=torch.float64))


def linear_stats(layers: list[torch.Tensor], mom: Moments, dt: torch.dtype) -> KernelStats:
    """KernelStats of the linear kernels by the cheaper of the feature- and sample-space paths."""
    if linear_uses_sample_space(layers[0].shape[0], [x.shape[1] for x in layers]):
        return sample_stats(layers, mom, dt, "linear")
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
    if sigma is not None:
        sigmas = [float(sigma) * c for c in mom.scale]
    else:
        with threads.pool(layers[0].device) as pmap:
            sigmas = list(pmap(lambda xc: median_sigma(*xc), list(zip(layers, mom.scale))))
    zero_sigma = torch.tensor([not s > 0 for s in sigmas])
    if bool(zero_sigma.any()) and sigma is None:
        warn_degenerate(
            f"the median pairwise distance of input(s) {zero_sigma.nonzero().flatten().tolist()} is 0 "
            "(over half the samples coincide): RBF CKA is NaN there; pass sigma explicitly"
        )
    safe = [s if s > 0 else 1.0 for s in sigmas]
    shifted = [math.exp(-(float(t) / s) / s) > 0.5 for t, s in zip(mom.centered, safe)]
    return safe, shifted, zero_sigma
