"""The invariances that define each metric, on hypothesis-drawn data (float64)."""

import warnings

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import matrix, related_pair

import fastsim
from fastsim import reference as R

KERNELS = st.sampled_from([("linear", False), ("linear", True), ("rbf", False), ("rbf", True)])


def well_posed(a, b, kernel, debiased):
    """Inputs where CKA is defined and not at the edge of rounding (so 1e-6 comparisons are fair)."""
    for x in (a, b):
        xc = x - x.mean(0)
        if np.sum(xc**2) <= 1e-6 * np.sum(x**2) + 1e-12:
            return False
        # Documented limit of the RBF path: sigma must not vanish next to the data's own scale.
        if kernel == "rbf" and R.median_sigma(x) <= 1e-6 * np.sqrt(np.mean(np.sum(xc**2, 1))):
            return False
        if debiased:
            K = R.linear_kernel(xc) if kernel == "linear" else R.rbf_kernel(x)
            if R.hsic(K, K, True) <= 1e-3 * R.hsic(K, K):
                return False
    return True


def orthogonal(d, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q * np.sign(np.diag(r))


@given(related_pair(n=16, da=5, db=3), KERNELS, st.integers(0, 2**31), st.floats(1e-3, 1e3))
def test_cka_symmetric_rotation_and_scale_invariant(pair, kind, seed, scale):
    a, b = pair
    kernel, debiased = kind
    assume(well_posed(a, b, kernel, debiased))
    base = float(fastsim.cka(a, b, kernel=kernel, debiased=debiased))
    opts = dict(kernel=kernel, debiased=debiased)
    assert float(fastsim.cka(b, a, **opts)) == pytest.approx(base, rel=1e-6, abs=1e-9)
    assert float(fastsim.cka(a @ orthogonal(5, seed), b, **opts)) == pytest.approx(base, rel=1e-6, abs=1e-9)
    assert float(fastsim.cka(a, b * scale, **opts)) == pytest.approx(base, rel=1e-6, abs=1e-9)
    assert float(fastsim.cka(a, a, **opts)) == 1.0
    if not debiased:
        assert 0.0 <= base <= 1.0


@given(related_pair(n=12, da=4, db=4))
def test_cosine_symmetric_and_bounded(pair):
    a, b = pair
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastsim.DegenerateWarning)
        ab, ba = float(fastsim.cosine(a, b)), float(fastsim.cosine(b, a))
    assert ab == ba
    assert -1.0 <= ab <= 1.0


@given(matrix(n=12, d=4, pattern="gaussian"))
def test_cosine_with_itself_and_scaled_rows(a):
    scales = np.random.default_rng(0).uniform(0.01, 100, size=(12, 1))
    assert float(fastsim.cosine(a, a)) == pytest.approx(1.0, abs=1e-12)
    assert float(fastsim.cosine(a, a * scales)) == pytest.approx(1.0, abs=1e-12)
    assert float(fastsim.cosine(a, -a)) == pytest.approx(-1.0, abs=1e-12)


@given(related_pair(n=20, da=4, db=6, pattern="gaussian"), st.integers(1, 19), st.integers(0, 2**31))
def test_mutual_knn_bounds_identity_and_permutation(pair, k, seed):
    a, b = pair
    value = float(fastsim.mutual_knn(a, b, k=k))
    assert 0.0 <= value <= 1.0
    assert float(fastsim.mutual_knn(a, a, k=k)) == 1.0
    perm = np.random.default_rng(seed).permutation(20)
    # Gaussian data has no ties, so relabelling samples cannot change any neighbour set.
    assert float(fastsim.mutual_knn(a[perm], b[perm], k=k)) == value
    row_scales = np.random.default_rng(seed).uniform(0.1, 10, size=(20, 1))
    assert float(fastsim.mutual_knn(a * row_scales, b, k=k)) == value


@pytest.mark.filterwarnings("ignore:the median pairwise distance:fastsim.DegenerateWarning")
def test_zero_variance_cka_is_nan_with_warning():
    a = np.random.default_rng(0).normal(size=(10, 3))
    for kernel in ("linear", "rbf"):
        with pytest.warns(fastsim.DegenerateWarning, match="undefined"):
            assert np.isnan(fastsim.cka(a, np.full((10, 2), 7.0), kernel=kernel))
    with pytest.warns(fastsim.DegenerateWarning):
        m = fastsim.similarity_matrix([a, np.zeros((10, 3)), a], "cka")
    assert np.isnan(m[1]).all() and np.isnan(m[:, 1]).all()
    assert m[0, 2] == pytest.approx(1.0) and m[0, 0] == 1.0


def test_zero_vectors_in_cosine_count_as_zero_with_warning():
    a = np.ones((4, 3))
    b = np.ones((4, 3))
    b[1] = 0
    with pytest.warns(fastsim.DegenerateWarning, match="1 sample"):
        assert float(fastsim.cosine(a, b)) == pytest.approx(0.75)
    with pytest.warns(fastsim.DegenerateWarning):
        m = fastsim.similarity_matrix([a, b], "cosine")
    np.testing.assert_allclose(m, [[1.0, 0.75], [0.75, 0.75]])


def test_ties_go_to_the_smaller_index():
    # Samples 1, 2 and 3 are equally similar to sample 0; k=2 must pick 1 and 2.
    x = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    import torch

    from fastsim.core.knn import knn_indices

    got = knn_indices(torch.from_numpy(x), 2, precision="highest")
    assert np.sort(got.numpy(), 1).tolist() == np.sort(R.knn_indices(x, 2), 1).tolist()
    assert sorted(got[0].tolist()) == [1, 2]
