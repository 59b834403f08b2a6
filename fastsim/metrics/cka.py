"""Linear CKA (Kornblith et al. 2019), biased or debiased HSIC, over all layer pairs; and
``StreamingCKA``, its exact, mergeable streaming state.

Definition (``reference``): with the layers' linear kernels K = X X^T, L = Y Y^T,
``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``; HSIC biased (Gretton et al. 2005) or, with
``debiased=True``, unbiased (Song et al. 2012; n >= 4). NaN (with a DegenerateWarning) for a
layer with zero variance or a non-positive self term. The formulas are in ``fastsim.core.hsic``.

All pairs share the work: the sums HSIC needs come from one stacked pass over the
cross-covariance blocks (feature space) or over each layer's kernel blocks (sample space),
whichever costs fewer multiply-adds (``fastsim.core.kernel_sums``).
"""

from __future__ import annotations

from typing import Any

import torch
from typing_extensions import Self

from ..accumulators.base import Accumulator
from ..core import budget, threads
from ..core.comoments import CoMoments
from ..core.errors import check_choice, check_flag
from ..core.hsic import cka_from_hsic, hsic_matrix
from ..core.inputs import Origin, check_finite, prepare, split_layers, to_origin
from ..core.kernel_sums import linear_stats
from ..core.moments import layer_moments, layer_summary
from ..core.numpy_reference import centered_scaled, cka_of_kernels
from ..core.precision import PRECISIONS, compute_dtype, matmul_precision, work_dtype
from .spec import DEBIASED, Metric, unbiased_needs_four


def reference(a: Any, b: Any, debiased: bool = False) -> float:
    """float64 NumPy linear CKA from the n x n kernel matrices (see the module docs)."""
    (ya, _), (yb, _) = centered_scaled(a), centered_scaled(b)
    return cka_of_kernels(ya @ ya.T, yb @ yb.T, debiased)


def torch_matrix(layers: list[torch.Tensor], *, precision: str, debiased: bool) -> torch.Tensor:
    wt = work_dtype(layers, precision)
    mom = layer_moments(layers, wt)
    with matmul_precision(precision):
        st = linear_stats(layers, mom, wt)
    return cka_from_hsic(hsic_matrix(st, debiased), mom.degenerate(), debiased, mom.nonfinite).to(compute_dtype(layers))


def triton_matrix(layers: list[torch.Tensor], *, precision: str, debiased: bool) -> torch.Tensor:
    from ..core import kernel_sums_triton
    from ..core.kernel_sums import linear_uses_sample_space

    dt = compute_dtype(layers)
    if linear_uses_sample_space(layers[0].shape[0], [x.shape[1] for x in layers]):
        mom = layer_moments(layers, dt)
        st = kernel_sums_triton.sample_stats(layers, mom, dt, precision)
    else:  # one launch for the scale, mean and zero variance of every layer, one for the sums
        mom = layer_summary(layers)
        st = kernel_sums_triton.linear_feature_stats(layers, mom, precision)
    return cka_from_hsic(hsic_matrix(st, debiased), mom.degenerate(), debiased, mom.nonfinite).to(dt)


