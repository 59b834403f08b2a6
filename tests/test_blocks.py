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
    blocks = find_blocks(S, threshold=0.85)
    assert blocks == [(0, 1)]


def test_edge_cases_and_errors():
    assert find_blocks(np.ones((1, 1))) == []
    assert find_blocks(np.full((4, 4), 0.5)) == [(0, 3)]  # all equal: one block
    assert otsu_threshold(np.array([0.1, 0.1, 0.9, 0.95])) == 0.9
    with pytest.raises(ValueError, match="square"):
        find_blocks(np.ones((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        find_blocks(np.array([[1.0, np.nan], [np.nan, 1.0]]))
