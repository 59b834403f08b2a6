"""Thin wrappers around the compiled module ``fastsim._C``.

The module takes raw buffer addresses plus sizes (and a CUDA stream for device work); this file
checks dtype, layout and device, and allocates the outputs, so nothing unsafe reaches C++.
"""

from __future__ import annotations

import contextlib

import torch

try:
    from . import _C  # type: ignore[attr-defined]

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


def overlap_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """int32 (n,): how many indices rows a[i] and b[i] of two (n, k) neighbour lists share."""
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"a and b must be (n, k) index arrays of one shape; got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dtype != b.dtype or a.device != b.device:
        raise ValueError("a and b must share dtype and device")
    require(a.device)
    a, bits = _index_buffer("a", a)
    b, _ = _index_buffer("b", b)
    n, k = a.shape
    out = torch.empty(n, dtype=torch.int32, device=a.device)
    with torch.cuda.device(a.device) if a.device.type == "cuda" else contextlib.nullcontext():
        _C.overlap_rows(a.data_ptr(), b.data_ptr(), out.data_ptr(), n, k, bits, a.device.type, _stream(a.device))
    return out


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
