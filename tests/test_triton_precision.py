"""The Triton backend on the hard cases of tests/test_precision.py (issue 13, items 1-3), against
the same oracles (``tests/oracles.py``: mpmath at 60 digits and exact rationals on small n, NumPy
longdouble on a few hundred samples) and against the torch backend, under Triton's interpreter at
small sizes (on a GPU the same tests run the compiled kernels).

The Triton path reads the torch path's decisions (``rbf_bandwidths``, ``rbf_plan``: K or K - 1,
offsets, log_scale; ``extremes_verdict``: scale and zero variance) and keeps the kernels'
diagonals apart as the torch path does. It computes in the input's accumulation dtype (float32
for float32 input at every precision: 3xTF32 dots on GPUs at "highest", exact float32 under the
interpreter), where the torch path works in float64 at "highest". Measured under the interpreter
(max |Triton - oracle|, float32 input at "highest"): RBF CKA 0.01x-1000x the median sigma <= 3.0e-7;
Gaussian layers: linear 3.9e-8, RBF 1.4e-7; massive activations (with and without an offset of
300): linear 3.4e-9, RBF 9.5e-9; float64 input: within 1e-11 of the torch backend.
"""

import warnings
from unittest import mock

import numpy as np
import oracles
import pytest
import torch

import fastsim
from fastsim.core import kernel_sums
from fastsim.core.errors import DegenerateWarning

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FACTORS = [0.01, 0.03, 0.1, 0.3, 1.0, 10.0, 100.0, 1000.0]


def _t(x):
    return torch.from_numpy(np.ascontiguousarray(x)).to(DEVICE)


def _pair(n=12, d=5, seed=1):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, d))
    return a, a + 0.8 * rng.standard_normal((n, d))


def _path(space: str):
    """Force the linear-CKA path: "sample" (kernel tiles) or "feature" (the fused pass)."""
    return mock.patch.object(kernel_sums, "linear_uses_sample_space", lambda n, dims: space == "sample")


# ---- item 1: RBF CKA from 0.01x to 1000x the median sigma -------------------------------------


@pytest.fixture(scope="module")
def rbf_oracle():
    return oracles.rbf_cka_sweep(*_pair(), FACTORS)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("factor", FACTORS)
def test_triton_rbf_cka_from_tiny_to_huge_sigma_matches_mpmath(rbf_oracle, dtype, debiased, factor):
    """Small sigma: the kernel stored relative to its nearest pair (entries of 1e-19 and below);
    large sigma: K - 1. Measured: float64 within 8e-15, float32 within 3.0e-7 (0.1x, debiased:
    the float32 squared distances)."""
    a, b = (x.astype(dtype) for x in _pair())
    sigma, want = rbf_oracle[dtype, factor, debiased]
    got = float(fastsim.cka(_t(a), _t(b), kernel="rbf", sigma=sigma, debiased=debiased, backend="triton"))
    tol = 1e-12 if dtype == np.float64 else 1e-6
    assert abs(got - want) <= tol, (got, want)


