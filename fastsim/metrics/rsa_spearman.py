"""RSA with rank correlation: Spearman correlation of the two representational dissimilarity
matrices over a uniform sample of sample pairs, over all layer pairs.

Definition (``reference``): representational similarity analysis (Kriegeskorte et al. 2008) in
its classic form, the one rsatoolbox and ReSi (Klabunde et al. 2024) use by default: each layer's
RDM holds, for samples i < j, the correlation distance 1 - r(x_i, x_j) (r: Pearson correlation
of the two vectors across features; ``inner="cosine"``: 1 - cos(x_i, x_j); ``inner="euclidean"``:
|x_i - x_j|), and two RDMs are compared by Spearman's rank correlation of their entries (average
ranks for ties). A vector with no variance (or a zero vector, for cosine) has similarity 0 with
everything (with d <= 2 features every correlation of two samples is +-1 or 0: use d >= 3); two
bit-identical vectors have similarity exactly 1 (distance 0), not 1 up to the
rounding of their norms, so that duplicated samples tie exactly in every implementation.

Sampling, stated: Spearman's correlation needs the ranks of all n (n - 1) / 2 entries, and one
new sample changes the ranks of all of them, so no state of bounded size gives it exactly over a
stream (unlike Pearson, ``rsa_linear`` / ``rsa_cosine``, which stream exactly). It is computed on
the samples at hand (under ``LayerSimilarity``: its bounded uniform sample of all samples seen,
``max_samples``), and there over

* all n (n - 1) / 2 pairs when that is at most ``pairs`` (default 1 000 000): exact, or
* ``pairs`` pairs drawn uniformly with replacement (i, j independent uniform, i != j, ordered
  i < j) by NumPy's PCG64 from ``pair_seed``: the same pairs for every layer, so every layer pair
  is compared on the same entries. The standard error of the estimate is about 1/sqrt(pairs).

Each layer's entries are computed once (float64, from the input values) and ranked once; the
Spearman correlations of all layer pairs are then one product of the centered rank vectors.
Ranks are discontinuous at ties: bit-identical vectors give bit-identical entries (so duplicated
samples tie as they should), but entries of different sample pairs that are equal only in exact
arithmetic (e.g. small-integer data) can differ in their last bits, here as in any floating-point
implementation, and then rank by those bits.
Degenerate input: a layer whose sampled entries are all equal has no rank correlation: NaN in
its row and column, with a DegenerateWarning. n >= 3.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch

from ..core import budget
from ..core.errors import check_choice, check_int
from ..core.numpy_reference import as64, cosine_similarities, pow2_scaled, scaled_rows
from ..core.precision import compute_dtype
from ..core.scaling import pow2_exponents, times_pow2
from ..core.spectral import nan_layers
from .spec import Metric, Option

NAME = "rsa_spearman"
INNERS = ("correlation", "cosine", "euclidean")


def _pairs(value: Any) -> int:
    return check_int("pairs", value, 1)


def _seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 0:
        raise ValueError(f"pair_seed must be an integer >= 0; got {value!r}")
    return int(value)


def sample_pairs(n: int, pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) int64 arrays, i < j: all pairs if n (n - 1) / 2 <= pairs, else `pairs` pairs drawn
    uniformly with replacement (module docs)."""
    if n * (n - 1) // 2 <= pairs:
        return np.triu_indices(n, 1)
    rng = np.random.default_rng(seed)
    i_out, j_out, have = [], [], 0
    while have < pairs:
        want = pairs - have
        i = rng.integers(0, n, size=want + want // 8 + 16)
        j = rng.integers(0, n, size=i.size)
        ok = i != j
        i, j = i[ok][:want], j[ok][:want]
        i_out.append(np.minimum(i, j))
        j_out.append(np.maximum(i, j))
        have += i.size
    return np.concatenate(i_out), np.concatenate(j_out)


def average_ranks(v: np.ndarray) -> np.ndarray:
    """float64 ranks 1..N of v, tied values sharing the mean of their ranks."""
    order = np.argsort(v, kind="stable")
    sv = v[order]
    starts = np.r_[True, sv[1:] != sv[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], sv.size] - 1
    ranks = np.empty(v.size)
    ranks[order] = (first[group] + last[group]) / 2.0 + 1.0
    return ranks


def _reference_entries(x: np.ndarray, inner: str, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    if inner == "euclidean":
        y, _ = pow2_scaled(x)  # exact; Spearman is invariant to the scale
        diff = y[:, None, :] - y[None, :, :]
        return np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))[i, j]
    y = x - x.mean(1, keepdims=True) if inner == "correlation" else x
    sims = cosine_similarities(y)[i, j]
    z, _ = scaled_rows(y)  # rows scaled by powers of two: parallel by a power of two is identical
    same = np.all(z[i] == z[j], axis=1) & np.any(z[i] != 0, axis=1)
    return 1.0 - np.where(same, 1.0, sims)


