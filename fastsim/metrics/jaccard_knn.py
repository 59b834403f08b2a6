"""Jaccard similarity of the k-nearest-neighbour sets, over all layer pairs.

Definition (``reference``; ReSi, Klabunde et al. 2024, "Similarity of Neural Network Models: A
Survey of Functional and Representational Measures", "Jaccard similarity"): with N_a(i) the k
samples j != i with the largest cosine similarity to sample i in layer a (a zero vector has
similarity 0 with everything; ties to the smaller index),

    J(a, b) = (1/n) sum_i |N_a(i) & N_b(i)| / |N_a(i) | N_b(i)|,

in [0, 1]; |N_a(i) | N_b(i)| = 2k - |N_a(i) & N_b(i)|, so it is a function of each row's overlap
s_i: sum_i s_i / (2k - s_i) / n (mutual kNN averages s_i / k instead).

Each layer's lists are computed once, exactly (``fastsim.core.knn``; at precision "highest" the
sets equal the float64 definition), then every pair's per-row overlaps are counted by sorting the
two lists of each row together. Streaming: on a bounded uniform sample of the samples
("sampled", like mutual_knn).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core import budget
from ..core.knn_lists import ranked_lists
from ..core.numpy_reference import knn_indices as reference_knn
from ..core.precision import compute_dtype
from .spec import K, Metric, k_below_n, native_when_built


def reference(a: Any, b: Any, k: int = 10) -> float:
    """float64 NumPy mean over samples of |N_a(i) & N_b(i)| / |N_a(i) | N_b(i)|, from full sorts."""
    na, nb = reference_knn(a, k), reference_knn(b, k)
    return float(np.mean([len(set(x) & set(y)) / len(set(x) | set(y)) for x, y in zip(na.tolist(), nb.tolist())]))


def row_overlaps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """int64 (r,): |a_i & b_i| for two (r, k) chunks of neighbour lists (each row distinct)."""
    both = torch.cat([a, b], 1).sort(dim=1).values
    return (both[:, 1:] == both[:, :-1]).sum(1)


def _matrix(layers: list[torch.Tensor], precision: str, k: int, use_native: bool) -> torch.Tensor:
    dt = compute_dtype(layers)
    n, L = layers[0].shape[0], len(layers)
    lists = [ranked_lists(x, k, precision=precision, use_native=use_native, ordered=False).lists for x in layers]
    out = torch.eye(L, dtype=torch.float64)
    for a in range(L):
        for b in range(a + 1, L):
            total = 0.0
            for s, e in budget.row_chunks(n, 2 * k * 8 * 3):
                shared = row_overlaps(lists[a][s:e], lists[b][s:e]).double()
                total += float((shared / (2 * k - shared)).sum())
            out[a, b] = out[b, a] = total / n
    return out.to(dtype=dt, device=layers[0].device)


def torch_matrix(layers: list[torch.Tensor], *, precision: str, k: int) -> torch.Tensor:
    return _matrix(layers, precision, k, use_native=False)


def native_matrix(layers: list[torch.Tensor], *, precision: str, k: int) -> torch.Tensor:
    return _matrix(layers, precision, k, use_native=True)


METRIC = Metric(
    name="jaccard_knn",
    title="Jaccard kNN similarity",
    definition="mean over samples of |N_a(i) & N_b(i)| / |N_a(i) | N_b(i)|, N the k nearest neighbours by cosine (ReSi)",
    reference=reference,
    implementations={"torch": torch_matrix, "native": native_matrix},
    options=(K,),
    min_samples=lambda opts: (2, ""),
    check_n=k_below_n,
    auto=native_when_built,
)
