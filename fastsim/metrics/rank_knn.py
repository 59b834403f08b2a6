"""Rank similarity of the k-nearest-neighbour lists, over all layer pairs.

Definition (``reference``; ReSi, Klabunde et al. 2024, "rank similarity", after Wang et al. 2020):
with N_a(i) the k nearest neighbours of sample i in layer a by cosine similarity (ties to the
smaller index) and r_a(i, j) the rank of j in that list (1 = nearest), for the shared neighbours
J_i = N_a(i) & N_b(i),

    RankSim(a, b) = (1/n) sum_i (1 / v_i) sum_{j in J_i} 2 / ((1 + |r_a(i,j) - r_b(i,j)|) (r_a(i,j) + r_b(i,j))),
    v_i = sum_{t=1}^{|J_i|} 1/t   (the largest value |J_i| shared neighbours can reach),

and 0 for a sample with no shared neighbour. In [0, 1]; symmetric.

Ranks need the exact order inside each list: each layer's lists are computed once, exactly
(``fastsim.core.knn``) and ordered by their float64 similarities (``fastsim.core.knn_lists``);
then every pair's shared positions are compared row by row. Bit-identical vectors tie exactly
(and go to the smaller index); similarities equal only in exact arithmetic (parallel but
different vectors, e.g. small-integer data) order by the last bits of their float64 values, as in
any floating-point implementation. Streaming: on a bounded uniform
sample of the samples ("sampled", like mutual_knn).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core import budget
from ..core.knn_lists import ranked_lists, shared_positions
from ..core.numpy_reference import knn_indices as reference_knn
from ..core.precision import compute_dtype
from .spec import K, Metric, k_below_n, native_when_built


def reference(a: Any, b: Any, k: int = 10) -> float:
    """float64 NumPy rank similarity from the fully sorted neighbour lists (module docs)."""
    na, nb = reference_knn(a, k), reference_knn(b, k)
    scores = []
    for x, y in zip(na.tolist(), nb.tolist()):
        shared = set(x) & set(y)
        if not shared:
            scores.append(0.0)
            continue
        v = sum(1.0 / t for t in range(1, len(shared) + 1))
        total = 0.0
        for j in shared:
            ra, rb = x.index(j) + 1, y.index(j) + 1
            total += 2.0 / ((1 + abs(ra - rb)) * (ra + rb))
        scores.append(total / v)
    return float(np.mean(scores))


def _matrix(layers: list[torch.Tensor], precision: str, k: int, use_native: bool) -> torch.Tensor:
    dt = compute_dtype(layers)
    n, L = layers[0].shape[0], len(layers)
    dev = layers[0].device
    lists = [ranked_lists(x, k, precision=precision, use_native=use_native).lists for x in layers]
    pos = torch.arange(k, device=dev, dtype=torch.float64)
    ra, rb = pos[:, None] + 1, pos[None, :] + 1
    weight = 2.0 / ((1 + (ra - rb).abs()) * (ra + rb))  # (k, k): the score of a neighbour at ranks (p, q)
    harmonic = torch.cat([torch.zeros(1, dtype=torch.float64, device=dev),
                          torch.cumsum(1.0 / torch.arange(1, k + 1, dtype=torch.float64, device=dev), 0)])
    out = torch.eye(L, dtype=torch.float64)
    for a in range(L):
        for b in range(a + 1, L):
            total = 0.0
            for s, e in budget.row_chunks(n, k * k * 10):
                eq = shared_positions(lists[a][s:e], lists[b][s:e])
                count = eq.sum((1, 2))
                score = (eq * weight).sum((1, 2))
                v = harmonic[count]
                total += float(torch.where(count > 0, score / torch.where(count > 0, v, 1.0), 0.0).sum())
            out[a, b] = out[b, a] = total / n
    return out.to(dtype=dt, device=dev)


def torch_matrix(layers: list[torch.Tensor], *, precision: str, k: int) -> torch.Tensor:
    return _matrix(layers, precision, k, use_native=False)


def native_matrix(layers: list[torch.Tensor], *, precision: str, k: int) -> torch.Tensor:
    return _matrix(layers, precision, k, use_native=True)


METRIC = Metric(
    name="rank_knn",
    title="kNN rank similarity",
    definition="mean over samples of the rank agreement of shared k nearest neighbours, normalized (ReSi rank similarity)",
    reference=reference,
    implementations={"torch": torch_matrix, "native": native_matrix},
    options=(K,),
    min_samples=lambda opts: (2, ""),
    check_n=k_below_n,
    auto=native_when_built,
)