def reference(a: Any, b: Any, inner: str = "correlation", pairs: int = 1_000_000, pair_seed: int = 0) -> float:
    """float64 NumPy Spearman correlation of the two RDMs' entries at the sampled pairs, from the
    full n x n matrices and their ranks; NaN where either has all entries equal."""
    a, b = as64(a), as64(b)
    i, j = sample_pairs(a.shape[0], pairs, pair_seed)
    ra, rb = (average_ranks(_reference_entries(x, inner, i, j)) for x in (a, b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt(np.sum(ra * ra) * np.sum(rb * rb))
    return float(np.sum(ra * rb) / den) if den > 0 else float("nan")


def _prepared(x: torch.Tensor, inner: str) -> torch.Tensor:
    """float64 rows the entries are dot products (correlation, cosine: unit rows) or differences of."""
    y = x.double()
    if inner == "euclidean":  # one power of two for the whole layer (distances keep their ratios)
        return times_pow2(y, -pow2_exponents(y.abs().amax()).double().expand(x.shape[0]))
    if inner == "correlation":
        y = y - y.mean(1, keepdim=True)
    y = times_pow2(y, -pow2_exponents(y.abs().amax(1)).double())
    norm = y.square().sum(1).sqrt()
    return y / torch.where(norm > 0, norm, torch.ones_like(norm))[:, None]


def _entries(y: torch.Tensor, inner: str, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    out = torch.empty(i.numel(), dtype=torch.float64, device=y.device)
    for s, e in budget.row_chunks(i.numel(), y.shape[1] * 8 * 3):
        yi, yj = y[i[s:e]], y[j[s:e]]
        if inner == "euclidean":
            out[s:e] = (yi - yj).square().sum(1).sqrt()
        else:  # bit-identical nonzero vectors: similarity exactly 1, not 1 up to rounding
            same = (yi == yj).all(1) & (yi != 0).any(1)
            out[s:e] = 1.0 - torch.where(same, 1.0, (yi * yj).sum(1))
    return out


def torch_ranks(v: torch.Tensor) -> torch.Tensor:
    """float64 average ranks 1..N (ties share the mean of their ranks)."""
    sv, order = torch.sort(v, stable=True)
    _, inverse, counts = torch.unique_consecutive(sv, return_inverse=True, return_counts=True)
    last = torch.cumsum(counts, 0) - 1
    first = last - counts + 1
    ranks = torch.empty_like(v)
    ranks[order] = (first[inverse] + last[inverse]).double() / 2.0 + 1.0
    return ranks


def torch_matrix(layers: list[torch.Tensor], *, precision: str, inner: str, pairs: int, pair_seed: int) -> torch.Tensor:
    dt = compute_dtype(layers)
    dev = layers[0].device
    i, j = sample_pairs(layers[0].shape[0], pairs, pair_seed)
    i, j = torch.from_numpy(np.ascontiguousarray(i)).to(dev), torch.from_numpy(np.ascontiguousarray(j)).to(dev)
    R = []
    for x in layers:
        r = torch_ranks(_entries(_prepared(x, inner), inner, i, j))
        R.append(r - r.mean())
    R = torch.stack(R)  # (L, P) centered ranks
    G = (R @ R.T).cpu().numpy()
    var = np.diagonal(G).copy()
    bad = ~(var > 0)
    s = np.sqrt(np.maximum(var, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.clip(G / np.outer(s, s), -1.0, 1.0)
    np.fill_diagonal(out, 1.0)
    out = nan_layers(out, bad, NAME, "all of its sampled dissimilarities are equal")
    return out.to(dtype=dt, device=dev)


METRIC = Metric(
    name=NAME,
    title="RSA, Spearman (sampled pairs)",
    definition="Spearman correlation of the RDMs (1 - Pearson r) over a uniform sample of pairs (Kriegeskorte et al. 2008)",
    reference=reference,
    implementations={"torch": torch_matrix},
    options=(
        Option("inner", "correlation", lambda v: check_choice("inner", v, INNERS),
               "the RDM: correlation distance, cosine distance or Euclidean distance"),
        Option("pairs", 1_000_000, _pairs, "sample pairs compared (all of them when there are no more)"),
        Option("pair_seed", 0, _seed, "seed of the uniform draw of sample pairs"),
    ),
    min_samples=lambda opts: (3, " (one pair has no rank correlation)"),
)
