"""kernels/comoment.py: upper_gram against its torch reference (Triton's interpreter on the CPU)."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def reference_upper_gram(u: torch.Tensor) -> torch.Tensor:
    """What upper_gram computes, in float64: the symmetric U^T U."""
    u64 = u.double().cpu()
    return u64.T @ u64


@given(st.data())
def test_upper_gram_kernel_matches_float64(data):
    from fastsim.kernels.comoment import upper_gram

    n, D = data.draw(st.integers(1, 70)), data.draw(st.integers(1, 140))
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64]))
    precision = data.draw(st.sampled_from(["highest", "high", "medium"]))
    u = torch.from_numpy(np.random.default_rng(data.draw(st.integers(0, 2**31))).normal(size=(n, D))).to(dtype).to(DEVICE)
    got = upper_gram(u, precision).cpu().double()
    exact = reference_upper_gram(u)
    scale = u.double().abs().max().item() ** 2 * n
    # float64: rounding only; float32: ieee (CPU interpreter) or 3xTF32/TF32; medium: bf16 operands
    # (the interpreter truncates to bf16).
    bound = 1e-12 if dtype == torch.float64 else {"highest": 1e-6, "high": 1e-6 if DEVICE == "cpu" else 2e-3, "medium": 2.0**-5}[precision]
    assert (got - exact).abs().max().item() <= bound * scale
    assert torch.equal(got, got.T)


def test_upper_gram_launch_config_is_the_one_launched():
    from fastsim.kernels import comoment

    cfg = comoment.launch_config(torch.float32, "highest", 200)
    assert cfg["BLOCK"] == 64 and cfg.num_stages == 3 and cfg in comoment.configs()
    assert comoment.launch_config(torch.float64, "medium", 10)["BLOCK"] == 16
    with pytest.raises(TypeError):
        comoment.launch_config(torch.float16, "highest", 10)
