"""CKNNA (Huh et al. 2024, "The Platonic Representation Hypothesis") on the exact neighbour
lists, in O(n k) memory (never an n x n matrix).

Definition (``reference``; platonic-rep's ``cknna`` with its defaults ``unbiased=True``,
``distance_agnostic=False``, on unit rows, without its +1e-6 in the denominator, which biases
results by about 0.4 % at n = 10 000; NaN with a DegenerateWarning where a self term is <= 0;
not symmetric: 1^T A B 1 != 1^T B A 1 with one-sided masks; n >= 4). With the cosine kernels
K, L, the kNN masks M_K[i, j] = [j in N_a(i)], M_L[i, j] = [j in N_b(i)] and M = M_K * M_L,

    CKNNA = HSIC_1(M*K, M*L) / sqrt(HSIC_1(M_K*K, M_K*K) HSIC_1(M_L*L, M_L*L)),
    HSIC_1(A, B) = [ tr(A B) + (1^T A 1)(1^T B 1) / ((n-1)(n-2)) - 2/(n-2) 1^T A B 1 ] / (n (n-3)).

The masks are sparse (at most k entries a row, none on the diagonal), so every term is a sum over
the neighbour lists. For a pair of masked kernels A = M*K, B = M*L with M's row i listed as the
positions p of N_a(i) that are also in N_b(i) (``shared``):

* 1^T A 1 and 1^T B 1: sums of the masked entries;
* 1^T A B 1 = sum_j colsum_A(j) rowsum_B(j): column sums by scatter-add, row sums directly;
* tr(A B) = sum_{i, j} A_ij B_ji: only pairs masked both ways (i in M's row j as well) count,
  and B_ji = L_ji = L_ij, so it is sum over masked (i, j) of [i in M(j)] K_ij L_ij.

Similarities at the masked positions are recomputed in float64 from the input values exactly as
in the kNN re-rank (rows scaled by a power of two, as in ``fastsim.reference``), so the result
agrees with the float64 reference to rounding; the neighbour lists are exact at "highest".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core import budget, threads
from ..core.errors import warn_degenerate
from ..core.hsic import unbiased_terms
from ..core.knn import knn_indices
from ..core.numpy_reference import as64, cosine_similarities, hsic, knn_mask
from ..core.precision import compute_dtype
from ..core.scaling import exact_similarities, row_scales
from .spec import K, Metric, k_below_n, native_when_built


def reference(a: Any, b: Any, k: int = 10) -> float:
    """float64 NumPy CKNNA from the n x n masked kernel matrices (see the module docs); NaN
    where a self term is <= 0."""
    a, b = as64(a), as64(b)
    if a.shape[0] < 4:
        raise ValueError(f"cknna uses the unbiased HSIC estimator and needs n >= 4 samples; got {a.shape[0]}")
    K_, L_ = cosine_similarities(a), cosine_similarities(b)
    mk, ml = knn_mask(a, k), knn_mask(b, k)
    m = mk * ml
    kk = hsic(mk * K_, mk * K_, debiased=True)
    ll = hsic(ml * L_, ml * L_, debiased=True)
    if not (kk > 0 and ll > 0):
        return float("nan")
    return float(hsic(m * K_, m * L_, debiased=True) / np.sqrt(kk * ll))


def _in_rows(lists: torch.Tensor, owner: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """bool, owner's shape: [value[i, p] is in row owner[i, p] of `lists`]."""
    return (lists[owner] == value[..., None]).any(-1)


