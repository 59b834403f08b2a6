"""StreamingCKA: linear CKA of all layer pairs over frames that arrive in chunks, mergeable.

State of a set A of n samples with per-layer mean mu_a (layers a, b; u_a = x_a - mu_a):

    n, mu                          counts and means (the mean of every layer)
    C[a, b] = sum u_a u_b^T        co-moment blocks, a <= b (d_a x d_b)
    T[a]    = sum |u_a|^2          (the trace of C[a, a])
    V[a, b] = sum |u_a|^2 u_b      third-order moments (a d_b vector per pair)
    P[a, b] = sum |u_a|^2 |u_b|^2  fourth-order moments

Shifting the center from mu to c (delta = mu - c, so x - c = u + delta, and sum u = 0):

    C'[a, b] = C[a, b] + n delta_a delta_b^T
    T'[a]    = T[a] + n |delta_a|^2
    V'[a, b] = V[a, b] + T[a] delta_b + 2 C[b, a] delta_a + n |delta_a|^2 delta_b
    P'[a, b] = P[a, b] + 2 delta_b . V[a, b] + 2 delta_a . V[b, a] + 4 delta_a^T C[a, b] delta_b
               + |delta_b|^2 T[a] + |delta_a|^2 T[b] + n |delta_a|^2 |delta_b|^2

(expand |u_a + delta_a|^2 (u_b + delta_b) and |u_a + delta_a|^2 |u_b + delta_b|^2; every term
linear in a single u sums to 0). Merging A and B shifts both to the pooled mean and adds them:
for C this is Chan et al.'s pairwise update, C_A + C_B + (n_A n_B / n) (mu_B - mu_A)(...)^T. A
chunk's own state is computed about its own mean, so large feature means never meet small
differences in one sum.

CKA from the state, with K_a = U_a U_a^T the linear kernel of the centered data (so every row
sum of K is 0 and K[i, i] = |u_ia|^2):

    sum(K_a o K_b)         = |C[a, b]|_F^2
    biased HSIC            ~ |C[a, b]|_F^2                                   (tr(K H L H), H K H = K)
    unbiased HSIC (Song)   ~ (S - P) + T_a T_b / ((n-1)(n-2)) - 2 P / (n-2)

the latter from tr(K~ L~) = S - P, 1^T K~ 1 = -T and 1^T K~ L~ 1 = sum_i K_ii L_ii = P, where K~
is K with its diagonal zeroed (the general formula is ``fastsim.backends.torch_cka.hsic_matrix``).
So the debiased estimator needs only the co-moment blocks, the means (column sums) and the
per-sample squared norms, through T, V and P.
"""

from __future__ import annotations

from typing import Any

import torch

from . import options
from ._inputs import check_finite, prepare, split_layers, to_origin
from .backends.torch_cka import KernelStats, _finish, hsic_matrix


