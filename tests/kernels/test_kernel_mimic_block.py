"""kernels/mimic_block.py: the fused block against its torch reference (Triton's interpreter on the
CPU), every activation, with and without the residual and the caller's hidden activations."""

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def reference_mimic_block(x, w1, b1, gamma, beta, w2, b2, *, eps=1e-5, activation="relu", residual=False, hidden=None):
    """What mimic_block computes, in float64: act(LayerNorm(x W1^T + b1)) W2^T + b2 (+ x), or from
    the given hidden activations instead of x W1^T + b1."""
    f = lambda t: t.double().cpu()  # noqa: E731
    u = f(hidden) if hidden is not None else f(x) @ f(w1).T + f(b1)
    z = torch.nn.functional.layer_norm(u, (u.shape[1],), f(gamma), f(beta), eps)
    z = {"relu": torch.relu, "gelu": torch.nn.functional.gelu, "silu": torch.nn.functional.silu, "tanh": torch.tanh}[activation](z)
    y = z @ f(w2).T + f(b2)
    return y + f(x) if residual else y


TOL = {torch.float64: 1e-12, torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("M, D, H, activation, residual, from_hidden", [
    (37, 24, 16, "relu", False, False),
    (70, 33, 64, "gelu", True, False),
    (5, 40, 17, "silu", True, True),
    (20, 16, 100, "tanh", False, False),
])
def test_mimic_block_matches_reference(dtype, M, D, H, activation, residual, from_hidden):
    from fastsim.kernels.mimic_block import mimic_block

    g = torch.Generator().manual_seed(M + D + H)
    r = lambda *s: (torch.randn(*s, generator=g) * 0.3).to(dtype).to(DEVICE)  # noqa: E731
    x, w1, b1, gamma, beta, w2, b2 = r(M, D), r(H, D), r(H), r(H) + 1, r(H), r(D, H), r(D)
    hidden = r(M, H) if from_hidden else None
    y = mimic_block(x, w1, b1, gamma, beta, w2, b2, activation=activation, residual=residual, hidden=hidden)
    ref = reference_mimic_block(x, w1, b1, gamma, beta, w2, b2, activation=activation, residual=residual, hidden=hidden)
    assert y.dtype == dtype and y.shape == (M, D)
    err = (y.double().cpu() - ref).abs().max().item()
    assert err <= TOL[dtype] * (1 + ref.abs().max().item()), err


def test_mimic_block_refuses_wider_blocks_and_bad_arguments():
    from fastsim.kernels.mimic_block import MAX_WIDTH, mimic_block

    x = torch.randn(3, 8)
    w = lambda *s: torch.randn(*s)  # noqa: E731
    h = MAX_WIDTH + 1
    with pytest.raises(ValueError, match="width"):
        mimic_block(x, w(h, 8), w(h), w(h), w(h), w(8, h), w(8))
    with pytest.raises(ValueError, match="activation"):
        mimic_block(x, w(4, 8), w(4), w(4), w(4), w(8, 4), w(8), activation="elu")


def test_launch_config_shrinks_tiles_with_the_row():
    from fastsim.kernels import mimic_block as mb

    small, wide = mb.launch_config(torch.float32, 64), mb.launch_config(torch.float64, 256)
    assert (small["BLOCK_M"], small["BLOCK_K"], small["BLOCK_N"], small.num_stages) == (32, 32, 32, 3)
    assert (wide["BLOCK_M"], wide["BLOCK_K"], wide["BLOCK_N"], wide.num_stages) == (16, 16, 16, 2)
    assert small["PRECISION"] == "tf32x3" and mb.launch_config(torch.float32, 64, interpret=True)["PRECISION"] == "ieee"
