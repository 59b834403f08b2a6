"""Per-layer scale, mean and second moments, streamed over row chunks.

Each layer is scaled by a power of two that brings its largest magnitude near 1 (exact in binary
floating point), so float32 squares neither underflow (tiny activations) nor overflow (huge
ones); CKA is invariant to that scaling. Chunks are then centered by the scaled mean.

Zero variance means zero variance: a layer is degenerate when every sample (row) is bit-for-bit
equal to the first one, checked exactly on the input values. Any other layer is computed, however
small its spread next to its mean (an offset of 3e5 with std 1 in float32, or 1 + 1e-15 noise in
float64): the centering removes the offset exactly enough (the residual below is carried into the
formulas), so those layers get their true CKA, not NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import budget, threads
from .scaling import power_of_two_scale, scale_halves


def extremes_verdict(lo: torch.Tensor, hi: torch.Tensor, widths: list[int], bad: torch.Tensor | None = None):
    """The one rule for what a layer's per-feature extremes say, for one or many layers at once.

    lo, hi: every feature's min and max over the rows, the layers' features one after another
    (`widths` per layer); bad: per feature whether a value is NaN or Inf (default: lo or hi not
    finite, as aminmax propagates NaN). Returns per layer (peak |x| as floats, constant, nonfinite):
    constant (zero variance) when every feature's min equals its max, i.e. every row equal, exactly
    (finite layers only); the peak over the finite features (0 if none). A handful of torch ops
    whatever the number of layers."""
    if bad is None:
        bad = ~(torch.isfinite(lo) & torch.isfinite(hi))
    per = torch.stack([
        torch.maximum(lo.abs(), hi.abs()).double().nan_to_num_(0.0, 0.0, 0.0),
        (lo != hi).double(),
        bad.double(),
    ], 1)  # (D, 3)
    lengths = torch.tensor(widths, device=lo.device)
    peak, varies, nonfinite = torch.segment_reduce(per, "max", lengths=lengths, unsafe=True).cpu().T
    nonfinite = nonfinite > 0
    return peak.tolist(), ~(varies > 0) & ~nonfinite, nonfinite


def zero_variance(constant: torch.Tensor, nonfinite: torch.Tensor) -> torch.Tensor:
    """(L,) bool: the layers CKA calls degenerate for zero variance: every sample equal (finite
    layers only; NaN/Inf layers are reported as such)."""
    return constant & ~nonfinite


@dataclass
class Moments:
    scale: list[float]  # per layer power of two applied to every value
    mean: list[torch.Tensor]  # per layer, (d_l,) mean of the scaled rows, in the compute dtype
    centered: torch.Tensor  # (L,) float64: mean over rows of |x_i - mean|^2 (scaled)
    raw: torch.Tensor  # (L,) float64: mean over rows of |x_i|^2 (scaled)
    residual: list[torch.Tensor]  # per layer, (d_l,) float64: sum of the centered rows (~0, not exactly)
    dtype: torch.dtype
    constant: torch.Tensor  # (L,) bool: every row equal to the first (zero variance, exactly)
    nonfinite: torch.Tensor  # (L,) bool: the layer holds NaN or Inf

    def chunk(self, layer: int, x: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """Rows [start, end) of layer `layer`, scaled and centered, in the compute dtype."""
        return centered(x[start:end], self.dtype, self.scale[layer], self.mean[layer])

    def row_sums(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """float64 row sums of the linear kernel for centered rows z: K 1 = z . sum_j z_j.

        Zero in exact arithmetic; kept because the rounded mean leaves a small residual, and the
        HSIC formulas are exact for any shift of the data only if they account for it.
        """
        return (z @ self.residual[layer].to(z.dtype)).double()

    def degenerate(self) -> torch.Tensor:
        """(L,) bool: layers with zero variance, exactly: every sample equal (finite layers only)."""
        return zero_variance(self.constant, self.nonfinite)


def scaled(rows: torch.Tensor, dtype: torch.dtype, scale: float) -> torch.Tensor:
    """rows in `dtype`, times the power of two `scale` (applied in two halves; out of place)."""
    # Out of place first: .to() returns the caller's own tensor when the dtype already matches.
    first, second = scale_halves(scale)
    return (rows.to(dtype) * first).mul_(second)


def centered(rows: torch.Tensor, dtype: torch.dtype, scale: float, mean: torch.Tensor) -> torch.Tensor:
    # layer_moments and Moments.chunk must round identically (the residual depends on it).
    return scaled(rows, dtype, scale).sub_(mean)


def _one_layer(x: torch.Tensor, dtype: torch.dtype):
    """(scale, mean, centered, raw, residual, constant, nonfinite) of one layer, in two passes
    over its rows: per-feature min and max (peak, zero variance and NaN/Inf at once), then the
    scaled rows' sums and the centered rows' sums (one reused buffer per chunk)."""
    n, d = x.shape
    bpr = d * torch.finfo(dtype).bits // 8
    lo = hi = None
    for s, e in budget.row_chunks(n, bpr):
        cl, ch = torch.aminmax(x[s:e], dim=0)  # NaN propagates
        lo = cl if lo is None else torch.minimum(lo, cl)
        hi = ch if hi is None else torch.maximum(hi, ch)
    (max_abs,), constant, nonfinite = extremes_verdict(lo, hi, [d])
    scale = power_of_two_scale(max_abs)
    first, second = scale_halves(scale)
    total = torch.zeros(d, dtype=torch.float64, device=x.device)
    sq = torch.zeros((), dtype=torch.float64, device=x.device)
    for s, e in budget.row_chunks(n, bpr):
        c = threads.buffer("moments", (e - s, d), dtype, x.device).copy_(x[s:e]).mul_(first).mul_(second)
        total += c.sum(0, dtype=torch.float64)
        flat = c.view(-1)
        sq += torch.dot(flat, flat).double()
    mu = (total / n).to(dtype)
    var = torch.zeros((), dtype=torch.float64, device=x.device)
    res = torch.zeros(d, dtype=torch.float64, device=x.device)
    for s, e in budget.row_chunks(n, bpr):
        # as ``centered`` (Moments.chunk must round identically)
        z = threads.buffer("moments", (e - s, d), dtype, x.device).copy_(x[s:e]).mul_(first).mul_(second).sub_(mu)
        flat = z.view(-1)
        var += torch.dot(flat, flat).double()
        res += z.sum(0, dtype=torch.float64)
    return scale, mu, var / n, sq / n, res, bool(constant[0]), bool(nonfinite[0])


def layer_moments(layers: list[torch.Tensor], dtype: torch.dtype) -> Moments:
    """Every layer's Moments (one task per layer on the CPU worker pool)."""
    with threads.pool(layers[0].device) as pmap:
        parts = list(pmap(lambda x: _one_layer(x, dtype), layers))
    scales, means, var_, raw, residual, constant, nonfinite = zip(*parts)
    return Moments(
        list(scales), list(means), torch.stack(var_).cpu(), torch.stack(raw).cpu(), list(residual), dtype,
        torch.tensor(constant), torch.tensor(nonfinite),
    )


