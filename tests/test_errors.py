"""Bad input gets a clear error that names the argument."""

import numpy as np
import pytest
import torch

import fastsim

rng = np.random.default_rng(0)
A = rng.normal(size=(10, 4))
B = rng.normal(size=(10, 3))


@pytest.mark.parametrize("fn", [fastsim.cka, fastsim.cosine, fastsim.mutual_knn])
def test_mismatched_rows(fn):
    with pytest.raises(ValueError, match=r"a and b must have the same number of rows.*a has 10, b has 9"):
        fn(A, A[:9])


@pytest.mark.parametrize("fn", [fastsim.cka, fastsim.cosine, fastsim.mutual_knn])
@pytest.mark.parametrize("bad", [np.ones(10), np.ones((2, 5, 4)), np.ones((10, 0))])
def test_not_a_matrix(fn, bad):
    with pytest.raises(ValueError, match="b must"):
        fn(A, bad)


@pytest.mark.parametrize("fn", [fastsim.cka, fastsim.cosine, fastsim.mutual_knn])
def test_wrong_types(fn):
    with pytest.raises(TypeError, match="a must be a NumPy array or a torch tensor"):
        fn(A.tolist(), A)
    with pytest.raises(TypeError, match="b must have a floating dtype"):
        fn(A, np.ones((10, 4), dtype=np.int64))
    with pytest.raises(TypeError, match="b must have a floating dtype"):
        fn(torch.from_numpy(A), torch.ones(10, 4, dtype=torch.int32))
    with pytest.raises(TypeError, match="a and b must both be NumPy arrays or both torch tensors"):
        fn(A, torch.from_numpy(A))


def test_cosine_needs_equal_features():
    with pytest.raises(ValueError, match="same number of features for cosine"):
        fastsim.cosine(A, B)


@pytest.mark.parametrize("fn", [fastsim.cka, fastsim.cosine, fastsim.mutual_knn])
@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite(fn, bad_value):
    b = A.copy()
    b[7, 2] = bad_value
    with pytest.raises(ValueError, match="b contains NaN or Inf \\(first in row 7\\)"):
        fn(A, b)
    with pytest.raises(ValueError, match="check_finite=False"):
        fn(torch.from_numpy(b), torch.from_numpy(A))


def test_check_finite_false_skips_the_pass():
    b = A.copy()
    b[0, 0] = np.nan
    assert np.isnan(fastsim.cosine(A, b, check_finite=False))


def test_k_out_of_range():
    for k in (0, 10, 11, -1):
        with pytest.raises(ValueError, match="k must satisfy 1 <= k < n"):
            fastsim.mutual_knn(A, A, k=k)
    for k in (2.5, "3", True):
        with pytest.raises(TypeError, match="k must be an integer"):
            fastsim.mutual_knn(A, A, k=k)
    with pytest.raises(ValueError, match="k must satisfy"):
        fastsim.similarity_matrix([A, A], "mutual_knn", k=10)


def test_too_few_samples():
    with pytest.raises(ValueError, match="debiased cka needs at least 4 samples"):
        fastsim.cka(A[:3], B[:3], debiased=True)
    with pytest.raises(ValueError, match="cka needs at least 2 samples"):
        fastsim.cka(A[:1], B[:1])
    with pytest.raises(ValueError, match="cosine needs at least 1 samples"):
        fastsim.cosine(A[:0], A[:0])
    with pytest.raises(ValueError, match="debiased cka needs at least 4"):
        fastsim.similarity_matrix([A[:3], B[:3]], "cka", debiased=True)


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (dict(kernel="poly"), ValueError, "kernel must be one of 'linear', 'rbf'"),
        (dict(backend="jax"), ValueError, "backend must be one of"),
        (dict(precision="low"), ValueError, "precision must be one of 'highest', 'high', 'medium'"),
        (dict(kernel="rbf", sigma=0.0), ValueError, "sigma must be a positive finite number"),
        (dict(kernel="rbf", sigma=float("nan")), ValueError, "sigma must be a positive"),
        (dict(kernel="rbf", sigma=-1), ValueError, "sigma must be a positive"),
        (dict(sigma=1.0), ValueError, "sigma applies to kernel='rbf' only"),
        (dict(debiased="yes"), TypeError, "debiased must be True or False"),
        (dict(check_finite=1), TypeError, "check_finite must be True or False"),
        (dict(backend="cuda"), ValueError, "backend='cuda' does not implement cka"),
    ],
)
def test_unknown_or_bad_options(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fastsim.cka(A, B, **kwargs)


def test_similarity_matrix_inputs():
    with pytest.raises(ValueError, match="metric must be one of .*'cka'.*'mutual_knn'"):
        fastsim.similarity_matrix([A, A], "cca")
    with pytest.raises(TypeError, match="unknown option 'k' for metric 'cka'"):
        fastsim.similarity_matrix([A, A], "cka", k=3)
    with pytest.raises(TypeError, match="unknown option 'kernel' for metric 'cosine'"):
        fastsim.similarity_matrix([A, A], "cosine", kernel="rbf")
    with pytest.raises(ValueError, match="at least one layer"):
        fastsim.similarity_matrix([], "cka")
    with pytest.raises(ValueError, match="layers must be a sequence of 2-D arrays or one 3-D array"):
        fastsim.similarity_matrix(np.ones((3, 4)), "cka")
    with pytest.raises(TypeError, match="layers must be a list/tuple"):
        fastsim.similarity_matrix(iter([A]), "cka")
    with pytest.raises(ValueError, match=r"layers\[0\] and layers\[2\] must have the same number of rows"):
        fastsim.similarity_matrix([A, A, A[:5]], "cka")
    with pytest.raises(ValueError, match=r"layers\[1\] contains NaN"):
        fastsim.similarity_matrix([A, A * np.nan], "cosine")
    with pytest.raises(ValueError, match="same number of features for cosine"):
        fastsim.similarity_matrix([A, B], "cosine")


def test_triton_backend_without_gpu_or_interpreter(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        fastsim.cosine(A, A, backend="triton")
