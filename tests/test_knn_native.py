"""The compiled k-selection of fastsim._C (csrc/topk_cpu.cpp) and the kNN path built on it."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastsim import native


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
