"""Second-order cosine similarity of the k-nearest-neighbour structure, over all layer pairs.

Definition (``reference``; ReSi, Klabunde et al. 2024, "second-order cosine similarity", after
Hamilton et al. 2016, "Cultural shift or linguistic drift?"): with N_a(i) the k nearest
neighbours of sample i in layer a by cosine similarity (ties to the smaller index) and
U_i = N_a(i) | N_b(i), the vectors of first-order similarities to the union,

    s_a(i) = (cos_a(i, j))_{j in U_i},   s_b(i) = (cos_b(i, j))_{j in U_i},

are compared by cosine, and averaged over samples:

    SecondOrderCos(a, b) = (1/n) sum_i cos(s_a(i), s_b(i)).

A sample whose vector is zero in either layer (it is a zero vector there: similarity 0 with
everything) contributes 0, with a DegenerateWarning. This follows the survey's and Hamilton et
al.'s definition (cosine similarities); ReSi's code compares cosine distances 1 - cos instead,
which gives other values. Symmetric; in [-1, 1].

Each layer's lists are computed once, exactly (``fastsim.core.knn``), with the exact float64
similarities of its own neighbours (``fastsim.core.knn_lists``); per pair only the similarities
of each layer at the other layer's neighbours are computed (float64, from the input values).
Streaming: on a bounded uniform sample of the samples ("sampled", like mutual_knn).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core import budget
from ..core.errors import warn_degenerate
from ..core.knn_lists import RankedLists, ranked_lists, shared_positions
from ..core.numpy_reference import cosine_similarities
from ..core.numpy_reference import knn_indices as reference_knn
from ..core.precision import compute_dtype
from .spec import K, Metric, k_below_n, native_when_built

NAME = "second_order_cosine"


def reference(a: Any, b: Any, k: int = 10) -> float:
    """float64 NumPy mean over samples of the cosine of the similarity vectors over the union of
    the two neighbour sets (module docs); a zero vector contributes 0."""
    na, nb = reference_knn(a, k), reference_knn(b, k)
    sa, sb = cosine_similarities(a), cosine_similarities(b)
    scores = []
    for i in range(na.shape[0]):
        union = sorted(set(na[i].tolist()) | set(nb[i].tolist()))
        va, vb = sa[i, union], sb[i, union]
        den = np.linalg.norm(va) * np.linalg.norm(vb)
        scores.append(float(va @ vb / den) if den > 0 else 0.0)
    return float(np.mean(scores))


def _pair(A: RankedLists, B: RankedLists, n: int) -> tuple[float, int]:
    """(sum over samples of the second-order cosine, number of zero-vector samples)."""
    k, dev = A.k, A.lists.device
    d = A.x.shape[1] + B.x.shape[1]
    total, zero = 0.0, 0
    for s, e in budget.row_chunks(n, k * (d * 8 * 3 + k + 64)):
        rows = torch.arange(s, e, device=dev)
        la, lb = A.lists[s:e], B.lists[s:e]
        a_at_a, b_at_b = A.sims[s:e], B.sims[s:e]
        b_at_a = B.similarities(rows, la)  # layer b's similarity at layer a's neighbours
        a_at_b = A.similarities(rows, lb)
        only_b = ~shared_positions(lb, la).any(2)  # b's neighbours that a does not list
        dot = (a_at_a * b_at_a).sum(1) + (a_at_b * b_at_b * only_b).sum(1)
        na = a_at_a.square().sum(1) + (a_at_b.square() * only_b).sum(1)
        nb = b_at_a.square().sum(1) + (b_at_b.square() * only_b).sum(1)
        den = torch.sqrt(na * nb)
        ok = den > 0
        total += float(torch.where(ok, dot / torch.where(ok, den, 1.0), 0.0).sum())
        zero += int((~ok).sum())
    return total, zero


def _matrix(layers: list[torch.Tensor], precision: str, k: int, use_native: bool) -> torch.Tensor:
    dt = compute_dtype(layers)
    n, L = layers[0].shape[0], len(layers)
    ranked = [ranked_lists(x, k, precision=precision, use_native=use_native) for x in layers]
    out = torch.empty(L, L, dtype=torch.float64)
    zero_rows = 0
    for a in range(L):
        nonzero = int((ranked[a].sims.square().sum(1) > 0).sum())
        out[a, a] = nonzero / n
        zero_rows = max(zero_rows, n - nonzero)
        for b in range(a + 1, L):
            total, zero = _pair(ranked[a], ranked[b], n)
            out[a, b] = out[b, a] = min(1.0, max(-1.0, total / n))
            zero_rows = max(zero_rows, zero)
    if zero_rows:
        warn_degenerate(f"{NAME}: {zero_rows} sample(s) have a zero similarity vector (a zero vector); they contribute 0")
    return out.to(dtype=dt, device=layers[0].device)


def torch_matrix(layers: list[torch.Tensor], *, precision: str, k: int) -> torch.Tensor:
    return _matrix(layers, precision, k, use_native=False)


def native_matrix(layers: list[torch.Tensor], *, precision: str, k: int) -> torch.Tensor:
    return _matrix(layers, precision, k, use_native=True)


METRIC = Metric(
    name=NAME,
    title="second-order cosine similarity (kNN)",
    definition="mean over samples of cos of the similarity vectors over N_a(i) | N_b(i) (ReSi; Hamilton et al. 2016)",
    reference=reference,
    implementations={"torch": torch_matrix, "native": native_matrix},
    options=(K,),
    min_samples=lambda opts: (2, ""),
    check_n=k_below_n,
    auto=native_when_built,
)
