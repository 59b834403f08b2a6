"""Each layer's exact k-nearest-neighbour lists, in exact order, with their exact similarities:
what the neighbour-list measures (``fastsim.metrics.jaccard_knn``, ``rank_knn``,
``second_order_cosine``, ``cycle_knn``) compute once per layer and share across every pair.

The sets come from ``fastsim.core.knn.knn_indices`` (exact at precision "highest": equal to the
float64 definition, ties to the smaller index). Measures that read ranks need the order inside
the list as well, which ``knn_indices`` leaves to the approximate values: here every listed
neighbour's cosine similarity is recomputed in float64 from the input values
(``fastsim.core.scaling.exact_similarities``, the values of the exact re-rank) and each row is
ordered by (similarity descending, index ascending), the rule of ``fastsim.reference.knn_indices``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import budget
from .knn import best_k, knn_indices
from .scaling import exact_similarities, row_scales


@dataclass
class RankedLists:
    x: torch.Tensor  # (n, d) the layer's input values
    scales: torch.Tensor  # (n, 2) float64, from row_scales
    lists: torch.Tensor  # (n, k) int64: most similar first, ties to the smaller index
    sims: torch.Tensor | None  # (n, k) float64 exact cosine similarities of the listed neighbours

    @property
    def k(self) -> int:
        return self.lists.shape[1]

    def similarities(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """float64 (r, c) exact cosine similarities of samples `rows` with `cols` in this layer."""
        return exact_similarities(self.x, self.scales, rows, cols)


def ranked_lists(x: torch.Tensor, k: int, *, precision: str, use_native: bool, ordered: bool = True) -> RankedLists:
    """A layer's neighbour lists; with ordered=True in exact order with their exact similarities."""
    lists = knn_indices(x, k, precision=precision, use_native=use_native)
    scales = row_scales(x, None)[1]
    if not ordered:
        return RankedLists(x, scales, lists, None)
    n = x.shape[0]
    sims = torch.empty(n, k, dtype=torch.float64, device=x.device)
    for s, e in budget.row_chunks(n, k * x.shape[1] * 8 * 3):
        rows = torch.arange(s, e, device=x.device)
        sims[s:e], lists[s:e] = best_k(exact_similarities(x, scales, rows, lists[s:e]), lists[s:e], k)
    return RankedLists(x, scales, lists, sims)


def shared_positions(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """bool (r, k, k): [a[i, p] == b[i, q]] for two (r, k) chunks of neighbour lists."""
    return a[:, :, None] == b[:, None, :]