class StreamingCKA(Accumulator):
    """Linear CKA of every pair of L layers, accumulated over chunks of samples.

    >>> acc = StreamingCKA(debiased=True)
    >>> for batch in batches:                 # each a list of (n_chunk, d_l) arrays, one per layer
    ...     acc.update(batch)
    >>> acc.compute()                         # (L, L)

    Two accumulators fed disjoint data merge into the accumulator of their union
    (``a.merge(b)``), and ``all_reduce`` does it across a torch.distributed group
    (``fastsim.core.comoments``). Results equal the one-shot
    ``fastsim.similarity_matrix(layers, "cka", debiased=...)`` up to rounding.
    """

    def __init__(
        self, *, debiased: bool = False, backend: str = "auto", precision: str = "highest", check_finite: bool = True
    ) -> None:
        self.debiased = check_flag("debiased", debiased)
        check_choice("precision", precision, PRECISIONS)
        self.backend = check_choice("backend", backend, ("auto", "torch", "triton"))
        self.precision = precision
        self.check_finite = check_flag("check_finite", check_finite)
        self.reset()

    def settings(self) -> tuple:
        return (self.debiased, self.precision, self.backend)

    def reset(self) -> None:
        """Forget all data seen so far."""
        self.dims: list[int] | None = None
        self.origin: Origin | None = None
        self.dtype: torch.dtype | None = None
        self.state: CoMoments | None = None

    @property
    def n(self) -> int:
        return 0 if self.state is None else self.state.n

    def _gram(self):
        if self.backend != "triton":
            return None
        from ..kernels.comoment import upper_gram

        return upper_gram

    def _blocks_dtype(self) -> torch.dtype:
        """The co-moment blocks' dtype: float64 at "highest" (torch backend) or for float64 inputs."""
        return torch.float64 if self.precision == "highest" and self.backend != "triton" else self.dtype

    def update(self, layers: Any) -> Self:
        """Add a chunk: a list of (n_chunk, d_l) arrays (one per layer) or one (L, n_chunk, d) array."""
        tensors, origin = prepare(split_layers(layers), finite=False)
        dims = [t.shape[1] for t in tensors]
        if self.dims is not None:
            if dims != self.dims:
                raise ValueError(
                    f"layers must keep their shapes across updates: expected {len(self.dims)} layers with "
                    f"features {self.dims}, got {dims}"
                )
            if origin != self.origin:
                raise ValueError(f"all updates must come from one kind and device; first was {self.origin}, now {origin}")
            if compute_dtype(tensors) != self.dtype:
                raise ValueError(
                    f"all updates must accumulate in one dtype: the first accumulated in {self.dtype}, this one "
                    f"would in {compute_dtype(tensors)} (convert the layers before updating)"
                )
        if self.check_finite:
            for i, t in enumerate(tensors):
                check_finite(f"layers[{i}]", t)
        if self.dims is None:
            self.dims, self.origin, self.dtype = dims, origin, compute_dtype(tensors)
        if tensors[0].shape[0] == 0:
            return self
        gram = self._gram()
        # Many small operations (the merge's shifts): single-threaded, so none waits at an OpenMP
        # barrier for a core another program holds; the chunk's blocks run on the worker pool.
        with threads.single_threaded(origin.device):
            for s, e in budget.row_chunks(tensors[0].shape[0], 3 * sum(dims) * 8):
                chunk = CoMoments.of_chunk([t[s:e] for t in tensors], self._blocks_dtype(), self.precision, gram=gram)
                self.state = chunk if self.state is None else self.state.merged(chunk)
        return self

    def merge(self, other: Self) -> Self:
        """Fold in another accumulator's data (disjoint from this one's); returns self. Both must
        have seen layers of the same widths, from the same kind (NumPy or torch, device) and
        accumulation dtype, once either has seen any update (zero-row updates included)."""
        self.check_mergeable(other)
        if other.dims is None:
            return self
        if self.dims is None:
            self.dims, self.origin, self.dtype = other.dims, other.origin, other.dtype
        else:
            if other.dims != self.dims:
                raise ValueError(f"cannot merge states of layers with features {self.dims} and {other.dims}")
            if other.origin != self.origin or other.dtype != self.dtype:
                raise ValueError(
                    f"cannot merge states of different kinds: {self.origin} in {self.dtype} and "
                    f"{other.origin} in {other.dtype}"
                )
        if other.state is not None:
            with threads.single_threaded(self.origin.device):
                self.state = other.state if self.state is None else self.state.merged(other.state)
        return self

    def all_reduce(self, group: Any = None) -> Self:
        """Combine the states of every rank of a torch.distributed group, in place; returns self.

        Two collective steps, exact (``CoMoments.all_reduced``); every rank ends with the state of
        all ranks' data. Works with any backend whose all_reduce takes these tensors (gloo on CPU,
        nccl on GPU). Every rank must have seen at least one update (to know the layer widths)."""
        if self.dims is None:
            raise ValueError("all_reduce needs the layer widths: call update() on every rank first")
        state = self.state or CoMoments.zeros(self.dims, self._blocks_dtype(), self.origin.device)
        reduced = state.all_reduced(group)
        self.state = reduced if reduced.n else None
        return self

    def compute(self) -> Any:
        """The (L, L) CKA matrix of everything seen so far (NaN rows for zero-variance layers),
        as the kind the updates came in: a NumPy array or a tensor on their device."""
        return to_origin(self.compute_tensor(), self.origin)

    def compute_tensor(self) -> torch.Tensor:
        """compute(), always as a CPU tensor in the accumulation dtype."""
        minimum = 4 if self.debiased else 2
        if self.n < minimum:
            raise ValueError(
                f"{'debiased ' if self.debiased else ''}StreamingCKA needs at least {minimum} samples; got n = {self.n}"
            )
        with threads.single_threaded(self.origin.device):
            st = self.state.kernel_stats()
        nonfinite = self.state.nonfinite()
        bad = self.state.constant() & ~nonfinite  # zero variance means every sample equal
        return cka_from_hsic(hsic_matrix(st, self.debiased), bad, self.debiased, nonfinite).to(self.dtype)


def accumulator(*, debiased: bool = False, precision: str = "highest") -> StreamingCKA:
    return StreamingCKA(debiased=debiased, precision=precision, check_finite=False)


METRIC = Metric(
    name="cka",
    title="linear CKA",
    definition="HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) of the linear kernels (Kornblith et al. 2019)",
    reference=reference,
    implementations={"torch": torch_matrix, "triton": triton_matrix},
    options=(DEBIASED,),
    min_samples=unbiased_needs_four,
    streaming="exact",
    accumulator=accumulator,
)
