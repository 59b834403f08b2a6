"""Every backend available here against fastsim.reference on hypothesis-drawn inputs.

The reference runs in float64 on exactly the values passed in (after their rounding to the input
dtype), so the only error measured is fastsim's own: float64 accumulation must agree to 1e-6
relative, float32 accumulation (float16/bfloat16/float32 inputs) to the bound stated per metric.
"""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from strategies import accumulates_in_float64, as64, cast, cast_pair, containers, degenerate, dtypes, related_pair, value

import fastsim
from fastsim import reference as R

# Measured error bounds of float32 accumulation (see README "Precision").
F32_ATOL = {"cka": 2e-4, "cosine": 1e-5}
PRECISION = st.sampled_from(["highest", "high", "medium"])


def close(got, ref, f64, atol32):
    if f64:
        return abs(got - ref) <= 1e-6 * abs(ref) + 1e-9
    return abs(got - ref) <= atol32


@st.composite
def cka_case(draw, min_n=2):
    n = draw(st.integers(min_n, 40))
    a, b = draw(related_pair(n, draw(st.integers(1, 12)), draw(st.integers(1, 12))))
    return cast_pair(a, b, draw(dtypes), draw(dtypes), draw(containers))


@given(cka_case(min_n=4), st.sampled_from(["linear", "rbf"]), st.booleans(), PRECISION, st.sampled_from([None, 0.1, 1.0, 30.0]))
def test_cka_matches_reference(case, kernel, debiased, precision, sigma_factor):
    a, b = case
    a64, b64 = as64(a), as64(b)
    f64 = accumulates_in_float64(a, b)
    sigma = None
    if kernel == "rbf" and sigma_factor is not None:  # an explicit bandwidth, small to large
        sigma = sigma_factor * R.median_sigma(a64)
        assume(sigma > 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = value(fastsim.cka(a, b, kernel=kernel, sigma=sigma, debiased=debiased, precision=precision))
        ref = R.cka(a64, b64, kernel=kernel, sigma=sigma, debiased=debiased)
    if degenerate(a64, f64) or degenerate(b64, f64):
        assert np.isnan(got)
        return
    if kernel == "rbf":  # documented limit: sigma must not vanish next to the data's scale
        rel = 1e-6 if f64 else 1e-2
        for x in (a64, b64):
            spread = np.sqrt(np.mean(np.sum((x - x.mean(0)) ** 2, 1)))
            assume((sigma if sigma is not None else R.median_sigma(x)) > rel * spread)
    if debiased:
        # The self-HSIC estimates can be ~0 or negative for tiny, nearly degenerate samples;
        # there CKA is undefined and both sides must say so, or the ratio is too ill-conditioned.
        K, L = (R.linear_kernel(a64 - a64.mean(0)), R.linear_kernel(b64 - b64.mean(0))) if kernel == "linear" else (
            R.rbf_kernel(a64, sigma), R.rbf_kernel(b64, sigma))
        scale = np.sqrt(R.hsic(K, K) * R.hsic(L, L))
        # In float32 the debiased formula's cancellation is amplified by about hsic0 / hsic1.
        cond = 1e-3 if f64 else 5e-2
        assume(R.hsic(K, K, True) > cond * R.hsic(K, K) and R.hsic(L, L, True) > cond * R.hsic(L, L) and scale > 0)
    assert not np.isnan(got) and not np.isnan(ref)
    assert close(got, ref, f64, F32_ATOL["cka"]), (got, ref)


@given(st.data(), PRECISION)
def test_cosine_matches_reference(data, precision):
    n, d = data.draw(st.integers(1, 40)), data.draw(st.integers(1, 16))
    a, b = data.draw(related_pair(n, d, d))
    a, b = cast_pair(a, b, data.draw(dtypes), data.draw(dtypes), data.draw(containers))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = value(fastsim.cosine(a, b, precision=precision))
    ref = R.cosine(as64(a), as64(b))
    assert close(got, ref, accumulates_in_float64(a, b), F32_ATOL["cosine"]), (got, ref)


def boundary_near_tie(x: np.ndarray, k: int, gap: float = 1e-12) -> bool:
    """Whether two of some row's k + 1 most similar samples are different vectors whose reference
    similarities lie within `gap` of each other (equal included). Such values can be
    mathematically tied but rounded differently (dot products summed in another order), so the
    summation order, not the definition, ranks them. Ties between identical vectors are exact in
    every implementation and stay in the test."""
    sims = R.cosine_similarities(x)
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, : k + 1]
    for i, row in enumerate(order):
        vals = sims[i, row]
        for a, b, va, vb in zip(row[:-1], row[1:], vals[:-1], vals[1:]):
            if np.isfinite(va) and np.isfinite(vb) and va - vb < gap and not np.array_equal(x[a], x[b]):
                return True
    return False


@given(st.data(), st.sampled_from(["cuda", "torch"]))
def test_mutual_knn_matches_reference_exactly(data, backend):
    n = data.draw(st.integers(3, 40))
    a, b = data.draw(related_pair(n, data.draw(st.integers(1, 10)), data.draw(st.integers(1, 10))))
    a, b = cast_pair(a, b, data.draw(dtypes), data.draw(dtypes), data.draw(containers))
    k = data.draw(st.integers(1, n - 1))
    a64, b64 = as64(a), as64(b)
    assume(not boundary_near_tie(a64, k) and not boundary_near_tie(b64, k))
    got = value(fastsim.mutual_knn(a, b, k=k, backend=backend))
    ref = R.mutual_knn(a64, b64, k=k)
    # The shared-neighbour count is exact; only the final division is rounded (float32 output).
    assert round(got * n * k) == round(ref * n * k)
    assert got == pytest.approx(ref, abs=1e-12 if accumulates_in_float64(a, b) else 1e-7)


