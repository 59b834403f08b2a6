"""Numbers under stress (issue 13, items 1-3), against oracles written for these tests
(``tests/oracles.py``: mpmath at 60 digits and exact rationals on small n; NumPy longdouble with
the formulas written out on a few hundred samples), not against ``fastsim.reference`` alone.

* RBF CKA from 0.01x to 1000x the median sigma, float64 and float32, biased and debiased.
* Zero variance means zero variance: an offset of 3e5 with std 1 in float32, and 1 + 1e-15 noise
  in float64, give their true CKA, not NaN; truly constant layers still give NaN.
* precision="highest" on float32 input is the float64 computation: within 1e-6 of the oracle on
  Gaussian data and on activations with massive outliers and large means; the measured errors of
  every mode are printed by ``python bench/cpu.py --accuracy``.
"""

import warnings

import numpy as np
import oracles
import pytest
import torch

import fastsim
from fastsim import reference as R
from fastsim.core.errors import DegenerateWarning

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FACTORS = [0.01, 0.03, 0.1, 0.3, 1.0, 10.0, 100.0, 1000.0]


def _pair(n=12, d=5, seed=1):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, d))
    return a, a + 0.8 * rng.standard_normal((n, d))


@pytest.fixture(scope="module")
def rbf_oracle():
    """mpmath RBF CKA of the float64 and the float32 pair at every factor (computed once)."""
    return oracles.rbf_cka_sweep(*_pair(), FACTORS)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("factor", FACTORS)
def test_rbf_cka_from_tiny_to_huge_sigma_matches_mpmath(rbf_oracle, dtype, debiased, factor):
    """Item 1. At 0.07x the median the old fast path gave 15.2 (debiased, float64) where the true
    value is 0.0375, and NaN at 0.01x; at 1000x the float32 path lost 1e-3 in the pair sums."""
    a, b = (x.astype(dtype) for x in _pair())
    sigma, want = rbf_oracle[dtype, factor, debiased]
    got = float(fastsim.cka(a, b, kernel="rbf", sigma=sigma, debiased=debiased))
    tol = 1e-12 if dtype == np.float64 else 1e-6
    assert abs(got - want) <= tol, (got, want)