class _Layer:
    """One layer's sorted neighbour lists and scaled float64 rows, for the exact masked values."""

    def __init__(self, x: torch.Tensor, k: int, precision: str, use_native: bool):
        self.x = x
        self.lists = knn_indices(x, k, precision=precision, use_native=use_native).sort(dim=1).values
        self.scales = row_scales(x, None)[1]
        # float64 similarities at the layer's own neighbour positions, used by every pair
        n = x.shape[0]
        self.own = torch.empty(n, k, dtype=torch.float64, device=x.device)
        for s, e in budget.row_chunks(n, k * x.shape[1] * 8 * 3):
            self.own[s:e] = self.sims(torch.arange(s, e, device=x.device), self.lists[s:e])

    def sims(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return exact_similarities(self.x, self.scales, rows, cols)


def _hsic_terms(a: _Layer, b: _Layer, n: int) -> float:
    """n (n-3) HSIC_1(M*K_a, M*K_b), M the shared-neighbour mask of a and b, from the neighbour
    lists (the factor cancels in CKNNA)."""
    k = a.lists.shape[1]
    dev = a.lists.device
    sum_a = sum_b = trace = torch.zeros((), dtype=torch.float64, device=dev)
    col_a = torch.zeros(n, dtype=torch.float64, device=dev)
    row_b = torch.zeros(n, dtype=torch.float64, device=dev)
    d = a.x.shape[1] + b.x.shape[1]
    for s, e in budget.row_chunks(n, k * (k * 8 * 2 + d * 8 * 3)):
        rows = torch.arange(s, e, device=dev)
        cand = a.lists[s:e]  # (r, k): j in N_a(i)
        shared = _in_rows(b.lists, rows[:, None].expand_as(cand), cand)  # j in N_b(i)
        va = a.own[s:e] * shared
        vb = va if b is a else b.sims(rows, cand) * shared
        sum_a = sum_a + va.sum()
        sum_b = sum_b + vb.sum()
        row_b[s:e] = vb.sum(1)
        col_a.index_add_(0, cand.reshape(-1), va.reshape(-1))
        me = rows[:, None].expand_as(cand)
        back = _in_rows(a.lists, cand, me) & _in_rows(b.lists, cand, me)  # i in N_a(j) and in N_b(j)
        trace = trace + (va * vb * back).sum()
    return float(unbiased_terms(trace, sum_a, sum_b, (col_a * row_b).sum(), n))


def _matrix(layers: list[torch.Tensor], precision: str, k: int, use_native: bool) -> torch.Tensor:
    """(L, L) CKNNA of every ordered pair of layers: neighbour lists once per layer, then per pair
    the masked HSIC terms over the lists. Entry (i, j) is cknna(layer i, layer j); the matrix is
    not exactly symmetric (the term 1^T A B 1 of the one-sided masked kernels is not), as in the
    definition. NaN (with a DegenerateWarning) where a self term is <= 0."""
    dt = compute_dtype(layers)
    n = layers[0].shape[0]
    L = len(layers)
    with threads.pool(layers[0].device) as pmap:  # one layer's search, then one pair, per task
        prepared = list(pmap(lambda x: _Layer(x, k, precision, use_native), layers))
        self_terms = list(pmap(lambda p: _hsic_terms(p, p, n), prepared))
        pairs = [(i, j) for i in range(L) for j in range(L) if i != j]
        cross = dict(zip(pairs, pmap(lambda ij: _hsic_terms(prepared[ij[0]], prepared[ij[1]], n), pairs)))
    out = torch.empty(L, L, dtype=torch.float64)
    bad = [i for i, v in enumerate(self_terms) if not v > 0]
    if bad:
        warn_degenerate(
            f"cknna is undefined (NaN) for layer(s) {bad}: the unbiased HSIC of the kNN-masked kernel is <= 0"
        )
    for i in range(L):
        for j in range(L):  # not symmetric: 1^T A B 1 != 1^T B A 1 for the one-sided masks
            if i in bad or j in bad:
                out[i, j] = float("nan")
            elif i == j:
                out[i, j] = 1.0
            else:
                out[i, j] = cross[i, j] / (self_terms[i] * self_terms[j]) ** 0.5
    return out.to(dtype=dt, device=layers[0].device)


def torch_matrix(layers: list[torch.Tensor], *, precision: str, k: int) -> torch.Tensor:
    return _matrix(layers, precision, k, use_native=False)


def native_matrix(layers: list[torch.Tensor], *, precision: str, k: int) -> torch.Tensor:
    return _matrix(layers, precision, k, use_native=True)


METRIC = Metric(
    name="cknna",
    title="CKNNA (CKA on mutual neighbours)",
    definition="unbiased HSIC of the cosine kernels restricted to mutual k-nearest neighbours, normalized (Huh et al. 2024)",
    reference=reference,
    implementations={"torch": torch_matrix, "native": native_matrix},
    options=(K,),
    min_samples=lambda opts: (4, " (the unbiased HSIC estimator divides by n - 3)"),
    check_n=k_below_n,
    symmetric=False,
    auto=native_when_built,
)
