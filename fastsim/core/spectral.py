"""Per-layer spectra from co-moment blocks, and the small dense linear algebra (symmetric
eigendecompositions, SVDs) that the covariance-block measures run once per layer and once per
pair of layers.

Co-moment blocks ``C[a, b] = sum_i u_ai u_bi^T`` of the centered samples (``fastsim.core.comoments``)
determine every measure that is a function of the layers' covariances: CCA and its variants,
linear regression, Procrustes. The expensive part that pairs share is done here once per layer:

* **Constant features** (``constant_features``): a feature whose sum of squared deviations is lost
  in rounding, ``C_jj <= (32 eps)^2 (C_jj + n mu_j^2)``, carries no variance; it is dropped before
  anything is inverted (its column of the centered data is zero).
* **Standardized spectrum** (``whitening``): the kept features are scaled to unit sum of squares,
  ``R = D^-1/2 C D^-1/2`` (D = diag C), and R is eigendecomposed. CCA and least squares are
  invariant to invertible per-feature scaling, so this only removes ill-conditioning that comes
  from features of very different scales.
* **Numerical rank**: with ``ridge = 0`` only eigenvalues ``lambda_i > RANK_RTOL lambda_max`` count;
  the others are directions the centered data do not span (collinear features, fewer samples than
  features), where the eigenvalues of the Gram matrix hold rounding only. RANK_RTOL = 1e-10
  treats singular values below 1e-5 of the largest (of the standardized data) as zero: a Gram
  matrix resolves singular values only down to about sqrt(eps) ~ 1.5e-8 of the largest, so
  the cut sits well above its rounding and well below the spectra of real layers.
* **Whitening** ``W = D^-1/2 V_r (Lambda_r + ridge)^-1/2`` (p x r): ``W^T C W`` is the identity on
  the kept directions (ridge = 0), so ``W_a^T C[a, b] W_b`` has the canonical correlations of a
  and b as its singular values (Hotelling 1936; Bjorck & Golub 1973: they are the cosines of the
  principal angles between the column spaces of the centered data). With ``ridge > 0`` it is the
  canonical ridge (Vinod 1976) on the standardized features, ``(R + ridge I)^-1/2``.

The finishing work runs on the CPU in float64 NumPy (``Blocks`` converts a state's blocks once):
NumPy's LAPACK was several times faster than torch.linalg's for these sizes on the machines
measured, and interleaving torch operations with NumPy's threaded LAPACK calls made the latter
up to 60x slower while torch's OpenMP workers spin after each parallel region.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

#: eigenvalues of the standardized Gram matrix at or below this fraction of the largest are zero
RANK_RTOL = 1e-10
EPS64 = float(np.finfo(np.float64).eps)


def eigh_desc(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 (eigenvalues descending, eigenvectors as columns) of a symmetric matrix."""
    w, v = np.linalg.eigh(S)
    return w[::-1].copy(), v[:, ::-1].copy()


def svdvals(M: np.ndarray) -> np.ndarray:
    """float64 singular values (descending) of a matrix (empty for an empty matrix)."""
    if M.size == 0:
        return np.zeros(0)
    return np.linalg.svd(M, compute_uv=False)


def svd(M: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 thin SVD (U, s, Vh) of a matrix."""
    return np.linalg.svd(M, full_matrices=False)


@contextlib.contextmanager
def _blas_single_threaded():
    """NumPy's BLAS/LAPACK limited to one thread within the block (threadpoolctl, if installed);
    yields whether it could."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield False
        return
    with threadpool_limits(1, user_api="blas"):
        yield True


def parallel_map(fn: Callable, items: Iterable) -> list:
    """[fn(x) for x in items], as single-threaded LAPACK tasks on torch.get_num_threads() worker
    threads when threadpoolctl can hold NumPy's BLAS to one thread (NumPy releases the GIL in
    LAPACK): on a busy machine a slowed worker takes fewer tasks instead of stalling a threaded
    factorization, and an idle one keeps every core busy with the memory-bound SVD phases.
    Without threadpoolctl: in order, each call with NumPy's own threads."""
    items = list(items)
    workers = max(1, min(torch.get_num_threads(), len(items)))
    if workers == 1:
        return [fn(x) for x in items]
    with _blas_single_threaded() as single:
        if not single:
            return [fn(x) for x in items]
        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="fastsim-lapack") as ex:
            return list(ex.map(fn, items))


class Blocks:
    """A co-moment state (``fastsim.core.comoments.CoMoments``) as float64 NumPy on the CPU:
    blocks converted once, on first use."""

    def __init__(self, state) -> None:
        self.state = state
        self.n = state.n
        self.L = len(state.mean)
        self.dtype = state.C[(0, 0)].dtype  # the accumulation dtype of the blocks
        self.mean = [m.double().cpu().numpy() for m in state.mean]
        self.T = state.T.double().cpu().numpy()
        self.P = state.P.double().cpu().numpy()
        self._C: dict[tuple[int, int], np.ndarray] = {}

    def C(self, a: int, b: int) -> np.ndarray:
        """C[a, b] (d_a x d_b) float64."""
        key = (min(a, b), max(a, b))
        if key not in self._C:
            self._C[key] = self.state.C[key].double().cpu().numpy()
        return self._C[key] if a <= b else self._C[key].T

    def load(self) -> Blocks:
        """Convert every block now (before work that reads them from several threads)."""
        for key in self.state.C:
            self.C(*key)
        return self

    def V(self, a: int, b: int) -> np.ndarray:
        """V[a][b] = sum_i |u_ai|^2 u_bi (d_b,) float64."""
        return self.state.V[a][b].double().cpu().numpy()

    def degenerate(self) -> np.ndarray:
        """(L,) bool: layers whose variance is zero or lost in rounding in the blocks' dtype (the
        rule of linear CKA's streaming state)."""
        eps = torch.finfo(self.dtype).eps
        raw = np.array([m @ m for m in self.mean]) * self.n + self.T
        return self.T <= (32 * eps) ** 2 * raw