@pytest.mark.parametrize("debiased", [False, True])
def test_rbf_cka_all_pairs_small_sigma_matches_mpmath(debiased):
    """The all-pairs path at 0.02x each layer's median distance (entries underflow in float64:
    the kernel is stored relative to its largest off-diagonal entry)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((10, 4))
    layers = [x, x + 0.5 * rng.standard_normal((10, 4)), rng.standard_normal((10, 4))]
    sigma = 0.02 * float(oracles.median_sigma(layers[0]))
    got = fastsim.similarity_matrix(layers, "cka", kernel="rbf", sigma=sigma, debiased=debiased)
    for i in range(3):
        for j in range(3):
            want = 1.0 if i == j else oracles.rbf_cka(layers[i], layers[j], sigma, debiased)
            assert abs(got[i, j] - want) <= 1e-12, (i, j, got[i, j], want)


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("factor", [0.03, 0.1, 1.0, 100.0, 1000.0])
def test_rbf_reference_is_the_exp_formula_and_accurate(rbf_oracle, debiased, factor):
    """fastsim.reference builds K with plain exp (no expm1: at 0.07x the median expm1 rounded
    entries of 1e-19 away, giving NaN); removing the kernel's constant part (an exact invariance)
    keeps it accurate at 1000x too, where plain exp alone was off by 8e-3 (debiased)."""
    a, b = _pair()
    sigma, want = rbf_oracle[np.float64, factor, debiased]
    assert abs(R.cka(a, b, kernel="rbf", sigma=sigma, debiased=debiased) - want) <= 1e-9


@pytest.mark.parametrize("debiased", [False, True])
def test_rbf_cka_median_sigma_matches_mpmath(debiased):
    a, b = _pair(n=10, d=3, seed=4)
    want = oracles.rbf_cka(a, b, None, debiased)
    assert abs(float(fastsim.cka(a, b, kernel="rbf", debiased=debiased)) - want) <= 1e-12
    got32 = float(fastsim.cka(a.astype(np.float32), b.astype(np.float32), kernel="rbf", debiased=debiased))
    want32 = oracles.rbf_cka(a.astype(np.float32), b.astype(np.float32), None, debiased)
    assert abs(got32 - want32) <= 1e-6


# ---- item 2: zero variance means zero variance ------------------------------------------------


def _offset_pair():
    """float32 features at an offset of 3e5 with std 1: spacing 1/32 there, so about half of 200
    values stay distinct."""
    rng = np.random.default_rng(7)
    base = rng.standard_normal((200, 2))
    a = (3e5 + base).astype(np.float32)
    b = (3e5 + base + 0.8 * rng.standard_normal((200, 2))).astype(np.float32)
    assert len(np.unique(a[:, 0])) < 150
    return a, b


@pytest.mark.parametrize("debiased", [False, True])
def test_float32_offset_3e5_gives_the_exact_linear_cka(debiased):
    """Item 2: was NaN ('zero variance': std < 32 eps |x|)."""
    a, b = _offset_pair()
    want = oracles.linear_cka(a, b, debiased)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateWarning)
        got = float(fastsim.cka(a, b, debiased=debiased))
        m = fastsim.similarity_matrix([a, b], "cka", debiased=debiased)
        acc = fastsim.StreamingCKA(debiased=debiased)
        for s in range(0, 200, 64):
            acc.update([a[s : s + 64], b[s : s + 64]])
    for value in (got, m[0, 1], acc.compute()[0, 1]):
        assert abs(value - want) <= 1e-6, (value, want)


def test_float32_offset_3e5_gives_the_rbf_cka():
    a, b = _offset_pair()
    a, b = a[:60], b[:60]
    for debiased in (False, True):
        want = oracles.rbf_cka(a, b, None, debiased)
        got = float(fastsim.cka(a, b, kernel="rbf", debiased=debiased))
        assert abs(got - want) <= 1e-6, (debiased, got, want)


@pytest.mark.parametrize("debiased", [False, True])
def test_float64_one_plus_1e15_noise_gives_the_exact_cka(debiased):
    """Item 2: 1 + 1e-15 noise in float64 (a few ulps of spread) was NaN; its CKA is defined."""
    rng = np.random.default_rng(2)
    a = 1.0 + 1e-15 * rng.standard_normal((40, 3))
    b = 1.0 + 1e-15 * rng.standard_normal((40, 3))
    assert len(np.unique(a)) > 5
    want = oracles.linear_cka(a, b, debiased)
    got = float(fastsim.cka(a, b, debiased=debiased))
    assert abs(got - want) <= 1e-9 * max(1.0, abs(want)), (got, want)
    acc = fastsim.StreamingCKA(debiased=debiased).update([a, b])
    assert abs(acc.compute()[0, 1] - want) <= 1e-9


@pytest.mark.parametrize("value", [0.1, 3e5, 1e-300])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_constant_layers_are_still_nan(value, dtype):
    """Every sample equal (whatever the rounding of their mean, e.g. 0.1 in float64) is zero
    variance: NaN with a DegenerateWarning naming it, for every CKA path."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((30, 3)).astype(dtype)
    c = np.full((30, 3), value, dtype=dtype)
    for call in (
        lambda: fastsim.cka(a, c),
        lambda: fastsim.cka(a, c, debiased=True),
        lambda: fastsim.cka(a, c, kernel="rbf", sigma=1.0),
        lambda: fastsim.StreamingCKA().update([a, c]).compute()[0, 1],
    ):
        with pytest.warns(DegenerateWarning, match="zero variance"):
            assert np.isnan(call())


def test_nan_input_is_named_as_nan_not_zero_variance():
    """Item 13: with check_finite=False a NaN layer's warning says NaN, not 'zero variance'."""
    a = np.random.default_rng(0).standard_normal((20, 3))
    b = a.copy()
    b[3, 1] = np.nan
    with pytest.warns(DegenerateWarning, match="NaN or Inf") as record:
        assert np.isnan(fastsim.cka(a, b, check_finite=False))
    assert not any("zero variance" in str(w.message) for w in record)
    with pytest.warns(DegenerateWarning, match="NaN or Inf"):
        fastsim.StreamingCKA(check_finite=False).update([a, b]).compute()


