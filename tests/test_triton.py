"""Triton kernels (run by Triton's interpreter on the CPU when there is no GPU; see conftest)."""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import fastsim
from fastsim import reference as R

from strategies import TORCH_DTYPES, accumulates_in_float64, as64, dtypes, related_pair

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


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
