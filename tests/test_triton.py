"""The Triton backend through the public API (Triton's interpreter on the CPU when there is no GPU;
see conftest). The kernels themselves are tested beside their references in tests/kernels/."""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import TORCH_DTYPES, accumulates_in_float64, as64, dtypes, related_pair

import fastsim
from fastsim import reference as R

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@given(st.data())
def test_triton_backend_equals_torch_backend(data):
    n, d = data.draw(st.integers(1, 30)), data.draw(st.integers(1, 40))
    a, b = data.draw(related_pair(n, d, d))
    a = torch.from_numpy(a).to(TORCH_DTYPES[data.draw(dtypes)]).to(DEVICE)
    b = torch.from_numpy(b).to(TORCH_DTYPES[data.draw(dtypes)]).to(DEVICE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastsim.DegenerateWarning)
        tri = float(fastsim.cosine(a, b, backend="triton"))
        tor = float(fastsim.cosine(a, b, backend="torch"))
    assert tri == pytest.approx(tor, abs=1e-12 if accumulates_in_float64(a, b) else 2e-6)
    assert tri == pytest.approx(R.cosine(as64(a), as64(b)), abs=1e-9 if accumulates_in_float64(a, b) else 1e-5)


def test_triton_similarity_matrix_and_zero_rows():
    rng = np.random.default_rng(0)
    layers = [torch.from_numpy(rng.normal(size=(20, 8))).to(DEVICE) for _ in range(3)]
    layers[1][4] = 0
    with pytest.warns(fastsim.DegenerateWarning):
        got = fastsim.similarity_matrix(layers, "cosine", backend="triton")
    expected = R.similarity_matrix([x.cpu() for x in layers], "cosine")
    np.testing.assert_allclose(got.cpu().numpy(), expected, atol=1e-12)


@given(st.data())
def test_triton_streaming_cka_matches_reference(data):
    n, L = data.draw(st.integers(8, 40)), data.draw(st.integers(1, 3))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    base = rng.normal(size=(n, 5)) + rng.normal(size=5) * 100
    layers = [base] + [np.tanh(base @ rng.normal(size=(5, int(rng.integers(1, 20))))) + 0.2 * rng.normal(size=(n, 1)) for _ in range(L - 1)]
    debiased = data.draw(st.booleans())
    for x in layers:
        xc = x - x.mean(0)
        K = R.linear_kernel(xc)
        assume(np.sum(xc**2) > 1e-6 * np.sum(x**2) and (not debiased or R.hsic(K, K, True) > 0.05 * R.hsic(K, K)))
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64]))
    tensors = [torch.from_numpy(x).to(dtype).to(DEVICE) for x in layers]
    acc = fastsim.StreamingCKA(debiased=debiased, backend="triton")
    cuts = sorted({0, n, *data.draw(st.lists(st.integers(1, n - 1), max_size=9))})
    for s, e in zip(cuts[:-1], cuts[1:]):
        acc.update([t[s:e] for t in tensors])
    got = acc.compute().cpu().double().numpy()
    ref = R.similarity_matrix([as64(t) for t in tensors], "cka", debiased=debiased)
    rtol = 1e-9 if dtype == torch.float64 else 1e-5  # acceptance: 1e-5 relative in float32
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol)
    one_shot = fastsim.similarity_matrix(tensors, "cka", debiased=debiased, backend="triton")
    np.testing.assert_allclose(one_shot.cpu().double().numpy(), ref, rtol=rtol, atol=rtol)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the planted 1e30 row, by design
@given(st.data())
def test_all_pairs_cosine_kernel_matches_reference(data):
    n, L, d = data.draw(st.integers(1, 40)), data.draw(st.integers(1, 5)), data.draw(st.integers(1, 40))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    stack = rng.normal(size=(L, n, d)) * 10.0 ** rng.uniform(-2, 2, size=(L, 1, 1))
    if data.draw(st.booleans()) and n > 1:
        stack[0, 0] = 0.0  # a zero vector: counted as 0, with a warning
    if data.draw(st.booleans()):
        stack[-1, -1] *= 1e30  # squares overflow float32: the frame is recomputed with scaling
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64]))
    x = torch.from_numpy(stack).to(dtype).to(DEVICE)
    as_list = data.draw(st.booleans())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastsim.DegenerateWarning)
        got = fastsim.similarity_matrix([t.clone() for t in x] if as_list else x, "cosine", backend="triton")
        via_torch = fastsim.similarity_matrix(x, "cosine", backend="torch")
    ref = R.similarity_matrix(list(as64(x)), "cosine")
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(got.cpu().double().numpy(), ref, atol=tol)
    np.testing.assert_allclose(got.cpu().double().numpy(), via_torch.cpu().double().numpy(), atol=tol)


