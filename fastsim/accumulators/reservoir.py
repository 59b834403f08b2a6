"""A bounded uniform sample of everything seen: bottom-k sampling, mergeable.

Every sample gets a random key and the ``capacity`` smallest keys are kept. That is a uniform
sample without replacement of all samples seen, and two such samples (with independent keys)
merge into the sample of their union by keeping the smallest keys of both. Metrics that need all
samples at once (kNN-based ones, RBF CKA) are computed on it.
"""

from __future__ import annotations

from typing import Any

import torch
from typing_extensions import Self

from .base import Accumulator


class BottomKSample(Accumulator):
    """Up to ``capacity`` samples of (L, n, D) stacks, uniform over everything seen."""

    def __init__(self, capacity: int, seed: int = 0) -> None:
        self.capacity = capacity
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.reset()

    def settings(self) -> tuple:
        return (self.capacity,)

    def reset(self) -> None:
        self.keys: torch.Tensor | None = None  # (m,) float64
        self.kept: torch.Tensor | None = None  # (L, m, D)

    def update(self, x: torch.Tensor) -> Self:
        """Offer the samples of one (L, S, D) stack."""
        keys = torch.rand(x.shape[1], generator=self.generator, dtype=torch.float64)
        self._keep_smallest([(keys, x)])
        return self

    def _keep_smallest(self, pieces: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        if self.keys is not None:
            pieces = [(self.keys, self.kept), *pieces]
        pieces = [(k, x) for k, x in pieces if k is not None and k.numel()]
        if not pieces:
            return
        dev = pieces[0][1].device
        keys = torch.cat([k for k, _ in pieces])
        kept = torch.cat([x.to(dev) for _, x in pieces], 1)
        if keys.numel() > self.capacity:
            keys, order = torch.topk(keys, self.capacity, largest=False)
            kept = kept[:, order.to(dev)]
        self.keys, self.kept = keys, kept

    def merge(self, other: Self) -> Self:
        self.check_mergeable(other)
        if other.keys is not None:
            self._keep_smallest([(other.keys, other.kept)])
        return self

    def portable(self) -> Self:
        out = BottomKSample.__new__(BottomKSample)
        out.capacity, out.seed, out.generator = self.capacity, self.seed, None
        out.keys = self.keys
        out.kept = None if self.kept is None else self.kept.cpu()
        return out

    def all_reduce(self, group: Any = None) -> Self:
        generator = self.generator  # the local key stream goes on after the reduction
        super().all_reduce(group)
        self.generator = generator
        return self

    def compute(self) -> torch.Tensor | None:
        """The (L, m, D) sample (None before any update)."""
        return self.kept

    @property
    def size(self) -> int:
        return 0 if self.keys is None else int(self.keys.numel())
