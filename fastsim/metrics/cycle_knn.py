"""Cycle kNN (Huh et al. 2024, "The Platonic Representation Hypothesis", platonic-rep's
``cycle_knn``), over all ordered layer pairs.

Definition (``reference``): with N_a(i) the k nearest neighbours of sample i in layer a by
cosine similarity (ties to the smaller index), entry (a, b) is the fraction of samples that
return to themselves going to their neighbours in layer b and from there to the neighbours in
layer a:

    cycle(a, b) = (1/n) sum_i [ i in union_{j in N_b(i)} N_a(j) ],

in [0, 1]. Not symmetric. (platonic-rep ranks by the dot product of the features it is given,
which it normalizes first: cosine similarity.)

Each layer's lists are computed once, exactly (``fastsim.core.knn``); per pair it is one gather
of k x k list entries per sample. Streaming: on a bounded uniform sample of the samples
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
    """float64 NumPy fraction of samples i found among the a-neighbours of their b-neighbours."""
    na, nb = reference_knn(a, k), reference_knn(b, k)
    return float(np.mean([any(i in set(na[j].tolist()) for j in nb[i]) for i in range(na.shape[0])]))


def _matrix(layers: list[torch.Tensor], precision: str, k: int, use_native: bool) -> torch.Tensor:
    dt = compute_dtype(layers)
    n, L = layers[0].shape[0], len(layers)
    dev = layers[0].device
    lists = [ranked_lists(x, k, precision=precision, use_native=use_native, ordered=False).lists for x in layers]
    out = torch.empty(L, L, dtype=torch.float64)
    for a in range(L):
        for b in range(L):
            hits = 0
            for s, e in budget.row_chunks(n, k * k * 9):
                rows = torch.arange(s, e, device=dev)
                back = lists[a][lists[b][s:e]]  # (r, k, k): a-neighbours of each b-neighbour
                hits += int((back == rows[:, None, None]).flatten(1).any(1).sum())
            out[a, b] = hits / n
    return out.to(dtype=dt, device=dev)


def torch_matrix(layers: list[torch.Tensor], *, precision: str, k: int) -> torch.Tensor:
    return _matrix(layers, precision, k, use_native=False)


def native_matrix(layers: list[torch.Tensor], *, precision: str, k: int) -> torch.Tensor:
    return _matrix(layers, precision, k, use_native=True)


METRIC = Metric(
    name="cycle_knn",
    title="cycle kNN",
    definition="fraction of samples i among the a-neighbours of their b-neighbours (Huh et al. 2024)",
    reference=reference,
    implementations={"torch": torch_matrix, "native": native_matrix},
    options=(K,),
    min_samples=lambda opts: (2, ""),
    check_n=k_below_n,
    symmetric=False,
    auto=native_when_built,
)