@pytest.mark.parametrize("debiased", [False, True])
def test_triton_rbf_cka_all_pairs_small_sigma_matches_mpmath(debiased):
    """0.02x each layer's median distance: every entry underflows float64 unless stored relative
    to the layer's nearest pair (the offsets of the shared plan)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((10, 4))
    layers = [x, x + 0.5 * rng.standard_normal((10, 4)), rng.standard_normal((10, 4))]
    sigma = 0.02 * float(oracles.median_sigma(layers[0]))
    got = fastsim.similarity_matrix([_t(v) for v in layers], "cka", kernel="rbf", sigma=sigma, debiased=debiased,
                                    backend="triton").cpu().numpy()
    for i in range(3):
        for j in range(3):
            want = 1.0 if i == j else oracles.rbf_cka(layers[i], layers[j], sigma, debiased)
            assert abs(got[i, j] - want) <= 1e-12, (i, j, got[i, j], want)


@pytest.mark.parametrize("debiased", [False, True])
def test_triton_rbf_cka_median_sigma_matches_mpmath(debiased):
    a, b = _pair(n=10, d=3, seed=4)
    want = oracles.rbf_cka(a, b, None, debiased)
    assert abs(float(fastsim.cka(_t(a), _t(b), kernel="rbf", debiased=debiased, backend="triton")) - want) <= 1e-12
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    want32 = oracles.rbf_cka(a32, b32, None, debiased)
    assert abs(float(fastsim.cka(_t(a32), _t(b32), kernel="rbf", debiased=debiased, backend="triton")) - want32) <= 1e-6


def test_triton_takes_the_torch_paths_rbf_representation():
    """One decision: the Triton path calls the same rbf_plan as the torch path (K or K - 1 by the
    data, offsets where the entries would underflow), here with a layer of each kind."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((16, 6))
    seen = []
    real = kernel_sums.rbf_plan

    def spy(*args, **kwargs):
        plan = real(*args, **kwargs)
        seen.append(plan)
        return plan

    with mock.patch.object(kernel_sums, "rbf_plan", spy), mock.patch("fastsim.metrics.rbf_cka.rbf_plan", spy):
        for sigma in (0.005, 500.0):
            fastsim.cka(_t(x), _t(x + 0.3 * rng.standard_normal((16, 6))), kernel="rbf",
                        sigma=sigma * float(oracles.median_sigma(x)), backend="triton")
    assert len(seen) == 2
    assert bool((seen[0].offset > 0).all()) and not bool(seen[0].shifted.any())  # small sigma: offsets
    assert bool(seen[1].shifted.all()) and not bool((seen[1].offset > 0).any())  # large sigma: K - 1


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the interpreter (NumPy) reaching -inf, by design
def test_triton_rbf_coefficient_does_not_overflow_for_tiny_sigma():
    """An explicit sigma whose square underflows (the old Triton path raised ZeroDivisionError in
    -0.5 / s**2, and a float32 coefficient overflowed to -inf): the kernel is the identity in
    the limit, so biased CKA is 1 (the mpmath value)."""
    a, b = _pair()
    for dtype in (np.float64, np.float32):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DegenerateWarning)
            got = float(fastsim.cka(_t(a.astype(dtype)), _t(b.astype(dtype)), kernel="rbf", sigma=1e-160, backend="triton"))
        assert got == pytest.approx(1.0, abs=1e-6)


# ---- item 2: zero variance means zero variance ------------------------------------------------


def _offset_pair():
    rng = np.random.default_rng(7)
    base = rng.standard_normal((200, 2))
    a = (3e5 + base).astype(np.float32)
    b = (3e5 + base + 0.8 * rng.standard_normal((200, 2))).astype(np.float32)
    return a, b


@pytest.mark.parametrize("space", ["sample", "feature"])
@pytest.mark.parametrize("debiased", [False, True])
def test_triton_float32_offset_3e5_gives_the_exact_linear_cka(space, debiased):
    a, b = _offset_pair()
    want = oracles.linear_cka(a, b, debiased)
    with warnings.catch_warnings(), _path(space):
        warnings.simplefilter("error", DegenerateWarning)
        got = float(fastsim.cka(_t(a), _t(b), debiased=debiased, backend="triton"))
    assert abs(got - want) <= 1e-6, (got, want)


def test_triton_float32_offset_3e5_gives_the_rbf_cka():
    a, b = (x[:60] for x in _offset_pair())
    for debiased in (False, True):
        want = oracles.rbf_cka(a, b, None, debiased)
        got = float(fastsim.cka(_t(a), _t(b), kernel="rbf", debiased=debiased, backend="triton"))
        assert abs(got - want) <= 1e-6, (debiased, got, want)


@pytest.mark.parametrize("space", ["sample", "feature"])
@pytest.mark.parametrize("debiased", [False, True])
def test_triton_float64_one_plus_1e15_noise_gives_the_exact_cka(space, debiased):
    """1 + 1e-15 noise (a few ulps of spread): the fused path's float64 mean is the sum of the
    differences to the first row (kernels.moments), as exact as the torch path's two passes."""
    rng = np.random.default_rng(2)
    a = 1.0 + 1e-15 * rng.standard_normal((40, 3))
    b = 1.0 + 1e-15 * rng.standard_normal((40, 3))
    want = oracles.linear_cka(a, b, debiased)
    with _path(space):
        got = float(fastsim.cka(_t(a), _t(b), debiased=debiased, backend="triton"))
    assert abs(got - want) <= 1e-9 * max(1.0, abs(want)), (got, want)


