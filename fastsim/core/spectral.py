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

The dense linear algebra runs in float64: on CPU tensors through NumPy's LAPACK (several times
faster than torch.linalg's on the machines measured, for these sizes), on GPU tensors through
torch.linalg.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: eigenvalues of the standardized Gram matrix at or below this fraction of the largest are zero
RANK_RTOL = 1e-10


def _cpu(t: torch.Tensor) -> bool:
    return t.device.type == "cpu"


def eigh_desc(S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 (eigenvalues descending, eigenvectors as columns) of a symmetric matrix."""
    S = S.double()
    if _cpu(S):
        w, v = np.linalg.eigh(S.numpy())
        return torch.from_numpy(w[::-1].copy()), torch.from_numpy(v[:, ::-1].copy())
    w, v = torch.linalg.eigh(S)
    return w.flip(0), v.flip(1)


def svdvals(M: torch.Tensor) -> torch.Tensor:
    """float64 singular values (descending) of a matrix (empty for an empty matrix)."""
    M = M.double()
    if M.numel() == 0:
        return torch.zeros(0, dtype=torch.float64, device=M.device)
    if _cpu(M):
        return torch.from_numpy(np.linalg.svd(M.numpy(), compute_uv=False))
    return torch.linalg.svdvals(M)


def svd(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float64 thin SVD (U, s, Vh) of a matrix."""
    M = M.double()
    if _cpu(M):
        u, s, vh = np.linalg.svd(M.numpy(), full_matrices=False)
        return torch.from_numpy(u), torch.from_numpy(s), torch.from_numpy(vh)
    return torch.linalg.svd(M, full_matrices=False)


def constant_features(diag: torch.Tensor, n: int, mean: torch.Tensor) -> torch.Tensor:
    """(p,) bool: features whose variance is zero or lost in rounding relative to their square."""
    eps = torch.finfo(torch.float64).eps
    diag = diag.double()
    return diag <= (32 * eps) ** 2 * (diag + n * mean.double().to(diag.device).square())


@dataclass
class Whitening:
    """One layer's standardized spectrum and whitening (module docs)."""

    keep: torch.Tensor  # (p,) bool: the non-constant features
    scale: torch.Tensor  # (p',) float64: sqrt of the kept features' sums of squared deviations
    evals: torch.Tensor  # (r,) float64, descending: eigenvalues of R kept (all p' with ridge > 0)
    # (with ridge > 0 the canonical correlations past min(rank_a, rank_b) are 0: they do not count)
    evecs: torch.Tensor  # (p', r) float64
    ridge: float
    rank: int  # numerical rank: eigenvalues above RANK_RTOL of the largest (r = rank when ridge = 0)

    @property
    def W(self) -> torch.Tensor:
        """(p', r): W^T C_kept W = diag(evals / (evals + ridge))."""
        return self.evecs / self.scale[:, None] / torch.sqrt(self.evals + self.ridge)[None, :]

    def covariance_times_W(self) -> torch.Tensor:
        """(p', r): C_kept W = D^1/2 V_r Lambda_r (Lambda_r + ridge)^-1/2, without forming C W."""
        return self.evecs * self.scale[:, None] * (self.evals / torch.sqrt(self.evals + self.ridge))[None, :]

    def rows(self, block: torch.Tensor) -> torch.Tensor:
        """The kept rows of a (p, q) block, float64."""
        return block.double()[self.keep]


def whitening(C: torch.Tensor, n: int, mean: torch.Tensor, ridge: float = 0.0) -> Whitening:
    """The Whitening of a layer from its co-moment block C[a, a] (p x p), sample count and mean."""
    C = C.double()
    diag = torch.diagonal(C).clone()
    keep = ~constant_features(diag, n, mean)
    dev = C.device
    if not bool(keep.any()):
        empty = torch.zeros(0, dtype=torch.float64, device=dev)
        return Whitening(keep, empty, empty, torch.zeros(0, 0, dtype=torch.float64, device=dev), ridge, 0)
    Ck = C[keep][:, keep]
    scale = torch.sqrt(torch.diagonal(Ck))
    Rm = Ck / scale[:, None] / scale[None, :]
    Rm = (Rm + Rm.T) / 2
    w, v = eigh_desc(Rm)
    w, v = w.to(dev), v.to(dev)
    r = int((w > RANK_RTOL * w[0]).sum()) if w[0] > 0 else 0
    if ridge == 0:
        w, v = w[:r], v[:, :r]
    else:
        w = w.clamp_min(0.0)
    return Whitening(keep, scale, w, v, float(ridge), r)


def block(C: dict, a: int, b: int) -> torch.Tensor:
    """C[a, b] as float64 from the upper-triangular dict of co-moment blocks."""
    return C[(a, b)].double() if a <= b else C[(b, a)].double().T


def raw_second_moments(state) -> torch.Tensor:
    """(L,) float64: mean over samples of |x|^2, per layer (for the zero-variance rule)."""
    return torch.stack([mu.double().square().sum().cpu() + t.cpu() / state.n for mu, t in zip(state.mean, state.T)])


def degenerate_layers(state, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(L,) bool CPU: layers whose variance is zero or lost in rounding in `dtype` (the rule of
    linear CKA's streaming state)."""
    eps = torch.finfo(dtype).eps
    return state.T.double().cpu() <= (32 * eps) ** 2 * raw_second_moments(state)


def layer_whitenings(state, ridge: float, label: str, role: str = "CCA") -> list[Whitening]:
    """Every layer's Whitening from a co-moment state. With ridge = 0, a layer whose numerical
    rank reaches n - 1 spans every direction of the centered samples, so every canonical
    correlation with it is 1 (every least-squares fit from it is perfect) whatever the other
    layer: a ValueError says so and names the remedy (more samples, or ridge > 0)."""
    out = []
    for a in range(len(state.mean)):
        w = whitening(state.C[(a, a)], state.n, state.mean[a], ridge)
        if ridge == 0 and w.rank > 0 and w.rank >= state.n - 1:
            raise ValueError(
                f"{label}: layer {a} spans all n - 1 = {state.n - 1} directions of the centered samples (rank "
                f"{w.rank}, {state.mean[a].shape[0]} features), so every {role} result with it is trivially "
                f"perfect whatever the other layer. {role} needs more samples than features (n > rank + 1); "
                "use more samples, or pass ridge > 0 (regularized, on standardized features)"
            )
        out.append(w)
    return out


def whitened_cross(C: dict, wa: Whitening, wb: Whitening, a: int, b: int) -> torch.Tensor:
    """(r_a, r_b) float64: W_a^T C[a, b] W_b, whose singular values are the canonical correlations."""
    Cab = block(C, a, b)[wa.keep][:, wb.keep].to(wa.evecs.device)
    return wa.W.T @ Cab @ wb.W


def check_ridge(value) -> float:
    """The ridge option of the CCA family and linear regression: a finite number >= 0 (0: none)."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0 <= float(value) < float("inf")):
        raise ValueError(f"ridge must be a finite number >= 0 (0: no regularization); got {value!r}")
    return float(value)


RIDGE_HELP = ("regularization added to the eigenvalues of each layer's standardized covariance (features "
              "scaled to unit sum of squares, so ridge is relative to the mean feature variance); 0: none")


def nan_layers(out: torch.Tensor, bad: list[int], what: str, why: str = "zero variance (no non-constant feature)") -> torch.Tensor:
    """NaN in the rows and columns of the `bad` layers of an (L, L) result, with a DegenerateWarning."""
    from .errors import warn_degenerate

    if bad:
        out[bad, :] = float("nan")
        out[:, bad] = float("nan")
        warn_degenerate(f"{what} is undefined (NaN) for layer(s) {bad}: {why}")
    return out
