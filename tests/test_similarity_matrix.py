"""All-pairs matrices: equal to the pairwise calls and the reference, on every internal path."""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import matrix

import fastsim
from fastsim import reference as R
from fastsim.core import budget as options
from fastsim.core import kernel_sums as torch_cka


@st.composite
def layer_stack(draw, same_d=False, min_n=4):
    n, L = draw(st.integers(min_n, 24)), draw(st.integers(1, 5))
    d0 = draw(st.integers(1, 10))
    base = draw(matrix(n, d0, "gaussian"))
    layers = [base]
    for _ in range(L - 1):  # each layer a noisy linear map of the previous, as in a network
        d = d0 if same_d else draw(st.integers(1, 10))
        rng = np.random.default_rng(draw(st.integers(0, 2**31)))
        layers.append(np.tanh(layers[-1] @ rng.normal(size=(layers[-1].shape[1], d))) + 0.3 * rng.normal(size=(n, d)))
    return layers


PAIRWISE = {"cka": fastsim.cka, "cosine": fastsim.cosine, "mutual_knn": fastsim.mutual_knn}


@given(layer_stack(), st.sampled_from([{}, {"debiased": True}, {"kernel": "rbf"}, {"kernel": "rbf", "debiased": True}]))
def test_cka_matrix_equals_pairwise_calls_and_reference(layers, opts):
    got = fastsim.similarity_matrix(layers, "cka", **opts)
    ref = R.similarity_matrix(layers, "cka", **opts)
    assume(np.isfinite(ref).all())
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-9)
    L = len(layers)
    pair = np.array([[fastsim.cka(layers[i], layers[j], **opts) for j in range(L)] for i in range(L)])
    np.testing.assert_allclose(got, pair, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(got, got.T)


@given(layer_stack(same_d=True, min_n=1))
def test_cosine_matrix_equals_pairwise_calls_and_reference(layers):
    got = fastsim.similarity_matrix(np.stack(layers), "cosine")  # one (L, n, d) array
    np.testing.assert_allclose(got, R.similarity_matrix(layers, "cosine"), rtol=1e-9, atol=1e-12)
    L = len(layers)
    pair = np.array([[fastsim.cosine(layers[i], layers[j]) for j in range(L)] for i in range(L)])
    np.testing.assert_allclose(got, pair, rtol=1e-9, atol=1e-12)


@given(layer_stack(), st.data())
def test_mutual_knn_matrix_equals_pairwise_calls_and_reference(layers, data):
    n = layers[0].shape[0]
    k = data.draw(st.integers(1, n - 1))
    backend = data.draw(st.sampled_from(["cuda", "torch"]))
    got = fastsim.similarity_matrix(layers, "mutual_knn", k=k, backend=backend)
    np.testing.assert_allclose(got, R.similarity_matrix(layers, "mutual_knn", k=k), atol=1e-12)
    L = len(layers)
    pair = np.array([[fastsim.mutual_knn(layers[i], layers[j], k=k) for j in range(L)] for i in range(L)])
    np.testing.assert_allclose(got, pair, atol=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("sample_space", [False, True])
def test_both_linear_paths_and_tiny_chunks(monkeypatch, debiased, sample_space):
    """Feature-space and sample-space linear CKA, streamed in many small chunks and blocks."""
    rng = np.random.default_rng(5)
    base = rng.normal(size=(203, 7)) + 50.0
    layers = [base, base @ rng.normal(size=(7, 11)) + rng.normal(size=(203, 11)), rng.normal(size=(203, 3))]
    ref = R.similarity_matrix(layers, "cka", debiased=debiased)
    monkeypatch.setattr(torch_cka, "linear_uses_sample_space", lambda n, dims: sample_space)
    monkeypatch.setattr(options, "CHUNK_BYTES", 4096)
    got = fastsim.similarity_matrix(layers, "cka", debiased=debiased)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)
    got32 = fastsim.similarity_matrix([x.astype(np.float32) for x in layers], "cka", debiased=debiased)
    np.testing.assert_allclose(got32, R.similarity_matrix([x.astype(np.float32) for x in layers], "cka", debiased=debiased), atol=2e-4)


def test_path_choice_follows_cost():
    assert torch_cka.linear_uses_sample_space(1024, [768] * 13)  # n < sum(d): Gram blocks are cheaper
    assert not torch_cka.linear_uses_sample_space(100_000, [768] * 13)


def test_rbf_and_knn_with_tiny_chunks(monkeypatch):
    rng = np.random.default_rng(6)
    layers = [rng.normal(size=(150, 5)), rng.normal(size=(150, 4))]
    layers[1][:75] = layers[1][75:]  # duplicate rows: ties in kNN, zero distances in RBF
    monkeypatch.setattr(options, "CHUNK_BYTES", 3000)
    for opts in ({"kernel": "rbf"}, {"kernel": "rbf", "debiased": True}, {"kernel": "rbf", "sigma": 0.5}):
        np.testing.assert_allclose(
            fastsim.similarity_matrix(layers, "cka", **opts), R.similarity_matrix(layers, "cka", **opts), rtol=1e-9
        )
    np.testing.assert_allclose(
        fastsim.similarity_matrix(layers, "mutual_knn", k=7), R.similarity_matrix(layers, "mutual_knn", k=7)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(
            fastsim.similarity_matrix([layers[0], layers[0] * 2], "cosine"), np.ones((2, 2)), atol=1e-12
        )


def test_median_heuristic_on_a_sample(monkeypatch):
    """Above MEDIAN_SAMPLE rows the median comes from an evenly spaced sample (documented)."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 4))
    monkeypatch.setattr(torch_cka, "MEDIAN_SAMPLE", 50)
    idx = np.round(np.linspace(0, 299, 50)).astype(int)
    assert torch_cka.median_sigma(torch.from_numpy(x)) == pytest.approx(R.median_sigma(x[idx]), rel=1e-12)
    monkeypatch.setattr(torch_cka, "MEDIAN_SAMPLE", 2048)
    assert torch_cka.median_sigma(torch.from_numpy(x)) == pytest.approx(R.median_sigma(x), rel=1e-12)
