"""The public metrics: one function per metric and ``similarity_matrix`` for all layer pairs, all
read from the registry (``fastsim.metrics``).

Every function takes NumPy arrays or torch tensors of shape (n_samples, n_features), on any
device, in float16, bfloat16, float32 or float64, and returns the caller's kind: a NumPy scalar or
array for NumPy input, a tensor on the input's device for torch input. Results are float64 when
any input is float64 and float32 otherwise (half-precision inputs are accumulated in float32).

``kernel="rbf"`` with the metric "cka" (in ``cka`` and ``similarity_matrix``) is the metric
"rbf_cka": one convenience, resolved here.
"""

from __future__ import annotations

from typing import Any

from .core.errors import check_choice, check_flag
from .core.inputs import prepare, split_layers, to_origin
from .core.precision import PRECISIONS
from .metrics import registry
from .metrics.spec import Metric

KERNELS = ("linear", "rbf")


def _cka_metric(metric: str, options: dict[str, Any]) -> str:
    """'cka' with kernel='rbf' is 'rbf_cka'; kernel='linear' (or none) stays 'cka'."""
    if metric != "cka" or "kernel" not in options:
        return metric
    kernel = check_choice("kernel", options.pop("kernel"), KERNELS)
    if kernel == "linear" and options.get("sigma") is not None:
        raise ValueError("sigma applies to kernel='rbf' only; leave it None for kernel='linear'")
    if kernel == "linear":
        options.pop("sigma", None)
    return "rbf_cka" if kernel == "rbf" else "cka"


def _pair(metric: Metric, a: Any, b: Any, backend: str, precision: str, check_finite: bool, options: dict) -> Any:
    check_flag("check_finite", check_finite)
    (ta, tb), origin = prepare([("a", a), ("b", b)], finite=check_finite, same_features=metric.same_features,
                               what=metric.name)
    check_choice("precision", precision, PRECISIONS)
    opts = metric.resolve_options(options, ta.shape[0])
    chosen = metric.backend_for(backend, origin.device)
    if metric.pair is not None:
        return to_origin(metric.pair(ta, tb, backend=chosen, precision=precision, **opts), origin)
    m = metric.implementations[chosen]([ta, tb], precision=precision, **opts)
    return to_origin(m[0, 1], origin)


def cka(
    a: Any,
    b: Any,
    *,
    kernel: str = "linear",
    sigma: float | None = None,
    debiased: bool = False,
    backend: str = "auto",
    precision: str = "highest",
    check_finite: bool = True,
) -> Any:
    """Centered kernel alignment between two representations of the same n samples.

    kernel: "linear" or "rbf". sigma (RBF only): bandwidth; None takes the median heuristic per
    input, the median Euclidean distance over pairs i < j of at most 2048 evenly spaced samples
    (exactly all pairs when n <= 2048). debiased: use the unbiased HSIC estimator of Song et al.
    (2012), needs n >= 4; biased HSIC (Gretton et al. 2005) otherwise.
    Returns NaN (with a DegenerateWarning) when either input has zero variance.
    """
    options: dict[str, Any] = {"kernel": kernel, "debiased": debiased, "sigma": sigma}
    name = _cka_metric("cka", options)
    return _pair(registry.get(name), a, b, backend, precision, check_finite, options)


def cosine(a: Any, b: Any, *, backend: str = "auto", precision: str = "highest", check_finite: bool = True) -> Any:
    """Mean over samples of the cosine similarity of a[i] and b[i]; a and b have the same shape.

    A sample where either vector is zero contributes 0 (with a DegenerateWarning).
    """
    return _pair(registry.get("cosine"), a, b, backend, precision, check_finite, {})


def mutual_knn(
    a: Any, b: Any, *, k: int = 10, backend: str = "auto", precision: str = "highest", check_finite: bool = True
) -> Any:
    """Mutual k-nearest-neighbour alignment (Huh et al. 2024), in [0, 1].

    Each sample's k nearest other samples by cosine similarity, within a and within b; the score is
    the mean over samples of the fraction of shared neighbours. Ties go to the smaller index. At
    precision "highest" the neighbour lists are exact (see fastsim.core.knn).
    """
    return _pair(registry.get("mutual_knn"), a, b, backend, precision, check_finite, {"k": k})


def cknna(
    a: Any, b: Any, *, k: int = 10, backend: str = "auto", precision: str = "highest", check_finite: bool = True
) -> Any:
    """CKNNA (Huh et al. 2024, "The Platonic Representation Hypothesis"): centered kernel
    alignment restricted to mutual nearest neighbours: 1 for identical neighbour structure,
    near 0 for unrelated. Not bounded by 1: with the unbiased estimator, small n can give tiny
    positive self terms (the reference gives 3.8 at n = 5, k = 3; at n >= 40 we saw at most 0.16
    on unrelated data). Not symmetric in (a, b). Definition: ``fastsim.metrics.cknna``. Needs
    n >= 4. NaN (with a DegenerateWarning) when a self term is <= 0. Memory O(n k).
    """
    return _pair(registry.get("cknna"), a, b, backend, precision, check_finite, {"k": k})


def similarity_matrix(
    layers: Any,
    metric: str,
    *,
    backend: str = "auto",
    precision: str = "highest",
    check_finite: bool = True,
    **options: Any,
) -> Any:
    """The (L, L) matrix of `metric` (a name in ``fastsim.metrics.names()``) over every pair of layers.

    layers: a list/tuple of (n, d_l) arrays or one (L, n, d) array. options: the metric's own
    keyword options (``fastsim.metrics.get(metric).options``; "cka" also takes kernel="rbf",
    which is "rbf_cka"). Entry (i, j) is metric(layers[i], layers[j]). Work is shared across
    pairs: one stacked cross-covariance or one pass over each layer's kernel blocks for CKA, one
    pass over the data for cosine, one neighbour search per layer for the kNN metrics.
    """
    check_choice("metric", metric, registry.names())
    options = dict(options)
    spec = registry.get(_cka_metric(metric, options))
    check_flag("check_finite", check_finite)
    tensors, origin = prepare(split_layers(layers), finite=check_finite, same_features=spec.same_features,
                              what=spec.name)
    return to_origin(spec.matrix(tensors, backend=backend, precision=precision, **options), origin)
