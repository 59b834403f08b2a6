"""The Triton CKA paths' GPU arithmetic, emulated in torch on the CPU (no GPU has run them yet).

The interpreter computes a dot at "highest" and "high" in exact float32; a GPU computes "highest"
as 3xTF32 (a = a_big + a_small, both TF32, and a_big b_big + a_big b_small + a_small b_big in
float32), "high" with TF32 operands and "medium" with bf16 operands. These tests replace the two
sample-space and feature-space launchers by torch emulations of what the kernels compute on a
GPU (same data flow: float32 centering, Gram in the mode's operands, float32 kernel entries,
3xTF32 pair sums of each 64 x 64 tile in float32, float64 across tiles; for the fused feature pass
float64 centering, float32 sums of 256 rows flushed into float64) and run the public call through
them, against the longdouble oracles on Gaussian layers and layers with massive activations.

Measured (n = 256, 4 layers of 96; max |emulated GPU - oracle| over both data sets, biased and
debiased alike):

===================  ========  ========  ========
path                 highest   high      medium
===================  ========  ========  ========
linear, sample       7.2e-8    5.8e-6    2.6e-5
linear, feature      1.3e-7    6.6e-6    2.9e-5
RBF, median sigma    1.2e-7    9.3e-6    2.9e-5
===================  ========  ========  ========

and RBF CKA at 0.01x-1000x the median sigma (12 x 5, tests/test_triton_precision.py's pair):
"highest" up to 7e-7, "high" up to 3e-3 and "medium" up to 2e-3 (debiased, 0.1x: TF32 and bf16
squared distances over 2 sigma^2).
"""

from unittest import mock

import numpy as np
import oracles
import pytest
import torch

import fastsim
from fastsim.core import kernel_sums

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tf32(x: torch.Tensor) -> torch.Tensor:
    """float32 rounded to TF32 (10 explicit mantissa bits), to nearest, ties away (cvt.rna.tf32.f32)."""
    i = x.contiguous().view(torch.int32)
    return ((i + 0x1000) & ~0x1FFF).view(torch.float32)


def dot(a: torch.Tensor, b: torch.Tensor, precision: str) -> torch.Tensor:
    """a @ b (float32, batched) as a GPU dot of the mode: 3xTF32, TF32 or bf16 operands, float32 sums."""
    if precision == "highest":
        ab, bb = tf32(a), tf32(b)
        return ab @ tf32(b - bb) + tf32(a - ab) @ bb + ab @ bb
    if precision == "high":
        return tf32(a) @ tf32(b)
    return a.bfloat16().float() @ b.bfloat16().float()


def emulated_tile_sums(x, mean, scale, sq_norms, sigma=None, offset=None, shifted=None, precision="highest", center=None):
    """kernels.kernel_tiles.kernel_tile_sums for float32 input as a GPU computes it."""
    from fastsim.kernels.kernel_tiles import BLOCK, rbf_factors

    assert x.dtype == torch.float32
    L, n, _ = x.shape
    s = scale.float()
    z = x * s[:, 0, None, None] * s[:, 1, None, None] - mean.float()[:, None, :]
    g = dot(z, z.transpose(1, 2), precision)
    eye = torch.eye(n, dtype=torch.bool)
    if sigma is None:
        K = g
        c = None
    else:
        f = rbf_factors(sigma, torch.float32).float()
        off = offset.float()[:, None, None]
        sq = sq_norms.float()
        d2 = torch.maximum(sq[:, :, None] + sq[:, None, :] - 2 * g, off)
        arg = (d2 - off) * f[:, 0, None, None] * f[:, 1, None, None]
        K = torch.where(shifted[:, None, None], torch.expm1(arg), torch.exp(arg))
        c = torch.zeros(L) if center is None else center.float()
        K = K - c[:, None, None]
    K = K.masked_fill(eye, 0.0)
    S = torch.zeros(L, L, dtype=torch.float64)
    R = torch.zeros(L, n, dtype=torch.float64)
    pad = -n % BLOCK
    Kp = torch.nn.functional.pad(K, (0, pad, 0, pad))
    for i in range(0, n, BLOCK):
        for j in range(0, n, BLOCK):
            tile = Kp[:, i : i + BLOCK, j : j + BLOCK].permute(1, 0, 2)  # (rows, L, cols)
            # as the kernel's acc3: per row slot of SUB_M = 16, 3xTF32 dots of SUB_N = 16 columns
            # added in float32 over the tile; the slots summed in float32, the tiles in float64
            acc3 = torch.zeros(16, L, L)
            for r in range(0, BLOCK, 16):
                for k in range(0, BLOCK, 16):
                    step = tile[r : r + 16, :, k : k + 16]
                    acc3 = acc3 + dot(step, step.transpose(1, 2), "highest")
            S += acc3.sum(0).double()
            R[:, i : i + BLOCK] += Kp[:, i : i + BLOCK, j : j + BLOCK].sum(2).double()[:, : min(BLOCK, n - i)]
    if sigma is None:
        return S, torch.zeros(L, n, dtype=torch.float64)
    c = c.double()
    r = R.sum(1)
    S = S + c[None, :] * r[:, None] + c[:, None] * r[None, :] + n * (n - 1) * torch.outer(c, c)
    return S, R + (n - 1) * c[:, None]