# ---- item 3: "highest" on real-looking data -----------------------------------------------------

DATA = {
    "gaussian": lambda: oracles.gaussian_layers(),
    "massive": lambda: oracles.massive_layers(),
    "massive+offset": lambda: oracles.massive_layers(big=1000.0, offset=300.0, seed=1),
}
CASES = [("cka", False), ("cka", True), ("rbf_cka", False), ("rbf_cka", True), ("cosine", False)]


@pytest.fixture(scope="module")
def ld_oracles():
    out = {}
    for name, make in DATA.items():
        layers = make()
        out[name] = (layers, {case: oracles.similarity_matrix_ld(layers, *case) for case in CASES})
    return out


@pytest.mark.parametrize("name", list(DATA))
@pytest.mark.parametrize("metric, debiased", CASES)
def test_highest_is_within_1e6_of_the_oracle_on_float32(ld_oracles, name, metric, debiased):
    """Item 3: float32 input at the default precision="highest", on Gaussian layers and on layers
    with massive activations (features 500-1000x the rest, and an offset of 300): within 1e-6 of
    the longdouble oracle. Before: Gaussian RBF CKA 3.7e-4, linear 1.7e-6; massive RBF 6e-5."""
    layers, want = ld_oracles[name]
    opts = {} if metric == "cosine" else {"debiased": debiased}
    got = fastsim.similarity_matrix(layers, metric, **opts)
    assert got.dtype == np.float32
    assert np.nanmax(np.abs(got - want[metric, debiased])) <= 1e-6


@pytest.mark.parametrize("metric", ["cka", "rbf_cka", "cosine"])
def test_highest_on_float32_is_the_float64_computation(metric):
    """"highest" converts float32 (and half) chunks to float64 and works there: the result is the
    float64 input's result rounded to float32."""
    layers = oracles.massive_layers(L=3, n=80, d=24)
    got = fastsim.similarity_matrix(layers, metric, precision="highest")
    want = fastsim.similarity_matrix([x.astype(np.float64) for x in layers], metric)
    np.testing.assert_array_equal(got, want.astype(np.float32))
    half = [torch.from_numpy(x).to(torch.bfloat16) for x in layers]
    got_half = fastsim.similarity_matrix(half, metric).numpy()
    want_half = fastsim.similarity_matrix([x.double() for x in half], metric).float().numpy()
    np.testing.assert_array_equal(got_half, want_half)


@pytest.mark.parametrize("precision", ["high", "medium"])
@pytest.mark.parametrize("metric, debiased", CASES)
def test_float32_modes_stay_within_their_documented_bound(ld_oracles, precision, metric, debiased):
    """"high"/"medium" work in float32 (TF32/bf16 products where the hardware has them; on CPUs
    with AVX512-BF16 "medium" runs oneDNN's bf16 path) with float64 pair sums: the bound the docs
    state for them on the CPU is 1e-5 (measured: up to 6e-9 on these data at n = 256)."""
    layers, want = ld_oracles["massive"]
    opts = {} if metric == "cosine" else {"debiased": debiased}
    got = fastsim.similarity_matrix(layers, metric, precision=precision, **opts)
    assert np.nanmax(np.abs(got - want[metric, debiased])) <= 1e-5


def test_streaming_cka_highest_on_massive_float32():
    layers, want = oracles.massive_layers(big=1000.0, offset=300.0, seed=1), None
    for debiased in (False, True):
        want = oracles.similarity_matrix_ld(layers, "cka", debiased)
        acc = fastsim.StreamingCKA(debiased=debiased)
        for s in range(0, layers[0].shape[0], 50):
            acc.update([x[s : s + 50] for x in layers])
        assert np.nanmax(np.abs(acc.compute() - want)) <= 1e-6
