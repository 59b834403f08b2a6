"""Hypothesis strategies: representation matrices of many shapes, dtypes and value patterns."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

DTYPES = ["float16", "bfloat16", "float32", "float64"]
TORCH_DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}
PATTERNS = ["elements", "gaussian", "offset", "lowrank", "heavy", "integers", "duplicates"]


def _pattern(rng: np.random.Generator, kind: str, n: int, d: int) -> np.ndarray:
    if kind == "gaussian":
        return rng.normal(size=(n, d)) * rng.uniform(0.1, 10)
    if kind == "offset":  # large common mean: centering must not cancel
        return rng.normal(size=(n, d)) + rng.normal(size=d) * 1e3
    if kind == "lowrank":
        r = max(1, min(d, 2))
        return rng.normal(size=(n, r)) @ rng.normal(size=(r, d))
    if kind == "heavy":  # a few outlier features, as in transformer hidden states
        x = rng.normal(size=(n, d))
        x[:, rng.integers(0, d)] *= 50
        return x
    if kind == "integers":  # many exact ties in distances and similarities
        return rng.integers(-3, 4, size=(n, d)).astype(np.float64)
    if kind == "duplicates":
        base = rng.normal(size=(max(2, n // 3), d))
        return base[rng.integers(0, base.shape[0], size=n)]
    raise AssertionError(kind)


@st.composite
def matrix(draw, n: int, d: int, pattern: str | None = None) -> np.ndarray:
    """A float64 (n, d) matrix drawn from one of several value patterns."""
    kind = pattern or draw(st.sampled_from(PATTERNS))
    if kind == "elements":
        return draw(
            hnp.arrays(np.float64, (n, d), elements=st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=32))
        )
    seed = draw(st.integers(0, 2**32 - 1))
    return _pattern(np.random.default_rng(seed), kind, n, d)


@st.composite
def related_pair(draw, n: int, da: int, db: int, pattern: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Two representations of the same samples, b partly a linear function of a (so CKA is non-trivial)."""
    a = draw(matrix(n, da, pattern))
    mix = draw(st.floats(0.0, 1.0))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    b = mix * (a @ rng.normal(size=(da, db))) + (1 - mix) * draw(matrix(n, db, pattern))
    return a, b


def cast(x: np.ndarray, dtype: str, container: str):
    """x rounded to `dtype`, as a NumPy array or torch tensor (bfloat16 is torch-only)."""
    t = torch.from_numpy(np.ascontiguousarray(x)).to(TORCH_DTYPES[dtype])
    if container == "numpy" and dtype != "bfloat16":
        return t.numpy()
    return t


def cast_pair(a: np.ndarray, b: np.ndarray, dtype_a: str, dtype_b: str, container: str):
    """Both in one container (torch when either dtype is bfloat16, which NumPy lacks)."""
    if "bfloat16" in (dtype_a, dtype_b):
        container = "torch"
    return cast(a, dtype_a, container), cast(b, dtype_b, container)


def as64(x) -> np.ndarray:
    """The exact values the caller passed, in float64 (the reference's input)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def value(x) -> float:
    return float(x.item() if isinstance(x, torch.Tensor) else x)


def accumulates_in_float64(*xs) -> bool:
    return any((x.dtype == torch.float64) if isinstance(x, torch.Tensor) else (x.dtype == np.float64) for x in xs)


def degenerate(x: np.ndarray, float64: bool) -> bool:
    """The documented zero-variance rule (fastsim.core.moments.Moments.degenerate)."""
    eps = np.finfo(np.float64 if float64 else np.float32).eps
    peak = np.abs(x).max()
    if peak > 0:
        x = np.ldexp(x, -np.frexp(peak)[1])  # fastsim scales each layer by a power of two first
    centered = np.mean(np.sum((x - x.mean(0)) ** 2, 1))
    raw = np.mean(np.sum(x**2, 1))
    return centered <= (32 * eps) ** 2 * raw


containers = st.sampled_from(["numpy", "torch"])
dtypes = st.sampled_from(DTYPES)
