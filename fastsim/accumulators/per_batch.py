"""Metrics computed within batches of a fixed number of samples and averaged over the batches.

The seed paper's protocol: samples are grouped into batches of ``batch_size`` (128 in the paper)
in arrival order; each metric is computed within each full batch and the matrices are averaged. A
last, partial batch (at least ``min_partial`` samples) is used only when no full batch exists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from typing_extensions import Self

from .base import Accumulator, all_reduce_sum

#: (L, S, D) samples -> {metric name: (L, L) float64 CPU matrix}
Matrices = Callable[[torch.Tensor], dict[str, torch.Tensor]]


class PerBatch(Accumulator):
    def __init__(self, batch_size: int, matrices: Matrices, min_partial: int = 4) -> None:
        self.batch_size = batch_size
        self.matrices = matrices
        self.min_partial = min_partial
        self.reset()

    def settings(self) -> tuple:
        return (self.batch_size, self.min_partial)

    def reset(self) -> None:
        self.pending: list[torch.Tensor] = []  # samples waiting for a full batch
        self.sums: dict[str, torch.Tensor] = {}
        self.batches = 0

    def update(self, x: torch.Tensor) -> Self:
        """Add the samples of one (L, S, D) stack; every batch they complete is computed now."""
        self.pending.append(x)
        self.flush()
        return self

    def flush(self) -> None:
        """Compute every full batch of pending samples."""
        if not self.pending:
            return
        x = torch.cat(self.pending, 1)
        start = 0
        while x.shape[1] - start >= self.batch_size:
            self._add(self.matrices(x[:, start : start + self.batch_size]))
            start += self.batch_size
        rest = x[:, start:]
        self.pending = [rest] if rest.shape[1] else []

    def _add(self, mats: dict[str, torch.Tensor]) -> None:
        for m, v in mats.items():
            self.sums[m] = v if m not in self.sums else self.sums[m] + v
        self.batches += 1

    def merge(self, other: Self) -> Self:
        self.check_mergeable(other)
        for m, v in other.sums.items():
            self.sums[m] = v if m not in self.sums else self.sums[m] + v
        self.batches += other.batches
        self.pending += other.pending
        self.flush()
        return self

    def compute(self) -> dict[str, torch.Tensor]:
        """{metric: mean over the full batches}; with none yet, the partial batch computed on the
        side (the state is unchanged)."""
        self.flush()
        if self.batches:
            return {m: v / self.batches for m, v in self.sums.items()}
        rest = torch.cat(self.pending, 1) if self.pending else None
        if rest is None or rest.shape[1] < self.min_partial:
            have = 0 if rest is None else rest.shape[1]
            raise ValueError(f"per_batch needs at least {self.min_partial} samples; got {have}")
        return self.matrices(rest)

    def all_reduce(self, group: Any = None) -> Self:
        """Sum the batch matrices and counts over the ranks (the pending samples stay on their
        rank: each rank batches its own data). Every rank must hold at least one full batch."""
        self.flush()
        self.batches = int(all_reduce_sum(torch.tensor([float(self.batches)], dtype=torch.float64), group).item())
        for m in sorted(self.sums):
            self.sums[m] = all_reduce_sum(self.sums[m], group)
        return self
