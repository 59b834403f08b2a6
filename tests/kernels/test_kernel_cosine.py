"""kernels/cosine.py: row_cosine and layer_cosine_sums against their torch references (Triton's
interpreter on the CPU), including several layer groups, zero rows and rows whose squares leave
the accumulator's range."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import TORCH_DTYPES, accumulates_in_float64, as64, dtypes, related_pair

from fastsim import reference as R

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def reference_layer_cosine_sums(x: torch.Tensor, safe_lo: float, safe_hi: float):
    """What layer_cosine_sums computes, in float64: flag the frames with a squared row norm
    outside [safe_lo, safe_hi] in any layer (zero rows included), and sum the L x L cosine
    matrices of the other frames."""
    x = x.double().cpu()
    sq = x.square().sum(2)  # (L, n)
    flag = ((sq < safe_lo) | (sq > safe_hi)).any(0)
    u = x / sq.clamp_min(1e-300).sqrt()[:, :, None]
    cos = torch.einsum("anf,bnf->abn", u, u)
    return torch.where(flag[None, None], 0.0, cos).sum(2), flag


@given(st.data())
def test_row_cosine_kernel_matches_reference(data):
    from fastsim.kernels.cosine import row_cosine

    n, d = data.draw(st.integers(1, 50)), data.draw(st.integers(1, 300))
    a, b = data.draw(related_pair(n, d, d))
    a = torch.from_numpy(a).to(TORCH_DTYPES[data.draw(dtypes)]).to(DEVICE)
    b = torch.from_numpy(b).to(TORCH_DTYPES[data.draw(dtypes)]).to(DEVICE)
    if data.draw(st.booleans()):
        a = torch.cat([a, a], 1)[:, ::2]  # row stride 2d, feature stride 2: exercised through .contiguous()
    cos, flag = row_cosine(a, b)
    a64, b64 = as64(a), as64(b)
    ref = np.array([R.cosine(a64[i : i + 1], b64[i : i + 1]) for i in range(n)])
    tol = 1e-12 if accumulates_in_float64(a, b) else 2e-6
    flag = flag.cpu().numpy()
    ok = flag == 0
    np.testing.assert_allclose(cos.cpu().double().numpy()[ok], ref[ok], atol=tol, rtol=0)
    norms_zero = (np.abs(a64).sum(1) == 0) | (np.abs(b64).sum(1) == 0)
    assert (flag == 1).tolist() == norms_zero.tolist()
    peaks = np.minimum(np.abs(a64).max(1), np.abs(b64).max(1))
    lo = 2.0**-450 if accumulates_in_float64(a, b) else 2.0**-50
    assert ((flag == 2) == (~norms_zero & ((peaks < lo) | (np.maximum(np.abs(a64).max(1), np.abs(b64).max(1)) > 1 / lo)))).all()


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the planted 1e30 row, by design
@pytest.mark.parametrize("L, n, d, dtype", [
    (3, 20, 7, torch.float32),     # one group of 16, unaligned
    (20, 37, 16, torch.float32),   # one group of 32
    (40, 45, 16, torch.float32),   # two groups of 32: the norms pass first, then three group pairs
    (20, 30, 5, torch.float64),    # float64: two groups of 16
    (5, 19, 16, torch.bfloat16),
])
def test_layer_cosine_sums_match_reference(L, n, d, dtype):
    from fastsim.kernels.cosine import layer_cosine_config_limits, layer_cosine_sums

    g = torch.Generator().manual_seed(L * 100 + n)
    x = (torch.randn(L, n, d, generator=g, dtype=torch.float64) * 10.0 ** torch.empty(L, 1, 1, dtype=torch.float64).uniform_(-2, 2, generator=g)).to(dtype)
    x[1, 3] = 0  # a zero row: flagged
    if dtype == torch.float32:
        x[-1, 5] *= 1e30  # its squares overflow float32: flagged
    S, flag = layer_cosine_sums(x.to(DEVICE))
    lo, hi = layer_cosine_config_limits(x.dtype)
    S0, flag0 = reference_layer_cosine_sums(x, lo, hi)
    assert flag.cpu().bool().tolist() == flag0.tolist()
    assert S.dtype == torch.float64 and S.shape == (L, L)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    assert ((S.cpu() - S0).abs() <= tol * n).all(), (S.cpu() - S0).abs().max()


def test_layer_launch_config_groups():
    from fastsim.kernels import cosine

    assert cosine.layer_launch_config(torch.float32, 13)["G"] == 16
    assert cosine.layer_launch_config(torch.float32, 25)["G"] == 32
    cfg = cosine.layer_launch_config(torch.float32, 81)
    assert cfg["G"] == 32 and cfg["NORMS_GIVEN"]
    assert cosine.layer_launch_config(torch.float64, 17)["NORMS_GIVEN"]
