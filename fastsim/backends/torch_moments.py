"""Per-layer scale, mean and second moments, streamed over row chunks.

Each layer is scaled by a power of two that brings its largest magnitude near 1 (exact in binary
floating point), so float32 squares neither underflow (tiny activations) nor overflow (huge
ones); CKA is invariant to that scaling. Chunks are then centered by the scaled mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import options


def pow2_exponents(peak: torch.Tensor) -> torch.Tensor:
    """Per entry the integer e with 2**(e-1) <= peak < 2**e (0 where peak is 0 or not finite)."""
    ok = (peak > 0) & torch.isfinite(peak)
    return torch.where(ok, torch.frexp(torch.where(ok, peak, torch.ones_like(peak))).exponent, 0)


def times_pow2(x: torch.Tensor, power: torch.Tensor) -> torch.Tensor:
    """x * 2**power with one power per row (power has x's shape less the last axis). Exact: the
    factor is applied in two halves so neither over- nor underflows, even for float64 extremes."""
    power = power.to(x.dtype)
    half = torch.floor(power / 2)
    return x * torch.exp2(half)[..., None] * torch.exp2(power - half)[..., None]


def power_of_two_scale(max_abs: float) -> float:
    """2**-e with 2**e near max_abs (1 for an all-zero input). For subnormal peaks the factor
    stops at 2**1000, the largest power of two that stays a finite float64 with room to spare."""
    if not max_abs > 0 or not math.isfinite(max_abs):
        return 1.0
    return math.ldexp(1.0, min(1000, -math.frexp(max_abs)[1]))


@dataclass
class Moments:
    scale: list[float]  # per layer power of two applied to every value
    mean: list[torch.Tensor]  # per layer, (d_l,) mean of the scaled rows, in the compute dtype
    centered: torch.Tensor  # (L,) float64: mean over rows of |x_i - mean|^2 (scaled)
    raw: torch.Tensor  # (L,) float64: mean over rows of |x_i|^2 (scaled)
    residual: list[torch.Tensor]  # per layer, (d_l,) float64: sum of the centered rows (~0, not exactly)
    dtype: torch.dtype

    def chunk(self, layer: int, x: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """Rows [start, end) of layer `layer`, scaled and centered, in the compute dtype."""
        return _centered(x[start:end], self.dtype, self.scale[layer], self.mean[layer])

    def row_sums(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """float64 row sums of the linear kernel for centered rows z: K 1 = z . sum_j z_j.

        Zero in exact arithmetic; kept because the rounded mean leaves a small residual, and the
        HSIC formulas below are exact for any shift of the data only if they account for it.
        """
        return (z @ self.residual[layer].to(z.dtype)).double()

    def degenerate(self) -> torch.Tensor:
        """(L,) bool: layers whose variance is zero or lost in rounding (relative to |x|^2)."""
        eps = torch.finfo(self.dtype).eps
        return self.centered <= (32 * eps) ** 2 * self.raw


def scale_halves(scale: float) -> tuple[float, float]:
    """Two powers of two whose product is `scale`, each within float32's range: a factor such as
    2**139 (for subnormal float32 data) would overflow if applied in float32 at once."""
    e = math.frexp(scale)[1] - 1
    return math.ldexp(1.0, e // 2), math.ldexp(1.0, e - e // 2)


def _scaled(rows: torch.Tensor, dtype: torch.dtype, scale: float) -> torch.Tensor:
    # Out of place first: .to() returns the caller's own tensor when the dtype already matches.
    first, second = scale_halves(scale)
    return (rows.to(dtype) * first).mul_(second)


def _centered(rows: torch.Tensor, dtype: torch.dtype, scale: float, mean: torch.Tensor) -> torch.Tensor:
    # layer_moments and Moments.chunk must round identically (the residual depends on it).
    return _scaled(rows, dtype, scale).sub_(mean)


def layer_moments(layers: list[torch.Tensor], dtype: torch.dtype) -> Moments:
    n = layers[0].shape[0]
    scales, means, centered, raw, residual = [], [], [], [], []
    for x in layers:
        bpr = x.shape[1] * torch.finfo(dtype).bits // 8
        max_abs = max(float(x[s:e].abs().amax()) for s, e in options.row_chunks(n, bpr))
        scale = power_of_two_scale(max_abs)
        total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
        sq = torch.zeros((), dtype=torch.float64, device=x.device)
        for s, e in options.row_chunks(n, bpr):
            c = _scaled(x[s:e], dtype, scale)
            total += c.sum(0, dtype=torch.float64)
            sq += c.square().sum(dtype=torch.float64)
        mu = (total / n).to(dtype)
        var = torch.zeros((), dtype=torch.float64, device=x.device)
        res = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
        for s, e in options.row_chunks(n, bpr):
            z = _centered(x[s:e], dtype, scale, mu)
            var += z.square().sum(dtype=torch.float64)
            res += z.sum(0, dtype=torch.float64)
        residual.append(res)
        scales.append(scale)
        means.append(mu)
        centered.append(var / n)
        raw.append(sq / n)
    return Moments(scales, means, torch.stack(centered).cpu(), torch.stack(raw).cpu(), residual, dtype)
