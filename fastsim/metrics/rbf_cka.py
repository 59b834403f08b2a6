"""RBF CKA: centered kernel alignment with Gaussian kernels, biased or debiased HSIC.

Definition (``reference``): ``K_ij = exp(-|x_i - x_j|^2 / (2 sigma^2))``, then CKA as for the
linear kernel (``fastsim.core.hsic``). With ``sigma=None`` sigma is the median Euclidean distance
over the pairs i < j, separately for each input (NumPy's median: the mean of the two middle
values); above 2048 samples it is taken over the pairs of 2048 evenly spaced samples
(``fastsim.core.kernel_sums.MEDIAN_SAMPLE``). Kornblith et al.'s code takes the median of the
squared-distance matrix including its zero diagonal; fastsim excludes the diagonal. NaN (with a
DegenerateWarning) when the median distance is 0.

The kernel blocks are made on the fly and reduced to the pair sums, row sums and diagonals: O(n L)
memory, never an n x n matrix (``fastsim.core.kernel_sums.sample_stats``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core.errors import check_positive_real
from ..core.hsic import cka_from_hsic, hsic_matrix
from ..core.kernel_sums import rbf_bandwidths, rbf_plan, sample_stats
from ..core.moments import layer_moments
from ..core.numpy_reference import (
    centered_scaled,
    cka_of_kernels,
    median_sigma,
    squared_distances,
)
from ..core.precision import compute_dtype, matmul_precision, work_dtype
from .spec import DEBIASED, Metric, Option, unbiased_needs_four


def _sigma(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return check_positive_real("sigma", value)
    except ValueError:
        raise ValueError(f"sigma must be a positive finite number or None (median heuristic); got {value!r}") from None


def rbf_kernel_of(y: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-squared_distances(y) / (2.0 * sigma**2))


def without_constant(K: np.ndarray) -> np.ndarray:
    """K minus the mean of its off-diagonal entries. Both HSIC estimators are unchanged by adding
    a constant to every entry of a kernel (tests/test_reference.py proves it in exact arithmetic);
    removing the constant part first keeps the estimators' terms from cancelling it in float64
    (RBF entries all near 1 when sigma is large next to the distances), while small entries (sigma
    small) keep their full relative precision, since the constant removed is of their size."""
    n = K.shape[0]
    if n < 2:
        return K
    off = (K.sum() - np.trace(K)) / (n * (n - 1))
    return K - off


def reference(a: Any, b: Any, sigma: float | None = None, debiased: bool = False) -> float:
    """float64 NumPy RBF CKA from the n x n kernel matrices, the obviously right formula: exp(.)
    (see the module docs), less the constant part (``without_constant``, an exact invariance).
    The inputs are scaled by a power of two first (and sigma with them), which changes no kernel
    entry. Where every off-diagonal entry underflows in float64 (sigma below about 0.03x the
    nearest distance's scale) the debiased value is NaN here; fastsim's own path keeps it."""
    kernels = []
    for x in (a, b):
        y, factor = centered_scaled(x)
        s = median_sigma(y) if sigma is None else float(sigma) * factor
        kernels.append(without_constant(rbf_kernel_of(y, s)))
    return cka_of_kernels(kernels[0], kernels[1], debiased)


def _matrix(layers: list[torch.Tensor], precision: str, sigma: float | None, debiased: bool, triton: bool) -> torch.Tensor:
    """Both backends: the same moments, bandwidths and representation (``rbf_bandwidths`` and
    ``rbf_plan``, one decision), then the torch blocks or the Triton kernel tiles. The torch path
    works in float64 at "highest"; the Triton one in the input's accumulation dtype (3xTF32 dots
    on GPUs at "highest")."""
    dt = compute_dtype(layers) if triton else work_dtype(layers, precision)
    mom = layer_moments(layers, dt)
    sigmas, shifted, zero_sigma = rbf_bandwidths(layers, mom, sigma)
    with matmul_precision(precision):
        plan = rbf_plan(layers, mom, dt, sigmas, shifted)
        if triton:
            from ..core import kernel_sums_triton

            st = kernel_sums_triton.sample_stats(layers, mom, dt, precision, plan)
        else:
            st = sample_stats(layers, mom, dt, "rbf", plan)
    bad = mom.degenerate() | zero_sigma
    return cka_from_hsic(hsic_matrix(st, debiased), bad, debiased, mom.nonfinite).to(compute_dtype(layers))


def torch_matrix(layers: list[torch.Tensor], *, precision: str, sigma: float | None, debiased: bool) -> torch.Tensor:
    return _matrix(layers, precision, sigma, debiased, triton=False)


def triton_matrix(layers: list[torch.Tensor], *, precision: str, sigma: float | None, debiased: bool) -> torch.Tensor:
    return _matrix(layers, precision, sigma, debiased, triton=True)


METRIC = Metric(
    name="rbf_cka",
    title="RBF CKA (median sigma)",
    definition="CKA of the Gaussian kernels exp(-|x_i - x_j|^2 / (2 sigma^2)), sigma the median distance by default",
    reference=reference,
    implementations={"torch": torch_matrix, "triton": triton_matrix},
    options=(Option("sigma", None, _sigma, "bandwidth (None: the median pairwise distance of each input)"), DEBIASED),
    min_samples=unbiased_needs_four,
)
