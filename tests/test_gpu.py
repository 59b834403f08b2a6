"""CUDA tensors through every metric and backend (skipped without a GPU; see conftest)."""

import numpy as np
import pytest
import torch

import fastsim
from fastsim import reference as R

pytestmark = pytest.mark.gpu


def layers_on_gpu(n=3000, d=96, L=4, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    out = [x]
    for _ in range(L - 1):
        x = torch.tanh(x @ torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5) + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64)
        out.append(x)
    return [t.to(dtype).cuda() for t in out]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("precision", ["highest", "high", "medium"])
@pytest.mark.parametrize("metric, opts", [("cka", {}), ("cka", {"debiased": True}), ("cka", {"kernel": "rbf"}), ("cosine", {})])
def test_matrices_on_gpu_match_reference(dtype, precision, metric, opts):
    layers = layers_on_gpu(n=1200, dtype=dtype)
    got = fastsim.similarity_matrix(layers, metric, precision=precision, **opts)
    assert got.device.type == "cuda"
    ref = R.similarity_matrix([x.cpu() for x in layers], metric, **opts)
    err = np.abs(got.cpu().double().numpy() - ref).max()
    bound = {"highest": 1e-4, "high": 5e-3, "medium": 2e-2}[precision] if dtype != torch.float64 else 1e-9
    print(f"{metric} {opts} {dtype} {precision}: max error {err:.2e}")
    assert err <= bound


@pytest.mark.parametrize("backend", ["cuda", "torch"])
def test_mutual_knn_on_gpu_is_exact_at_highest(backend):
    layers = layers_on_gpu(n=2000, d=64, L=3)
    got = fastsim.similarity_matrix(layers, "mutual_knn", k=10, backend=backend)
    assert got.device.type == "cuda"
    ref = R.similarity_matrix([x.cpu() for x in layers], "mutual_knn", k=10)
    np.testing.assert_allclose(got.cpu().double().numpy(), ref, atol=1e-7)


def test_triton_cosine_on_gpu():
    a, b = layers_on_gpu(n=5000, d=768, L=2)
    got = float(fastsim.cosine(a, b, backend="triton"))
    assert got == pytest.approx(R.cosine(a.cpu(), b.cpu()), abs=1e-5)


@pytest.mark.parametrize("precision, bound", [("highest", 1e-4), ("high", 5e-3), ("medium", 2e-2)])
@pytest.mark.parametrize("opts", [{}, {"debiased": True}, {"kernel": "rbf"}])
def test_triton_cka_on_gpu(precision, bound, opts):
    """Both Triton CKA paths at real sizes: the streaming comoment tiles (n > sum d) and the
    fused tile kernel (RBF), against the float64 torch backend."""
    layers = layers_on_gpu(n=20000 if opts.get("kernel") != "rbf" else 8192, d=256, L=6)
    got = fastsim.similarity_matrix(layers, "cka", backend="triton", precision=precision, **opts)
    ref = fastsim.similarity_matrix([x.double() for x in layers], "cka", backend="torch", **opts)
    err = (got.double() - ref).abs().max().item()
    print(f"triton cka {opts} {precision}: max error {err:.2e}")
    assert err <= bound


def test_triton_streaming_merge_and_cosine_on_gpu():
    layers = layers_on_gpu(n=30000, d=512, L=8)
    parts = [fastsim.StreamingCKA(backend="triton").update([x[s : s + 10000] for x in layers]) for s in (0, 10000, 20000)]
    merged = parts[0].merge(parts[1]).merge(parts[2]).compute()
    whole = fastsim.similarity_matrix([x.double() for x in layers], "cka")
    assert (merged.double() - whole).abs().max().item() <= 1e-4
    stacked = torch.stack(layers).to(torch.bfloat16)
    got = fastsim.similarity_matrix(stacked, "cosine", backend="triton")
    ref = fastsim.similarity_matrix(stacked.double(), "cosine", backend="torch")
    assert (got.double() - ref).abs().max().item() <= 1e-5
