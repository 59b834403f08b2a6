"""Blocks of mutually similar consecutive layers in a layer-similarity matrix.

Algorithm (contiguous complete-linkage clustering):

1. Start with every layer as its own block.
2. For each pair of neighbouring blocks, the linkage is the *smallest* similarity between a
   layer of one and a layer of the other. Merging them therefore keeps every pair of layers
   within a block at least that similar: the blocks are "mutually similar", not chained.
3. Merge the neighbouring pair with the largest linkage while it is at least the threshold;
   stop when no pair is.
4. Report the blocks of two or more layers, as inclusive (first, last) layer ranges.

Threshold: given, or by default Otsu's threshold of the matrix's off-diagonal values (the cut
that best separates them into a "similar" and a "dissimilar" group: the largest between-group
variance). If all off-diagonal values are equal, the threshold is that value, and every layer
joins one block. The automatic threshold assumes both groups are sizable (in a speech model's
two big blocks, most pairs are within a block); when within-block pairs are a small minority,
pass a threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def otsu_threshold(values: np.ndarray) -> float:
    """The cut t maximizing w0 w1 (mu0 - mu1)^2 for the groups values < t and values >= t; t is
    the smallest value of the upper group."""
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if v.size == 0:
        raise ValueError("otsu_threshold needs at least one value")
    if v[0] == v[-1]:
        return float(v[0])
    best, cut = -1.0, float(v[-1])
    csum = np.cumsum(v)
    total = csum[-1]
    n = v.size
    for i in range(1, n):  # lower group v[:i], upper group v[i:]
        if v[i] == v[i - 1]:
            continue
        mu0 = csum[i - 1] / i
        mu1 = (total - csum[i - 1]) / (n - i)
        score = i * (n - i) * (mu0 - mu1) ** 2
        if score > best:
            best, cut = score, float(v[i])
    return cut


def find_blocks(similarity: Any, threshold: float | None = None) -> list[tuple[int, int]]:
    """Inclusive (first, last) layer ranges of the blocks of mutually similar consecutive layers."""
    S = np.asarray(similarity.detach().cpu() if hasattr(similarity, "detach") else similarity, dtype=np.float64)
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise ValueError(f"similarity must be a square (L, L) matrix; got shape {S.shape}")
    if not np.isfinite(S).all():
        raise ValueError("similarity contains NaN or Inf (a degenerate layer?); drop those layers first")
    L = S.shape[0]
    if L < 2:
        return []
    if threshold is None:
        threshold = otsu_threshold(S[np.triu_indices(L, 1)])
    blocks = [[i, i] for i in range(L)]

    def linkage(a: list[int], b: list[int]) -> float:
        return float(S[a[0] : a[1] + 1, b[0] : b[1] + 1].min())

    while len(blocks) > 1:
        links = [linkage(blocks[i], blocks[i + 1]) for i in range(len(blocks) - 1)]
        best = int(np.argmax(links))
        if links[best] < threshold:
            break
        blocks[best] = [blocks[best][0], blocks[best + 1][1]]
        del blocks[best + 1]
    return [(a, b) for a, b in blocks if b > a]
