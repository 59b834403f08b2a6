"""kernels/kernel_tiles.py: kernel_tile_sums against its torch reference (Triton's interpreter on
the CPU): linear and RBF kernels, shifted (expm1) layers, offsets, several layer groups, sample
counts across program tiles, unaligned widths, float32 and float64; the sums are of the
off-diagonal entries; the RBF coefficient in two range-safe factors."""

import math

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def reference_kernel_tile_sums(x, mean, scale, sq_norms, sigma, offset, shifted):
    """What kernel_tile_sums computes, in float64: O_l, the off-diagonal part of K_l of the
    scaled, centered rows (linear, or exp(-(max(d2, o_l) - o_l) / (2 sigma_l^2)) with expm1 for the
    shifted layers); S[a, b] = sum(O_a o O_b) and the row sums R[l, i] = sum_j O_l[i, j] (RBF; 0
    for the linear kernel)."""
    s = (scale[:, 0] * scale[:, 1]).double().cpu()
    xs = x.double().cpu() * s[:, None, None] - mean.double().cpu()[:, None, :]
    g = xs @ xs.transpose(1, 2)
    if sigma is None:
        K = g.clone()
    else:
        sq = sq_norms.double().cpu()
        off = offset.double().cpu()[:, None, None]
        d2 = torch.maximum((sq[:, :, None] + sq[:, None, :] - 2 * g), off)
        arg = -(d2 - off) / (2 * sigma.double().cpu()[:, None, None] ** 2)
        K = torch.where(shifted.cpu()[:, None, None], torch.expm1(arg), torch.exp(arg))
    K.diagonal(dim1=1, dim2=2).zero_()
    R = K.sum(2) if sigma is not None else torch.zeros(K.shape[:2], dtype=torch.float64)
    return torch.einsum("aij,bij->ab", K, K), R


def _inputs(L, n, d, dtype, rbf, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(L, n, d, generator=g, dtype=torch.float64) * 2 + 3).to(dtype)
    scale = torch.ones(L, 2, dtype=torch.float64)
    scale[0] = torch.tensor([2.0**-3, 2.0**-4])  # two factors of a power of two
    s = scale[:, 0] * scale[:, 1]
    mean = (x.double() * s[:, None, None]).mean(1)
    sq = (x.double() * s[:, None, None] - mean[:, None]).square().sum(2)
    sigma = offset = shifted = None
    if rbf:
        sigma = (torch.rand(L, generator=g, dtype=torch.float64) + 0.5) * sq.mean(1).sqrt()
        shifted = torch.arange(L) % 2 == 1
        offset = torch.zeros(L, dtype=torch.float64)
        offset[(~shifted).nonzero().flatten()[1:]] = 0.5 * sq.mean()  # an offset on some layers
    return x, mean, scale, sq, sigma, offset, shifted


@pytest.mark.parametrize("L, n, d, dtype, rbf", [
    (1, 20, 7, torch.float32, True),       # one layer, unaligned width (G = 8 configuration)
    (3, 70, 16, torch.float32, False),     # two sample tiles: an off-diagonal tile counts twice
    (17, 30, 32, torch.float32, True),     # aligned: G = 16, two layer groups
    (10, 33, 5, torch.float64, True),      # float64 unaligned: G = 4, three groups
    (9, 66, 16, torch.float64, False),     # float64 aligned: G = 8, two groups, two sample tiles
    (4, 25, 16, torch.bfloat16, True),     # half input, widened on load
])
def test_kernel_tile_sums_match_reference(L, n, d, dtype, rbf):
    from fastsim.kernels.kernel_tiles import kernel_tile_sums

    x, mean, scale, sq, sigma, offset, shifted = _inputs(L, n, d, dtype, rbf)
    dev = lambda t: None if t is None else t.to(DEVICE)  # noqa: E731
    center = None if sigma is None else torch.linspace(-0.3, 0.6, L, dtype=torch.float64)  # any value: same sums
    S, R = kernel_tile_sums(x.to(DEVICE), dev(mean), dev(scale), dev(sq), sigma, dev(offset), dev(shifted), "highest", dev(center))
    S0, R0 = reference_kernel_tile_sums(x, mean, scale, sq, sigma, offset, shifted)
    assert S.shape == (L, L) and R.shape == (L, n) and S.dtype == R.dtype == torch.float64
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert ((S.cpu() - S0).abs() <= tol * S0.abs().max()).all()
    if rbf:
        assert ((R.cpu() - R0).abs() <= tol * R0.abs().max()).all()
    else:
        assert not R.any()  # the linear kernel's row sums are the caller's
    assert torch.allclose(S.cpu(), S.cpu().T, rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rbf_coefficient_factors_never_overflow(dtype):
    """-1 / (2 sigma^2) as two factors within the accumulator's range, for any positive sigma:
    sigma**2 would underflow (ZeroDivisionError) or its reciprocal overflow float32."""
    from fastsim.kernels.kernel_tiles import rbf_factors

    top = torch.finfo(dtype).max
    for s in (1e-300, 1e-160, 1e-30, 1e-20, 0.3, 1.0, 7.5, 1e20, 1e150):
        c = rbf_factors([s], dtype)[0]
        assert torch.isfinite(c.to(dtype)).all() and (c.abs() <= top).all() and c[0] < 0 < c[1]
        exact = -0.5 / s / s
        if math.isfinite(exact) and exact != 0 and abs(math.log2(-exact)) < (230 if dtype == torch.float32 else 2000):
            assert math.isclose(float(c[0]) * float(c[1]), exact, rel_tol=1e-15)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the interpreter (NumPy) reaching -inf, by design
def test_tiny_and_huge_sigma_give_no_nan():
    """sigma of 1e-25 and 1e25 on data near 1 (float32 accumulators): every off-diagonal entry
    underflows to 0 (K) or to its first-order value (K - 1), none is NaN; the diagonal is 0."""
    from fastsim.kernels.kernel_tiles import kernel_tile_sums

    x, mean, scale, sq, _, _, _ = _inputs(2, 20, 16, torch.float32, True)
    x[1, 3] = x[1, 5]  # a repeated row: distance 0 off the diagonal
    mean[1], sq[1] = (x[1].double()).mean(0), (x[1].double() - (x[1].double()).mean(0)).square().sum(1)
    for sigma, shifted in (([1e-25, 1e-25], [False, False]), ([1e25, 1e25], [True, True])):
        S, R = kernel_tile_sums(x.to(DEVICE), mean.to(DEVICE), scale.to(DEVICE), sq.to(DEVICE), sigma,
                                None, torch.tensor(shifted).to(DEVICE), "highest")
        assert torch.isfinite(S).all() and torch.isfinite(R).all(), (sigma, S, R)
    S, R = kernel_tile_sums(x.to(DEVICE), mean.to(DEVICE), scale.to(DEVICE), sq.to(DEVICE), [1e-25, 1e-25],
                            None, torch.tensor([False, False]).to(DEVICE), "highest")
    # layer 1: only the pair (3, 5) is at distance 0: two entries of 1 off the diagonal
    assert float(S[1, 1]) == pytest.approx(2.0) and float(S[0, 0]) == 0.0


def test_tile_launch_config_groups_and_alignment():
    from fastsim.kernels import kernel_tiles as kt

    assert kt.launch_config(torch.float32, "highest", True)["G"] == 16
    assert kt.launch_config(torch.float32, "highest", True, aligned=False)["G"] == 8
    assert kt.launch_config(torch.float64, "highest", False)["G"] == 8
    cfg = kt.launch_config(torch.bfloat16, "medium", False)
    assert cfg["TO_BF16"] and cfg in kt.configs()
