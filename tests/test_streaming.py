"""StreamingCKA: chunked and merged states equal the one-shot reference."""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import matrix

import fastsim
from fastsim import reference as R


@st.composite
def stack_and_cuts(draw):
    n, L = draw(st.integers(8, 60)), draw(st.integers(1, 4))
    layers = [draw(matrix(n, draw(st.integers(1, 6)), draw(st.sampled_from(["gaussian", "offset", "heavy", "lowrank"]))))]
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    for _ in range(L - 1):
        d = int(rng.integers(1, 7))
        layers.append(np.tanh(layers[-1] @ rng.normal(size=(layers[-1].shape[1], d))) + 0.3 * rng.normal(size=(n, d)))
    cuts = sorted(set(draw(st.lists(st.integers(1, n - 1), min_size=0, max_size=9))))
    return layers, [0, *cuts, n]


def well_conditioned(layers, debiased):
    for x in layers:
        xc = x - x.mean(0)
        if np.sum(xc**2) <= 1e-8 * np.sum(x**2):
            return False
        if debiased:
            K = R.linear_kernel(xc)
            if R.hsic(K, K, True) <= 1e-3 * R.hsic(K, K):
                return False
    return True


@given(stack_and_cuts(), st.booleans())
def test_chunks_equal_one_shot_reference(case, debiased):
    layers, cuts = case
    assume(well_conditioned(layers, debiased))
    acc = fastsim.StreamingCKA(debiased=debiased)
    for s, e in zip(cuts[:-1], cuts[1:]):  # up to 10 chunks of uneven sizes
        acc.update([x[s:e] for x in layers])
    got = acc.compute()
    np.testing.assert_allclose(got, R.similarity_matrix(layers, "cka", debiased=debiased), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(got, fastsim.similarity_matrix(layers, "cka", debiased=debiased), rtol=1e-6, atol=1e-9)


@given(stack_and_cuts(), st.booleans())
def test_merged_states_equal_the_union(case, debiased):
    layers, cuts = case
    assume(well_conditioned(layers, debiased) and len(cuts) > 2)
    parts = []
    for s, e in zip(cuts[:-1], cuts[1:]):
        parts.append(fastsim.StreamingCKA(debiased=debiased).update([x[s:e] for x in layers]))
    merged = parts[0]
    for p in parts[1:]:
        merged.merge(p)
    assert merged.n == layers[0].shape[0]
    whole = fastsim.StreamingCKA(debiased=debiased).update(layers)
    np.testing.assert_allclose(merged.compute(), whole.compute(), rtol=1e-9, atol=1e-12)
    # The moment state itself, not just CKA, is the union's.
    np.testing.assert_allclose(merged.state.P.numpy(), whole.state.P.numpy(), rtol=1e-9)
    for key in whole.state.C:
        np.testing.assert_allclose(merged.state.C[key].numpy(), whole.state.C[key].numpy(), rtol=1e-9, atol=1e-9 * np.abs(whole.state.C[key].numpy()).max())


def test_float32_chunks_and_large_means():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(2000, 16))
    layers = [base + 1e3, np.tanh(base @ rng.normal(size=(16, 8))) - 500.0]
    acc = fastsim.StreamingCKA(debiased=True)
    for s in range(0, 2000, 200):
        acc.update([torch.from_numpy(x[s : s + 200]).float() for x in layers])
    got = acc.compute()
    assert got.dtype == torch.float32
    ref = R.similarity_matrix([x.astype(np.float32) for x in layers], "cka", debiased=True)
    np.testing.assert_allclose(got.numpy(), ref, atol=2e-5)


def test_state_kind_errors_and_reset():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(10, 3)), rng.normal(size=(10, 2))
    acc = fastsim.StreamingCKA()
    with pytest.raises(ValueError, match="at least 2 samples"):
        acc.compute()
    acc.update([a, b])
    assert isinstance(acc.compute(), np.ndarray)
    with pytest.raises(ValueError, match="keep their shapes"):
        acc.update([a, a])
    with pytest.raises(ValueError, match="one kind and device"):
        acc.update([torch.from_numpy(a), torch.from_numpy(b)])
    with pytest.raises(ValueError, match=r"layers\[1\] contains NaN"):
        acc.update([a, b * np.nan])
    with pytest.raises(ValueError, match="at least 4 samples"):
        fastsim.StreamingCKA(debiased=True).update([a[:3], b[:3]]).compute()
    with pytest.raises(TypeError, match="must be a StreamingCKA"):
        acc.merge(3)
    with pytest.raises(ValueError, match="precision must be one of"):
        fastsim.StreamingCKA(precision="low")
    acc.reset()
    assert acc.n == 0
    acc.update([a, b])
    np.testing.assert_allclose(acc.compute(), R.similarity_matrix([a, b], "cka"), rtol=1e-9)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = fastsim.StreamingCKA().update([a, np.ones((10, 2))]).compute()
    assert np.isnan(m[1]).all() and any(issubclass(w.category, fastsim.DegenerateWarning) for w in caught)


def test_triton_states_merge_like_torch_states():
    """The Triton co-moment kernel behind StreamingCKA (interpreter on the CPU) gives mergeable
    states equal to the torch backend's."""
    rng = np.random.default_rng(4)
    base = rng.normal(size=(90, 6)) + 20.0
    layers = [base, np.tanh(base @ rng.normal(size=(6, 9)) / 3) + 0.2 * rng.normal(size=(90, 9))]
    parts = [fastsim.StreamingCKA(debiased=True, backend="triton").update([x[s : s + 30] for x in layers]) for s in (0, 30, 60)]
    merged = parts[0].merge(parts[1]).merge(parts[2])
    whole = fastsim.StreamingCKA(debiased=True, backend="torch").update(layers)
    np.testing.assert_allclose(merged.compute(), whole.compute(), rtol=1e-9)
    np.testing.assert_allclose(merged.compute(), R.similarity_matrix(layers, "cka", debiased=True), rtol=1e-9)