class StreamingCKA:
    """Linear CKA of every pair of L layers, accumulated over chunks of samples.

    >>> acc = StreamingCKA(debiased=True)
    >>> for batch in batches:                 # each a list of (n_chunk, d_l) arrays, one per layer
    ...     acc.update(batch)
    >>> acc.compute()                         # (L, L)

    Two accumulators fed disjoint data merge into the accumulator of their union
    (``a.merge(b)``), so ranks of a distributed job can combine their states. Results equal the
    one-shot ``fastsim.similarity_matrix(layers, "cka", debiased=...)`` up to rounding.
    """

    def __init__(
        self, *, debiased: bool = False, backend: str = "auto", precision: str = "highest", check_finite: bool = True
    ) -> None:
        if not isinstance(debiased, bool):
            raise TypeError(f"debiased must be True or False; got {debiased!r}")
        options.check_choice("precision", precision, options.PRECISIONS)
        self.backend = options.check_choice("backend", backend, ("auto", "torch", "triton"))
        self.debiased = debiased
        self.precision = precision
        self.check_finite = check_finite
        self.reset()

    def reset(self) -> None:
        """Forget all data seen so far."""
        self.n = 0
        self.dims: list[int] | None = None
        self.origin = None
        self.dtype: torch.dtype | None = None
        self.mean: list[torch.Tensor] = []
        self.C: dict[tuple[int, int], torch.Tensor] = {}
        self.T = self.V = self.P = None

    # ------------------------------------------------------------------ accumulation

    def update(self, layers: Any) -> "StreamingCKA":
        """Add a chunk: a list of (n_chunk, d_l) arrays (one per layer) or one (L, n_chunk, d) array."""
        tensors, origin = prepare(split_layers(layers), finite=False)
        if self.dims is None:
            self.dims = [t.shape[1] for t in tensors]
            self.origin = origin
            self.dtype = options.compute_dtype(tensors)
        elif [t.shape[1] for t in tensors] != self.dims:
            raise ValueError(
                f"layers must keep their shapes across updates: expected {len(self.dims)} layers with "
                f"features {self.dims}, got {[t.shape[1] for t in tensors]}"
            )
        elif origin != self.origin:
            raise ValueError(f"all updates must come from one kind and device; first was {self.origin}, now {origin}")
        if self.check_finite:
            for i, t in enumerate(tensors):
                check_finite(f"layers[{i}]", t)
        if tensors[0].shape[0] == 0:
            return self
        for s, e in options.row_chunks(tensors[0].shape[0], 3 * sum(self.dims) * 8):
            self._merge_state(self._chunk_state([t[s:e] for t in tensors]))
        return self

    def _chunk_state(self, tensors: list[torch.Tensor]) -> dict:
        dt = self.dtype
        n = tensors[0].shape[0]
        # Centered in float64, then rounded: the rows sum to 0 up to one rounding per entry.
        mean = [t.double().mean(0) for t in tensors]
        U64 = [t.double() - mu for t, mu in zip(tensors, mean)]
        U = [u.to(dt) for u in U64]
        norms = torch.stack([u.square().sum(1) for u in U64], 1)  # (n, L) float64
        L = len(U)
        if self.backend == "triton":
            from .kernels.comoment import upper_gram

            G = upper_gram(torch.cat(U, 1), self.precision)
            edges = [0, *torch.tensor(self.dims).cumsum(0).tolist()]
            C = {(a, b): G[edges[a] : edges[a + 1], edges[b] : edges[b + 1]] for a in range(L) for b in range(a, L)}
        else:
            with options.matmul_precision(self.precision):
                C = {(a, b): U[a].T @ U[b] for a in range(L) for b in range(a, L)}
        V = [[U64[b].T @ norms[:, a] for b in range(L)] for a in range(L)]
        return {"n": n, "mean": mean, "C": C, "T": norms.sum(0), "V": V, "P": norms.T @ norms}

    @staticmethod
    def _shift(state: dict, center: list[torch.Tensor]) -> dict:
        """The state re-centered at `center` (per-layer float64 vectors), by the formulas above."""
        n, C, T, V, P = state["n"], state["C"], state["T"], state["V"], state["P"]
        L = len(center)
        delta = [mu - c for mu, c in zip(state["mean"], center)]
        dd = torch.stack([d.square().sum() for d in delta])  # |delta_a|^2
        cd = {}  # C[a, b] delta_b and C[a, b]^T delta_a, as float64 vectors
        for (a, b), c in C.items():
            c64 = c.double()
            cd[(a, b)] = c64 @ delta[b]  # (d_a,)  = sum u_a (u_b . delta_b)
            cd[(b, a)] = c64.T @ delta[a]  # (d_b,) = sum u_b (u_a . delta_a)
        newC = {(a, b): c + (n * torch.outer(delta[a], delta[b])).to(c.dtype) for (a, b), c in C.items()}
        newT = T + n * dd
        newV = [[V[a][b] + T[a] * delta[b] + 2 * cd[(b, a)] + n * dd[a] * delta[b] for b in range(L)] for a in range(L)]
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
                )
        return {"n": n, "mean": list(center), "C": newC, "T": newT, "V": newV, "P": newP}

    def _merge_state(self, other: dict) -> None:
        if self.n == 0:
            self.n, self.mean, self.C, self.T, self.V, self.P = (
                other["n"], other["mean"], other["C"], other["T"], other["V"], other["P"])
            return
        n = self.n + other["n"]
        pooled = [(self.n * a + other["n"] * b) / n for a, b in zip(self.mean, other["mean"])]
        mine = self._shift(self._state(), pooled)
        theirs = self._shift(other, pooled)
        self.n = n
        self.mean = pooled
        self.C = {k: mine["C"][k] + theirs["C"][k] for k in mine["C"]}
        self.T = mine["T"] + theirs["T"]
        self.V = [[va + vb for va, vb in zip(ra, rb)] for ra, rb in zip(mine["V"], theirs["V"])]
        self.P = mine["P"] + theirs["P"]

    def _state(self) -> dict:
        return {"n": self.n, "mean": self.mean, "C": self.C, "T": self.T, "V": self.V, "P": self.P}

    def merge(self, other: "StreamingCKA") -> "StreamingCKA":
        """Fold in another accumulator's data (disjoint from this one's); returns self."""
        if not isinstance(other, StreamingCKA):
            raise TypeError(f"other must be a StreamingCKA; got {type(other).__name__}")
        if other.n == 0:
            return self
        if self.n and other.dims != self.dims:
            raise ValueError(f"cannot merge states of layers with features {self.dims} and {other.dims}")
        if self.n == 0:
            self.dims, self.origin, self.dtype = other.dims, other.origin, other.dtype
        self._merge_state(other._state())
        return self

    def all_reduce(self, group: Any = None) -> "StreamingCKA":
        """Combine the states of every rank of a torch.distributed group, in place; returns self.

        Two collective steps, exact: an all-reduce of the counts and per-layer sums gives the
        pooled mean; each rank shifts its state there (the formulas above) and an all-reduce
        sums the co-moment blocks and the higher moments. Every rank ends with the state of all
        ranks' data. Works with any backend whose all_reduce takes these tensors (gloo on CPU,
        nccl on GPU). Every rank must have seen at least one update (to know the layer widths).
        """
        import torch.distributed as dist

        if self.dims is None:
            raise ValueError("all_reduce needs the layer widths: call update() on every rank first")
        dev = self.mean[0].device if self.mean else self.origin.device
        L = len(self.dims)
        count = torch.tensor([float(self.n)], dtype=torch.float64, device=dev)
        if self.n:
            sums = [self.n * mu for mu in self.mean]
        else:
            sums = [torch.zeros(d, dtype=torch.float64, device=dev) for d in self.dims]
        dist.all_reduce(count, group=group)
        for t in sums:
            dist.all_reduce(t, group=group)
        total = int(count.item())
        if total == 0:
            return self
        pooled = [t / total for t in sums]
        if self.n:
            state = self._shift(self._state(), pooled)
        else:  # a rank without data contributes zeros
            zeros_c = {(a, b): torch.zeros(self.dims[a], self.dims[b], dtype=self.dtype, device=dev) for a in range(L) for b in range(a, L)}
            state = {
                "C": zeros_c,
                "T": torch.zeros(L, dtype=torch.float64, device=dev),
                "V": [[torch.zeros(d, dtype=torch.float64, device=dev) for d in self.dims] for _ in range(L)],
                "P": torch.zeros(L, L, dtype=torch.float64, device=dev),
            }
        for c in state["C"].values():
            dist.all_reduce(c, group=group)
        dist.all_reduce(state["T"], group=group)
        dist.all_reduce(state["P"], group=group)
        for row in state["V"]:
            for v in row:
                dist.all_reduce(v, group=group)
        self.n, self.mean = total, pooled
        self.C, self.T, self.V, self.P = state["C"], state["T"], state["V"], state["P"]
        return self

    # ------------------------------------------------------------------ result

    def compute(self) -> Any:
        """The (L, L) CKA matrix of everything seen so far (NaN rows for zero-variance layers),
        as the kind the updates came in: a NumPy array or a tensor on their device."""
        return to_origin(self.compute_tensor(), self.origin)

    def compute_tensor(self) -> torch.Tensor:
        """compute(), always as a CPU tensor in the accumulation dtype."""
        minimum = 4 if self.debiased else 2
        if self.n < minimum:
            raise ValueError(
                f"{'debiased ' if self.debiased else ''}StreamingCKA needs at least {minimum} samples; got n = {self.n}"
            )
        n, L = self.n, len(self.dims)
        S = torch.zeros(L, L, dtype=torch.float64)
        for (a, b), c in self.C.items():
            S[a, b] = S[b, a] = (c / n).square().sum(dtype=torch.float64).cpu()
        zero = torch.zeros(L, L, dtype=torch.float64)
        T = self.T.cpu()
        st = KernelStats(n, S, self.P.cpu() / n**2, zero, zero, torch.zeros(L, dtype=torch.float64), T / n)
        raw = torch.stack([(mu.square().sum() + t / n) for mu, t in zip(self.mean, self.T)]).cpu()
        eps = torch.finfo(self.dtype).eps
        bad = (T / n) <= (32 * eps) ** 2 * raw
        return _finish(hsic_matrix(st, self.debiased), bad, self.debiased).to(self.dtype)
