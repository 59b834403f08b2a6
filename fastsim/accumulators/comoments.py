"""An exact streaming state for every measure computed from co-moment blocks: ``CoMomentAccumulator``.

It keeps one ``fastsim.core.comoments.CoMoments`` (counts, means, the co-moment blocks
``C[a, b] = sum u_a u_b^T``, traces and fourth moments of the centered samples), merges exactly
(Chan et al.), all-reduces across a torch.distributed group in two collective steps, and at
``compute()`` hands the state to the measure's ``finish`` function, which turns it into the
(L, L) matrix. The measure modules (``fastsim.metrics.procrustes``, ``cca_r2``, ``rsa_linear``, ...)
build one with their own ``finish`` (and, for kernels on unit rows, a ``rows`` transform applied
to every chunk before it is accumulated).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from typing_extensions import Self

from ..core import budget
from ..core.comoments import CoMoments
from ..core.errors import check_choice, check_flag
from ..core.inputs import Origin, check_finite, prepare, split_layers, to_origin
from ..core.precision import PRECISIONS, compute_dtype
from .base import Accumulator

#: (state, result dtype) -> (L, L) float64 CPU tensor
Finish = Callable[[CoMoments, torch.dtype], torch.Tensor]
#: (chunk of one layer (c, d), accumulation dtype) -> transformed rows (c, d), same width, in that dtype
Rows = Callable[[torch.Tensor, torch.dtype], torch.Tensor]


class CoMomentAccumulator(Accumulator):
    """Exact, mergeable streaming state of L layers' co-moments, finished by a measure.

    finish: (CoMoments, result dtype) -> (L, L) float64 CPU tensor.
    settings: what must match for two accumulators to merge (the measure's name and options).
    rows: optional transform of every chunk of every layer before accumulation (unit rows for
    cosine kernels). float64: accumulate the blocks in float64 whatever the input dtype
    (measures that invert covariances square their condition number). min_n: the fewest samples
    ``compute`` accepts, and why.
    """

    def __init__(
        self,
        finish: Finish,
        *,
        settings: tuple = (),
        rows: Rows | None = None,
        float64: bool = False,
        min_n: tuple[int, str] = (2, ""),
        precision: str = "highest",
        check_finite: bool = True,
        label: str = "",
    ) -> None:
        self.finish = finish
        self._settings = tuple(settings)
        self.rows = rows
        self.float64 = check_flag("float64", float64)
        self.min_n = min_n
        self.precision = check_choice("precision", precision, PRECISIONS)
        self.check_finite = check_flag("check_finite", check_finite)
        self.label = label
        self.reset()

    # ---- the protocol (fastsim.accumulators.base.Accumulator) ------------------------------------
    def settings(self) -> tuple:
        return (self.label, self._settings, self.float64)

    def reset(self) -> None:
        """Forget all data seen so far."""
        self.dims: list[int] | None = None
        self.origin: Origin | None = None
        self.dtype: torch.dtype | None = None  # the result dtype (float64 if any input is)
        self.state: CoMoments | None = None

    @property
    def n(self) -> int:
        return 0 if self.state is None else self.state.n

    @property
    def state_dtype(self) -> torch.dtype:
        return torch.float64 if self.float64 else self.dtype

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
        dt = self.state_dtype
        for s, e in budget.row_chunks(tensors[0].shape[0], 3 * sum(dims) * 8):
            chunk = [t[s:e] for t in tensors]
            if self.rows is not None:
                chunk = [self.rows(t, dt) for t in chunk]
            part = CoMoments.of_chunk(chunk, dt, self.precision)
            self.state = part if self.state is None else self.state.merged(part)
        return self

    def merge(self, other: Self) -> Self:
        """Fold in another accumulator's data (disjoint from this one's); returns self."""
        self.check_mergeable(other)
        if other.n == 0:
            if self.dims is None and other.dims is not None:
                self.dims, self.origin, self.dtype = other.dims, other.origin, other.dtype
            return self
        if self.dims is not None:
            if other.dims != self.dims:
                raise ValueError(f"cannot merge states of layers with features {self.dims} and {other.dims}")
            if other.origin != self.origin or other.dtype != self.dtype:
                raise ValueError(
                    f"cannot merge states of different kinds: {self.origin} in {self.dtype} and "
                    f"{other.origin} in {other.dtype}"
                )
        else:
            self.dims, self.origin, self.dtype = other.dims, other.origin, other.dtype
        self.state = other.state if self.state is None else self.state.merged(other.state)
        return self

    def all_reduce(self, group: Any = None) -> Self:
        """Combine the states of every rank of a torch.distributed group, in place; returns self.

        Two collective steps, exact (``CoMoments.all_reduced``). Every rank must have seen at
        least one update (to know the layer widths); a rank without samples contributes zeros."""
        if self.dims is None:
            raise ValueError("all_reduce needs the layer widths: call update() on every rank first")
        state = self.state or CoMoments.zeros(self.dims, self.state_dtype, self.origin.device)
        reduced = state.all_reduced(group)
        self.state = reduced if reduced.n else None
        return self

    def compute(self) -> Any:
        """The (L, L) matrix of everything seen so far, as the kind the updates came in."""
        return to_origin(self.compute_tensor(), self.origin)

    def compute_tensor(self) -> torch.Tensor:
        """compute(), always as a CPU tensor in the result dtype."""
        minimum, why = self.min_n
        if self.n < minimum:
            raise ValueError(f"{self.label or 'this measure'} needs at least {minimum} samples{why}; got n = {self.n}")
        return self.finish(self.state, self.dtype).to(self.dtype)


def one_shot(acc: CoMomentAccumulator, layers: list[torch.Tensor]) -> torch.Tensor:
    """An accumulator's result over `layers` in one update: the all-pairs implementation of the
    covariance-block measures (an (L, L) tensor in the result dtype, on the layers' device)."""
    return acc.update(layers).compute_tensor().to(layers[0].device)
