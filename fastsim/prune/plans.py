"""Which layers to remove: ``plan(similarity, n_remove, strategy)``.

The similarity matrix is indexed by hidden state, as ``fastsim.analyze`` returns it with
``include_input=True`` (its default): row 0 is the stack input and row i + 1 is the output of
layer i, so an L-layer model gives an (L + 1) x (L + 1) matrix. Pass ``include_input=False`` for an
L x L matrix of layer outputs only (then "block_influence", which needs layer 0's input, is not
available). Layers are 0-based: layer i is the i-th block of the model's layer list, the index
``skip_layers`` and ``remove_layers`` take.

Strategies (each gives an order of removal; ``plan`` takes its first ``n_remove``, so the plans of
one strategy are nested: level n + 1 removes what level n removes and one layer more):

* ``"block"`` — the paper's approach: detect the blocks of mutually similar consecutive layers
  (``fastsim.blocks.block_structure`` on the layer rows; ``threshold`` and ``min_contrast`` as
  there) and remove layers *inside* them, keeping each block's first and last layer. Repeatedly,
  from the block with the most removable layers left, the layer with the highest mean similarity
  to the rest of its block. It can remove at most the blocks' inner layers; asking for more
  raises. A matrix without block structure (similarity that only falls off with layer distance,
  as in a random-weight model) has no blocks: the strategy removes nothing and ``plan`` says why
  (``layer_blocks``) instead of inventing blocks.
* ``"adjacent"`` — greedy: among the layers still kept, remove the one most similar to its kept
  successor (similarity of their outputs), then look again. The last layer is never removed.
* ``"block_influence"`` — ShortGPT's block influence, 1 − cos(input of layer i, output of layer i),
  from the cosine matrix (rows i and i + 1); lowest first. Needs the input row.
* ``"last"`` — from the end (L−1, L−2, …); ``"first"`` — from the front, layer 0 kept (1, 2, …);
  ``"alternate"`` — front and back in turn, layer 0 kept (1, L−1, 2, L−2, …).
* ``"random"`` — a seeded random order.
* an explicit list of layer indices — removed in that order.

Every strategy keeps at least one layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..blocks import MIN_CONTRAST, BlockStructure, block_structure
from .surgery import check_layers

STRATEGIES = ("block", "adjacent", "block_influence", "last", "first", "alternate", "random")
#: strategies that read the similarity matrix
NEEDS_SIMILARITY = ("block", "adjacent", "block_influence")
#: the metric each similarity-guided strategy reads by default (fastsim.analyze's metric names)
DEFAULT_METRIC = {"block": "cka", "adjacent": "cka", "block_influence": "cosine"}


def _matrix(similarity: Any, include_input: bool, num_layers: int | None) -> tuple[np.ndarray, int]:
    S = np.asarray(similarity.detach().cpu() if hasattr(similarity, "detach") else similarity, dtype=np.float64)
    if S.ndim != 2 or S.shape[0] != S.shape[1] or S.shape[0] < 1 + int(include_input):
        raise ValueError(f"similarity must be a square matrix with a row per hidden state; got shape {S.shape}")
    if not np.isfinite(S).all():
        raise ValueError("similarity contains NaN or Inf (a degenerate layer?)")
    L = S.shape[0] - int(include_input)
    if num_layers is not None and num_layers != L:
        expect = f"({num_layers + 1}, {num_layers + 1}) with the input row" if include_input else f"({num_layers}, {num_layers})"
        raise ValueError(
            f"similarity has shape {S.shape} but num_layers={num_layers}: expected {expect}"
            + ("; pass include_input=False for a matrix of layer outputs only" if include_input and S.shape[0] == num_layers else "")
            + ("; pass include_input=True for a matrix with the stack input row" if not include_input and S.shape[0] == num_layers + 1 else "")
        )
    return S, L


def layer_blocks(similarity: Any, *, include_input: bool = True, num_layers: int | None = None,
                 threshold: float | None = None, min_contrast: float = MIN_CONTRAST) -> BlockStructure:
    """The block structure the "block" strategy reads: ``block_structure`` of the layer rows (the
    stack input row left out), indexed by layer (0-based)."""
    S, _ = _matrix(similarity, include_input, num_layers)
    return block_structure(S[1:, 1:] if include_input else S, threshold, min_contrast=min_contrast)


def _block_order(layer_sim: np.ndarray, structure: BlockStructure) -> list[int]:
    blocks = structure.blocks
    inner = {b: list(range(b[0] + 1, b[1])) for b in blocks}
    members = {b: list(range(b[0], b[1] + 1)) for b in blocks}
    order: list[int] = []
    while any(inner.values()):
        b = max(blocks, key=lambda blk: (len(inner[blk]), blk[1] - blk[0]))  # most removable left, then the larger
        candidates = inner[b]

        def redundancy(i: int, block: tuple[int, int] = b) -> float:
            others = [j for j in members[block] if j != i]
            return float(np.mean(layer_sim[i, others]))

        pick = max(candidates, key=lambda i: (redundancy(i), i))
        order.append(pick)
        candidates.remove(pick)
        members[b].remove(pick)
    return order


def _adjacent_order(layer_sim: np.ndarray) -> list[int]:
    kept = list(range(layer_sim.shape[0]))
    order = []
    while len(kept) > 1:
        j = max(range(len(kept) - 1), key=lambda j: (layer_sim[kept[j], kept[j + 1]], kept[j]))
        order.append(kept.pop(j))
    return order


def removal_order(
    similarity: Any,
    strategy: str | Sequence[int],
    *,
    include_input: bool = True,
    num_layers: int | None = None,
    seed: int = 0,
    threshold: float | None = None,
    min_contrast: float = MIN_CONTRAST,
) -> list[int]:
    """The full order in which a strategy removes layers (as long as it can go); [] for "block"
    on a matrix without block structure."""
    if not isinstance(strategy, str):
        if num_layers is None and similarity is None:
            raise ValueError("an explicit layer list needs num_layers (or the similarity matrix) to check the indices")
        L = num_layers if similarity is None else _matrix(similarity, include_input, num_layers)[1]
        order = list(strategy)
        check_layers(order, L, "strategy")
        return [int(v) for v in order]
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, or a list of layer indices; got {strategy!r}")
    if strategy in NEEDS_SIMILARITY:
        if similarity is None:
            raise ValueError(f"strategy {strategy!r} needs the similarity matrix (got similarity=None)")
        S, L = _matrix(similarity, include_input, num_layers)
        layer_sim = S[1:, 1:] if include_input else S
        if strategy == "block":
            return _block_order(layer_sim, block_structure(layer_sim, threshold, min_contrast=min_contrast))
        if strategy == "adjacent":
            return _adjacent_order(layer_sim)
        if not include_input:
            raise ValueError("strategy 'block_influence' needs the input of every layer: pass the (L+1) x (L+1) "
                             "matrix with the stack input row (fastsim.analyze with include_input=True)")
        influence = np.array([1.0 - S[i, i + 1] for i in range(L)])
        return [int(i) for i in np.argsort(influence, kind="stable")][: L - 1]
    if similarity is not None:
        L = _matrix(similarity, include_input, num_layers)[1]
    elif num_layers is not None:
        L = int(num_layers)
    else:
        raise ValueError(f"strategy {strategy!r} needs num_layers (or a similarity matrix to read it from)")
    if L < 1:
        raise ValueError(f"num_layers must be >= 1; got {L}")
    if strategy == "last":
        return list(range(L - 1, 0, -1))
    if strategy == "first":
        return list(range(1, L))
    if strategy == "alternate":
        front, back, order = 1, L - 1, []
        while front <= back:
            order.append(front)
            if back != front:
                order.append(back)
            front, back = front + 1, back - 1
        return order
    return [int(i) for i in np.random.default_rng(seed).permutation(L)][: L - 1]  # random


def plan(
    similarity: Any,
    n_remove: int,
    strategy: str | Sequence[int] = "block",
    *,
    include_input: bool = True,
    num_layers: int | None = None,
    seed: int = 0,
    threshold: float | None = None,
    min_contrast: float = MIN_CONTRAST,
) -> list[int]:
    """The ``n_remove`` layers (0-based, sorted) that ``strategy`` removes. See the module docs for
    the strategies and the matrix layout; ``similarity`` may be None for the orders that do not
    read it ("last", "first", "alternate", "random", a list), then give ``num_layers``."""
    if isinstance(n_remove, bool) or not isinstance(n_remove, (int, np.integer)) or n_remove < 0:
        raise ValueError(f"n_remove must be an integer >= 0; got {n_remove!r}")
    order = removal_order(similarity, strategy, include_input=include_input, num_layers=num_layers, seed=seed,
                          threshold=threshold, min_contrast=min_contrast)
    if n_remove > len(order):
        name = strategy if isinstance(strategy, str) else "the given list"
        if name == "block":
            structure = layer_blocks(similarity, include_input=include_input, num_layers=num_layers,
                                     threshold=threshold, min_contrast=min_contrast)
            if not structure.structured:
                raise ValueError(f"n_remove={n_remove}: strategy 'block' has nothing to remove, the similarity matrix "
                                 f"has {structure.describe()}")
        why = {"block": " (the layers inside the detected blocks; each block keeps its first and last layer)"}.get(name, "")
        raise ValueError(f"n_remove={n_remove} is too large: strategy {name!r} can remove at most {len(order)} layer(s){why}")
    return sorted(order[: int(n_remove)])