def constant_features(diag: np.ndarray, n: int, mean: np.ndarray) -> np.ndarray:
    """(p,) bool: features whose variance is zero or lost in rounding relative to their square."""
    return diag <= (32 * EPS64) ** 2 * (diag + n * mean**2)


@dataclass
class Whitening:
    """One layer's standardized spectrum and whitening (module docs)."""

    keep: np.ndarray  # (p,) bool: the non-constant features
    scale: np.ndarray  # (p',) sqrt of the kept features' sums of squared deviations
    evals: np.ndarray  # (r,) descending: eigenvalues of R kept (all p' with ridge > 0)
    evecs: np.ndarray  # (p', r)
    ridge: float
    rank: int  # numerical rank: eigenvalues above RANK_RTOL of the largest (r = rank when ridge = 0)
    # (with ridge > 0 the canonical correlations past min(rank_a, rank_b) are 0: they do not count)

    @property
    def W(self) -> np.ndarray:
        """(p', r): W^T C_kept W = diag(evals / (evals + ridge))."""
        return self.evecs / self.scale[:, None] / np.sqrt(self.evals + self.ridge)[None, :]

    def covariance_times_W(self) -> np.ndarray:
        """(p', r): C_kept W = D^1/2 V_r Lambda_r (Lambda_r + ridge)^-1/2, without forming C W."""
        return self.evecs * self.scale[:, None] * (self.evals / np.sqrt(self.evals + self.ridge))[None, :]


def whitening(C: np.ndarray, n: int, mean: np.ndarray, ridge: float = 0.0) -> Whitening:
    """The Whitening of a layer from its co-moment block C[a, a] (p x p), sample count and mean."""
    diag = np.diagonal(C).copy()
    keep = ~constant_features(diag, n, mean)
    if not keep.any():
        return Whitening(keep, np.zeros(0), np.zeros(0), np.zeros((0, 0)), ridge, 0)
    Ck = C[np.ix_(keep, keep)]
    scale = np.sqrt(np.diagonal(Ck))
    Rm = Ck / scale[:, None] / scale[None, :]
    w, v = eigh_desc((Rm + Rm.T) / 2)
    r = int((w > RANK_RTOL * w[0]).sum()) if w[0] > 0 else 0
    if ridge == 0:
        w, v = w[:r], v[:, :r]
    else:
        w = np.maximum(w, 0.0)
    return Whitening(keep, scale, w, v, float(ridge), r)


def layer_whitenings(blocks: Blocks, ridge: float, label: str, role: str = "CCA") -> list[Whitening]:
    """Every layer's Whitening. With ridge = 0, a layer whose numerical rank reaches n - 1 spans
    every direction of the centered samples, so every canonical correlation with it is 1 (every
    least-squares fit from it is perfect) whatever the other layer: a ValueError says so and
    names the remedy (more samples, or ridge > 0)."""
    out = []
    blocks.load()
    spectra = parallel_map(lambda a: whitening(blocks.C(a, a), blocks.n, blocks.mean[a], ridge), range(blocks.L))
    for a, w in enumerate(spectra):
        if ridge == 0 and w.rank > 0 and w.rank >= blocks.n - 1:
            raise ValueError(
                f"{label}: layer {a} spans all n - 1 = {blocks.n - 1} directions of the centered samples (rank "
                f"{w.rank}, {blocks.mean[a].shape[0]} features), so every {role} result with it is trivially "
                f"perfect whatever the other layer. {role} needs more samples than features (n > rank + 1); "
                "use more samples, or pass ridge > 0 (regularized, on standardized features)"
            )
        out.append(w)
    return out


def whitened_cross(blocks: Blocks, wa: Whitening, wb: Whitening, a: int, b: int) -> np.ndarray:
    """(r_a, r_b): W_a^T C[a, b] W_b, whose singular values are the canonical correlations."""
    return wa.W.T @ blocks.C(a, b)[np.ix_(wa.keep, wb.keep)] @ wb.W


def check_ridge(value) -> float:
    """The ridge option of the CCA family and linear regression: a finite number >= 0 (0: none)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0 <= float(value) < float("inf")):
        raise ValueError(f"ridge must be a finite number >= 0 (0: no regularization); got {value!r}")
    return float(value)


RIDGE_HELP = ("regularization added to the eigenvalues of each layer's standardized covariance (features "
              "scaled to unit sum of squares, so ridge is relative to the mean feature variance); 0: none")


def nan_layers(out: np.ndarray, bad, what: str, why: str = "zero variance (no non-constant feature)") -> torch.Tensor:
    """The (L, L) result as a float64 tensor, NaN in the rows and columns of the `bad` layers
    (indices or a bool mask), with a DegenerateWarning."""
    from .errors import warn_degenerate

    bad = [int(i) for i in (np.flatnonzero(bad) if np.asarray(bad).dtype == bool else bad)]
    if bad:
        out[bad, :] = np.nan
        out[:, bad] = np.nan
        warn_degenerate(f"{what} is undefined (NaN) for layer(s) {bad}: {why}")
    return torch.from_numpy(out)
