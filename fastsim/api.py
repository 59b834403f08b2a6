"""The public metrics: one function per metric, backends chosen behind it.

Every function takes NumPy arrays or torch tensors of shape (n_samples, n_features), on any
device, in float16, bfloat16, float32 or float64, and returns the caller's kind: a NumPy scalar or
array for NumPy input, a tensor on the input's device for torch input. Results are float64 when
every input is float64 and float32 otherwise (half-precision inputs are accumulated in float32).
"""

from __future__ import annotations

import numbers
from typing import Any

import torch

from . import native
from ._inputs import prepare, split_layers, to_origin
from .backends import torch_cka, torch_cknna, torch_cosine, torch_knn, triton_cka, triton_cosine
from .options import BACKENDS, KERNELS, PRECISIONS, check_choice

METRICS = ("cka", "cosine", "mutual_knn", "cknna")

#: Backends that implement each metric; "auto" takes the first that can run.
IMPLEMENTED = {
    "cka": ("torch", "triton"),
    "cosine": ("torch", "triton"),
    "mutual_knn": ("cuda", "torch"),
    "cknna": ("cuda", "torch"),
}


def _resolve_backend(metric: str, backend: str, device: torch.device) -> str:
    check_choice("backend", backend, BACKENDS)
    if backend == "auto":
        if metric in ("mutual_knn", "cknna") and native.available() and (
            device.type == "cpu" or (device.type == "cuda" and native.cuda_compiled())
        ):
            return "cuda"
        return "torch"
    if backend not in IMPLEMENTED[metric]:
        raise ValueError(
            f"backend={backend!r} does not implement {metric}; available: "
            f"{', '.join(repr(b) for b in ('auto',) + IMPLEMENTED[metric])}"
        )
    if backend == "triton":
        ok, why = triton_cosine.usable(device)
        if not ok:
            raise RuntimeError(f"backend='triton' cannot run here: {why}")
    if backend == "cuda":
        native.require(device)
    return backend


def _check_n(metric: str, n: int, minimum: int, why: str = "") -> None:
    if n < minimum:
        raise ValueError(f"{metric} needs at least {minimum} samples{why}; got n = {n}")


def _check_cka_options(kernel: Any, sigma: Any, debiased: Any, n: int) -> None:
    check_choice("kernel", kernel, KERNELS)
    if not isinstance(debiased, bool):
        raise TypeError(f"debiased must be True or False; got {debiased!r}")
    if sigma is not None:
        if kernel != "rbf":
            raise ValueError("sigma applies to kernel='rbf' only; leave it None for kernel='linear'")
        if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not (0 < float(sigma) < float("inf")):
            raise ValueError(f"sigma must be a positive finite number or None (median heuristic); got {sigma!r}")
    if debiased:
        _check_n("debiased cka", n, 4, " (the unbiased HSIC estimator divides by n - 3)")
    else:
        _check_n("cka", n, 2)


