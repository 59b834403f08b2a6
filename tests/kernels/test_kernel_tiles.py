"""kernels/kernel_tiles.py: kernel_tile_sums against its torch reference (Triton's interpreter on
the CPU): linear and RBF kernels, shifted (expm1) layers, several layer groups, sample counts
across program tiles, unaligned widths, float32 and float64."""

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def reference_kernel_tile_sums(x, mean, scale, sq_norms, coef, shifted):
    """What kernel_tile_sums computes, in float64: K_l of the scaled, centered rows (linear, or
    exp(coef_l |x_i - x_j|^2) with expm1 for the shifted layers and the diagonal distance 0);
    S[a, b] = sum(K_a o K_b) and the row sums R[l, i] = sum_j K_l[i, j]."""
    s = (scale[:, 0] * scale[:, 1]).double().cpu()
    xs = x.double().cpu() * s[:, None, None] - mean.double().cpu()[:, None, :]
    g = xs @ xs.transpose(1, 2)
    if coef is None:
        K = g
    else:
        sq = sq_norms.double().cpu()
        d2 = (sq[:, :, None] + sq[:, None, :] - 2 * g).clamp_min(0)
        d2.diagonal(dim1=1, dim2=2).zero_()
        arg = d2 * coef.double().cpu()[:, None, None]
        K = torch.where(shifted.cpu()[:, None, None], torch.expm1(arg), torch.exp(arg))
    return torch.einsum("aij,bij->ab", K, K), K.sum(2)


def _inputs(L, n, d, dtype, rbf, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(L, n, d, generator=g, dtype=torch.float64) * 2 + 3).to(dtype)
    scale = torch.ones(L, 2, dtype=torch.float64)
    scale[0] = torch.tensor([2.0**-3, 2.0**-4])  # two factors of a power of two
    s = scale[:, 0] * scale[:, 1]
    mean = (x.double() * s[:, None, None]).mean(1)
    sq = (x.double() * s[:, None, None] - mean[:, None]).square().sum(2)
    coef = shifted = None
    if rbf:
        coef = -0.5 / (torch.rand(L, generator=g, dtype=torch.float64) + 0.5) ** 2 / sq.mean(1)
        shifted = torch.arange(L) % 2 == 1
    return x, mean, scale, sq, coef, shifted


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

    x, mean, scale, sq, coef, shifted = _inputs(L, n, d, dtype, rbf)
    dev = lambda t: None if t is None else t.to(DEVICE)  # noqa: E731
    S, R = kernel_tile_sums(x.to(DEVICE), dev(mean), dev(scale), dev(sq), dev(coef), dev(shifted), "highest")
    S0, R0 = reference_kernel_tile_sums(x, mean, scale, sq, coef, shifted)
    assert S.shape == (L, L) and R.shape == (L, n) and S.dtype == R.dtype == torch.float64
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert ((S.cpu() - S0).abs() <= tol * S0.abs().max()).all()
    scale_r = R0.abs().max() if rbf else (S0.diagonal().max().sqrt())  # linear: centered rows sum to ~0
    assert ((R.cpu() - R0).abs() <= tol * scale_r).all()
    assert torch.allclose(S.cpu(), S.cpu().T, rtol=1e-12, atol=0)


def test_tile_launch_config_groups_and_alignment():
    from fastsim.kernels import kernel_tiles as kt

    assert kt.launch_config(torch.float32, "highest", True)["G"] == 16
    assert kt.launch_config(torch.float32, "highest", True, aligned=False)["G"] == 8
    assert kt.launch_config(torch.float64, "highest", False)["G"] == 8
    cfg = kt.launch_config(torch.bfloat16, "medium", False)
    assert cfg["TO_BF16"] and cfg in kt.configs()
