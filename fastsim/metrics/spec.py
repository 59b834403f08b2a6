"""What a metric declares: its name and title, its options and their checks, its float64 NumPy
reference, its all-pairs implementations per backend, and how it streams.

A metric module builds one ``Metric`` and the registry lists it; everything else in fastsim (the
public functions, ``similarity_matrix``, ``LayerSimilarity``, ``fastsim analyze``, the CLI, the
result files) reads these fields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import native
from ..core import triton_support
from ..core.errors import check_choice
from ..core.precision import PRECISIONS

#: Backend names. "native" is fastsim's compiled module fastsim._C (C++ on CPU tensors, CUDA C++
#: on GPU tensors); "cuda" is accepted as its older name.
BACKENDS = ("auto", "torch", "triton", "native")
BACKEND_ALIASES = {"cuda": "native"}

#: (layers, *, precision, **options) -> (L, L) tensor in the accumulation dtype, on the layers' device
Implementation = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Option:
    """A keyword option of a metric: its default, and a check that returns the normalized value
    or raises an error naming the option."""

    name: str
    default: Any
    check: Callable[[Any], Any]
    help: str = ""


@dataclass(frozen=True)
class Metric:
    name: str
    title: str
    definition: str  # one line: what is computed
    reference: Callable[..., float]  # (a, b, **options) -> float, float64 NumPy, from the definition
    implementations: Mapping[str, Implementation]  # backend -> all-pairs implementation
    options: tuple[Option, ...] = ()
    #: options -> (minimum n, why); checked before any work
    min_samples: Callable[[Mapping[str, Any]], tuple[int, str]] = lambda opts: (1, "")
    #: (options, n) -> raises if an option does not fit n samples (e.g. k >= n)
    check_n: Callable[[Mapping[str, Any], int], None] = lambda opts, n: None
    same_features: bool = False  # a and b must have the same width (cosine)
    #: "exact": ``accumulator(**options, precision=...)`` streams it exactly over all samples;
    #: "sampled": computed on a bounded uniform sample of the samples
    streaming: str = "sampled"
    accumulator: Callable[..., Any] | None = None
    symmetric: bool = True
    #: (a, b, *, backend, precision, **options) -> 0-d tensor: a cheaper path for one pair, if any
    pair: Callable[..., torch.Tensor] | None = None
    #: device -> the backend "auto" picks (default: "torch")
    auto: Callable[[torch.device], str] = lambda device: "torch"
    extra: Mapping[str, Any] = field(default_factory=dict)

    # ---- options -----------------------------------------------------------------------------
    def option_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.options)

    def resolve_options(self, given: Mapping[str, Any], n: int | None = None) -> dict[str, Any]:
        """Defaults filled in, every value checked (errors name the option); unknown keys raise.
        With n: the sample count is checked against the options too."""
        allowed = self.option_names()
        for key in given:
            if key not in allowed:
                raise TypeError(
                    f"unknown option {key!r} for metric {self.name!r} (allowed: {', '.join(allowed) or 'none'})"
                )
        opts = {o.name: o.check(given[o.name]) if o.name in given else o.default for o in self.options}
        if n is not None:
            self.check_samples(opts, n)
        return opts

    def check_samples(self, opts: Mapping[str, Any], n: int) -> None:
        minimum, why = self.min_samples(opts)
        if n < minimum:
            label = ("debiased " if opts.get("debiased") else "") + self.name
            raise ValueError(f"{label} needs at least {minimum} samples{why}; got n = {n}")
        self.check_n(opts, n)

    # ---- backends ----------------------------------------------------------------------------
    def backend_for(self, backend: str, device: torch.device) -> str:
        """The implementation `backend` names on `device` ("auto": the metric's choice), or a
        clear error when it does not implement this metric or cannot run here."""
        asked = check_choice("backend", backend, BACKENDS + tuple(BACKEND_ALIASES))
        backend = BACKEND_ALIASES.get(asked, asked)
        if backend == "auto":
            backend = self.auto(device)
        if backend not in self.implementations:
            available = ", ".join(repr(b) for b in ("auto", *self.implementations))
            raise ValueError(f"backend={asked!r} does not implement {self.name}; available: {available}")
        if backend == "triton":
            ok, why = triton_support.usable(device)
            if not ok:
                raise RuntimeError(f"backend='triton' cannot run here: {why}")
        if backend == "native":
            native.require(device)
        return backend

    def matrix(
        self, layers: list[torch.Tensor], *, backend: str = "auto", precision: str = "highest", **options: Any
    ) -> torch.Tensor:
        """(L, L) on checked tensors (``fastsim.core.inputs.prepare``): options resolved and checked
        against n, the backend chosen, the implementation run."""
        check_choice("precision", precision, PRECISIONS)
        opts = self.resolve_options(options, layers[0].shape[0])
        chosen = self.backend_for(backend, layers[0].device)
        return self.implementations[chosen](layers, precision=precision, **opts)


def native_when_built(device: torch.device) -> str:
    """"native" where fastsim._C can run on `device` (C++ on the CPU; CUDA when compiled in), else "torch"."""
    if native.available() and (device.type == "cpu" or (device.type == "cuda" and native.cuda_compiled())):
        return "native"
    return "torch"


# ---- options that several metrics share ---------------------------------------------------------
def _debiased(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"debiased must be True or False; got {value!r}")
    return value


def _k(value: Any) -> int:
    from ..core.errors import check_int

    k = check_int("k", value)
    if k < 1:
        raise ValueError(f"k must satisfy 1 <= k < n (k neighbours among the n - 1 other samples); got k = {k}")
    return k


DEBIASED = Option("debiased", False, _debiased, "unbiased HSIC (Song et al. 2012) instead of the biased estimator")
K = Option("k", 10, _k, "neighbours per sample")


def unbiased_needs_four(opts: Mapping[str, Any]) -> tuple[int, str]:
    if opts.get("debiased", True):
        return 4, " (the unbiased HSIC estimator divides by n - 3)"
    return 2, ""


def k_below_n(opts: Mapping[str, Any], n: int) -> None:
    k = opts["k"]
    if not k < n:
        raise ValueError(f"k must satisfy 1 <= k < n (each sample has n - 1 = {n - 1} others); got k = {k}, n = {n}")
