"""Mean per-sample cosine similarity, pairwise and over all layer pairs, torch backend."""

from __future__ import annotations

import torch

from .. import options
from .torch_moments import pow2_exponents, times_pow2


def unit_rows(x: torch.Tensor, dt: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows scaled to unit length in dtype `dt`; zero rows stay zero. Returns (units, zero_row_mask).

    Each row is first scaled by the power of two that brings its peak near 1 (exact), so
    squares neither underflow (tiny values) nor overflow (huge values).
    """
    peak = x.abs().amax(dim=-1)
    zero = peak == 0
    y = times_pow2(x.to(dt), -pow2_exponents(peak.to(dt)))
    norm = torch.linalg.vector_norm(y, dim=-1, keepdim=True)
    return y / torch.where(zero[..., None], torch.ones_like(norm), norm), zero


def warn_zero_rows(count: int) -> None:
    if count:
        options.warn_degenerate(f"{count} sample(s) have a zero vector; their cosine is taken as 0")


def cosine_matrix(layers: list[torch.Tensor], *, precision: str) -> torch.Tensor:
    """(L, L): entry (a, b) is the mean over samples of cos(a_i, b_i). Same d for every layer."""
    dt = options.compute_dtype(layers)
    n, L, d = layers[0].shape[0], len(layers), layers[0].shape[1]
    dev = layers[0].device
    acc = torch.zeros(L, L, dtype=torch.float64, device=dev)
    zero_rows = torch.zeros((), dtype=torch.long, device=dev)
    nonzero_per_layer = torch.zeros(L, dtype=torch.long, device=dev)
    with options.matmul_precision(precision):
        for s, e in options.row_chunks(n, 2 * L * d * torch.finfo(dt).bits // 8):
            units, zero = zip(*(unit_rows(x[s:e], dt) for x in layers))
            flat = torch.stack(units).reshape(L, -1)  # (L, chunk * d)
            acc += (flat @ flat.T).double()
            zero = torch.stack(zero)  # (L, chunk)
            zero_rows += zero.any(0).sum()
            nonzero_per_layer += (~zero).sum(1)
    warn_zero_rows(int(zero_rows))
    out = (acc / n).clamp(-1.0, 1.0)
    # A layer with itself: exactly 1 per nonzero sample (zero vectors count 0), not 1 up to rounding.
    out.diagonal().copy_(nonzero_per_layer.double() / n)
    return out.to(dt)


def cosine_pair(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """0-d tensor: the mean over samples of cos(a_i, b_i)."""
    dt = options.compute_dtype([a, b])
    n, d = a.shape
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    zero_rows = torch.zeros((), dtype=torch.long, device=a.device)
    for s, e in options.row_chunks(n, 4 * d * torch.finfo(dt).bits // 8):
        ua, za = unit_rows(a[s:e], dt)
        ub, zb = unit_rows(b[s:e], dt)
        total += (ua * ub).sum(dtype=torch.float64)
        zero_rows += (za | zb).sum()
    warn_zero_rows(int(zero_rows))
    return (total / n).clamp(-1.0, 1.0).to(dt)
