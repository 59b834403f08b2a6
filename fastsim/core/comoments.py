"""Mergeable co-moment states of L layers: the exact streaming statistic behind linear CKA
(and every measure computed from covariance blocks).

State of a set A of n samples about a per-layer center mu_a, the mean rounded to float64
(layers a, b; u_a = x_a - mu_a):

    n, mu                          counts and centers (the mean of every layer, rounded)
    s[a]    = sum u_a              first moments: the residual of the rounded mean (~0)
    C[a, b] = sum u_a u_b^T        co-moment blocks, a <= b (d_a x d_b)
    T[a]    = sum |u_a|^2          (the trace of C[a, a])
    V[a, b] = sum |u_a|^2 u_b      third-order moments (a d_b vector per pair)
    P[a, b] = sum |u_a|^2 |u_b|^2  fourth-order moments

The residual s is kept because it is not negligible when the spread is a few ulps of the mean
(1 + 1e-15 noise in float64: the mean's rounding is a tenth of the spread). Shifting the center
from mu to c (delta = mu - c, so x - c = u + delta; expand |u_a + delta_a|^2 (u_b + delta_b) and
|u_a + delta_a|^2 |u_b + delta_b|^2 and sum):

    s'[a]    = s[a] + n delta_a
    C'[a, b] = C[a, b] + s_a delta_b^T + delta_a s_b^T + n delta_a delta_b^T
    T'[a]    = T[a] + 2 delta_a . s_a + n |delta_a|^2
    V'[a, b] = V[a, b] + T[a] delta_b + 2 C[b, a] delta_a + n |delta_a|^2 delta_b
               + 2 (delta_a . s_a) delta_b + |delta_a|^2 s_b
    P'[a, b] = P[a, b] + 2 delta_b . V[a, b] + 2 delta_a . V[b, a] + 4 delta_a^T C[a, b] delta_b
               + |delta_b|^2 T[a] + |delta_a|^2 T[b] + n |delta_a|^2 |delta_b|^2
               + 2 |delta_b|^2 (delta_a . s_a) + 2 |delta_a|^2 (delta_b . s_b)

Merging A and B shifts both to the pooled mean and adds them:
for C this is Chan et al.'s pairwise update, C_A + C_B + (n_A n_B / n) (mu_B - mu_A)(...)^T. A
chunk's own state is computed about its own mean, so large feature means never meet small
differences in one sum.

The linear kernel of the centered data, K_a = U_a U_a^T, has row sums K 1 = U_a s_a and
K[i, i] = |u_ia|^2, so ``kernel_stats`` gives HSIC's sums from the state alone: sum(K_a o K_b) =
|C[a, b]|_F^2, diag sums T, sum_i K_a[i,i] K_b[i,i] = P, sum_i R_a R_b = s_a^T C[a, b] s_b,
sum_i R_a K_b[i,i] = s_a . V[b, a], sum R_a = |s_a|^2 (see ``fastsim.core.hsic``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from . import threads
from .hsic import KernelStats
from .precision import matmul_precision

#: (stacked centered chunk (c, D), precision) -> its symmetric (D, D) Gram U^T U, e.g. a Triton kernel
GramFn = Callable[[torch.Tensor, str], torch.Tensor]


@dataclass
class CoMoments:
    n: int
    mean: list[torch.Tensor]  # per layer (d_l,) float64
    C: dict[tuple[int, int], torch.Tensor]  # (a, b), a <= b: (d_a, d_b) in the compute dtype
    T: torch.Tensor  # (L,) float64
    V: list[list[torch.Tensor]]  # V[a][b]: (d_b,) float64
    P: torch.Tensor  # (L, L) float64
    lo: list[torch.Tensor]  # per layer (d_l,) float64: smallest value of each feature (+inf: none)
    hi: list[torch.Tensor]  # per layer (d_l,) float64: largest value of each feature (-inf: none)
    s: list[torch.Tensor] | None = None  # per layer (d_l,) float64: sum u (None: zeros)

    def first(self) -> list[torch.Tensor]:
        return self.s if self.s is not None else [torch.zeros_like(m) for m in self.mean]

    @property
    def dims(self) -> list[int]:
        return [m.shape[0] for m in self.mean]

    @classmethod
    def of_chunk(
        cls, tensors: list[torch.Tensor], dtype: torch.dtype, precision: str, gram: GramFn | None = None
    ) -> CoMoments:
        """The state of one chunk of samples (one (c, d_l) tensor per layer), about its own mean.

        The co-moment blocks C are products of the float64-centered values rounded to `dtype`
        (float32: TF32/bf16 matmuls at "high"/"medium" where the hardware has them); with
        dtype=float64 they are products and sums in float64 (what StreamingCKA does at "highest")."""
        n = tensors[0].shape[0]
        L = len(tensors)

        def prep(t):
            # Centered in float64 (the residual sum u is kept: the rounded mean leaves one)
            x = t.double()
            mu = x.mean(0)
            u = x - mu
            return mu, u, x.amin(0), x.amax(0), torch.linalg.vecdot(u, u), u.sum(0)

        with threads.pool(tensors[0].device) as pmap:  # one layer, then one block, per task
            mean, U64, lo, hi, nrm, first = (list(v) for v in zip(*pmap(prep, tensors)))
            norms = torch.stack(nrm, 1)  # (c, L) float64
            pairs = [(a, b) for a in range(L) for b in range(a, L)]
            if gram is None and dtype == torch.float64:
                C = dict(zip(pairs, pmap(lambda ab: U64[ab[0]].T @ U64[ab[1]], pairs)))
            elif gram is not None:
                U = [u.to(dtype) for u in U64]
                G = gram(torch.cat(U, 1), precision)
                edges = [0, *torch.tensor([u.shape[1] for u in U]).cumsum(0).tolist()]
                C = {(a, b): G[edges[a] : edges[a + 1], edges[b] : edges[b + 1]] for a, b in pairs}
            else:
                U = [u.to(dtype) for u in U64]
                with matmul_precision(precision):
                    C = dict(zip(pairs, pmap(lambda ab: U[ab[0]].T @ U[ab[1]], pairs)))
            # V[a][b] = sum |u_a|^2 u_b: for each b, all a at once
            Vb = list(pmap(lambda b: U64[b].T @ norms, range(L)))  # (d_b, L)
        V = [[Vb[b][:, a] for b in range(L)] for a in range(L)]
        return cls(n, mean, C, norms.sum(0), V, norms.T @ norms, lo, hi, first)

    @classmethod
    def zeros(cls, dims: list[int], dtype: torch.dtype, device: torch.device) -> CoMoments:
        """The state of no samples (n = 0) about the origin: what a rank without data contributes."""
        L = len(dims)
        z64 = dict(dtype=torch.float64, device=device)
        return cls(
            0,
            [torch.zeros(d, **z64) for d in dims],
            {(a, b): torch.zeros(dims[a], dims[b], dtype=dtype, device=device) for a in range(L) for b in range(a, L)},
            torch.zeros(L, **z64),
            [[torch.zeros(d, **z64) for d in dims] for _ in range(L)],
            torch.zeros(L, L, **z64),
            [torch.full((d,), float("inf"), **z64) for d in dims],
            [torch.full((d,), float("-inf"), **z64) for d in dims],
        )

    def shifted(self, center: list[torch.Tensor]) -> CoMoments:
        """The same samples' state about `center` (per-layer float64 vectors), by the formulas above."""
        n, C, T, V, P = self.n, self.C, self.T, self.V, self.P
        s = self.first()
        L = len(center)
        delta = [mu - c for mu, c in zip(self.mean, center)]
        dd = torch.stack([d.square().sum() for d in delta])  # |delta_a|^2
        ds = torch.stack([d @ v for d, v in zip(delta, s)])  # delta_a . s_a
        cd = {}  # C[a, b] delta_b and C[a, b]^T delta_a, as float64 vectors
        for (a, b), c in C.items():
            c64 = c.double()
            cd[(a, b)] = c64 @ delta[b]  # (d_a,)  = sum u_a (u_b . delta_b)
            cd[(b, a)] = c64.T @ delta[a]  # (d_b,) = sum u_b (u_a . delta_a)
        newC = {
            (a, b): c + (torch.outer(s[a], delta[b]) + torch.outer(delta[a], s[b]) + n * torch.outer(delta[a], delta[b])).to(c.dtype)
            for (a, b), c in C.items()
        }
        newT = T + 2 * ds + n * dd
        newV = [
            [
                V[a][b] + T[a] * delta[b] + 2 * cd[(b, a)] + n * dd[a] * delta[b] + 2 * ds[a] * delta[b] + dd[a] * s[b]
                for b in range(L)
            ]
            for a in range(L)
        ]
        newP = torch.empty_like(P)
        for a in range(L):
            for b in range(L):
                newP[a, b] = (
                    P[a, b]
                    + 2 * delta[b] @ V[a][b]
                    + 2 * delta[a] @ V[b][a]
                    + 4 * delta[a] @ cd[(a, b)]
                    + dd[b] * T[a]
                    + dd[a] * T[b]
                    + n * dd[a] * dd[b]
                    + 2 * dd[b] * ds[a]
                    + 2 * dd[a] * ds[b]
                )
        news = [v + n * d for v, d in zip(s, delta)]
        return CoMoments(n, list(center), newC, newT, newV, newP, self.lo, self.hi, news)

    def merged(self, other: CoMoments) -> CoMoments:
        """The state of the union of two disjoint sample sets (shifted to the pooled mean, added)."""
        if self.n == 0:
            return other
        if other.n == 0:
            return self
        n = self.n + other.n
        pooled = [(self.n * a + other.n * b) / n for a, b in zip(self.mean, other.mean)]
        mine, theirs = self.shifted(pooled), other.shifted(pooled)
        return CoMoments(
            n,
            pooled,
            {k: mine.C[k] + theirs.C[k] for k in mine.C},
            mine.T + theirs.T,
            [[va + vb for va, vb in zip(ra, rb)] for ra, rb in zip(mine.V, theirs.V)],
            mine.P + theirs.P,
            [torch.minimum(a, b) for a, b in zip(self.lo, other.lo)],
            [torch.maximum(a, b) for a, b in zip(self.hi, other.hi)],
            [a + b for a, b in zip(mine.first(), theirs.first())],
        )

    def all_reduced(self, group: Any = None) -> CoMoments:
        """The state of every rank's samples of a torch.distributed group, on every rank.

        Two collective steps, exact: an all-reduce of the counts and per-layer sums gives the
        pooled mean; each rank shifts its state there and an all-reduce sums the co-moment blocks
        and the higher moments. A rank without samples contributes zeros."""
        import torch.distributed as dist

        dev = self.T.device
        count = torch.tensor([float(self.n)], dtype=torch.float64, device=dev)
        sums = [self.n * mu for mu in self.mean]
        dist.all_reduce(count, group=group)
        for t in sums:
            dist.all_reduce(t, group=group)
        total = int(count.item())
        if total == 0:
            return self
        pooled = [t / total for t in sums]
        state = self.shifted(pooled)
        for c in state.C.values():
            dist.all_reduce(c, group=group)
        dist.all_reduce(state.T, group=group)
        dist.all_reduce(state.P, group=group)
        for row in state.V:
            for v in row:
                dist.all_reduce(v, group=group)
        state.s = [v.clone() for v in state.first()]
        for v in state.s:
            dist.all_reduce(v, group=group)
        state.lo = [t.clone() for t in state.lo]
        state.hi = [t.clone() for t in state.hi]
        for t in state.lo:
            dist.all_reduce(t, op=dist.ReduceOp.MIN, group=group)
        for t in state.hi:
            dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
        state.n = total
        return state

    def kernel_stats(self) -> KernelStats:
        """HSIC's sums for the linear kernels of the centered samples (module docs), scaled as
        ``fastsim.core.hsic.KernelStats`` expects."""
        n, L = self.n, len(self.mean)
        s = self.first()
        S = torch.zeros(L, L, dtype=torch.float64)
        Q = torch.zeros(L, L, dtype=torch.float64)
        for (a, b), c in self.C.items():
            S[a, b] = S[b, a] = (c / n).square().sum(dtype=torch.float64).cpu()
            Q[a, b] = Q[b, a] = (s[a] @ (c.double() @ s[b])).cpu()  # sum_i R_a R_b, R = U s
        X = torch.stack([torch.stack([s[a] @ self.V[b][a] for b in range(L)]) for a in range(L)]).cpu()
        r = torch.stack([v @ v for v in s]).cpu()
        return KernelStats.from_full(n, S, self.P.cpu() / n**2, Q / n**2, X / n**2, r / n, self.T.cpu() / n)

    def constant(self) -> torch.Tensor:
        """(L,) bool CPU: layers whose samples are all equal (zero variance, exactly)."""
        return torch.tensor([bool((h == l).all()) for l, h in zip(self.lo, self.hi)])

    def nonfinite(self) -> torch.Tensor:
        """(L,) bool CPU: layers that saw NaN or Inf."""
        return torch.tensor([not bool(torch.isfinite(l).all() and torch.isfinite(h).all()) for l, h in zip(self.lo, self.hi)])
