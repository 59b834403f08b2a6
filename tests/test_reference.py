"""The NumPy oracles against independent, brute-force statements of each definition."""

import itertools
from fractions import Fraction

import numpy as np
import oracles
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import matrix, related_pair

from fastsim import reference as R


def hsic_unbiased_brute(K, L):
    """Song et al. (2012) as the U-statistic it is: sums over distinct index tuples."""
    n = K.shape[0]
    two = sum(K[i, j] * L[i, j] for i, j in itertools.permutations(range(n), 2))
    three = sum(K[i, j] * L[i, q] for i, j, q in itertools.permutations(range(n), 3))
    four = sum(K[i, j] * L[q, r] for i, j, q, r in itertools.permutations(range(n), 4))
    return two / (n * (n - 1)) + four / (n * (n - 1) * (n - 2) * (n - 3)) - 2 * three / (n * (n - 1) * (n - 2))


@given(related_pair(n=6, da=3, db=2, pattern="gaussian"), st.sampled_from(["linear", "rbf"]))
def test_unbiased_hsic_is_the_u_statistic(pair, kernel):
    a, b = pair
    K = R.linear_kernel(a) if kernel == "linear" else R.rbf_kernel(a, 1.3)
    L = R.linear_kernel(b) if kernel == "linear" else R.rbf_kernel(b, 0.7)
    assert R.hsic(K, L, debiased=True) == pytest.approx(hsic_unbiased_brute(K, L), rel=1e-9, abs=1e-12)


@given(related_pair(n=12, da=4, db=3, pattern="gaussian"))
def test_biased_linear_hsic_is_cross_covariance_norm(pair):
    a, b = pair
    ac, bc = a - a.mean(0), b - b.mean(0)
    expected = np.sum((ac.T @ bc) ** 2) / (a.shape[0] - 1) ** 2
    got = R.hsic(R.linear_kernel(a), R.linear_kernel(b))
    assert got == pytest.approx(expected, rel=1e-9)


@given(related_pair(n=10, da=4, db=5, pattern="gaussian"))
def test_linear_cka_matches_feature_space_formula(pair):
    a, b = pair
    ac, bc = a - a.mean(0), b - b.mean(0)
    expected = np.sum((ac.T @ bc) ** 2) / (np.linalg.norm(ac.T @ ac) * np.linalg.norm(bc.T @ bc))
    assert R.cka(a, b) == pytest.approx(expected, rel=1e-9)


def _hsic_exact_kernels(K, L, debiased):
    """HSIC of two kernel matrices (integers or Fractions) in exact rational arithmetic."""
    n = len(K)
    K = [[Fraction(v) for v in row] for row in K]
    L = [[Fraction(v) for v in row] for row in L]
    if not debiased:
        kc = [[K[i][j] - sum(K[i]) / n - sum(r[j] for r in K) / n + sum(map(sum, K)) / n**2 for j in range(n)] for i in range(n)]
        return sum(kc[i][j] * L[j][i] for i in range(n) for j in range(n)) / (n - 1) ** 2
    for i in range(n):
        K[i][i] = L[i][i] = 0
    t1 = sum(K[i][j] * L[i][j] for i in range(n) for j in range(n))
    t2 = sum(map(sum, K)) * sum(map(sum, L)) / ((n - 1) * (n - 2))
    t3 = Fraction(2, n - 2) * sum(sum(K[i]) * sum(L[i]) for i in range(n))
    return (t1 + t2 - t3) / (n * (n - 3))


def _hsic_exact(x, y, debiased):
    """HSIC of linear kernels of 1-D data in exact rational arithmetic."""
    return _hsic_exact_kernels([[p * q for q in x] for p in x], [[p * q for q in y] for p in y], debiased)


@given(
    st.lists(st.integers(-20, 20), min_size=5, max_size=7),
    st.lists(st.integers(-20, 20), min_size=7, max_size=7),
    st.integers(-1000, 1000),
    st.booleans(),
)
def test_hsic_is_invariant_to_centering_in_exact_arithmetic(x, y, shift, debiased):
    """Why fastsim.reference (and every backend) may center before forming a linear kernel."""
    y = y[: len(x)]
    shifted = [v + shift for v in y]
    assert _hsic_exact(x, shifted, debiased) == _hsic_exact(x, y, debiased)


@given(st.integers(4, 7), st.integers(-50, 50), st.booleans(), st.integers(0, 2**31))
def test_hsic_is_invariant_to_adding_a_constant_to_the_kernel(n, shift, debiased, seed):
    """Why fastsim.reference (and the RBF backend) may use K - 1 instead of K."""
    rng = np.random.default_rng(seed)
    K = rng.integers(-9, 10, size=(n, n))
    L = rng.integers(-9, 10, size=(n, n))
    K, L = K + K.T, L + L.T  # symmetric, like every kernel matrix
    K, L = K.tolist(), L.tolist()
    shifted = [[v + shift for v in row] for row in K]
    assert _hsic_exact_kernels(shifted, L, debiased) == _hsic_exact_kernels(K, L, debiased)


def test_median_sigma_is_median_pairwise_distance():
    x = np.random.default_rng(1).normal(size=(9, 3))
    dists = [np.linalg.norm(x[i] - x[j]) for i in range(9) for j in range(i + 1, 9)]
    assert R.median_sigma(x) == pytest.approx(float(np.median(dists)), rel=1e-12)


@given(matrix(n=12, d=3), st.integers(1, 11))
def test_knn_indices_follow_the_definition(x, k):
    """The neighbours are those of the exact cosine similarities (ties to the smaller index), in
    exact order: float64 dot products can round exact ties apart (x_j = 3 x_l) and near-ties the
    wrong way; the reference decides those in exact arithmetic."""
    assert R.knn_indices(x, k).tolist() == oracles.knn_exact(x, k)


def test_knn_reference_resolves_ties_that_float64_dots_round_apart():
    """(1,0,0) and (3,0,0) have the same cosine with (4,1,0) exactly; float64 dot products give
    4/sqrt(17) and 12/(3 sqrt(17)), which round differently. The tie goes to the smaller index."""
    x = np.zeros((12, 3))
    x[0, 0], x[4, :2], x[9, 0] = 1.0, (4.0, 1.0), 3.0
    assert R.knn_indices(x, 1)[4, 0] == 0


@pytest.mark.parametrize("offset", [1e6, 1e8, 1e12])
def test_knn_reference_is_exact_below_float64_resolution(offset):
    """With a feature offset of 1e8, 1 - cos is about 1e-16 for every pair: float64 cosines tie or
    round at random; the reference's neighbours are still the exact ones."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(25, 5)) + offset
    assert R.knn_indices(x, 4).tolist() == oracles.knn_exact(x, 4)


def test_zero_vectors_have_documented_similarities():
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    assert R.cosine(x, x) == pytest.approx(2 / 3)
    assert R.cosine_similarities(x)[0].tolist() == [0.0, 0.0, 0.0]


def test_identical_representations():
    x = np.random.default_rng(2).normal(size=(15, 4))
    assert R.cka(x, x) == pytest.approx(1.0)
    assert R.cka(x, x, debiased=True) == pytest.approx(1.0)
    assert R.mutual_knn(x, x, k=3) == 1.0
    assert R.cosine(x, x) == pytest.approx(1.0)


def test_zero_variance_cka_is_nan():
    x = np.random.default_rng(3).normal(size=(8, 3))
    assert np.isnan(R.cka(x, np.ones((8, 2))))