@given(st.data())
def test_neighbour_lists_equal_reference(data):
    from fastsim.core.knn import knn_indices

    n = data.draw(st.integers(2, 40))
    x = cast(data.draw(related_pair(n, data.draw(st.integers(1, 10)), 1))[0], data.draw(dtypes), "torch")
    k = data.draw(st.integers(1, n - 1))
    x64 = as64(x)
    assume(not boundary_near_tie(x64, k))
    # A small margin forces the widening search (step 3) to run often.
    got = knn_indices(x, k, precision="highest", margin=data.draw(st.sampled_from([0, 1, 16])))
    ref = R.knn_indices(x64, k)
    assert np.sort(got.numpy(), 1).tolist() == np.sort(ref, 1).tolist()
    # Most similar first: the reference similarities along each returned list never increase
    # by more than rounding.
    sims = R.cosine_similarities(x64)
    along = np.take_along_axis(sims, got.numpy(), 1)
    assert np.all(np.diff(along, axis=1) <= 1e-6)


def test_results_keep_the_callers_kind_and_dtype():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 5)), rng.normal(size=(30, 5))
    for fn in (fastsim.cka, fastsim.cosine, fastsim.mutual_knn):
        out = fn(a, b)
        assert isinstance(out, np.floating) and out.dtype == np.float64
        out32 = fn(a.astype(np.float32), b.astype(np.float32))
        assert isinstance(out32, np.floating) and out32.dtype == np.float32
        t = fn(torch.from_numpy(a).float(), torch.from_numpy(b).half())
        assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.shape == () and t.device.type == "cpu"
        mixed = fn(torch.from_numpy(a), torch.from_numpy(b).bfloat16())  # any float64 input: float64
        assert mixed.dtype == torch.float64
    m = fastsim.similarity_matrix([a, b, a], "cka")
    assert isinstance(m, np.ndarray) and m.shape == (3, 3) and m.dtype == np.float64


def test_accepts_strided_and_readonly_inputs():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(40, 12))
    a = base[::2, ::3]  # non-contiguous view
    b = base[1::2, 1::3].copy()
    b.setflags(write=False)
    assert fastsim.cka(a, b) == pytest.approx(R.cka(a, b), rel=1e-9)
    assert fastsim.mutual_knn(a, b, k=3) == pytest.approx(R.mutual_knn(a, b, k=3))
    ta = torch.from_numpy(base).T  # a transposed (column-major) tensor
    assert value(fastsim.cosine(ta, ta.flip(0))) == pytest.approx(R.cosine(base.T, base.T[::-1]))
    flipped = base[::-1, ::-1]  # negative strides
    swapped = base.astype(">f8")  # big-endian
    assert fastsim.cka(flipped, swapped[::-1, ::-1]) == pytest.approx(1.0)
    assert fastsim.cosine(swapped, base) == pytest.approx(1.0)
    assert fastsim.mutual_knn(flipped, flipped.copy(), k=4) == 1.0


@pytest.mark.parametrize("magnitude", [1e-300, 1e-30, 1e30, 1e300])
def test_extreme_magnitudes(magnitude):
    """Values near the float64 limits, and beyond float32's for the Triton rescue path."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(30, 4)), rng.normal(size=(30, 3))
    x = a * magnitude
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no spurious degenerate warnings either
        assert fastsim.cka(x, b) == pytest.approx(R.cka(a, b), rel=1e-9)
        assert fastsim.cka(x, b, debiased=True) == pytest.approx(R.cka(a, b, debiased=True), rel=1e-9)
        assert fastsim.cka(x, b, kernel="rbf") == pytest.approx(R.cka(a, b, kernel="rbf"), rel=1e-9)
        assert fastsim.cosine(x, a) == pytest.approx(1.0)
        assert fastsim.mutual_knn(x, b, k=5) == pytest.approx(R.mutual_knn(a, b, k=5))
        if 1e-38 < magnitude < 1e38:  # within float32 range
            x32 = torch.from_numpy(x.astype(np.float32))
            assert value(fastsim.cka(x32, torch.from_numpy(b))) == pytest.approx(R.cka(a, b), rel=1e-6)
            assert value(fastsim.cosine(x32, x32 * 2)) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("sample_space", [False, True])
@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_inputs_are_never_modified(monkeypatch, sample_space, data):
    n = data.draw(st.integers(4, 20))
    a, b = data.draw(related_pair(n, 3, 3))
    a, b = cast_pair(a, b, data.draw(dtypes), data.draw(dtypes), data.draw(containers))
    before = [as64(a).copy(), as64(b).copy()]
    from fastsim.core import kernel_sums

    monkeypatch.setattr(kernel_sums, "linear_uses_sample_space", lambda n, dims: sample_space)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for kernel in ("linear", "rbf"):
            fastsim.cka(a, b, kernel=kernel, debiased=True)
        fastsim.cosine(a, b)
        fastsim.mutual_knn(a, b, k=2)
        for metric, opts in (("cka", {}), ("cosine", {}), ("mutual_knn", {"k": 2})):
            fastsim.similarity_matrix([a, b], metric, **opts)
    assert np.array_equal(as64(a), before[0], equal_nan=True)
    assert np.array_equal(as64(b), before[1], equal_nan=True)
