"""Exact cosine k-nearest neighbours of one representation, and neighbour-list overlaps.

Neighbours of one representation, in tiles (never the whole n x n similarity):

1. Approximate pass: unit rows in the compute dtype (float32 ones rounded once from float64),
   similarity tiles by matmul under the requested matmul precision, self excluded, the best
   k + margin candidates per row. Only the tiles on and right of the diagonal are computed; each
   serves its rows and, down its columns, its columns' rows (half the matmul). The selection is
   either torch.topk over blocks (``use_native=False``, backend "torch") or the compiled running
   top-k of fastsim._C (``native_candidates``: C++/AVX-512 on the CPU, a warp-ballot CUDA kernel
   on the GPU; ties to the smaller index). ``approximation_bound`` gives tol >=
   |approximate - reference| (float32: about (d + 3) 2**-24, plus the TF32/bf16 operand rounding
   at "high"/"medium"; the derivation is in its docstring).
2. Rows whose k-th approximate similarity beats the (k+1)-th by more than 2 tol are done: no
   sample outside the top k can reach one inside, whatever the rounding.
3. The other rows (near-ties, duplicates) are re-ranked on the float64 distance of the unit rows,
   delta = |u_i - u_j|^2 = 2 (1 - cos) (``unit_distances``), which has none of the cancellation of
   cos near 1: with a feature offset of 1e8, 1 - cos is ~1e-16 for every pair, below float64's
   resolution of cos but well within its resolution of delta. Its rounding error has a proven
   bound (``distance_bound``); where the bounds cannot separate the k-th from the next candidates
   (exact ties, duplicates, near-ties below float64 resolution) those candidates are ordered in
   exact integer arithmetic (``fastsim.core.numpy_reference.exact_order``).
4. Completeness (precision "highest" only): a re-ranked row's k-th distance (plus its bound) must
   stay below that of every non-candidate, whose exact similarity is at most the last candidate's
   approximate value plus tol. Rows that cannot prove it are searched again with 4x as many
   candidates, up to all n - 1 (then trivially complete).

So at "highest" the neighbour sets are those of the exact cosine similarities of the input values
(ties broken by the smaller index), as in ``fastsim.reference``. At "high"/"medium" step 4 is
skipped: a neighbour is missed only if reduced precision pushed it out of the k + margin
candidates (with float32 inputs at an offset of 1e7 every candidate ties; use "highest" there).
A zero vector has cosine 0 with every sample: its neighbours are the k smallest other indices.
"""

from __future__ import annotations

import concurrent.futures
import math

import numpy as np
import torch

from .. import native
from . import budget, threads
from .numpy_reference import exact_order
from .precision import compute_dtype, matmul_precision
from .scaling import row_scales, times_pow2


