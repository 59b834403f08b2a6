"""Exact cosine k-nearest neighbours and mutual-kNN alignment, torch backend.

Neighbours of one representation, in row blocks (never the whole n x n similarity):

1. Approximate pass: unit rows in the compute dtype, a (b x n) block of similarities by matmul
   (under the requested matmul precision), self set to -inf, ``topk`` of k + margin candidates.
   ``approximation_bound`` gives tol >= |approximate - exact| (float32: 2.2 (d + 3) eps, plus the
   TF32/bf16 operand rounding at "high"/"medium").
2. Rows whose k-th approximate similarity beats the (k+1)-th by more than 2 tol are done: no
   sample outside the top k can reach one inside, whatever the rounding.
3. The other rows (near-ties, duplicates) are re-ranked exactly: candidates' similarities
   recomputed in float64 from the input values, rows scaled by a power of two as in
   ``fastsim.reference`` (so duplicate rows get bit-identical similarities), ordered by
   (similarity desc, index asc), the first k kept.
4. Completeness (precision "highest" only): a re-ranked row's k-th exact similarity must beat
   every non-candidate, whose exact similarity is at most the last candidate's approximate value
   plus tol. Rows that cannot prove it are searched again with 4x as many candidates, up to all
   n - 1 (then trivially complete).

So at "highest" the neighbour sets equal the float64 definition in ``fastsim.reference`` (ties
broken by the smaller index). At "high"/"medium" step 4 is skipped: a neighbour is missed only if
reduced precision pushed it out of the k + margin candidates.
"""

from __future__ import annotations

import torch

from .. import native, options
from .torch_cosine import unit_rows
from .torch_moments import pow2_exponents, times_pow2


def _row_scales64(x: torch.Tensor) -> torch.Tensor:
    """float64 (n, 2): per row the exponent of a power of two that brings its peak near 1, and the
    norm of the row times it. The scaling is exact, so similarities (y_i . y_j) / (|y_i| |y_j|) of the scaled rows y
    are what fastsim.reference computes, equal vectors give bit-identical similarities, and squares
    cannot underflow."""
    out = torch.empty(x.shape[0], 2, dtype=torch.float64, device=x.device)
    for s, e in options.row_chunks(x.shape[0], x.shape[1] * 8):
        c = x[s:e].double()
        out[s:e, 0] = -pow2_exponents(c.abs().amax(1)).double()
        out[s:e, 1] = times_pow2(c, out[s:e, 0]).square().sum(1).sqrt()
    return out


