"""The block finder recovers planted blocks of similar layers."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastsim.blocks import find_blocks, otsu_threshold


def planted(sizes, rng, within=(0.9, 1.0), across=(0.3, 0.7)):
    L = sum(sizes)
    S = rng.uniform(*across, size=(L, L))
    start = 0
    for s in sizes:
        S[start : start + s, start : start + s] = rng.uniform(*within, size=(s, s))
        start += s
    S = (S + S.T) / 2
    np.fill_diagonal(S, 1.0)
    return S


@given(st.lists(st.integers(1, 6), min_size=1, max_size=5), st.integers(0, 2**31))
def test_planted_blocks_are_found(sizes, seed):
    S = planted(sizes, np.random.default_rng(seed))
    expected, start = [], 0
    for s in sizes:
        if s > 1:
            expected.append((start, start + s - 1))
        start += s
    assert find_blocks(S, threshold=0.8) == expected
    within = sum(s * (s - 1) // 2 for s in sizes)
    L = sum(sizes)
    # Otsu's cut separates two groups of values only when both are sizable (documented).
    if L > 1 and 0.25 <= within / (L * (L - 1) / 2) < 1:
        assert find_blocks(S) == expected


def test_two_blocks_like_a_speech_model():
    """The paper's picture: the input, then two big blocks of near-identical layers."""
    S = planted([1, 5, 7], np.random.default_rng(0), within=(0.93, 0.99), across=(0.55, 0.8))
    assert find_blocks(S) == [(1, 5), (6, 12)]


def test_complete_linkage_does_not_chain():
    # 0~1 and 1~2 are similar, 0 and 2 are not: no block may contain both 0 and 2.
    S = np.array([[1.0, 0.95, 0.2], [0.95, 1.0, 0.9], [0.2, 0.9, 1.0]])
    blocks = find_blocks(S, threshold=0.85, min_contrast=0)  # (the linkage, not the contrast rule, is tested)
    assert blocks == [(0, 1)]


def test_edge_cases_and_errors():
    assert find_blocks(np.ones((1, 1))) == []
    assert find_blocks(np.full((4, 4), 0.5)) == [(0, 3)]  # all equal: one block
    assert otsu_threshold(np.array([0.1, 0.1, 0.9, 0.95])) == 0.9
    with pytest.raises(ValueError, match="square"):
        find_blocks(np.ones((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        find_blocks(np.array([[1.0, np.nan], [np.nan, 1.0]]))


def smooth(L=13, step=0.007, seed=0):
    """Similarity that only falls off with layer distance (a random-weight model's picture)."""
    i = np.arange(L)
    S = 1 - step * np.abs(i[:, None] - i[None, :]) + np.random.default_rng(seed).normal(0, 1e-4, (L, L))
    S = (S + S.T) / 2
    np.fill_diagonal(S, 1.0)
    return S


def test_a_smooth_matrix_has_no_block_structure():
    """Otsu alone cuts a smooth matrix (CKA 0.91 .. 0.99) into 3-4 'blocks'; the contrast test refuses them."""
    from fastsim.blocks import block_structure

    for S in (smooth(), smooth(25, 0.004, seed=1)):
        found = block_structure(S)
        assert found.blocks == [] and not found.structured
        assert len(found.candidates) >= 2 and abs(found.contrast) < 0.01  # the bare cut's inventions
        assert "no block structure" in found.describe()
        assert find_blocks(S) == []
        assert find_blocks(S, min_contrast=0) == found.candidates


def test_real_blocks_on_a_smooth_falloff_are_found():
    """Two blocks of the paper's kind on top of a falloff with distance: the boundary drop is the structure."""
    from fastsim.blocks import block_structure

    S = smooth()
    S[:6, 6:] -= 0.25  # layers 0-5 and 6-12 are two blocks
    S[6:, :6] -= 0.25
    found = block_structure(S)
    assert found.blocks == [(0, 5), (6, 12)] and found.contrast > 0.2
    assert "contrast" in found.describe()


def test_contrast_and_min_contrast_checks():
    from fastsim.blocks import block_structure, contrast

    S = np.array([[1.0, 0.9, 0.5], [0.9, 1.0, 0.5], [0.5, 0.5, 1.0]])
    assert contrast(S, [(0, 1), (2, 2)]) == pytest.approx(0.4)  # distance 1: 0.9 inside, 0.5 across
    assert contrast(S, [(0, 2)]) is None  # nothing crosses a boundary
    with pytest.raises(ValueError, match="min_contrast"):
        block_structure(S, min_contrast=-0.1)
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        find_blocks(S, threshold=float("nan"))
