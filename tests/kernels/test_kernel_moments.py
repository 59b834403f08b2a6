"""kernels/moments.py: column_moments against torch (Triton's interpreter on the CPU): per-feature
min, max, first row, float64 sum of the differences to the first row, NaN/Inf flags; layers of
different widths, strides and dtypes read in place; and core.moments.layer_summary, which turns
them into each layer's scale, float64 mean and zero variance by the same rule as layer_moments."""

import numpy as np
import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def reference(layers):
    cols = []
    for x in layers:
        x64 = x.double().cpu()
        bad = ~torch.isfinite(x64).all(0)
        cols.append(torch.stack([x64.amin(0), x64.amax(0), x64[0], (x64 - x64[0]).sum(0), bad.double()]))
    return torch.cat(cols, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_column_moments_match_torch(dtype):
    from fastsim.kernels.moments import column_moments

    g = torch.Generator().manual_seed(0)
    n = 4100  # two interpreter steps (BK = 4096)
    big = torch.randn(n, 40, generator=g, dtype=torch.float64) * 3 + 7
    layers = [
        big[:, :16].to(dtype),  # aligned width
        big[:, 16:21].to(dtype),  # a strided view (row stride 40), unaligned width
        torch.full((n, 130), 2.5, dtype=dtype),  # constant, three tiles of 64 (or two of 128)
        (torch.randn(n, 3, generator=g, dtype=torch.float64) * 1e-3 + 1e4).to(dtype),
    ]
    layers = [x.to(DEVICE) for x in layers]
    got = column_moments(layers).cpu()
    want = reference(layers)
    assert got.shape == want.shape == (5, 16 + 5 + 130 + 3)
    assert torch.equal(got[[0, 1, 2, 4]], want[[0, 1, 2, 4]])  # extremes, first row and flags exactly
    scale = (want[1] - want[0]).abs() * n + 1e-300
    assert ((got[3] - want[3]).abs() <= 1e-12 * scale).all()


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf - inf in the interpreter, flagged
def test_column_moments_flag_nan_and_inf():
    from fastsim.kernels.moments import column_moments

    x = torch.randn(50, 6, dtype=torch.float32)
    x[7, 1] = float("nan")
    x[0, 3] = float("inf")  # in the first row too
    x[20, 5] = -float("inf")
    got = column_moments([x.to(DEVICE)]).cpu()
    assert got[4].tolist() == [0, 1, 0, 1, 0, 1]
    assert torch.equal(got[0, [0, 2, 4]], x.double().amin(0)[[0, 2, 4]])


def test_layer_summary_is_layer_moments_rule():
    """Scale, zero variance and NaN flags as layer_moments decides them (one rule,
    ``extremes_verdict``); the mean in float64 as accurate as layer_moments' two passes, also for
    float64 data whose spread is 1e-15 of their offset."""
    from fastsim.core.moments import layer_moments, layer_summary

    rng = np.random.default_rng(3)
    layers = [
        torch.from_numpy(rng.standard_normal((64, 7)) * 3 + 1e5).float(),
        torch.full((64, 5), 0.1, dtype=torch.float32),
        torch.from_numpy(rng.standard_normal((64, 4))).float() * 1e-30,
        torch.from_numpy(rng.standard_normal((64, 3))).float(),
    ]
    layers[3][3, 2] = float("nan")
    s = layer_summary(layers)
    m = layer_moments(layers, torch.float32)
    assert s.scale == m.scale
    assert s.constant.tolist() == m.constant.tolist() == [False, True, False, False]
    assert s.nonfinite.tolist() == m.nonfinite.tolist() == [False, False, False, True]
    assert s.degenerate().tolist() == m.degenerate().tolist()
    for x, hi, lo, c in zip(layers[:3], s.mean_hi, s.mean_lo, s.scale):
        assert torch.equal(hi, x[0].double() * c)  # the first row, exact
        exact = (x.double().numpy().astype(np.longdouble) * c).mean(0)
        got = hi.numpy().astype(np.longdouble) + lo.numpy()
        assert np.abs(got - exact).max() <= 1e-15 * max(float((x.double() * c).std(0).max()), 1e-300)
    # float64 data whose spread is 1e-15 of their offset: the two parts keep the mean to the
    # rounding of the spread (one float64 value could not: its rounding is 5% of the spread)
    f64 = [torch.from_numpy(1.0 + 1e-15 * rng.standard_normal((40, 3)))]
    s = layer_summary(f64)
    exact = f64[0].numpy().astype(np.longdouble).mean(0) * s.scale[0]
    spread = float(f64[0].std(0).max()) * s.scale[0]
    got = s.mean_hi[0].numpy().astype(np.longdouble) + s.mean_lo[0].numpy()
    assert np.abs(got - exact).max() <= 1e-6 * spread


def test_launch_config_and_configs():
    from fastsim.kernels import moments

    cfg = moments.launch_config(torch.float32)
    assert cfg in moments.configs() and moments.launch_config(torch.bfloat16, aligned=False) in moments.configs()
    assert cfg["BD"] == moments.BD and cfg["BK"] == moments.BK
