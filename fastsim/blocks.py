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

No block structure. A cut always splits *something*: on a smooth matrix, where similarity only
falls off with the distance between layers (a random-weight model: linear CKA from 0.90 at the
ends to 0.99 between neighbours), Otsu's cut still makes 3-4 "blocks". So the cut's blocks are
kept only if they are real: their **contrast** must be at least ``min_contrast`` (default
``MIN_CONTRAST`` = 0.05, on the similarity's own scale). The contrast compares pairs of layers
*at the same distance*: for every distance d at which some pair lies inside one block and some
pair crosses a block boundary (single layers count as blocks of their own), the mean similarity
of the inside pairs minus that of the crossing pairs, averaged over the crossing pairs. On a
smooth matrix, layers d apart are equally similar wherever the cut falls: the contrast is about
0 (measured: -0.011 .. 0.004 for cosine, linear CKA and mutual kNN of the four random-weight base
models on eight sentences). Real blocks make neighbours across a boundary far less similar than
neighbours inside a block: 0.12-0.47 on planted two-block matrices like the published speech
model pictures. With a contrast below the minimum, ``block_structure`` reports no blocks and says
why (``BlockStructure.describe()``). A cut that puts every layer in one block has no crossing
pair and no contrast; it is kept (every pair clears the threshold).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: the least contrast (same-distance similarity inside blocks minus across them) that counts as
#: block structure; see the module docs for the numbers behind it
MIN_CONTRAST = 0.05


@dataclass(frozen=True)
class BlockStructure:
    """What ``block_structure`` found: the blocks (none when the cut's candidates have too little
    contrast), the threshold used, the candidates' contrast (None: undefined, no pair crosses a
    boundary or no block was cut) and the minimum it was held to."""

    blocks: list[tuple[int, int]]
    candidates: list[tuple[int, int]]
    threshold: float
    contrast: float | None
    min_contrast: float

    @property
    def structured(self) -> bool:
        """Whether the matrix has blocks (the candidates passed the contrast test)."""
        return bool(self.blocks)

    def describe(self, labels: Sequence[str] | None = None) -> str:
        """One line: the blocks and their contrast, or why there are none (rows named by ``labels``,
        default: their indices)."""
        def ranges(blocks: list[tuple[int, int]]) -> str:
            name = (lambda i: str(i)) if labels is None else (lambda i: str(labels[i]))
            return ", ".join(f"{name(a)}-{name(b)}" for a, b in blocks)

        if self.blocks:
            return "blocks " + ranges(self.blocks) + (
                "" if self.contrast is None else f" (contrast {self.contrast:.3f})")
        if not self.candidates:
            return f"no block structure: no two neighbouring layers reach the threshold {self.threshold:.3f}"
        return (f"no block structure: the cut at {self.threshold:.3f} would make blocks {ranges(self.candidates)}, "
                f"but layers at the same distance are about as similar inside them as across them (contrast "
                f"{self.contrast:.3f} < {self.min_contrast:g})")


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


def _matrix(similarity: Any) -> np.ndarray:
    S = np.asarray(similarity.detach().cpu() if hasattr(similarity, "detach") else similarity, dtype=np.float64)
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise ValueError(f"similarity must be a square (L, L) matrix; got shape {S.shape}")
    if not np.isfinite(S).all():
        raise ValueError("similarity contains NaN or Inf (a degenerate layer?); drop those layers first")
    return S


def _check_real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    return float(value)


def _cut(S: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Contiguous complete-linkage merging down to ``threshold``: every group, singletons included."""
    blocks = [[i, i] for i in range(S.shape[0])]

    def linkage(a: list[int], b: list[int]) -> float:
        return float(S[a[0] : a[1] + 1, b[0] : b[1] + 1].min())

    while len(blocks) > 1:
        links = [linkage(blocks[i], blocks[i + 1]) for i in range(len(blocks) - 1)]
        best = int(np.argmax(links))
        if links[best] < threshold:
            break
        blocks[best] = [blocks[best][0], blocks[best + 1][1]]
        del blocks[best + 1]
    return [(a, b) for a, b in blocks]


def contrast(similarity: Any, groups: list[tuple[int, int]]) -> float | None:
    """Same-distance contrast of a partition of the layers into contiguous groups (inclusive
    ranges covering 0 .. L-1): at each distance d with pairs both inside a group and across groups,
    mean inside minus mean across, averaged over the across pairs. None when no distance has both."""
    S = _matrix(similarity)
    L = S.shape[0]
    group = np.empty(L, dtype=np.int64)
    for g, (a, b) in enumerate(groups):
        group[a : b + 1] = g
    i, j = np.triu_indices(L, 1)
    inside = group[i] == group[j]
    values, distance = S[i, j], j - i
    total, weight = 0.0, 0
    for d in np.unique(distance):
        at = distance == d
        n_across = int((at & ~inside).sum())
        if n_across and (at & inside).any():
            total += n_across * (values[at & inside].mean() - values[at & ~inside].mean())
            weight += n_across
    return float(total / weight) if weight else None


def block_structure(similarity: Any, threshold: float | None = None, *,
                    min_contrast: float = MIN_CONTRAST) -> BlockStructure:
    """The blocks of mutually similar consecutive layers, or none when the matrix has no block
    structure (see the module docs: the cut's candidates must have ``min_contrast``; 0 keeps
    any cut, as the bare Otsu cut did)."""
    S = _matrix(similarity)
    min_contrast = _check_real("min_contrast", min_contrast)
    if min_contrast < 0:
        raise ValueError(f"min_contrast must be >= 0 (0: keep any cut); got {min_contrast!r}")
    L = S.shape[0]
    if threshold is not None:
        threshold = _check_real("threshold", threshold)
    if L < 2:
        return BlockStructure([], [], float("nan") if threshold is None else threshold, None, min_contrast)
    if threshold is None:
        threshold = otsu_threshold(S[np.triu_indices(L, 1)])
    groups = _cut(S, threshold)
    candidates = [(a, b) for a, b in groups if b > a]
    c = contrast(S, groups) if candidates else None
    keep = candidates if c is None or min_contrast == 0 or c >= min_contrast else []
    return BlockStructure(keep, candidates, float(threshold), c, min_contrast)


def find_blocks(similarity: Any, threshold: float | None = None, *,
                min_contrast: float = MIN_CONTRAST) -> list[tuple[int, int]]:
    """Inclusive (first, last) layer ranges of the blocks of mutually similar consecutive layers;
    [] when there are none or the matrix has no block structure (``block_structure`` says which)."""
    return block_structure(similarity, threshold, min_contrast=min_contrast).blocks
