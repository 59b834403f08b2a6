"""Mutual k-nearest-neighbour alignment (Huh et al. 2024, "The Platonic Representation
Hypothesis"), over all layer pairs.

Definition (``reference``): N_a(i) is the set of the k samples j != i with the largest cosine
similarity to sample i within a (the exact cosine of the input values; a zero vector has
similarity 0 with everything), ties to the smaller index; the score is the mean over i of
|N_a(i) & N_b(i)| / k, in [0, 1].

Each layer's neighbour lists are computed once, exactly (``fastsim.core.knn``: tiled, never an
n x n matrix; at precision "highest" the sets equal the float64 definition), then every pair's
overlaps are counted (compiled kernel of fastsim._C with backend "native", torch otherwise).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core import threads
from ..core.knn import knn_indices, overlap_totals
from ..core.numpy_reference import knn_indices as reference_knn
from ..core.precision import compute_dtype
from .spec import K, Metric, k_below_n, native_when_built


def reference(a: Any, b: Any, k: int = 10) -> float:
    """NumPy mean over samples of |N_a(i) & N_b(i)| / k, from full sorts of the float64 unit-row
    distances, near-ties decided in exact arithmetic (``fastsim.core.numpy_reference.knn_indices``)."""
    na, nb = reference_knn(a, k), reference_knn(b, k)
    shared = [len(set(ra.tolist()) & set(rb.tolist())) for ra, rb in zip(na, nb)]
    return float(np.mean(shared) / k)


def _matrix(layers: list[torch.Tensor], precision: str, k: int, use_native: bool) -> torch.Tensor:
    dt = compute_dtype(layers)
    n = layers[0].shape[0]
    with threads.pool(layers[0].device) as pmap:  # one layer's search per task
        lists = torch.stack(list(pmap(lambda x: knn_indices(x, k, precision=precision, use_native=use_native), layers)))
    totals = overlap_totals(lists, use_native)
    return (totals.double() / (n * k)).to(dt)


def torch_matrix(layers: list[torch.Tensor], *, precision: str, k: int) -> torch.Tensor:
    return _matrix(layers, precision, k, use_native=False)


def native_matrix(layers: list[torch.Tensor], *, precision: str, k: int) -> torch.Tensor:
    return _matrix(layers, precision, k, use_native=True)


METRIC = Metric(
    name="mutual_knn",
    title="mutual kNN alignment",
    definition="mean over samples of |N_a(i) & N_b(i)| / k, N the k nearest neighbours by cosine (Huh et al. 2024)",
    reference=reference,
    implementations={"torch": torch_matrix, "native": native_matrix},
    options=(K,),
    min_samples=lambda opts: (2, ""),
    check_n=k_below_n,
    auto=native_when_built,
)