@pytest.mark.parametrize("value", [0.1, 3e5, 1e-300])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_triton_constant_layers_are_still_nan(value, dtype):
    """Every sample equal is zero variance on every Triton path (the sample path's layer_moments
    and the fused path's layer_summary apply one rule, extremes_verdict)."""
    rng = np.random.default_rng(0)
    a = _t(rng.standard_normal((30, 3)).astype(dtype))
    c = _t(np.full((30, 3), value, dtype=dtype))
    for opts, space in [({"kernel": "rbf", "sigma": 1.0}, "sample"), ({}, "sample"), ({"debiased": True}, "sample"),
                        ({}, "feature"), ({"debiased": True}, "feature")]:
        with _path(space), pytest.warns(DegenerateWarning, match="zero variance"):
            got = float(fastsim.cka(a, c, backend="triton", **opts))
        assert np.isnan(got), (opts, space)


@pytest.mark.parametrize("space", ["sample", "feature"])
def test_triton_nan_input_is_named_as_nan(space):
    a = np.random.default_rng(0).standard_normal((20, 3))
    b = a.copy()
    b[3, 1] = np.nan
    with _path(space), pytest.warns(DegenerateWarning, match="NaN or Inf") as record:
        assert np.isnan(float(fastsim.cka(_t(a), _t(b), check_finite=False, backend="triton")))
    assert not any("zero variance" in str(w.message) for w in record)


# ---- item 3: massive activations, every precision mode -----------------------------------------

DATA = {
    "gaussian": lambda: oracles.gaussian_layers(),
    "massive": lambda: oracles.massive_layers(),
    "massive+offset": lambda: oracles.massive_layers(big=1000.0, offset=300.0, seed=1),
}
CASES = [("cka", False, "sample"), ("cka", True, "sample"), ("cka", False, "feature"), ("cka", True, "feature"),
         ("rbf_cka", False, "sample"), ("rbf_cka", True, "sample")]


@pytest.fixture(scope="module")
def ld_oracles():
    out = {}
    for name, make in DATA.items():
        layers = make()
        out[name] = (layers, {(m, d): oracles.similarity_matrix_ld(layers, m, d) for m, d in {(c[0], c[1]) for c in CASES}})
    return out


def _triton(layers, metric, debiased, space, precision="highest"):
    with _path(space):
        return fastsim.similarity_matrix([_t(x) for x in layers], metric, debiased=debiased, backend="triton",
                                         precision=precision).cpu().double().numpy()


@pytest.mark.parametrize("name", list(DATA))
@pytest.mark.parametrize("metric, debiased, space", CASES)
def test_triton_highest_on_float32_within_1e6_of_the_oracle(ld_oracles, name, metric, debiased, space):
    """float32 input at "highest" on Gaussian layers and layers with massive activations (features
    500-1000x the rest, and an offset of 300): within 1e-6 of the longdouble oracle."""
    layers, want = ld_oracles[name]
    got = _triton(layers, metric, debiased, space)
    assert np.nanmax(np.abs(got - want[metric, debiased])) <= 1e-6


@pytest.mark.parametrize("metric, debiased, space", CASES)
def test_triton_float64_equals_the_torch_backend(ld_oracles, metric, debiased, space):
    layers = [x.astype(np.float64) for x in ld_oracles["massive+offset"][0]]
    got = _triton(layers, metric, debiased, space)
    want = fastsim.similarity_matrix(layers, metric, debiased=debiased, backend="torch")
    assert np.nanmax(np.abs(got - want)) <= 1e-11


@pytest.mark.parametrize("precision, bound", [("high", 1e-6 if DEVICE == "cpu" else 1e-3), ("medium", 1e-2)])
@pytest.mark.parametrize("metric, debiased, space", CASES)
def test_triton_float32_modes_stay_within_their_bound(ld_oracles, precision, bound, metric, debiased, space):
    """"high" (TF32 operands on GPUs; float32 under the interpreter) and "medium" (bf16 operands)
    on massive activations. Measured under the interpreter at "medium": linear up to 5.2e-4,
    RBF up to 8.9e-4."""
    layers, want = ld_oracles["massive"]
    got = _triton(layers, metric, debiased, space, precision)
    assert np.nanmax(np.abs(got - want[metric, debiased])) <= bound
