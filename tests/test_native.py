"""The compiled overlap kernels in fastsim._C (C++ on the CPU here; CUDA under the gpu marker)."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fastsim import native


def distinct_rows(rng, n, k, pool):
    rows = [rng.choice(pool, size=k, replace=False) for _ in range(n)]
    return np.stack(rows) if rows else np.empty((0, k), dtype=np.int64)


def overlap_python(a, b):
    return np.array([len(set(x.tolist()) & set(y.tolist())) for x, y in zip(a, b)])


def test_module_is_built():
    assert native.available(), native.IMPORT_ERROR
    assert native._C.openmp_threads() >= 1


@given(st.integers(1, 6), st.integers(0, 40), st.integers(1, 12), st.integers(0, 2**31))
def test_overlap_all_pairs_matches_set_intersections(L, n, k, seed):
    rng = np.random.default_rng(seed)
    lists = np.stack([distinct_rows(rng, n, k, 2 * k) for _ in range(L)])
    totals = native.overlap_all_pairs(torch.from_numpy(lists))
    expected = np.array([[overlap_python(lists[x], lists[y]).sum() for y in range(L)] for x in range(L)])
    assert totals.tolist() == expected.tolist()


def test_overlap_accepts_views_and_rejects_bad_buffers():
    a = torch.arange(40).reshape(1, 10, 4)
    view = a[0].T.contiguous().T[None]  # Fortran-ordered view is copied
    assert native.overlap_all_pairs(torch.cat([view, a])).tolist() == [[40, 40], [40, 40]]
    with pytest.raises(TypeError, match="int32 or int64"):
        native.overlap_all_pairs(a.float())
    with pytest.raises(ValueError, match=r"\(L, n, k\)"):
        native.overlap_all_pairs(a[0])
    with pytest.raises(ValueError, match="k must be >= 1"):
        native._C.overlap_all_pairs(a.data_ptr(), a.data_ptr(), 1, 10, 0, 64, "cpu", 0)
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        native._C.overlap_all_pairs(a.data_ptr(), a.data_ptr(), 1, 10, 4, 64, "tpu", 0)


@pytest.mark.gpu
def test_cuda_kernels_match_cpu():
    assert native.cuda_compiled()
    rng = np.random.default_rng(0)
    lists = torch.from_numpy(np.stack([distinct_rows(rng, 5000, 16, 64) for _ in range(5)]))
    cpu = native.overlap_all_pairs(lists)
    for dtype in (torch.int32, torch.int64):
        gpu = native.overlap_all_pairs(lists.to(dtype).cuda())
        assert gpu.cpu().tolist() == cpu.tolist()
