"""Thin wrappers around the compiled module ``fastsim._C``.

The module takes raw buffer addresses plus sizes (and a CUDA stream for device work); this file
checks dtype, layout and device, and allocates the outputs, so nothing unsafe reaches C++.
"""

from __future__ import annotations

import contextlib
import importlib

import torch

try:
    # By name: the compiled extension has no Python source, and a static "from . import _C" reads
    # to import checkers (import-linter) as an import of the whole fastsim package.
    _C = importlib.import_module("fastsim._C")

    IMPORT_ERROR: ImportError | None = None
except ImportError as exc:  # a source checkout that was never built
    _C = None
    IMPORT_ERROR = exc


def available() -> bool:
    return _C is not None


def cuda_compiled() -> bool:
    return _C is not None and bool(_C.cuda_compiled())


def require(device: torch.device) -> None:
    if _C is None:
        raise RuntimeError(f"fastsim._C is not built (import failed: {IMPORT_ERROR}); reinstall fastsim")
    if device.type == "cuda" and not _C.cuda_compiled():
        raise RuntimeError("fastsim._C was built without CUDA kernels (no CUDA compiler at build time)")
    if device.type not in ("cpu", "cuda"):
        raise RuntimeError(f"fastsim._C kernels run on 'cpu' or 'cuda' tensors, not {device.type!r}")


def _index_buffer(name: str, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    if x.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{name} must hold int32 or int64 indices; got {x.dtype}")
    return x.contiguous(), 32 if x.dtype == torch.int32 else 64


def _stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0


def overlap_all_pairs(lists: torch.Tensor) -> torch.Tensor:
    """int64 (L, L): summed row overlaps of every pair of layers of an (L, n, k) neighbour stack."""
    if lists.dim() != 3:
        raise ValueError(f"lists must be (L, n, k); got shape {tuple(lists.shape)}")
    require(lists.device)
    lists, bits = _index_buffer("lists", lists)
    L, n, k = lists.shape
    totals = torch.empty(L, L, dtype=torch.int64, device=lists.device)
    with torch.cuda.device(lists.device) if lists.device.type == "cuda" else contextlib.nullcontext():
        _C.overlap_all_pairs(lists.data_ptr(), totals.data_ptr(), L, n, k, bits, lists.device.type, _stream(lists.device))
    return totals


#: Index of an empty heap slot: every real candidate beats it (see csrc/heap.h).
EMPTY_INDEX = torch.iinfo(torch.int64).max


def topk_state(n: int, count: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Empty running top-`count` heaps for n samples: values -inf, indices EMPTY_INDEX."""
    if n < 0 or count < 1:
        raise ValueError(f"need n >= 0 and count >= 1; got n = {n}, count = {count}")
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be float32 or float64; got {dtype}")
    vals = torch.full((n, count), float("-inf"), dtype=dtype, device=device)
    idx = torch.full((n, count), EMPTY_INDEX, dtype=torch.int64, device=device)
    return vals, idx


def _check_state(vals: torch.Tensor, idx: torch.Tensor) -> None:
    if vals.dim() != 2 or idx.shape != vals.shape:
        raise ValueError(f"vals and idx must be (n, count) of one shape; got {tuple(vals.shape)} and {tuple(idx.shape)}")
    if vals.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"vals must be float32 or float64; got {vals.dtype}")
    if idx.dtype != torch.int64:
        raise TypeError(f"idx must be int64; got {idx.dtype}")
    if not (vals.is_contiguous() and idx.is_contiguous()):
        raise ValueError("vals and idx must be contiguous (they are updated in place)")
    if vals.device != idx.device:
        raise ValueError("vals and idx must be on one device")


def topk_tile(
    tile: torch.Tensor,
    row0: int,
    col0: int,
    vals: torch.Tensor,
    idx: torch.Tensor,
    col_side_begin: int | None = None,
    threads: int = 0,
) -> None:
    """Feed the similarity tile S[i, j] = sim(row0 + i, col0 + j) to the running heaps in place:
    to the heaps of its rows (self excluded) and, for columns j >= col_side_begin, to the heaps of
    samples col0 + j (default: no column side). Ties go to the smaller index (csrc/heap.h).
    threads: OpenMP threads on the CPU (0: the OpenMP default). Releases the GIL on the CPU."""
    _check_state(vals, idx)
    if tile.dim() != 2 or tile.dtype != vals.dtype or tile.device != vals.device:
        raise ValueError(f"tile must be a 2-D {vals.dtype} tensor on {vals.device}; got {tuple(tile.shape)} {tile.dtype} on {tile.device}")
    rows, cols = tile.shape
    if (cols > 1 and tile.stride(1) != 1) or (rows > 1 and tile.stride(0) < cols):
        tile = tile.contiguous()
    ld = tile.stride(0) if rows > 1 else cols
    require(tile.device)
    n, count = vals.shape
    if not (0 <= row0 and row0 + rows <= n and 0 <= col0 and col0 + cols <= n):
        raise ValueError(f"tile rows [{row0}, {row0 + rows}) and columns [{col0}, {col0 + cols}) must lie within [0, {n})")
    begin = cols if col_side_begin is None else int(col_side_begin)
    with torch.cuda.device(tile.device) if tile.device.type == "cuda" else contextlib.nullcontext():
        _C.topk_tile(
            tile.data_ptr(), ld, rows, cols, row0, col0, begin, vals.data_ptr(), idx.data_ptr(),
            n, count, 32 if vals.dtype == torch.float32 else 64, tile.device.type, _stream(tile.device), int(threads),
        )


def sort_best_first(vals: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every row of (vals, idx) ordered best first by the tie rule of csrc/heap.h: value
    descending, then index ascending (two stable torch sorts; the torch twin of topk_sort_cpu)."""
    idx, order = torch.sort(idx, dim=1, stable=True)
    vals = torch.gather(vals, 1, order)
    vals, order = torch.sort(vals, dim=1, descending=True, stable=True)
    return vals, torch.gather(idx, 1, order)


def topk_sort(vals: torch.Tensor, idx: torch.Tensor) -> None:
    """Order every heap best first in place: value descending, then index ascending."""
    _check_state(vals, idx)
    require(vals.device)
    if vals.device.type == "cuda":
        v, i = sort_best_first(vals, idx)
        vals.copy_(v)
        idx.copy_(i)
        return
    n, count = vals.shape
    _C.topk_sort(vals.data_ptr(), idx.data_ptr(), n, count, 32 if vals.dtype == torch.float32 else 64)