def emulated_linear_cka_sums(layers, means, scales, precision="highest", means_lo=None, chunk=256):
    """kernels.linear_cka.linear_cka_sums for float32 input as a GPU computes it."""
    means_lo = means_lo or [torch.zeros_like(m) for m in means]
    U = [((x.double() * s - hi) - lo) for x, s, hi, lo in zip(layers, scales, means, means_lo)]
    sq = torch.stack([(u * u).sum(1) for u in U])
    L = len(U)
    S = torch.empty(L, L, dtype=torch.float64)
    for a in range(L):
        for b in range(a, L):
            if precision == "highest":
                gram = sum(dot(U[a][k : k + chunk].float().T, U[b][k : k + chunk].float(), "highest").double()
                           for k in range(0, U[a].shape[0], chunk))
            else:
                ua, ub = (x.float() * s - (hi + lo).float() for x, s, hi, lo in ((layers[a], scales[a], means[a], means_lo[a]), (layers[b], scales[b], means[b], means_lo[b])))
                gram = dot(ua.T, ub, precision).double()
            S[a, b] = S[b, a] = gram.square().sum()
    return S, sq


DATA = {
    "gaussian": lambda: oracles.gaussian_layers(),
    "massive": lambda: oracles.massive_layers(big=1000.0, offset=300.0, seed=1),
}


@pytest.fixture(scope="module")
def ld_oracles():
    out = {}
    for name, make in DATA.items():
        layers = make()
        out[name] = (layers, {(m, d): oracles.similarity_matrix_ld(layers, m, d) for m in ("cka", "rbf_cka") for d in (False, True)})
    return out


def emulated(layers, metric, debiased, space, precision):
    with mock.patch("fastsim.kernels.kernel_tiles.kernel_tile_sums", emulated_tile_sums), \
         mock.patch("fastsim.kernels.linear_cka.linear_cka_sums", emulated_linear_cka_sums), \
         mock.patch.object(kernel_sums, "linear_uses_sample_space", lambda n, dims: space == "sample"):
        return fastsim.similarity_matrix([torch.from_numpy(x) for x in layers], metric, debiased=debiased,
                                         backend="triton", precision=precision).double().numpy()


BOUND = {"highest": 1e-6, "high": 1e-3, "medium": 1e-2}


@pytest.mark.parametrize("precision", ["highest", "high", "medium"])
@pytest.mark.parametrize("metric, space", [("cka", "sample"), ("cka", "feature"), ("rbf_cka", "sample")])
@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("name", list(DATA))
def test_emulated_gpu_arithmetic_within_the_mode_bound(ld_oracles, name, debiased, metric, space, precision):
    layers, want = ld_oracles[name]
    got = emulated(layers, metric, debiased, space, precision)
    err = float(np.nanmax(np.abs(got - want[metric, debiased])))
    print(f"{name} {metric} {space} {'debiased' if debiased else 'biased'} {precision}: {err:.1e}")
    assert err <= BOUND[precision], err
