"""Per-layer means and second moments, streamed over row chunks."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import options


@dataclass
class Moments:
    mean: list[torch.Tensor]  # per layer, (d_l,) in the compute dtype
    centered: torch.Tensor  # (L,) float64: mean over rows of |x_i - mean|^2
    raw: torch.Tensor  # (L,) float64: mean over rows of |x_i|^2

    def degenerate(self, dtype: torch.dtype) -> torch.Tensor:
        """(L,) bool: layers whose variance is zero or lost in rounding (relative to |x|^2)."""
        eps = torch.finfo(dtype).eps
        return self.centered <= (32 * eps) ** 2 * self.raw


def row_chunks(n: int, bytes_per_row: int):
    step = options.rows_per_chunk(bytes_per_row, n)
    for start in range(0, n, step):
        yield start, min(n, start + step)


def layer_moments(layers: list[torch.Tensor], dtype: torch.dtype) -> Moments:
    n = layers[0].shape[0]
    means, centered, raw = [], [], []
    for x in layers:
        bpr = x.shape[1] * torch.finfo(dtype).bits // 8
        total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
        sq = torch.zeros((), dtype=torch.float64, device=x.device)
        for s, e in row_chunks(n, bpr):
            c = x[s:e].to(dtype)
            total += c.sum(0, dtype=torch.float64)
            sq += c.square().sum(dtype=torch.float64)
        mu = (total / n).to(dtype)
        var = torch.zeros((), dtype=torch.float64, device=x.device)
        for s, e in row_chunks(n, bpr):
            var += (x[s:e].to(dtype) - mu).square().sum(dtype=torch.float64)
        means.append(mu)
        centered.append(var / n)
        raw.append(sq / n)
    return Moments(means, torch.stack(centered).cpu(), torch.stack(raw).cpu())
