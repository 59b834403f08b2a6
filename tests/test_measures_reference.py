"""The measures of issue 15 (covariance-block, kNN-list and RSA measures) agree with their float64
references to 1e-9 in float64: all pairs, chunked, merged, on hypothesis-drawn and fixed
adversarial inputs; degenerate input gives NaN with a DegenerateWarning; CCA without ridge
refuses layers that span all centered directions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import matrix

import fastsim
from fastsim import reference as R
from fastsim.metrics import registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COVARIANCE = ["procrustes", "cca_r2", "cca_mean", "svcca", "pwcca", "linear_regression", "rsa_linear", "rsa_cosine"]
CCA_LIKE = ["cca_r2", "cca_mean", "pwcca", "linear_regression"]
KNN = ["jaccard_knn", "rank_knn", "second_order_cosine", "cycle_knn"]
TOL = dict(rtol=1e-9, atol=1e-9)


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastsim.DegenerateWarning)
        return fn(*args, **kwargs)


def agree(name, layers, **opts):
    got = quiet(fastsim.similarity_matrix, layers, name, **opts)
    ref = quiet(R.similarity_matrix, layers, name, **opts)
    np.testing.assert_allclose(got, ref, **TOL)
    return got


def resolved_cosines(layers) -> bool:
    """Each layer's off-diagonal cosine similarities vary by far more than their rounding (or not
    at all): nearly parallel samples leave a cosine RSM that no float64 computation resolves."""
    for x in layers:
        K = R.cosine_similarities(x)
        spread = np.std(K[np.triu_indices(K.shape[0], 1)])
        if 0 < spread < 1e-4:
            return False
    return True


def conditioned(layers) -> bool:
    """Each layer's standardized spectrum is either well resolved or clearly rank-deficient: CCA
    of nearly collinear features is ill-conditioned in any implementation."""
    for x in layers:
        y = x - x.mean(0)
        ss = (y**2).sum(0)
        if not np.any(ss > 1e-20 * (x**2).sum(0).max()):
            continue
        y = y[:, ss > 1e-12 * ss.max()]
        s = np.linalg.svd(y / np.sqrt((y**2).sum(0)), compute_uv=False)
        ratio = s / s[0]
        if np.any((ratio < 1e-3) & (ratio > 1e-8)):
            return False
    return True


def untied(layers, ridge=0.0) -> bool:
    """PWCCA weighs canonical directions, which are not unique within tied canonical correlations
    (other than all equal to 1): the measure itself is undefined there."""
    from fastsim.core.numpy_cca import canonical

    for a in layers:
        for b in layers:
            if a is b:
                continue
            rho = canonical(a, b, ridge)[0]
            if rho.size > 1 and not np.all(rho > 1 - 1e-9) and np.any(np.abs(np.diff(rho)) < 1e-6):
                return False
    return True


@st.composite
def stacks(draw, min_n=12, max_n=48, max_d=5, patterns=("gaussian", "offset", "heavy", "lowrank", "duplicates")):
    n = draw(st.integers(min_n, max_n))
    L = draw(st.integers(1, 4))
    first = draw(matrix(n, draw(st.integers(1, max_d)), draw(st.sampled_from(patterns))))
    layers = [first]
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    for _ in range(L - 1):
        d = int(rng.integers(1, max_d + 1))
        kind = draw(st.sampled_from(["mixed", "independent", "linear"]))
        prev = layers[-1]
        if kind == "mixed":
            layers.append(np.tanh(prev @ rng.normal(size=(prev.shape[1], d)) / 3) + 0.3 * rng.normal(size=(n, d)))
        elif kind == "linear":
            layers.append(prev @ rng.normal(size=(prev.shape[1], d)) + 5.0)
        else:
            layers.append(rng.normal(size=(n, d)) * rng.uniform(0.1, 10))
    return layers


# ---- covariance-block measures: all pairs, one shot --------------------------------------------
@pytest.mark.parametrize("name", COVARIANCE)
@given(layers=stacks())
def test_all_pairs_equal_reference(name, layers):
    if name in CCA_LIKE + ["svcca"]:
        assume(conditioned(layers))
    if name == "pwcca":
        assume(untied(layers))
    if name == "rsa_cosine":
        assume(resolved_cosines(layers))
    agree(name, layers)


@pytest.mark.parametrize("name", ["cca_r2", "cca_mean", "pwcca", "linear_regression"])
@given(layers=stacks(min_n=6, max_n=20, max_d=12), ridge=st.sampled_from([1e-3, 0.1, 2.0]))
def test_ridge_equals_reference_even_with_more_features_than_samples(name, layers, ridge):
    assume(conditioned(layers))
    if name == "pwcca":
        assume(untied(layers, ridge))
    agree(name, layers, ridge=ridge)


@given(layers=stacks(), keep=st.sampled_from([0.5, 0.9, 0.99, 1.0]))
def test_svcca_keep_equals_reference(layers, keep):
    assume(conditioned(layers))
    agree("svcca", layers, keep=keep)


# ---- chunked and merged states -----------------------------------------------------------------
@pytest.mark.parametrize("name", COVARIANCE)
@given(layers=stacks(min_n=16), data=st.data())
def test_chunked_and_merged_states_equal_reference(name, layers, data):
    if name in CCA_LIKE + ["svcca"]:
        assume(conditioned(layers))
    if name == "pwcca":
        assume(untied(layers))
    if name == "rsa_cosine":
        assume(resolved_cosines(layers))
    n = layers[0].shape[0]
    cuts = sorted(set(data.draw(st.lists(st.integers(1, n - 1), max_size=6))))
    edges = [0, *cuts, n]
    spec = registry.get(name)
    ref = quiet(R.similarity_matrix, layers, name)
    whole = spec.accumulator(precision="highest")
    for s, e in zip(edges[:-1], edges[1:]):
        whole.update([x[s:e] for x in layers])
    np.testing.assert_allclose(quiet(whole.compute), ref, **TOL)
    split = data.draw(st.integers(1, n - 1))
    left = spec.accumulator(precision="highest").update([x[:split] for x in layers])
    right = spec.accumulator(precision="highest").update([x[split:] for x in layers])
    np.testing.assert_allclose(quiet(left.merge(right).compute), ref, **TOL)


# ---- kNN-list measures -------------------------------------------------------------------------
@pytest.mark.parametrize("name", KNN)
@given(layers=stacks(min_n=5, max_n=40, patterns=("gaussian", "offset", "heavy", "duplicates", "integers")),
       data=st.data())
def test_knn_measures_equal_reference(name, layers, data):
    if name == "rank_knn":  # small integers: parallel, non-identical vectors tie only mathematically
        assume(not any(np.all(x == np.round(x)) for x in layers))
    n = layers[0].shape[0]
    k = data.draw(st.integers(1, min(8, n - 1)))
    backend = data.draw(st.sampled_from(["torch", "auto"]))
    got = quiet(fastsim.similarity_matrix, layers, name, k=k, backend=backend)
    np.testing.assert_allclose(got, quiet(R.similarity_matrix, layers, name, k=k), **TOL)


# ---- RSA with Spearman over sampled pairs ------------------------------------------------------
@given(layers=stacks(min_n=5, max_n=40, patterns=("gaussian", "offset", "heavy", "duplicates")),
       inner=st.sampled_from(["correlation", "cosine", "euclidean"]),
       pairs=st.sampled_from([7, 100, 1_000_000]), seed=st.integers(0, 5))
def test_rsa_spearman_equals_reference(layers, inner, pairs, seed):
    if inner == "correlation":  # with d <= 2 every correlation of two samples is +-1 or 0: all ties
        assume(all(x.shape[1] >= 3 for x in layers))
    agree("rsa_spearman", layers, inner=inner, pairs=pairs, pair_seed=seed)


def test_rsa_spearman_sampling_is_stated_by_its_pairs():
    from fastsim.metrics.rsa_spearman import sample_pairs

    i, j = sample_pairs(10, 100, 0)  # 45 pairs fit: all of them, exact
    assert len(i) == 45 and np.all(i < j)
    i, j = sample_pairs(1000, 5000, 3)
    assert len(i) == 5000 and np.all(i < j)
    assert np.array_equal(i, sample_pairs(1000, 5000, 3)[0])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8))
    y = x + 0.5 * rng.normal(size=(300, 8))
    exact = fastsim.similarity_matrix([x, y], "rsa_spearman")[0, 1]  # 44 850 pairs <= 1e6: exact
    sampled = fastsim.similarity_matrix([x, y], "rsa_spearman", pairs=20_000)[0, 1]
    assert abs(exact - sampled) < 0.05


# ---- fixed adversarial cases -------------------------------------------------------------------
def adversarial():
    rng = np.random.default_rng(2024)
    n = 64
    base = rng.normal(size=(n, 6))
    Q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    return {
        "large_means": [base + 1e4, base @ rng.normal(size=(6, 4)) - 3e3 + rng.normal(size=(n, 4))],
        "outlier_feature": [base * np.r_[1, 1, 1, 1, 1, 300.0], np.tanh(base) + 0.1 * rng.normal(size=(n, 6))],
        "collinear_and_constant": [np.c_[base[:, :3], base[:, :3] @ rng.normal(size=(3, 2)), np.full(n, 7.0)],
                                   base[:, 2:] + 0.2 * rng.normal(size=(n, 4))],
        "rotated_scaled_shifted": [base, 3.0 * base @ Q + 11.0],
        # the streaming states hold raw fourth moments: magnitudes stay within about 1e+-75
        "tiny_and_huge": [base * 1e-60, (base @ rng.normal(size=(6, 3))) * 1e60 + rng.normal(size=(n, 3)) * 1e59],
        "duplicated_rows": [base[rng.integers(0, 20, size=n)], np.tanh(base[rng.integers(0, 20, size=n)])],
    }


@pytest.mark.parametrize("case", list(adversarial()))
@pytest.mark.parametrize("name", COVARIANCE + KNN + ["rsa_spearman"])
def test_adversarial_cases_equal_reference(name, case):
    layers = adversarial()[case]
    if name == "rsa_cosine" and not resolved_cosines(layers):
        pytest.skip("samples nearly parallel (a mean of 1e4): their cosine RSM is below float64 resolution")
    opts = {"k": 5} if name in KNN else {}
    agree(name, layers, **opts)


def test_invariances_of_the_definitions():
    x = adversarial()["rotated_scaled_shifted"]
    for name in ["procrustes", "cca_r2", "cca_mean", "svcca", "pwcca", "linear_regression", "rsa_linear"]:
        np.testing.assert_allclose(fastsim.similarity_matrix(x, name), np.ones((2, 2)), atol=1e-12, err_msg=name)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(80, 5))
    b = a @ rng.normal(size=(5, 5)) + 2.0  # invertible linear map: CCA and regression are 1, Procrustes is not
    for name in ["cca_r2", "cca_mean", "pwcca", "linear_regression"]:
        np.testing.assert_allclose(fastsim.similarity_matrix([a, b], name), np.ones((2, 2)), atol=1e-12, err_msg=name)
    assert fastsim.similarity_matrix([a, b], "procrustes")[0, 1] < 0.999


def test_linear_regression_is_row_predicts_column():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(100, 4))
    b = a[:, :1] + 0.01 * rng.normal(size=(100, 1))  # a explains b; b explains a quarter of a
    m = fastsim.similarity_matrix([a, b], "linear_regression")
    assert m[0, 1] > 0.99 and m[1, 0] < 0.5
    assert abs(m[0, 1] - R.linear_regression(a, b)) < 1e-12


# ---- degenerate input --------------------------------------------------------------------------
@pytest.mark.parametrize("name", COVARIANCE + ["rsa_spearman"])
def test_zero_variance_layer_is_nan_with_a_warning(name):
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(30, 3)), rng.normal(size=(30, 4))
    const = np.tile(rng.normal(size=(1, 4)), (30, 1))
    with pytest.warns(fastsim.DegenerateWarning):
        m = fastsim.similarity_matrix([a, const, b], name)
    assert np.isnan(m[1, 1]) and np.isnan(m[0, 1]) and np.isnan(m[2, 1])
    if name == "linear_regression":  # a constant predictor explains nothing
        assert m[1, 0] == 0 and m[1, 2] == 0
    else:
        assert np.isnan(m[1, 0])
    assert np.isfinite(m[0, 2]) and np.isfinite(m[2, 0])
    np.testing.assert_allclose(m, quiet(R.similarity_matrix, [a, const, b], name), **TOL)


def test_zero_vectors_in_second_order_cosine_contribute_zero_with_a_warning():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(20, 3)), rng.normal(size=(20, 3))
    a[5] = 0
    with pytest.warns(fastsim.DegenerateWarning):
        m = fastsim.similarity_matrix([a, b], "second_order_cosine", k=3)
    np.testing.assert_allclose(m, R.similarity_matrix([a, b], "second_order_cosine", k=3), **TOL)


@pytest.mark.parametrize("name", ["cca_r2", "cca_mean", "pwcca", "linear_regression"])
def test_cca_refuses_a_layer_spanning_all_samples_without_ridge(name):
    rng = np.random.default_rng(5)
    wide, narrow = rng.normal(size=(20, 30)), rng.normal(size=(20, 3))
    with pytest.raises(ValueError, match="ridge > 0"):
        fastsim.similarity_matrix([wide, narrow], name)
    with pytest.raises(ValueError, match="ridge > 0"):
        R.similarity_matrix([wide, narrow], name)
    agree(name, [wide, narrow], ridge=0.5)


def test_svcca_refuses_keeping_every_direction_of_few_samples():
    rng = np.random.default_rng(6)
    with pytest.raises(ValueError, match="n - 1"):
        fastsim.similarity_matrix([rng.normal(size=(10, 30)), rng.normal(size=(10, 3))], "svcca", keep=1.0)


def test_options_are_checked():
    x = [np.random.default_rng(0).normal(size=(20, 3))] * 2
    with pytest.raises(ValueError, match="ridge"):
        fastsim.similarity_matrix(x, "cca_r2", ridge=-1)
    with pytest.raises(ValueError, match="keep"):
        fastsim.similarity_matrix(x, "svcca", keep=0)
    with pytest.raises(ValueError, match="inner"):
        fastsim.similarity_matrix(x, "rsa_spearman", inner="manhattan")
    with pytest.raises(ValueError, match="pairs"):
        fastsim.similarity_matrix(x, "rsa_spearman", pairs=0)
    with pytest.raises(TypeError, match="unknown option"):
        fastsim.similarity_matrix(x, "procrustes", ridge=1.0)
    with pytest.raises(ValueError, match="k must satisfy"):
        fastsim.similarity_matrix(x, "jaccard_knn", k=20)


def test_procrustes_distance_is_the_aligned_residual():
    from fastsim.metrics import procrustes

    layers = adversarial()["large_means"]
    s = fastsim.similarity_matrix(layers, "procrustes")
    np.testing.assert_allclose(procrustes.distance(s)[0, 1], procrustes.reference_distance(*layers), rtol=1e-9)


# ---- dtypes, devices, LayerSimilarity ------------------------------------------------------------
@pytest.mark.parametrize("name", COVARIANCE + KNN + ["rsa_spearman"])
def test_float32_and_torch_inputs(name):
    layers = adversarial()["outlier_feature"]
    opts = {"k": 5} if name in KNN else {}
    ref = R.similarity_matrix(layers, name, **opts)
    got = fastsim.similarity_matrix([torch.from_numpy(x).float() for x in layers], name, **opts)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=2e-5)


def test_layer_similarity_streams_the_new_measures():
    rng = np.random.default_rng(7)
    h = [torch.from_numpy(rng.normal(size=(6, 12, 5)))]
    for _ in range(3):
        h.append(h[-1] + 0.5 * torch.tanh(h[-1] @ torch.from_numpy(rng.normal(size=(5, 5)))))
    mask = torch.arange(12)[None, :] < torch.tensor([12, 9, 12, 5, 11, 12])[:, None]
    names = COVARIANCE + KNN + ["rsa_spearman"]
    acc = fastsim.LayerSimilarity(names, k=3)
    for b in range(6):
        acc.update([x[b : b + 1] for x in h], mask[b : b + 1])
    out = acc.compute()
    frames = [x[mask].numpy() for x in h]
    for name in names:
        opts = {"k": 3} if name in KNN else {}
        np.testing.assert_allclose(out[name].numpy(), R.similarity_matrix(frames, name, **opts), **TOL, err_msg=name)