def _scaled(x: torch.Tensor, scales: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return times_pow2(x[idx].double(), scales[idx][..., 0])


def _exact_sims(x: torch.Tensor, scales: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """float64 (r, c) cosine similarities of rows[i] with cols[i, j]; a zero vector gives 0."""
    if x.dtype == torch.float64:
        dots = _scaled(x, scales, cols).mul_(_scaled(x, scales, rows)[:, None, :]).sum(-1)
    else:
        # Products of float32 (or narrower) values are exact in float64 and can neither over- nor
        # underflow, so the power-of-two row scaling can be applied to the dot instead: the same
        # value, without scaling the gathered rows.
        dots = x[cols].double().mul_(x[rows].double()[:, None, :]).sum(-1)
        power = scales[rows][:, None, 0] + scales[cols][..., 0]
        half = torch.floor(power / 2)
        dots = dots * torch.exp2(half) * torch.exp2(power - half)
    den = scales[rows][:, None, 1] * scales[cols][..., 1]
    return torch.where(den > 0, dots / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))


def _best_k(vals: torch.Tensor, idx: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the k entries with the largest value, ties to the smaller index, in that order."""
    idx, perm = torch.sort(idx, dim=1)
    vals = torch.gather(vals, 1, perm)
    vals, perm = torch.sort(vals, dim=1, descending=True, stable=True)
    return vals[:, :k], torch.gather(idx, 1, perm[:, :k])


def _exact_top_k(x, scales, rows, cand, k):
    """Exact top-k of each row among its candidate columns, streamed over candidate chunks."""
    r, c = cand.shape
    step = options.rows_per_chunk(r * x.shape[1] * 8 * 3, c, minimum=min(c, k))
    best_v = best_i = None
    for c0 in range(0, c, step):
        ci = cand[:, c0 : c0 + step]
        v = _exact_sims(x, scales, rows, ci)
        v = v.masked_fill(ci == rows[:, None], float("-inf"))
        if best_v is not None:
            v, ci = torch.cat([best_v, v], 1), torch.cat([best_i, ci], 1)
        best_v, best_i = _best_k(v, ci, k)
    return best_v, best_i


def _unit_rows(x: torch.Tensor, dt: torch.dtype) -> torch.Tensor:
    out = torch.empty(x.shape, dtype=dt, device=x.device)
    for s, e in options.row_chunks(x.shape[0], x.shape[1] * 8):
        out[s:e] = unit_rows(x[s:e], dt)[0]
    return out


def _candidates(units: torch.Tensor, rows: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Approximate top-`count` similarities (and indices) of `rows` against all samples, self excluded."""
    sims = units[rows] @ units.T
    sims[torch.arange(rows.numel(), device=rows.device), rows] = float("-inf")
    return torch.topk(sims, count, dim=1, largest=True, sorted=True)


def _symmetric_candidates(units: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Approximate top-`count` (values, indices) of every row, self excluded, from the similarity
    blocks on and above the diagonal only: block (I, J) serves the rows of I and, transposed, the
    rows of J, so each similarity is computed once (half the matmul work)."""
    n = units.shape[0]
    b = max(1, min(n, int((options.CHUNK_BYTES / (3 * units.element_size())) ** 0.5)))
    b = min(b, max(512, -(-n // 8)))  # a few block rows, so the whole diagonal blocks waste little
    best_v = torch.full((n, count), float("-inf"), dtype=units.dtype, device=units.device)
    best_i = torch.full((n, count), -1, dtype=torch.int64, device=units.device)

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
        for s2 in starts[starts.index(s) :]:
            rows_j = slice(s2, min(n, s2 + b))
            sims = units[rows_i] @ units[rows_j].T
            if s2 == s:
                sims.fill_diagonal_(float("-inf"))
            merge(rows_i, sims, torch.arange(rows_j.start, rows_j.stop, device=units.device), axis=0)
            if s2 != s:
                merge(rows_j, sims, torch.arange(rows_i.start, rows_i.stop, device=units.device), axis=1)
    best_v, order = torch.sort(best_v, dim=1, descending=True)
    return best_v, torch.gather(best_i, 1, order)


def approximation_bound(d: int, dt: torch.dtype, precision: str) -> float:
    """Bound on |approximate - exact| cosine similarity: accumulation of d products in `dt` by
    the matmul pass and in float64 by the exact recomputation, plus, for float32 at
    "high"/"medium", the TF32/bf16 rounding of both operands."""
    operand = 0.0
    if dt == torch.float32:
        operand = {"highest": 0.0, "high": 2.0**-11, "medium": 2.0**-8}[precision]
    eps = torch.finfo(dt).eps + torch.finfo(torch.float64).eps
    return 2.2 * ((d + 3) * eps + 2 * operand)


def knn_indices(x: torch.Tensor, k: int, *, precision: str, margin: int | None = None) -> torch.Tensor:
    """int64 (n, k): each sample's k most cosine-similar other samples, most similar first (the
    order of neighbours within rounding of each other follows the approximate values)."""
    n, d = x.shape
    dt = options.compute_dtype([x])
    margin = max(16, k) if margin is None else margin
    tol = approximation_bound(d, dt, precision)
    check = precision == "highest"
    units = _unit_rows(x, dt)
    scales = _row_scales64(x)
    out = torch.empty(n, k, dtype=torch.int64, device=x.device)
    # Row blocks for the re-rank, bounded by the gathered float64 candidates and by the (b x n)
    # similarity rows of the rare widened searches.
    bytes_per_row = max(n * units.element_size() * 3, 2 * (k + margin) * d * 8 * 3)
    with options.matmul_precision(precision):
        first_count = min(n - 1, k + margin)
        first_approx, first_cand = _symmetric_candidates(units, first_count)
        for s, e in options.row_chunks(n, bytes_per_row):
            pending = torch.arange(s, e, device=x.device)
            count = first_count
            approx, cand = first_approx[s:e], first_cand[s:e]
            while pending.numel():
                if count != first_count:  # a widened search for the rows that could not prove it
                    approx, cand = _candidates(units, pending, count)
                if count > k:
                    # The k-th approximate similarity beats the (k+1)-th by more than twice the
                    # bound: no sample outside the top k can reach one inside, so the set is exact.
                    clear = approx[:, k - 1].double() - approx[:, k].double() > 2 * tol
                else:  # with k = n - 1 every other sample is a neighbour; else no gap to judge by
                    clear = torch.full((pending.numel(),), k == n - 1, dtype=torch.bool, device=x.device)
                out[pending[clear]] = cand[clear, :k]
                pending, approx, cand = pending[~clear], approx[~clear], cand[~clear]
                if not pending.numel():
                    break
                vals, idx = _exact_top_k(x, scales, pending, cand, k)
                if check and count < n - 1:
                    unsafe = approx[:, -1].double() + tol >= vals[:, -1]
                else:
                    unsafe = torch.zeros_like(vals[:, -1], dtype=torch.bool)
                done = ~unsafe
                out[pending[done]] = idx[done]
                pending = pending[unsafe]
                count = min(n - 1, count * 4)
    return out


def overlap_totals(lists: torch.Tensor, use_native: bool) -> torch.Tensor:
    """int64 (L, L): sum over samples of |N_a(i) & N_b(i)| for every pair of layers."""
    if use_native:
        return native.overlap_all_pairs(lists)
    L, n, k = lists.shape
    totals = torch.zeros(L, L, dtype=torch.int64, device=lists.device)
    for s, e in options.row_chunks(n, L * k * k):
        chunk = lists[:, s:e]
        for a in range(L):
            for b in range(a, L):
                shared = (chunk[a][:, :, None] == chunk[b][:, None, :]).any(2).sum()
                totals[a, b] += shared
                if a != b:
                    totals[b, a] += shared
    return totals


def mutual_knn_matrix(layers: list[torch.Tensor], *, k: int, precision: str, use_native: bool) -> torch.Tensor:
    """(L, L) mutual-kNN alignment: neighbour lists once per layer, then every pair's overlap."""
    dt = options.compute_dtype(layers)
    n = layers[0].shape[0]
    lists = torch.stack([knn_indices(x, k, precision=precision) for x in layers])
    totals = overlap_totals(lists, use_native)
    return (totals.double() / (n * k)).to(dt)