def _check_k(k: Any, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an integer; got {k!r}")
    if not 1 <= int(k) < n:
        raise ValueError(f"k must satisfy 1 <= k < n (each sample has n - 1 = {n - 1} others); got k = {k}, n = {n}")
    return int(k)


def _check_flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {value!r}")


def _matrix(metric: str, tensors: list[torch.Tensor], backend: str, precision: str, **opts: Any) -> torch.Tensor:
    if metric == "cka":
        if backend == "triton":
            return triton_cka.cka_matrix(tensors, precision=precision, **opts)
        return torch_cka.cka_matrix(tensors, precision=precision, **opts)
    if metric == "cosine":
        if backend == "triton":
            return triton_cosine.cosine_matrix(tensors)
        return torch_cosine.cosine_matrix(tensors, precision=precision)
    if metric == "cknna":
        return torch_cknna.cknna_matrix(tensors, precision=precision, use_native=backend == "cuda", **opts)
    return torch_knn.mutual_knn_matrix(tensors, precision=precision, use_native=backend == "cuda", **opts)


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
    _check_flag("check_finite", check_finite)
    (ta, tb), origin = prepare([("a", a), ("b", b)], finite=check_finite)
    _check_cka_options(kernel, sigma, debiased, ta.shape[0])
    check_choice("precision", precision, PRECISIONS)
    chosen = _resolve_backend("cka", backend, origin.device)
    m = _matrix("cka", [ta, tb], chosen, precision, kernel=kernel, sigma=sigma, debiased=debiased)
    return to_origin(m[0, 1], origin)


def cosine(a: Any, b: Any, *, backend: str = "auto", precision: str = "highest", check_finite: bool = True) -> Any:
    """Mean over samples of the cosine similarity of a[i] and b[i]; a and b have the same shape.

    A sample where either vector is zero contributes 0 (with a DegenerateWarning).
    """
    _check_flag("check_finite", check_finite)
    (ta, tb), origin = prepare([("a", a), ("b", b)], finite=check_finite, same_features=True)
    _check_n("cosine", ta.shape[0], 1)
    check_choice("precision", precision, PRECISIONS)
    chosen = _resolve_backend("cosine", backend, origin.device)
    if chosen == "triton":
        return to_origin(triton_cosine.cosine_pair(ta, tb), origin)
    return to_origin(torch_cosine.cosine_pair(ta, tb), origin)


def mutual_knn(
    a: Any, b: Any, *, k: int = 10, backend: str = "auto", precision: str = "highest", check_finite: bool = True
) -> Any:
    """Mutual k-nearest-neighbour alignment (Huh et al. 2024), in [0, 1].

    Each sample's k nearest other samples by cosine similarity, within a and within b; the score is
    the mean over samples of the fraction of shared neighbours. Ties go to the smaller index. At
    precision "highest" the neighbour lists are exact (see fastsim.backends.torch_knn).
    """
    _check_flag("check_finite", check_finite)
    (ta, tb), origin = prepare([("a", a), ("b", b)], finite=check_finite)
    k = _check_k(k, ta.shape[0])
    check_choice("precision", precision, PRECISIONS)
    chosen = _resolve_backend("mutual_knn", backend, origin.device)
    m = _matrix("mutual_knn", [ta, tb], chosen, precision, k=k)
    return to_origin(m[0, 1], origin)


def cknna(
    a: Any, b: Any, *, k: int = 10, backend: str = "auto", precision: str = "highest", check_finite: bool = True
) -> Any:
    """CKNNA (Huh et al. 2024, "The Platonic Representation Hypothesis"): centered kernel
    alignment restricted to mutual nearest neighbours: 1 for identical neighbour structure,
    near 0 for unrelated. Not bounded by 1: with the unbiased estimator, small n can give tiny
    positive self terms (the reference gives 3.8 at n = 5, k = 3; at n >= 40 we saw at most 0.16
    on unrelated data).

    With the cosine kernels K (of a) and L (of b), M_K[i, j] = [j is one of i's k nearest
    neighbours in a] (self excluded, ties to the smaller index), M_L likewise in b, and
    M = M_K * M_L: HSIC_1(M*K, M*L) / sqrt(HSIC_1(M_K*K, M_K*K) HSIC_1(M_L*L, M_L*L)), HSIC_1 the
    unbiased estimator. This is platonic-rep's ``cknna`` with its defaults (unbiased, not
    distance-agnostic) on unit rows, except that fastsim adds no 1e-6 to the denominator; see
    ``fastsim.reference.cknna``. Needs n >= 4. Returns NaN (with a DegenerateWarning) when a self
    term is <= 0. Memory O(n k): the masked sums run over the neighbour lists.
    """
    _check_flag("check_finite", check_finite)
    (ta, tb), origin = prepare([("a", a), ("b", b)], finite=check_finite)
    _check_n("cknna", ta.shape[0], 4, " (the unbiased HSIC estimator divides by n - 3)")
    k = _check_k(k, ta.shape[0])
    check_choice("precision", precision, PRECISIONS)
    chosen = _resolve_backend("cknna", backend, origin.device)
    m = _matrix("cknna", [ta, tb], chosen, precision, k=k)
    return to_origin(m[0, 1], origin)


_METRIC_OPTIONS = {
    "cka": ("kernel", "sigma", "debiased"),
    "cosine": (),
    "mutual_knn": ("k",),
    "cknna": ("k",),
}


def similarity_matrix(
    layers: Any,
    metric: str,
    *,
    backend: str = "auto",
    precision: str = "highest",
    check_finite: bool = True,
    **options: Any,
) -> Any:
    """The (L, L) matrix of `metric` ("cka", "cosine", "mutual_knn" or "cknna") over every pair of layers.

    layers: a list/tuple of (n, d_l) arrays or one (L, n, d) array. options: the metric's own
    keyword options (cka: kernel, sigma, debiased; mutual_knn, cknna: k). Work is shared across pairs:
    one stacked cross-covariance or one pass over each layer's kernel blocks for CKA, one pass
    over the data for cosine, one neighbour search per layer for mutual kNN and CKNNA.
    """
    check_choice("metric", metric, METRICS)
    for key in options:
        if key not in _METRIC_OPTIONS[metric]:
            allowed = ", ".join(_METRIC_OPTIONS[metric]) or "none"
            raise TypeError(f"similarity_matrix got an unknown option {key!r} for metric {metric!r} (allowed: {allowed})")
    _check_flag("check_finite", check_finite)
    tensors, origin = prepare(split_layers(layers), finite=check_finite, same_features=metric == "cosine")
    n = tensors[0].shape[0]
    check_choice("precision", precision, PRECISIONS)
    chosen = _resolve_backend(metric, backend, origin.device)
    if metric == "cka":
        opts = {"kernel": "linear", "sigma": None, "debiased": False, **options}
        _check_cka_options(opts["kernel"], opts["sigma"], opts["debiased"], n)
    elif metric in ("mutual_knn", "cknna"):
        if metric == "cknna":
            _check_n("cknna", n, 4, " (the unbiased HSIC estimator divides by n - 3)")
        opts = {"k": _check_k(options.get("k", 10), n)}
    else:
        _check_n("cosine", n, 1)
        opts = {}
    return to_origin(_matrix(metric, tensors, chosen, precision, **opts), origin)
