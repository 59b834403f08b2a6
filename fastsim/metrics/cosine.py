"""Mean per-sample cosine similarity of two representations of equal width, over all layer pairs;
and its exact streaming sum.

Definition (``reference``): the mean over samples i of cos(a_i, b_i); a sample where either
vector is zero contributes 0 (with a DegenerateWarning). Rows are scaled by a power of two first
(exact), so squares neither underflow nor overflow.

All pairs in one pass over the data: each chunk's rows are normalized and ``U U^T`` of the
stacked unit rows accumulates the L x L sums (torch); the Triton kernel reads each frame's L rows
once and normalizes them in registers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from typing_extensions import Self

from ..accumulators.base import Accumulator, all_reduce_sum
from ..core import budget, threads
from ..core.errors import warn_degenerate
from ..core.numpy_reference import as64, safe_cosine, scaled_rows
from ..core.precision import compute_dtype, matmul_precision, work_dtype
from ..core.scaling import unit_rows
from ..core.triton_support import stacked_view
from .spec import Metric


def reference(a: Any, b: Any) -> float:
    """float64 NumPy mean over samples of cos(a_i, b_i); zero vectors contribute 0."""
    (ya, na), (yb, nb) = scaled_rows(as64(a)), scaled_rows(as64(b))
    return float(np.mean(safe_cosine(np.einsum("ij,ij->i", ya, yb), na * nb)))


def warn_zero_rows(count: int) -> None:
    if count:
        warn_degenerate(f"{count} sample(s) have a zero vector; their cosine is taken as 0")


def torch_matrix(layers: list[torch.Tensor], *, precision: str) -> torch.Tensor:
    """(L, L): entry (a, b) is the mean over samples of cos(a_i, b_i). Same d for every layer.
    The unit rows are float64 at "highest" (float32 otherwise); the sums always float64."""
    dt = work_dtype(layers, precision)
    n, L, d = layers[0].shape[0], len(layers), layers[0].shape[1]
    dev = layers[0].device

    def chunk(span):
        s, e = span
        units, zero = zip(*(unit_rows(x[s:e], dt) for x in layers))
        flat = torch.stack(units).reshape(L, -1).double()  # (L, chunk * d)
        zero = torch.stack(zero)  # (L, chunk)
        # a sum over chunk * d products: float64 whatever the precision
        return flat @ flat.T, zero.any(0).sum(), (~zero).sum(1)

    acc = torch.zeros(L, L, dtype=torch.float64, device=dev)
    zero_rows = torch.zeros((), dtype=torch.long, device=dev)
    nonzero_per_layer = torch.zeros(L, dtype=torch.long, device=dev)
    with matmul_precision(precision), threads.pool(dev) as pmap:
        tasks = threads.workers()
        # at least 4 chunks per worker, so that a worker the OS slows down takes fewer
        rows = max(1, min(budget.rows_per_chunk(2 * tasks * L * d * 8, n), -(-n // (4 * tasks))))
        for part, zr, nz in pmap(chunk, [(s, min(n, s + rows)) for s in range(0, n, rows)]):
            acc += part
            zero_rows += zr
            nonzero_per_layer += nz
    warn_zero_rows(int(zero_rows))
    out = (acc / n).clamp(-1.0, 1.0)
    # A layer with itself: exactly 1 per nonzero sample (zero vectors count 0), not 1 up to rounding.
    out.diagonal().copy_(nonzero_per_layer.double() / n)
    return out.to(compute_dtype(layers))


def triton_matrix(layers: list[torch.Tensor], *, precision: str) -> torch.Tensor:
    """As torch_matrix, in one pass of fastsim.kernels.cosine.layer_cosine_sums (float32 dots
    whatever the precision: the kernel is bound by reading the data)."""
    from ..kernels.cosine import layer_cosine_sums

    n, L, d = layers[0].shape[0], len(layers), layers[0].shape[1]
    dt = compute_dtype(layers)
    stacked = stacked_view(layers)
    total = torch.zeros(L, L, dtype=torch.float64, device=layers[0].device)
    zero_per_layer = torch.zeros(L, dtype=torch.long, device=layers[0].device)
    zero_frames = 0
    # Without a stacked view, frames are gathered chunk by chunk (one extra copy of each chunk).
    spans = [(0, n)] if stacked is not None else list(budget.row_chunks(n, 2 * L * d * layers[0].element_size()))
    for s, e in spans:
        x = stacked[:, s:e] if stacked is not None else torch.stack([t[s:e] for t in layers])
        sums, flag = layer_cosine_sums(x)
        total += sums
        redo = flag.nonzero().flatten()
        if redo.numel():  # zero rows or extreme magnitudes: scaled recomputation of those frames
            units, zero = zip(*(unit_rows(t[s:e][redo], dt) for t in layers))
            flat = torch.stack(units).reshape(L, -1)
            total += (flat @ flat.T).double()
            zero = torch.stack(zero)
            zero_per_layer += zero.sum(1)
            zero_frames += int(zero.any(0).sum())
    warn_zero_rows(zero_frames)
    out = (total / n).clamp(-1.0, 1.0)
    out.diagonal().copy_((n - zero_per_layer).double() / n)
    return out.to(dt)


def torch_pair(a: torch.Tensor, b: torch.Tensor, precision: str = "highest") -> torch.Tensor:
    """0-d tensor: the mean over samples of cos(a_i, b_i)."""
    dt = work_dtype([a, b], precision)
    n, d = a.shape
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    zero_rows = torch.zeros((), dtype=torch.long, device=a.device)
    for s, e in budget.row_chunks(n, 4 * d * torch.finfo(dt).bits // 8):
        ua, za = unit_rows(a[s:e], dt)
        ub, zb = unit_rows(b[s:e], dt)
        total += (ua * ub).sum(dtype=torch.float64)
        zero_rows += (za | zb).sum()
    warn_zero_rows(int(zero_rows))
    return (total / n).clamp(-1.0, 1.0).to(compute_dtype([a, b]))


def triton_pair(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    from ..kernels.cosine import row_cosine

    cos, flag = row_cosine(a, b)
    rescue = (flag == 2).nonzero().flatten()
    if rescue.numel():  # extreme magnitudes: recompute those rows with per-row scaling
        ua, _ = unit_rows(a[rescue], cos.dtype)
        ub, _ = unit_rows(b[rescue], cos.dtype)
        cos[rescue] = (ua * ub).sum(1)
    warn_zero_rows(int((flag == 1).sum()))
    return cos.sum(dtype=torch.float64).div(a.shape[0]).clamp(-1.0, 1.0).to(cos.dtype)


def pair(a: torch.Tensor, b: torch.Tensor, *, backend: str, precision: str) -> torch.Tensor:
    return triton_pair(a, b) if backend == "triton" else torch_pair(a, b, precision)


class CosineSum(Accumulator):
    """Exact streaming cosine: the sum over samples of every pair's per-sample cosine, and the count."""

    def __init__(self, *, precision: str = "highest") -> None:
        self.precision = precision
        self.reset()

    def reset(self) -> None:
        self.total: torch.Tensor | None = None  # (L, L) float64 CPU
        self.n = 0

    def update(self, layers: list[torch.Tensor]) -> Self:
        n = layers[0].shape[0]
        if n == 0:
            return self
        c = torch_matrix(layers, precision=self.precision).double().cpu() * n
        self.total = c if self.total is None else self.total + c
        self.n += n
        return self

    def merge(self, other: Self) -> Self:
        self.check_mergeable(other)
        if other.total is not None:
            self.total = other.total if self.total is None else self.total + other.total
        self.n += other.n
        return self

    def all_reduce(self, group: Any = None) -> Self:
        """Sum the totals and counts over the ranks (every rank must have seen samples)."""
        self.total = all_reduce_sum(self.total, group)
        self.n = int(all_reduce_sum(torch.tensor([float(self.n)], dtype=torch.float64), group).item())
        return self

    def compute(self) -> torch.Tensor:
        if self.n == 0:
            raise ValueError("no samples yet: call update() first")
        return self.total / self.n


def accumulator(*, precision: str = "highest") -> CosineSum:
    return CosineSum(precision=precision)


METRIC = Metric(
    name="cosine",
    title="mean per-frame cosine similarity",
    definition="mean over samples of cos(a_i, b_i) (a zero vector contributes 0)",
    reference=reference,
    implementations={"torch": torch_matrix, "triton": triton_matrix},
    same_features=True,
    streaming="exact",
    accumulator=accumulator,
    pair=pair,
)
