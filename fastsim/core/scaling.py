"""Exact power-of-two scaling, unit rows, and exact float64 cosine similarities.

Multiplying by a power of two is exact in binary floating point, and every metric here is
invariant to it (CKA to a per-layer scale, cosine similarity to a per-row scale). So values are
brought near 1 first: squares then neither underflow (tiny activations) nor overflow (huge
ones), in float32 as in float64.
"""

from __future__ import annotations

import math

import torch

from . import budget


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


def scale_halves(scale: float) -> tuple[float, float]:
    """Two powers of two whose product is `scale`, each within float32's range: a factor such as
    2**139 (for subnormal float32 data) would overflow if applied in float32 at once."""
    e = math.frexp(scale)[1] - 1
    return math.ldexp(1.0, e // 2), math.ldexp(1.0, e - e // 2)


def unit_rows(x: torch.Tensor, dt: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows scaled to unit length in dtype `dt`; zero rows stay zero. Returns (units, zero_row_mask).

    Each row is first scaled by the power of two that brings its peak near 1 (exact)."""
    peak = x.abs().amax(dim=-1)
    zero = peak == 0
    y = times_pow2(x.to(dt), -pow2_exponents(peak.to(dt)))
    norm = torch.linalg.vector_norm(y, dim=-1, keepdim=True)
    return y / torch.where(zero[..., None], torch.ones_like(norm), norm), zero


def row_scales(x: torch.Tensor, dt: torch.dtype | None) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(units, scales): the unit rows in dtype `dt` (None: skip them), and float64 (n, 2) scales:
    per row the exponent of a power of two that brings its peak near 1, and the norm of the row
    times it. Similarities (y_i . y_j) / (|y_i| |y_j|) of the scaled rows y are what
    ``fastsim.reference`` computes; equal vectors give bit-identical similarities.

    For float32 the unit rows are y / |y| formed in float64 and rounded once to float32, so each
    component is within one float32 rounding of the exact unit vector's (what
    ``fastsim.core.knn.approximation_bound`` assumes); zero rows stay zero."""
    n, d = x.shape
    units = None if dt is None else torch.empty(x.shape, dtype=dt, device=x.device)
    scales = torch.empty(n, 2, dtype=torch.float64, device=x.device)
    for s, e in budget.row_chunks(n, max(d, 1) * 8 * 3):
        c = x[s:e].double()
        scales[s:e, 0] = -pow2_exponents(c.abs().amax(1)).double()
        y = times_pow2(c, scales[s:e, 0])
        norm = y.square().sum(1).sqrt()
        scales[s:e, 1] = norm
        if units is None:
            continue
        if dt == torch.float64:
            units[s:e] = unit_rows(x[s:e], dt)[0]
        else:
            units[s:e] = y.div_(torch.where(norm > 0, norm, torch.ones_like(norm))[:, None])
    return units, scales


def exact_similarities(x: torch.Tensor, scales: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """float64 (r, c) cosine similarities of samples rows[i] with cols[i, j] (scales from
    ``row_scales``); a zero vector gives 0."""
    if x.dtype == torch.float64:
        def scaled(idx):
            return times_pow2(x[idx].double(), scales[idx][..., 0])

        dots = scaled(cols).mul_(scaled(rows)[:, None, :]).sum(-1)
    else:
        # Products of float32 (or narrower) values are exact in float64 and can neither over- nor
        # underflow, so the power-of-two row scaling can be applied to the dot instead: the same
        # value, without scaling the gathered rows.
        dots = x[cols].double().mul_(x[rows].double()[:, None, :]).sum(-1)
        power = scales[rows][:, None, 0] + scales[cols][..., 0]
        half = torch.floor(power / 2)
        dots = dots * torch.exp2(half) * torch.exp2(power - half)
    den = scales[rows][:, None, 1] * scales[cols][..., 1]
    return torch.where(den > 0, dots / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))