def best_k(vals: torch.Tensor, idx: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the k entries with the largest value, ties to the smaller index, in that order."""
    vals, idx = native.sort_best_first(vals, idx)
    return vals[:, :k], idx[:, :k]


def unit_rows64(x: torch.Tensor, scales: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """float64 unit rows of samples `idx` (any shape): the row times its power of two (exact),
    divided by the norm from ``row_scales``; zero rows stay zero."""
    sc = scales[idx]
    y = times_pow2(x[idx].double(), sc[..., 0])
    norm = sc[..., 1]
    return y / torch.where(norm > 0, norm, torch.ones_like(norm))[..., None]


def distance_bound(delta: torch.Tensor, d: int) -> torch.Tensor:
    """``fastsim.core.numpy_reference.unit_distance_bound`` for tensors: |computed - exact| of
    delta = |u_i - u_j|^2 from ``unit_rows64``, increasing in delta."""
    u = 2.0**-53
    delta = delta.clamp(min=0.0)
    return 1.1 * ((3 * d + 10) * u * delta + 4 * u * delta.sqrt() + ((4 * (d + 4) + 2) * u) ** 2) + 4 * d * 2.0**-1074


def unit_distances(x: torch.Tensor, scales: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor):
    """float64 (r, c) delta = |u_i - u_j|^2 = 2 (1 - cos) of samples rows[i] and cols[i, j], and
    its error bound; 2 (cosine 0) with bound 0 where either vector is zero, +inf for j == i.

    The distance of the unit rows has none of the cancellation of cos = u_i . u_j near 1 (with a
    feature offset of 1e8, 1 - cos is 1e-16 for every pair: below float64's resolution of cos,
    well within its resolution of delta)."""
    ui = unit_rows64(x, scales, rows)
    delta = unit_rows64(x, scales, cols).sub_(ui[:, None, :]).square_().sum(-1)
    bound = distance_bound(delta, x.shape[1])
    zero = (scales[rows][:, None, 1] == 0) | (scales[cols][..., 1] == 0)
    delta = delta.masked_fill_(zero, 2.0)
    bound = bound.masked_fill_(zero, 0.0)
    self_ = cols == rows[:, None]
    return delta.masked_fill_(self_, float("inf")), bound.masked_fill_(self_, 0.0)


#: kept beyond k per row while streaming the re-rank: enough for the rows whose k-th neighbour is
#: not separated from the next few at float64 resolution (else the row is redone in full)
_RERANK_EXTRA = 8


def _exact_top_k(x, scales, rows, cand, k):
    """Exact top-k of each row among its candidate columns: (values, indices, upper), values the
    float64 distances delta (ascending; see ``unit_distances``), upper the largest exact distance
    the k-th neighbour can have (for the completeness check). Streamed over candidate chunks.

    A row whose first k (by delta, ties to the smaller index) are separated from every other
    candidate by the rounding bounds is exact as it stands; the others (duplicates, ties, near-ties
    below float64 resolution) are ordered in exact integer arithmetic over the candidates that may
    belong to the first k (``fastsim.core.numpy_reference.exact_order``)."""
    r, c = cand.shape
    m = min(c, k + _RERANK_EXTRA)
    step = budget.rows_per_chunk(r * x.shape[1] * 8 * 3, c, minimum=min(c, m))
    best_v = best_i = None
    for c0 in range(0, c, step):
        ci = cand[:, c0 : c0 + step]
        delta, _ = unit_distances(x, scales, rows, ci)
        if best_v is not None:
            delta, ci = torch.cat([best_v, delta], 1), torch.cat([best_i, ci], 1)
        neg, best_i = best_k(-delta, ci, m)  # ascending delta, ties to the smaller index
        best_v = -neg
    # the bounds of the kept ones (0 for a zero vector, whose delta 2 is exact)
    zero = (scales[best_i][..., 1] == 0) | (scales[rows][:, None, 1] == 0)
    best_b = distance_bound(best_v, x.shape[1]).masked_fill_(zero, 0.0)
    upper = best_v[:, k - 1] + best_b[:, k - 1]
    maybe = best_v - best_b <= upper[:, None]  # may belong to the first k
    count = maybe.sum(1)
    vals, idx = best_v[:, :k].clone(), best_i[:, :k].clone()
    for p in (count > k).nonzero().flatten().tolist():
        if int(count[p]) < m or m == c:
            cols, dl, bd = best_i[p][maybe[p]], best_v[p][maybe[p]], best_b[p][maybe[p]]
        else:  # the window may reach past the kept candidates: all of this row's candidates
            dl, bd = unit_distances(x, scales, rows[p : p + 1], cand[p : p + 1])
            keep = (dl - bd <= upper[p])[0]
            cols, dl, bd = cand[p][keep], dl[0][keep], bd[0][keep]
        order = exact_order(
            x[rows[p]].double().cpu().numpy(), x[cols].double().cpu().numpy(), cols.cpu().numpy(),
            dl.cpu().numpy(), bd.cpu().numpy(),
        )[:k]
        chosen = torch.from_numpy(order).to(idx.device)
        idx[p] = chosen
        pos = (cols[None, :] == chosen[:, None]).float().argmax(1)
        vals[p] = dl[pos]
        upper[p] = (dl[pos] + bd[pos]).max()
    return vals, idx, upper


class _Scores:
    """The approximate pass's operands: tile (I, J) = left(I) @ W[J]^T, symmetric in (I, J).

    plain: W = left = the unit rows u (scores = cos). centered (the unit rows are concentrated
    around their mean m, e.g. a large feature offset or massive activations, where cos is near 1
    for every pair and a float32 matmul cannot tell them apart): with v = f (u - m), f a power of
    two bringing max |v| near 1, W = [v, |v|^2, 1] and left = [v, -1/2, -|v|^2 / 2], so that
    left_i . W_j = v_i . v_j - (|v_i|^2 + |v_j|^2) / 2 = -|v_i - v_j|^2 / 2 = f^2 (cos - 1), resolved
    at the scale of the spread, not of 1. Either way score = f2 (cos - c0)."""

    def __init__(self, W: torch.Tensor, centered: bool, f2: float, tol: float):
        self.W, self.centered, self.f2, self.tol = W, centered, f2, tol
        self.c0 = 1.0 if centered else 0.0

    def left(self, rows) -> torch.Tensor:
        a = self.W[rows]
        if not self.centered:
            return a
        a = a.clone()
        d = a.shape[1] - 2
        a[:, d + 1] = a[:, d] * -0.5
        a[:, d] = -0.5
        return a

    def cos_upper(self, score: torch.Tensor) -> torch.Tensor:
        """float64 upper bound of the exact cosine of a pair whose approximate score is `score`."""
        return (score.double() + self.tol) / self.f2 + self.c0


def _candidates(sc: _Scores, rows: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Approximate top-`count` scores (and indices) of `rows` against all samples, self excluded."""
    sims = sc.left(rows) @ sc.W.T
    sims[torch.arange(rows.numel(), device=rows.device), rows] = float("-inf")
    return torch.topk(sims, count, dim=1, largest=True, sorted=True)


def _symmetric_candidates(sc: _Scores, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Approximate top-`count` (values, indices) of every row, self excluded, from the score
    blocks on and above the diagonal only: block (I, J) serves the rows of I and, transposed, the
    rows of J, so each score is computed once (half the matmul work)."""
    W = sc.W
    n = W.shape[0]
    b = max(1, min(n, int((budget.CHUNK_BYTES / (3 * W.element_size())) ** 0.5)))
    b = min(b, max(512, -(-n // 8)))  # a few block rows, so the whole diagonal blocks waste little
    best_v = torch.full((n, count), float("-inf"), dtype=W.dtype, device=W.device)
    best_i = torch.full((n, count), -1, dtype=torch.int64, device=W.device)

    def merge(rows: slice, sims: torch.Tensor, cols: torch.Tensor, axis: int) -> None:
        # `rows` index the block's axis `axis` (0: its rows; 1: its columns, whose top-k is taken
        # down the block's columns rather than on a transposed copy); `cols` index the other axis.
        other = 1 - axis
        top_v, top_pos = torch.topk(sims, min(count, sims.shape[other]), dim=other, largest=True, sorted=False)
        if axis == 1:
            top_v, top_pos = top_v.T, top_pos.T
        v = torch.cat([best_v[rows], top_v], 1)
        i = torch.cat([best_i[rows], cols[top_pos]], 1)
        v, pos = torch.topk(v, count, dim=1, largest=True, sorted=False)
        best_v[rows], best_i[rows] = v, torch.gather(i, 1, pos)

    starts = list(range(0, n, b))
    for s in starts:
        rows_i = slice(s, min(n, s + b))
        left = sc.left(rows_i)
        for s2 in starts[starts.index(s) :]:
            rows_j = slice(s2, min(n, s2 + b))
            sims = left @ W[rows_j].T
            if s2 == s:
                sims.fill_diagonal_(float("-inf"))
            merge(rows_i, sims, torch.arange(rows_j.start, rows_j.stop, device=W.device), axis=0)
            if s2 != s:
                merge(rows_j, sims, torch.arange(rows_i.start, rows_i.stop, device=W.device), axis=1)
    best_v, order = torch.sort(best_v, dim=1, descending=True)
    return best_v, torch.gather(best_i, 1, order)


def _tile_shape(n: int, itemsize: int, device: torch.device) -> tuple[int, int]:
    """(rows, columns) of the similarity tiles fed to the compiled k-selection.

    Short, wide tiles: the diagonal part of each row block, computed in full, costs n * rows / 2
    extra similarities in all (2 % at n = 50 000 on the CPU), and a wide tile gives the column
    side many independent columns (one GPU thread each) and the GEMM a good shape. On the CPU the
    two tiles in flight (one multiplied, one selected) share the chunk budget."""
    if device.type == "cuda":
        cols = min(n, 65536)
        rows = max(256, min(4096, budget.CHUNK_BYTES // (cols * itemsize)))
    else:  # two tiles in flight (one multiplied, one selected)
        cols = min(n, 8192)
        rows = max(64, min(1024, budget.CHUNK_BYTES // (2 * cols * itemsize)))
    return min(rows, n), cols


def native_candidates(sc: _Scores, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Approximate top-`count` (values, indices) of every row, self excluded, best first (ties to
    the smaller index), by the compiled k-selection of fastsim._C (csrc/topk_*.{cpp,cu}).

    Row block [s, e) meets the columns [s, n) in tiles. A tile's rows take every similarity in it;
    the columns past the row block (c >= e) also take it down the column, so each similarity of a
    pair in different row blocks is computed once and serves both samples (half the matmul).

    On the CPU the tiles are multiplied by NumPy's BLAS (OpenBLAS's sgemm was the faster one on
    the machines measured) into two reused buffers, and each tile's selection runs on one
    helper thread while the next tile is multiplied (both release the GIL): no OpenMP team waits
    at a barrier for threads the OS lent to the GEMM or to other processes, and the selection's
    time hides behind the GEMM. On CUDA both run in order on the current stream."""
    units = sc.W
    n = units.shape[0]
    rows, cols = _tile_shape(n, units.element_size(), units.device)
    vals, idx = native.topk_state(n, count, units.dtype, units.device)
    tiles = [(s, c0) for s in range(0, n, rows) for c0 in range(s, n, cols)]
    if units.device.type != "cpu":
        buf = torch.empty(rows * cols, dtype=units.dtype, device=units.device)
        left, left_s = None, -1
        for s, c0 in tiles:
            e, c1 = min(n, s + rows), min(n, c0 + cols)
            if left_s != s:
                left, left_s = sc.left(slice(s, e)), s
            tile = buf[: (e - s) * (c1 - c0)].view(e - s, c1 - c0)
            torch.matmul(left, units[c0:c1].T, out=tile)
            native.topk_tile(tile, s, c0, vals, idx, col_side_begin=max(0, e - c0))
        native.topk_sort(vals, idx)
        return vals, idx

    u = units.numpy()
    left, left_s = None, -1
    in_worker = threads.workers() == 1 and torch.get_num_threads() == 1
    bufs = [torch.empty(rows * cols, dtype=units.dtype) for _ in range(2)]
    pending: list[concurrent.futures.Future | None] = [None, None]
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastsim-topk") as pool:
        for t, (s, c0) in enumerate(tiles):
            slot = t % 2
            if pending[slot] is not None:
                pending[slot].result()  # that buffer's selection is done; re-raises its error
            e, c1 = min(n, s + rows), min(n, c0 + cols)
            if left_s != s:
                left, left_s = sc.left(slice(s, e)), s
            tile = bufs[slot][: (e - s) * (c1 - c0)].view(e - s, c1 - c0)
            if in_worker:  # one of several layers searched at once: single-threaded torch GEMM
                torch.mm(left, units[c0:c1].T, out=tile)
            else:
                np.matmul(left.numpy(), u[c0:c1].T, out=tile.numpy())
            pending[slot] = pool.submit(native.topk_tile, tile, s, c0, vals, idx, max(0, e - c0), 1)
        for f in pending:
            if f is not None:
                f.result()
    native.topk_sort(vals, idx)
    return vals, idx


def approximation_bound(d: int, dt: torch.dtype, precision: str) -> float:
    """tol >= |approximate - reference| cosine similarity, where "approximate" is a matmul of the
    unit rows from ``fastsim.core.scaling.row_scales`` in `dt` and "reference" is the float64 value of
    ``fastsim.reference`` (or of the exact re-rank).

    float32 (u = 2**-24, u64 = 2**-53): every unit-row component is the exact unit vector's
    component times (1 + r), |r| <= rho = u + 2 (d + 4) u64 (float64 norm and division, one
    rounding to float32), compounded with the TF32 (2**-10) or bf16 (2**-8) operand rounding at
    "high"/"medium". TF32 tensor cores read only the top 10 bits of each operand's mantissa (a
    truncation, not a rounding to nearest), so its relative error is below 2**-10, not 2**-11.
    By Cauchy-Schwarz, perturbing both operands moves the dot product by at most
    (1 + rho)^2 - 1; accumulating d products in float32, in any order, adds at most
    gamma_d (1 + rho)^2 with gamma_d = d u / (1 - d u) (Higham, Thm 3.5 / 3.4 for blocked sums);
    subnormal components add at most d 2**-120; the reference itself is within 2 (d + 4) u64 of
    the true cosine. The sum, times 1.01. About 4.6e-5 at d = 768, a quarter of the older
    blanket 2.2 (d + 3) eps bound, so fewer rows need the float64 re-rank.

    float64 (units from a float64 norm and division): the blanket bound 2.2 (d + 3) 2 eps_64."""
    if dt != torch.float32:
        return 2.2 * (d + 3) * 2 * torch.finfo(torch.float64).eps
    u, u64 = 2.0**-24, 2.0**-53
    operand = {"highest": 0.0, "high": 2.0**-10, "medium": 2.0**-8}[precision]
    rho = (1 + u + 2 * (d + 4) * u64) * (1 + operand) - 1
    grow = (1 + rho) ** 2
    gamma = d * u / (1 - d * u)
    return 1.01 * (gamma * grow + (grow - 1) + 2 * (d + 4) * u64 + d * 2.0**-120)


def centered_bound(d: int, dt: torch.dtype, precision: str, spread_error: float) -> float:
    """tol >= |approximate - exact| score f^2 (cos - 1) of the centered operands (``_Scores``):
    W's entries v' (|v'| <= 1) and |v'|^2 are their float64 values rounded once to `dt` (and to
    TF32/bf16 at "high"/"medium"), relative rho; the d + 2 products of a score sum to at most
    |v'_i| |v'_j| + (|v'_i|^2 + |v'_j|^2) / 2 <= 2 in magnitude, so operand rounding moves a score
    by at most 2 ((1 + rho)^2 - 1) and the accumulation by 2 gamma_{d+2} (1 + rho)^2 (as in
    ``approximation_bound``); the float64 v' are within e' = `spread_error` of f (u - m) exactly
    (unit rows within (d + 6) u64, the subtraction u64), which moves the score by 4 e' + 2 e'^2,
    and |v'|^2 carries (d + 2) u64. The sum times 1.01, plus the subnormal floor."""
    u = 2.0**-24 if dt == torch.float32 else 2.0**-53
    operand = {"highest": 0.0, "high": 2.0**-10, "medium": 2.0**-8}[precision] if dt == torch.float32 else 0.0
    rho = (1 + u) * (1 + operand) - 1
    grow = (1 + rho) ** 2
    gamma = (d + 2) * u / (1 - (d + 2) * u)
    u64 = 2.0**-53
    e = spread_error
    return 1.01 * (2 * gamma * grow + 2 * (grow - 1) + 4 * e + 2 * e * e + (d + 2) * u64 + (d + 2) * 2.0**-120)


def _scores(x: torch.Tensor, scales: torch.Tensor, zero: torch.Tensor, dt: torch.dtype, precision: str) -> _Scores:
    """The approximate pass's operands (``_Scores``): centered where that resolves the cosines
    better than the plain unit rows, i.e. where 2 max |u_i - m|^2 < 1."""
    n, d = x.shape
    live_count = int((~zero).sum())
    step = budget.rows_per_chunk(max(d, 1) * 8 * 4, n)
    spans = [(s, min(n, s + step)) for s in range(0, n, step)]
    m = torch.zeros(d, dtype=torch.float64, device=x.device)
    for s, e in spans:
        m += unit_rows64(x, scales, torch.arange(s, e, device=x.device)).sum(0)  # zero rows add 0
    m /= max(live_count, 1)
    V = 0.0
    for s, e in spans:
        v = unit_rows64(x, scales, torch.arange(s, e, device=x.device)) - m
        v = v[~zero[s:e]]
        if v.shape[0]:
            V = max(V, float(torch.linalg.vector_norm(v, dim=1).max()))
    if live_count == 0 or not 2 * V * V < 1:
        return _Scores(row_scales(x, dt)[0], False, 1.0, approximation_bound(d, dt, precision))
    f = math.ldexp(1.0, -math.frexp(V)[1]) if V > 0 else 1.0  # f V in [1/2, 1)
    W = torch.empty(n, d + 2, dtype=dt, device=x.device)
    for s, e in spans:
        v = (unit_rows64(x, scales, torch.arange(s, e, device=x.device)) - m).mul_(f)
        block = torch.cat([v, v.square().sum(1, keepdim=True), torch.ones_like(v[:, :1])], 1)
        # zero rows: cosine 0 with everything, kept out of every candidate list (score <= -4 < -2)
        block[zero[s:e]] = torch.tensor([0.0] * d + [8.0, 1.0], dtype=torch.float64, device=x.device)
        W[s:e] = block
    return _Scores(W, True, f * f, centered_bound(d, dt, precision, f * (d + 8) * 2.0**-53))


def knn_indices(
    x: torch.Tensor, k: int, *, precision: str, margin: int | None = None, use_native: bool = False
) -> torch.Tensor:
    """int64 (n, k): each sample's k most cosine-similar other samples, most similar first (the
    order of neighbours within rounding of each other follows the approximate values).

    use_native: take the approximate candidates from the compiled k-selection in fastsim._C
    (C++ on the CPU, CUDA on the GPU) instead of torch.topk over the blocks; the exactness steps
    after it are the same."""
    n, d = x.shape
    dt = compute_dtype([x])
    margin = max(16, k) if margin is None else margin
    check = precision == "highest"
    scales = row_scales(x, None)[1]
    bad = ~torch.isfinite(scales[:, 1])
    if bool(bad.any()):
        # NaN similarities never enter the compiled heaps (which would keep empty slots) and are
        # the largest values to torch.topk: neither gives a neighbour list, so say so here.
        raise ValueError(
            f"k-nearest neighbours need finite inputs: row {int(bad.nonzero()[0, 0])} contains NaN or Inf "
            "(check_finite=False does not make kNN-based metrics defined on it)"
        )
    out = torch.empty(n, k, dtype=torch.int64, device=x.device)
    # A zero vector has cosine 0 with every sample: its neighbours are the k smallest other indices.
    zero = scales[:, 1] == 0
    if bool(zero.any()):
        zr = zero.nonzero().flatten()
        first = torch.arange(k, device=x.device).expand(zr.numel(), k)
        out[zr] = first + (first >= zr[:, None]).long()  # skip the row itself
    live = (~zero).nonzero().flatten()
    sc = _scores(x, scales, zero, dt, precision)
    tol = sc.tol
    # non-candidates that are zero vectors (cosine 0) sit below every list in the centered scores
    zero_floor = 2.0 if (sc.centered and bool(zero.any())) else math.inf

    def settle(rows: torch.Tensor, approx: torch.Tensor, cand: torch.Tensor, count: int) -> torch.Tensor:
        """Write the rows whose top k is proven by the gap or by the exact re-rank; return the
        rows that must be searched again with more candidates."""
        if count > k:
            # The k-th approximate similarity beats the (k+1)-th by more than twice the bound: no
            # sample outside the top k can reach one inside, so the set is exact.
            clear = approx[:, k - 1].double() - approx[:, k].double() > 2 * tol
        else:  # with k = n - 1 every other sample is a neighbour; else no gap to judge by
            clear = torch.full((rows.numel(),), k == n - 1, dtype=torch.bool, device=x.device)
        out[rows[clear]] = cand[clear, :k]
        rows, approx, cand = rows[~clear], approx[~clear], cand[~clear]
        again = []
        # The re-rank gathers each row's candidates in float64: bound the rows per step by that.
        step = budget.rows_per_chunk(count * (d * 8 * 3 + 32), max(rows.numel(), 1))
        for c0 in range(0, rows.numel(), step):
            r, a, c = rows[c0 : c0 + step], approx[c0 : c0 + step], cand[c0 : c0 + step]
            _, idx, upper = _exact_top_k(x, scales, r, c, k)
            if check and count < n - 1:
                # Completeness: every non-candidate's exact similarity is at most what the last
                # candidate's approximate score plus tol allows, so its distance delta = 2 (1 - cos)
                # is at least 2 (1 - that); the k-th exact distance must stay below that.
                floor = (2.0 * (1.0 - sc.cos_upper(a[:, -1])) * (1 - 2.0**-50)).clamp(max=zero_floor)
                unsafe = upper >= floor
            else:
                unsafe = torch.zeros_like(upper, dtype=torch.bool)
            out[r[~unsafe]] = idx[~unsafe]
            again.append(r[unsafe])
        return torch.cat(again) if again else rows[:0]

    with matmul_precision(precision):
        count = min(n - 1, k + margin)
        if use_native:
            approx, cand = native_candidates(sc, count)
        else:
            approx, cand = _symmetric_candidates(sc, count)
        pending = settle(live, approx[live], cand[live], count)
        del approx, cand
        while pending.numel():  # rare: widened searches, in row blocks of (b x n) similarities
            count = min(n - 1, count * 4)
            step = budget.rows_per_chunk(max(n * sc.W.element_size() * 3, count * (d * 8 * 3 + 32)), pending.numel())
            again = [settle(rows, *_candidates(sc, rows, count), count) for rows in pending.split(step)]
            pending = torch.cat(again)
    return out


def overlap_totals(lists: torch.Tensor, use_native: bool) -> torch.Tensor:
    """int64 (L, L): sum over samples of |N_a(i) & N_b(i)| for every pair of layers."""
    if use_native:
        return native.overlap_all_pairs(lists)
    L, n, k = lists.shape
    totals = torch.zeros(L, L, dtype=torch.int64, device=lists.device)
    for s, e in budget.row_chunks(n, L * k * k):
        chunk = lists[:, s:e]
        for a in range(L):
            for b in range(a, L):
                shared = (chunk[a][:, :, None] == chunk[b][:, None, :]).any(2).sum()
                totals[a, b] += shared
                if a != b:
                    totals[b, a] += shared
    return totals