def test_stacked_view_recovers_the_3d_tensor():
    from fastsim.core.triton_support import stacked_view

    x = torch.randn(4, 6, 5)
    v = stacked_view(list(x))
    assert v is not None and v.data_ptr() == x.data_ptr() and torch.equal(v, x)
    assert stacked_view([t.clone() for t in x]) is None


@given(st.data())
def test_triton_tile_kernel_cka_matches_reference(data):
    """Sample-space linear CKA and RBF CKA (median or explicit sigma) from the fused tile kernel."""
    n, L, d = data.draw(st.integers(4, 45)), data.draw(st.integers(1, 3)), data.draw(st.integers(1, 24))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    base = rng.normal(size=(n, d)) + rng.normal(size=d) * data.draw(st.sampled_from([0.0, 100.0]))
    layers = [base] + [np.tanh(base @ rng.normal(size=(d, d)) / np.sqrt(d)) + 0.3 * rng.normal(size=(n, d)) for _ in range(L - 1)]
    kernel = data.draw(st.sampled_from(["linear", "rbf"]))
    debiased = data.draw(st.booleans())
    sigma = None
    if kernel == "rbf" and data.draw(st.booleans()):
        sigma = float(R.median_sigma(layers[0]) * data.draw(st.sampled_from([0.3, 3.0, 30.0])))
    for x in layers:
        xc = x - x.mean(0)
        K = R.linear_kernel(xc) if kernel == "linear" else R.rbf_kernel(x, sigma)
        assume(not debiased or R.hsic(K, K, True) > 0.05 * R.hsic(K, K))
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64]))
    x = torch.from_numpy(np.stack(layers)).to(dtype).to(DEVICE)
    from unittest import mock

    from fastsim.core import kernel_sums as torch_cka

    # n < sum(d) picks the tile kernel for linear CKA; force it for every drawn shape.
    with mock.patch.object(torch_cka, "linear_uses_sample_space", lambda n, dims: True):
        got = fastsim.similarity_matrix(x, "cka", kernel=kernel, sigma=sigma, debiased=debiased, backend="triton")
    ref = R.similarity_matrix(list(as64(x)), "cka", kernel=kernel, sigma=sigma, debiased=debiased)
    tol = 1e-9 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(got.cpu().double().numpy(), ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("precision, bound", [("highest", 1e-5), ("high", 1e-5 if DEVICE == "cpu" else 2e-3), ("medium", 5e-3)])
def test_tile_kernel_precision_modes(kernel, precision, bound):
    """Measured on the interpreter (bf16 emulated by truncation): linear 1e-6 and RBF 9e-4 at medium."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(64, 24))
    layers = [base, np.tanh(base @ rng.normal(size=(24, 24)) / 5) + 0.3 * rng.normal(size=(64, 24))]
    x = torch.from_numpy(np.stack(layers)).float().to(DEVICE)
    ref = R.similarity_matrix(list(as64(x)), "cka", kernel=kernel)
    got = fastsim.similarity_matrix(x, "cka", kernel=kernel, backend="triton", precision=precision)
    assert np.abs(got.cpu().double().numpy() - ref).max() <= bound


def test_tile_kernel_scales_subnormal_float32_layers():
    """A layer of float32 subnormals needs a 2^139 scale: applied in two float32-safe factors."""
    rng = np.random.default_rng(8)
    a = (rng.normal(size=(20, 16)) * 1e-42).astype(np.float32)
    b = rng.normal(size=(20, 16)).astype(np.float32)
    x = torch.from_numpy(np.stack([a, b])).to(DEVICE)
    got = fastsim.similarity_matrix(x, "cka", backend="triton")  # n < sum(d): the tile kernel
    np.testing.assert_allclose(got.cpu().double().numpy(), R.similarity_matrix([a, b], "cka"), atol=1e-5)
