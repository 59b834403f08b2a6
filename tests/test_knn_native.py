"""The compiled k-selection of fastsim._C (csrc/topk_cpu.cpp) and the kNN path built on it."""

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from strategies import as64, cast, dtypes, related_pair
from test_metrics import boundary_near_tie

from fastsim import native
from fastsim import reference as R
from fastsim.core import knn as torch_knn
from fastsim.core.knn import knn_indices
from fastsim.core.scaling import row_scales


@pytest.fixture(params=["simd, one pass", "simd, two passes", "portable, one pass", "portable, two passes"], autouse=True)
def scan_kind(request):
    """Every test here runs with the AVX-512 scans (where the CPU has them) and the portable ones,
    and with the single-pass tile scan (full column heaps) and the two-pass one."""
    simd, single = native._C.topk_simd(), native._C.topk_single_pass()
    native._C.topk_simd(int(request.param.startswith("simd")))
    native._C.topk_single_pass(int(request.param.endswith("one pass")))
    yield request.param
    native._C.topk_simd(int(simd))
    native._C.topk_single_pass(int(single))


def brute_top(sims: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row the `count` best (value desc, index asc) entries, self excluded."""
    n = sims.shape[0]
    vals, idx = [], []
    for r in range(n):
        order = [c for c in np.lexsort((np.arange(n), -sims[r])) if c != r][:count]
        idx.append(order)
        vals.append(sims[r, order])
    return np.array(vals).reshape(n, count), np.array(idx, dtype=np.int64).reshape(n, count)


def feed_symmetric(sims: torch.Tensor, count: int, rows: int, cols: int):
    """Feed the row blocks' tiles on and right of the diagonal, as torch_knn does."""
    n = sims.shape[0]
    vals, idx = native.topk_state(n, count, sims.dtype, sims.device)
    for s in range(0, n, rows):
        e = min(n, s + rows)
        for c0 in range(s, n, cols):
            c1 = min(n, c0 + cols)
            native.topk_tile(sims[s:e, c0:c1], s, c0, vals, idx, col_side_begin=max(0, e - c0))
    native.topk_sort(vals, idx)
    return vals, idx


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 160),
    st.integers(0, 2**31),
    st.sampled_from([torch.float32, torch.float64]),
    st.sampled_from(["gaussian", "few_values", "duplicates"]),
    st.integers(1, 100),
    st.integers(1, 200),
    st.data(),
)
def test_symmetric_tiles_give_the_brute_force_top(n, seed, dtype, kind, rows, cols, data):
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        x = rng.normal(size=(n, 4))
    elif kind == "few_values":  # many exact ties, broken by index
        x = rng.integers(-1, 2, size=(n, 3)).astype(float)
    else:
        x = rng.normal(size=(max(1, n // 3), 4))[rng.integers(0, max(1, n // 3), size=n)]
    sims = torch.from_numpy(x @ x.T).to(dtype)
    sims = (sims + sims.T) / 2  # exactly symmetric, as the algorithm assumes of a similarity
    count = data.draw(st.integers(1, n - 1))
    vals, idx = feed_symmetric(sims, count, rows, cols)
    ref_v, ref_i = brute_top(sims.double().numpy(), count)
    assert idx.numpy().tolist() == ref_i.tolist()
    assert np.array_equal(vals.double().numpy(), ref_v)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(1, 300), st.integers(0, 2**31), st.integers(1, 300))
def test_row_side_of_one_rectangular_tile(rows, cols, seed, count):
    """Row side alone, on a tile that is a strided view (column offset, row stride > cols), with
    heaps of any size (k up to 300, bigger than the row: empty slots stay last)."""
    rng = np.random.default_rng(seed)
    n = rows + cols + 5
    full = torch.from_numpy(rng.integers(-4, 5, size=(rows, cols + 7)).astype(np.float32))
    tile = full[:, 3 : 3 + cols]
    row0, col0 = 2, rows + 4
    vals, idx = native.topk_state(n, count, torch.float32, "cpu")
    native.topk_tile(tile, row0, col0, vals, idx)
    native.topk_sort(vals, idx)
    for i in range(rows):
        order = np.lexsort((np.arange(cols), -tile[i].numpy()))[:count]
        want = (col0 + order).tolist() + [native.EMPTY_INDEX] * (count - len(order))
        assert idx[row0 + i].tolist() == want
    untouched = [r for r in range(n) if not row0 <= r < row0 + rows]
    assert (idx[untouched] == native.EMPTY_INDEX).all()


def test_self_is_skipped_and_nan_never_enters():
    sims = torch.tensor([[1.0, float("nan"), 0.5], [float("nan"), 1.0, 0.2], [0.5, 0.2, 1.0]])
    vals, idx = native.topk_state(3, 2, torch.float32, "cpu")
    native.topk_tile(sims, 0, 0, vals, idx)
    native.topk_sort(vals, idx)
    assert idx.tolist() == [[2, native.EMPTY_INDEX], [2, native.EMPTY_INDEX], [0, 1]]


def test_topk_tile_rejects_bad_arguments():
    vals, idx = native.topk_state(10, 3, torch.float32, "cpu")
    tile = torch.zeros(4, 4)
    with pytest.raises(ValueError, match="within"):
        native.topk_tile(tile, 8, 0, vals, idx)
    with pytest.raises(ValueError, match="tile must be a 2-D torch.float32"):
        native.topk_tile(tile.double(), 0, 0, vals, idx)
    with pytest.raises(TypeError, match="idx must be int64"):
        native.topk_tile(tile, 0, 0, vals, idx.int())
    with pytest.raises(ValueError, match="contiguous"):
        native.topk_tile(tile, 0, 0, vals.T.contiguous().T, idx)
    with pytest.raises(ValueError, match="count"):
        native.topk_state(10, 0, torch.float32, "cpu")
    with pytest.raises(ValueError, match="ld must be >= cols"):
        native._C.topk_tile(tile.data_ptr(), 2, 4, 4, 0, 0, 4, vals.data_ptr(), idx.data_ptr(), 10, 3, 32, "cpu", 0)
    with pytest.raises(ValueError, match="value_bits"):
        native._C.topk_tile(tile.data_ptr(), 4, 4, 4, 0, 0, 4, vals.data_ptr(), idx.data_ptr(), 10, 3, 16, "cpu", 0)


@settings(deadline=None)
@given(st.data())
def test_native_neighbour_lists_equal_reference(data):
    """knn_indices through the compiled k-selection, with tiny tiles (many row blocks and column
    tiles, both sides fed), on hypothesis data with duplicates and integer ties."""
    n = data.draw(st.integers(2, 60))
    x = cast(data.draw(related_pair(n, data.draw(st.integers(1, 10)), 1))[0], data.draw(dtypes), "torch")
    k = data.draw(st.integers(1, n - 1))
    x64 = as64(x)
    assume(not boundary_near_tie(x64, k))
    shape = (data.draw(st.integers(1, 20)), data.draw(st.integers(1, 40)))
    original = torch_knn._tile_shape
    torch_knn._tile_shape = lambda n, itemsize, device: shape
    try:
        got = torch_knn.knn_indices(x, k, precision="highest", margin=data.draw(st.sampled_from([0, 1, 16])), use_native=True)
    finally:
        torch_knn._tile_shape = original
    assert np.sort(got.numpy(), 1).tolist() == np.sort(R.knn_indices(x64, k), 1).tolist()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_and_torch_paths_agree_on_clustered_data(dtype):
    """Real tile sizes, several row blocks, many near-ties (clusters) and exact duplicates."""
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(40, 24, generator=g)
    x = centers[torch.randint(0, 40, (2500,), generator=g)] + 0.05 * torch.randn(2500, 24, generator=g)
    x[100:110] = x[5]  # a block of duplicates: ties broken by index
    x = x.to(dtype)
    a = knn_indices(x, 12, precision="highest", use_native=True)
    b = knn_indices(x, 12, precision="highest")
    assert torch.equal(a.sort(1).values, b.sort(1).values)
    ref = R.knn_indices(x.double().numpy()[:600], 12)  # a smaller exact check of the same kind of data
    got = knn_indices(x[:600], 12, precision="highest", use_native=True)
    assert np.sort(got.numpy(), 1).tolist() == np.sort(ref, 1).tolist()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_openmp_team_on_large_tiles_with_ties_and_nan(dtype):
    """Tiles of >= 2**16 similarities with threads > 1 take the OpenMP paths (rows split between
    threads, column stripes, per-thread hit buckets of the single pass), which the small tiles of
    the other tests never reach; NaN (never a neighbour) on both sides, many exact ties."""
    rng = np.random.default_rng(7)
    n, rows, cols, count = 900, 300, 700, 20
    x = rng.integers(-2, 3, size=(n, 4)).astype(float)
    sims = torch.from_numpy(x @ x.T).to(dtype)
    r, c = rng.integers(0, n, 60), rng.integers(0, n, 60)
    sims[r, c] = sims[c, r] = float("nan")
    vals, idx = native.topk_state(n, count, dtype, "cpu")
    for s in range(0, n, rows):
        e = min(n, s + rows)
        for c0 in range(s, n, cols):
            c1 = min(n, c0 + cols)
            native.topk_tile(sims[s:e, c0:c1], s, c0, vals, idx, col_side_begin=max(0, e - c0), threads=3)
    native.topk_sort(vals, idx)
    s64 = sims.double().numpy()
    s64[np.isnan(s64)] = -np.inf
    ref_v, ref_i = brute_top(s64, count)
    assert idx.numpy().tolist() == ref_i.tolist()
    assert np.array_equal(vals.double().numpy(), ref_v)


@pytest.mark.parametrize("use_native", [True, False])
def test_non_finite_rows_are_a_clear_error(use_native):
    """NaN similarities never enter the compiled heaps (empty slots, index 2**63 - 1, would reach
    the re-rank as an IndexError) and are the largest values to torch.topk (a NaN row would be
    everyone's neighbour): kNN refuses such input by name, whatever check_finite says."""
    import fastsim

    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="row 3 contains NaN or Inf"):
        knn_indices(torch.from_numpy(x), 3, precision="highest", use_native=use_native)
    x[3, 1] = np.inf
    backend = "cuda" if use_native else "torch"
    with pytest.raises(ValueError, match="row 3 contains NaN or Inf"):
        fastsim.mutual_knn(x, x, k=3, backend=backend, check_finite=False)
    with pytest.raises(ValueError, match="row 3 contains NaN or Inf"):
        fastsim.cknna(x, x, k=3, backend=backend, check_finite=False)


def test_bound_at_high_covers_tf32_truncation():
    """TF32 tensor cores read only the top 10 mantissa bits of each float32 operand (truncation):
    simulate that on the unit rows of row_scales and check the approximate self-similarity of
    duplicate rows (exactly 1 in the reference) stays within approximation_bound(.., "high").
    With the error of a rounding to nearest (2**-11) the bound is exceeded here."""
    g = torch.Generator().manual_seed(0)
    d = 2
    x = torch.randn(200_000, d, generator=g)
    units, _ = row_scales(x, torch.float32)
    tf32 = (units.view(torch.int32) & ~((1 << 13) - 1)).view(torch.float32)
    err = (1.0 - tf32.double().square().sum(1)).abs().max().item()
    assert err <= torch_knn.approximation_bound(d, torch.float32, "high")
    assert err > 1.3 * 2.0**-10  # beyond the old bound with TF32 as a rounding (about 1.01 * 2**-10)