@dataclass
class Summary:
    """What a fused one-pass path needs of each layer (``layer_summary``): no centered copy, no
    second moments."""

    scale: list[float]  # per layer power of two applied to every value (as Moments.scale)
    # per layer (d_l,) float64: the mean of the scaled rows is mean_hi + mean_lo beyond float64's
    # resolution: mean_hi the scaled first row (a value of the data, exact), mean_lo the mean of
    # the differences to it (centering as (x - mean_hi) - mean_lo is exact to the rounding of the
    # spread, however large the offset)
    mean_hi: list[torch.Tensor]
    mean_lo: list[torch.Tensor]
    constant: torch.Tensor  # (L,) bool: every row equal (zero variance, exactly)
    nonfinite: torch.Tensor  # (L,) bool: the layer holds NaN or Inf

    def degenerate(self) -> torch.Tensor:
        return zero_variance(self.constant, self.nonfinite)


def layer_summary(layers: list[torch.Tensor]) -> Summary:
    """Every layer's Summary from one launch of ``kernels.moments.column_moments`` over all layers
    (one read of the data, no n x d temporaries) and a few torch ops for all layers together:
    the scale and zero variance by the rule of ``extremes_verdict`` (as ``layer_moments``), the
    mean as the first row plus the float64 mean of the differences to it (``Summary``)."""
    from ..kernels.moments import column_moments

    n = layers[0].shape[0]
    widths = [x.shape[1] for x in layers]
    lo, hi, first, total, bad = column_moments(layers)
    peaks, constant, nonfinite = extremes_verdict(lo, hi, widths, bad > 0)
    scales = [power_of_two_scale(p) for p in peaks]
    per_feature = torch.tensor(scales, dtype=torch.float64).repeat_interleave(torch.tensor(widths)).to(lo.device)
    hi = first * per_feature  # powers of two: exact
    lo = total * (per_feature / max(n, 1))
    return Summary(scales, list(hi.split(widths)), list(lo.split(widths)), constant, nonfinite)
