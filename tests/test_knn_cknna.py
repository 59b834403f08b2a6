"""CKNNA (fastsim.cknna, similarity_matrix(..., "cknna")) against the float64 reference, and the
reference against a direct transcription of platonic-rep's torch code."""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from strategies import accumulates_in_float64, as64, cast_pair, containers, dtypes, related_pair, value
from test_metrics import boundary_near_tie

import fastsim
from fastsim import reference as R
from fastsim.core.numpy_reference import knn_mask


def platonic_cknna(feats_a: torch.Tensor, feats_b: torch.Tensor, topk: int) -> float:
    """platonic-rep metrics.py ``cknna`` (unbiased=True, distance_agnostic=False) on unit rows,
    float64, without its +1e-6 in the denominator; torch.topk's tie order is unspecified, so use
    only on tie-free data."""
    feats_a = torch.nn.functional.normalize(feats_a, dim=-1)
    feats_b = torch.nn.functional.normalize(feats_b, dim=-1)
    n = feats_a.shape[0]
    K, L = feats_a @ feats_a.T, feats_b @ feats_b.T

    def hsic_unbiased(K, L):
        m = K.shape[0]
        Kt, Lt = K.clone().fill_diagonal_(0), L.clone().fill_diagonal_(0)
        value = torch.sum(Kt * Lt.T) + torch.sum(Kt) * torch.sum(Lt) / ((m - 1) * (m - 2)) - 2 * torch.sum(torch.mm(Kt, Lt)) / (m - 2)
        return value / (m * (m - 3))

    def similarity(K, L):
        K_hat, L_hat = K.clone().fill_diagonal_(float("-inf")), L.clone().fill_diagonal_(float("-inf"))
        _, ik = torch.topk(K_hat, topk, dim=1)
        _, il = torch.topk(L_hat, topk, dim=1)
        mask = torch.zeros(n, n, dtype=K.dtype).scatter_(1, ik, 1) * torch.zeros(n, n, dtype=K.dtype).scatter_(1, il, 1)
        return hsic_unbiased(mask * K, mask * L)

    return float(similarity(K, L) / torch.sqrt(similarity(K, K) * similarity(L, L)))


@settings(max_examples=25, deadline=None)
@given(st.integers(6, 60), st.integers(1, 8), st.integers(0, 2**31))
def test_reference_is_platonic_reps_definition(n, k, seed):
    rng = np.random.default_rng(seed)
    k = min(k, n - 1)
    a = rng.normal(size=(n, 5))
    b = a @ rng.normal(size=(5, 7)) + rng.normal(size=(n, 7))
    got = R.cknna(a, b, k)
    want = platonic_cknna(torch.from_numpy(a), torch.from_numpy(b), k)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12) or (np.isnan(got) and np.isnan(want))


def well_conditioned(a64, b64, k) -> bool:
    """Self terms clearly positive (else CKNNA is undefined or the ratio ill-conditioned)."""
    K, L = R.cosine_similarities(a64), R.cosine_similarities(b64)
    mk, ml = knn_mask(a64, k), knn_mask(b64, k)
    kk, ll = R.hsic(mk * K, mk * K, True), R.hsic(ml * L, ml * L, True)
    scale_k = np.sum((mk * K) ** 2) / (len(K) * (len(K) - 3))
    scale_l = np.sum((ml * L) ** 2) / (len(L) * (len(L) - 3))
    return kk > 1e-3 * scale_k and ll > 1e-3 * scale_l


@settings(deadline=None)
@given(st.data(), st.sampled_from(["cuda", "torch"]))
def test_cknna_matches_reference(data, backend):
    n = data.draw(st.integers(4, 40))
    a, b = data.draw(related_pair(n, data.draw(st.integers(1, 10)), data.draw(st.integers(1, 10))))
    a, b = cast_pair(a, b, data.draw(dtypes), data.draw(dtypes), data.draw(containers))
    k = data.draw(st.integers(1, n - 1))
    a64, b64 = as64(a), as64(b)
    assume(not boundary_near_tie(a64, k) and not boundary_near_tie(b64, k))
    assume(well_conditioned(a64, b64, k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = value(fastsim.cknna(a, b, k=k, backend=backend))
    ref = R.cknna(a64, b64, k)
    # Neighbour sets are exact, masked similarities are float64; only the final cast differs.
    tol = 1e-9 if accumulates_in_float64(a, b) else 1e-6
    assert got == pytest.approx(ref, rel=tol, abs=tol)


@settings(max_examples=20, deadline=None)
@given(st.data())
def test_cknna_matrix_matches_reference_and_is_not_symmetrised(data):
    n = data.draw(st.integers(8, 40))
    layers = [data.draw(related_pair(n, 4, 3, pattern=data.draw(st.sampled_from(["gaussian", "duplicates", "integers"]))))[i] for i in (0, 1)]
    layers.append(np.tanh(layers[0][:, :2]) + 0.1 * layers[1][:, :2])
    k = data.draw(st.integers(1, n - 1))
    assume(not any(boundary_near_tie(x, k) for x in layers))
    assume(all(well_conditioned(x, y, k) for x in layers for y in layers))
    got = fastsim.similarity_matrix(layers, "cknna", k=k)
    ref = R.similarity_matrix(layers, "cknna", k=k)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)


def test_cknna_is_one_on_itself_and_asymmetric_in_general():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(80, 6))
    b = np.tanh(a @ rng.normal(size=(6, 4))) + 0.5 * rng.normal(size=(80, 4))
    assert fastsim.cknna(a, a, k=5) == pytest.approx(1.0, abs=1e-12)
    ab, ba = fastsim.cknna(a, b, k=5), fastsim.cknna(b, a, k=5)
    assert ab == pytest.approx(R.cknna(a, b, 5), abs=1e-12) and ba == pytest.approx(R.cknna(b, a, 5), abs=1e-12)
    assert ab != ba  # 1^T A B 1 of the one-sided masked kernels is not symmetric


def test_cknna_errors_name_the_argument():
    a = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match="n >= 4|at least 4"):
        fastsim.cknna(a[:3], a[:3], k=1)
    with pytest.raises(ValueError, match="k must satisfy"):
        fastsim.cknna(a, a, k=10)
    with pytest.raises(TypeError, match="k must be an integer"):
        fastsim.cknna(a, a, k=2.5)
    with pytest.raises(ValueError, match="a and b must have the same number of rows"):
        fastsim.cknna(a, a[:9], k=2)
    with pytest.raises(TypeError, match="unknown option 'sigma'"):
        fastsim.similarity_matrix([a, a], "cknna", k=2, sigma=1.0)


def test_cknna_degenerate_self_term_gives_nan_with_warning():
    # Zero vectors: every similarity is 0, so the masked kernel and its self term are 0.
    a = np.zeros((12, 3))
    b = np.random.default_rng(1).normal(size=(12, 3))
    assert np.isnan(R.cknna(a, b, 3))
    with pytest.warns(fastsim.DegenerateWarning, match="cknna"):
        got = fastsim.cknna(a, b, k=3)
    assert np.isnan(got)
