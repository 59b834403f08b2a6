"""Layers read in place by one launch: the checks, one dtype, the pointer table and the tiles.

The fused kernels that take L layers X_a (n, d_a) of any widths (``linear_cka``, ``moments``) read
them where they lie, through a table of (data pointer, row stride, width, first column of the
layer among all D = sum d_a features), and split each layer's features into tiles aligned to the
layer. This is that preparation, once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .precision import TL_DTYPE, accumulation_dtype


def in_place(layers: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], torch.dtype, bool]:
    """(layers, dtype, aligned): the layers checked ((n, d) with one n, at least one), in one dtype
    with unit feature stride (their own if they share one, else the accumulation dtype; a copy only
    of the layers that need it), and whether every data pointer, row stride and width is a
    multiple of 16 (the kernels' aligned specialization)."""
    if len(layers) == 0:
        raise ValueError("no layers")
    n = layers[0].shape[0]
    if any(x.dim() != 2 or x.shape[0] != n for x in layers):
        raise ValueError(f"layers must be (n, d) with one n; got {[tuple(x.shape) for x in layers]}")
    dtypes = {x.dtype for x in layers}
    dtype = dtypes.pop() if len(dtypes) == 1 else accumulation_dtype(*(x.dtype for x in layers))
    if dtype not in TL_DTYPE:
        raise TypeError(f"layers must be float16, bfloat16, float32 or float64; got {dtype}")
    layers = [x if x.dtype == dtype and (x.stride(1) == 1 or x.shape[1] <= 1) else x.to(dtype).contiguous() for x in layers]
    aligned = all(x.data_ptr() % 16 == 0 and (x.stride(0) % 16 == 0 or n <= 1) and x.shape[1] % 16 == 0 for x in layers)
    return layers, dtype, aligned


def pointer_table(layers: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[int]]:
    """((L, 4) int64 on the CPU: data pointer, row stride, width, first column; the L + 1 column
    offsets, the last being D)."""
    widths = [x.shape[1] for x in layers]
    offsets = [0]
    for w in widths:
        offsets.append(offsets[-1] + w)
    table = torch.tensor([[x.data_ptr(), x.stride(0), w, o] for x, w, o in zip(layers, widths, offsets)], dtype=torch.int64)
    return table, offsets


def column_tiles(widths: Sequence[int], tile: int) -> list[tuple[int, int]]:
    """(layer, first column) of every tile of `tile` features, aligned to the layers."""
    return [(a, c) for a, w in enumerate(widths) for c in range(0, w, tile)]
