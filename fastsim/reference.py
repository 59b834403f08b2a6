"""NumPy float64 oracles for every fastsim metric.

Written to be obviously right, not fast: every kernel matrix here is a full n x n array, every
neighbour list comes from a full sort. Use them to test fastsim (and your own code) on small
inputs. Inputs are converted to float64 NumPy arrays of shape (n, d).

Each metric's reference lives in its metric module (``fastsim.metrics.<name>.reference``, with
the definition in that module's docstring) and is reachable here by the metric's name:
``fastsim.reference.cosine(a, b)``, ``fastsim.reference.mutual_knn(a, b, k=10)``, ... The shared
primitives (``hsic`` in matrix form, kernels, the median heuristic, cosine similarities, kNN
lists) come from ``fastsim.core.numpy_reference``. ``cka(a, b, kernel="rbf")`` is ``rbf_cka``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .core.numpy_reference import (
    as64,
    cosine_similarities,
    hsic,
    knn_indices,
    linear_kernel,
    median_sigma,
    rbf_kernel,
)
from .metrics import registry

__all__ = [
    "linear_kernel",
    "rbf_kernel",
    "median_sigma",
    "hsic",
    "cosine_similarities",
    "knn_indices",
    "cka",
    "similarity_matrix",
    *registry.names(),
]


def cka(a: Any, b: Any, kernel: str = "linear", sigma: float | None = None, debiased: bool = False) -> float:
    """CKA between two representations of the same n samples (``fastsim.metrics.cka`` for the
    linear kernel, ``fastsim.metrics.rbf_cka`` for the RBF kernel); NaN where undefined."""
    if kernel == "linear":
        if sigma is not None:
            raise ValueError("sigma applies to kernel='rbf' only")
        return registry.get("cka").reference(a, b, debiased=debiased)
    if kernel == "rbf":
        return registry.get("rbf_cka").reference(a, b, sigma=sigma, debiased=debiased)
    raise ValueError(f"kernel must be 'linear' or 'rbf'; got {kernel!r}")


def __getattr__(name: str):
    if name in registry.REGISTRY and name != "cka":
        return registry.REGISTRY[name].reference
    raise AttributeError(f"module 'fastsim.reference' has no attribute {name!r}")


def similarity_matrix(layers: Sequence[Any], metric: str, **options: Any) -> np.ndarray:
    """The (L, L) matrix of `metric` over all layer pairs: entry (i, j) is the metric's reference
    on (layers[i], layers[j]). "cka" takes kernel="rbf" as ``cka`` does."""
    layers = [as64(x) for x in layers]
    if metric == "cka":
        def fn(a, b):
            return cka(a, b, **options)
    else:
        ref = registry.get(metric).reference

        def fn(a, b):
            return ref(a, b, **options)

    L = len(layers)
    out = np.empty((L, L))
    for i in range(L):
        for j in range(L):
            out[i, j] = fn(layers[i], layers[j])
    return out
