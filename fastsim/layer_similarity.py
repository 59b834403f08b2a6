"""LayerSimilarity: the layer-by-layer similarity matrices of a model, accumulated over batches.

Feed it every batch's hidden states, one (B, T, d) tensor per layer (the stack input first, as
Hugging Face's ``output_hidden_states`` returns them), with the frame-level attention mask; ask
``compute()`` for the L x L matrix of each metric.

Samples (what the metrics compare), by ``representation``:

* ``"frames"``: every frame the mask marks valid; padding frames are dropped.
* ``"mean"``: one vector per utterance, the mean of its valid frames.
* ``"flatten"``: one vector per utterance, its first ``frames`` frame positions side by side
  (positions the mask marks as padding, and positions past the end, are zero frames), the seed
  paper's protocol (1 s = 49 frames at 16 kHz). With right-padded batches, as Hugging Face's
  feature extractors make them, these are the utterance's first frames.

Metrics: ``"cosine"`` (mean per-sample cosine), ``"cka"`` (linear; ``debiased`` picks the
estimator), ``"rbf_cka"`` (median-heuristic sigma) and ``"mutual_knn"`` (mutual kNN with ``k``) and ``"cknna"``.

Protocols, by ``protocol``:

* ``"exact"``: cosine and linear CKA stream exactly over all samples (sums of per-sample cosines;
  ``StreamingCKA``). mutual_knn, cknna and rbf_cka, which need all samples at once, use a uniform sample of
  at most ``max_samples`` samples: every sample gets a random key and the ``max_samples``
  smallest keys are kept (bottom-k sampling). That is a uniform sample without replacement of
  everything seen, and two such samples merge by keeping the smallest keys of both.
* ``"per_batch"``: the seed paper's protocol. Samples are grouped into batches of
  ``batch_size`` (128 in the paper); each metric is computed within each full batch, and the
  matrices are averaged over batches. A last, partial batch is used only when no full batch exists.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from . import api as _metrics
from . import options
from .streaming import StreamingCKA

METRICS = ("cosine", "cka", "rbf_cka", "mutual_knn", "cknna")
REPRESENTATIONS = ("frames", "mean", "flatten")
PROTOCOLS = ("exact", "per_batch")


def collective_device(group: Any = None) -> torch.device:
    """Where tensors for a torch.distributed collective must be: NCCL reduces CUDA tensors only,
    gloo takes CPU tensors."""
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else torch.device("cpu")


class LayerSimilarity:
    """Accumulates L x L similarity matrices over batches of hidden states (see module docs)."""

    def __init__(
        self,
        metrics: Sequence[str] = ("cosine", "cka"),
        *,
        k: int = 10,
        debiased: bool = False,
        representation: str = "frames",
        frames: int = 49,
        include_input: bool = True,
        protocol: str = "exact",
        max_samples: int = 10_000,
        batch_size: int = 128,
        seed: int = 0,
        precision: str = "highest",
    ) -> None:
        if isinstance(metrics, str) or not metrics:
            raise TypeError(f"metrics must be a non-empty sequence of names from {METRICS}; got {metrics!r}")
        for m in metrics:
            options.check_choice("metric", m, METRICS)
        self.metrics = tuple(dict.fromkeys(metrics))
        self.representation = options.check_choice("representation", representation, REPRESENTATIONS)
        self.protocol = options.check_choice("protocol", protocol, PROTOCOLS)
        options.check_choice("precision", precision, options.PRECISIONS)
        for name, value, low in (("k", k, 1), ("frames", frames, 1), ("max_samples", max_samples, 2), ("batch_size", batch_size, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
        self.k, self.debiased, self.frames = k, debiased, frames
        self.include_input, self.max_samples, self.batch_size = include_input, max_samples, batch_size
        self.precision = precision
        self.generator = torch.Generator().manual_seed(seed)
        self.reset()

    def reset(self) -> None:
        self.samples_seen = 0
        self.cka = StreamingCKA(debiased=self.debiased, precision=self.precision) if "cka" in self.metrics else None
        self.cos_sum: torch.Tensor | None = None
        self.keys: torch.Tensor | None = None  # bottom-k reservoir: (m,) keys and (L, m, d) samples
        self.kept: torch.Tensor | None = None
        self.pending: list[torch.Tensor] = []  # per_batch: samples waiting for a full batch
        self.batch_sums: dict[str, torch.Tensor] = {}
        self.batches = 0

    # ------------------------------------------------------------------ input

    def _samples(self, hidden_states: Sequence[torch.Tensor], mask: torch.Tensor | None) -> torch.Tensor:
        """(L, S, D) samples of this batch, by the chosen representation."""
        states = list(hidden_states)
        if not states:
            raise ValueError("hidden_states must hold at least one layer")
        if not self.include_input:
            states = states[1:]
            if not states:
                raise ValueError("include_input=False leaves no layer: hidden_states has only the stack input")
        shape = tuple(states[0].shape)
        for i, h in enumerate(states):
            if not isinstance(h, torch.Tensor) or h.dim() != 3 or tuple(h.shape) != shape:
                raise ValueError(
                    f"hidden_states must be (batch, frames, features) tensors of one shape; layer {i} has "
                    f"{tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__}, layer 0 {shape}"
                )
        B, T, _ = shape
        if mask is None:
            valid = torch.ones(B, T, dtype=torch.bool, device=states[0].device)
        else:
            if tuple(mask.shape) != (B, T):
                raise ValueError(f"mask must be (batch, frames) = {(B, T)} to match hidden_states; got {tuple(mask.shape)}")
            valid = mask.to(states[0].device).bool()
        wide = states[0].dtype == torch.float64
        h = torch.stack([s.detach() if wide else s.detach().float() for s in states])
        if self.representation == "frames":
            return h[:, valid]  # (L, valid frames, d)
        lengths = valid.sum(1)
        if self.representation == "mean":
            if bool((lengths == 0).any()):
                raise ValueError("an utterance in this batch has no valid frame (mask all zero)")
            w = valid.to(h.dtype)
            return (h * w[None, :, :, None]).sum(2) / lengths.to(h.dtype)[None, :, None]
        # flatten: the first `frames` valid frames of each utterance (padding frames zeroed)
        out = torch.zeros(h.shape[0], B, self.frames, h.shape[3], dtype=h.dtype, device=h.device)
        take = min(T, self.frames)
        keep = valid[:, :take].to(h.dtype)
        out[:, :, :take] = h[:, :, :take] * keep[None, :, :, None]
        return out.reshape(h.shape[0], B, -1)

    def update(self, hidden_states: Sequence[torch.Tensor], mask: torch.Tensor | None = None) -> "LayerSimilarity":
        """Add one batch: hidden_states (one (B, T, d) tensor per layer) and its (B, T) frame mask."""
        x = self._samples(hidden_states, mask)
        if x.shape[1] == 0:
            return self
        self.samples_seen += x.shape[1]
        if self.protocol == "per_batch":
            self.pending.append(x)
            self._flush(final=False)
            return self
        if "cosine" in self.metrics:
            c = _metrics.similarity_matrix(list(x), "cosine", precision=self.precision).double() * x.shape[1]
            self.cos_sum = c if self.cos_sum is None else self.cos_sum + c.to(self.cos_sum.device)
        if self.cka is not None:
            self.cka.update(list(x))
        if {"mutual_knn", "cknna", "rbf_cka"} & set(self.metrics):
            self._reservoir(x)
        return self

    def _reservoir(self, x: torch.Tensor) -> None:
        keys = torch.rand(x.shape[1], generator=self.generator, dtype=torch.float64)
        self._keep_smallest([(keys, x)])

    def _keep_smallest(self, pieces: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Make the sample the `max_samples` smallest keys of this one and the (keys, samples)
        pieces together: the bottom-k sample of their union."""
        if self.keys is not None:
            pieces = [(self.keys, self.kept), *pieces]
        dev = pieces[0][1].device
        keys = torch.cat([k for k, _ in pieces])
        kept = torch.cat([x.to(dev) for _, x in pieces], 1)
        if keys.numel() > self.max_samples:
            keys, order = torch.topk(keys, self.max_samples, largest=False)
            kept = kept[:, order.to(dev)]
        self.keys, self.kept = keys, kept

    def _matrices(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every requested metric on one set of samples (L, S, D)."""
        layers, out = list(x), {}
        n = x.shape[1]
        for m in self.metrics:
            if m == "cosine":
                out[m] = _metrics.similarity_matrix(layers, "cosine", precision=self.precision)
            elif m == "cka":
                out[m] = _metrics.similarity_matrix(layers, "cka", debiased=self.debiased, precision=self.precision)
            elif m == "rbf_cka":
                out[m] = _metrics.similarity_matrix(layers, "cka", kernel="rbf", debiased=self.debiased, precision=self.precision)
            elif m == "mutual_knn":
                out[m] = _metrics.similarity_matrix(layers, "mutual_knn", k=min(self.k, n - 1), precision=self.precision)
            else:
                out[m] = _metrics.similarity_matrix(layers, "cknna", k=min(self.k, n - 1), precision=self.precision)
        return {m: v.double().cpu() for m, v in out.items()}

    def _flush(self, final: bool) -> None:
        """per_batch: compute every full batch of pending samples (and, if final, a lone partial one)."""
        if not self.pending:
            return
        x = torch.cat(self.pending, 1)
        start = 0
        while x.shape[1] - start >= self.batch_size:
            self._add_batch(x[:, start : start + self.batch_size])
            start += self.batch_size
        rest = x[:, start:]
        if final and self.batches == 0 and rest.shape[1] >= 4:
            self._add_batch(rest)
            rest = rest[:, :0]
        self.pending = [rest] if rest.shape[1] else []

    def _add_batch(self, x: torch.Tensor) -> None:
        for m, v in self._matrices(x).items():
            self.batch_sums[m] = v if m not in self.batch_sums else self.batch_sums[m] + v
        self.batches += 1

    # ------------------------------------------------------------------ result

    def compute(self) -> dict[str, torch.Tensor]:
        """{metric: (L, L) float64 CPU tensor} over everything seen so far."""
        if self.samples_seen == 0:
            raise ValueError("no samples yet: call update() first")
        if self.protocol == "per_batch":
            self._flush(final=False)
            if self.batches:
                return {m: v / self.batches for m, v in self.batch_sums.items()}
            # No full batch yet: the partial one, computed on the side (the state is unchanged).
            rest = torch.cat(self.pending, 1) if self.pending else None
            if rest is None or rest.shape[1] < 4:
                raise ValueError(f"per_batch needs at least 4 samples; got {self.samples_seen}")
            return self._matrices(rest)
        out: dict[str, torch.Tensor] = {}
        if "cosine" in self.metrics:
            out["cosine"] = (self.cos_sum / self.samples_seen).cpu()
        if self.cka is not None:
            out["cka"] = self.cka.compute_tensor().double()
        if self.kept is not None:
            sampled = [m for m in self.metrics if m in ("mutual_knn", "cknna", "rbf_cka")]
            full = self._matrices(self.kept)
            out.update({m: full[m] for m in sampled})
        return {m: out[m] for m in self.metrics}

    def all_reduce(self, group: Any = None) -> "LayerSimilarity":
        """Combine the accumulators of every rank of a torch.distributed group, in place.

        Sums (cosine, per-batch matrices, counts) are all-reduced; linear CKA goes through
        ``StreamingCKA.all_reduce``; the bottom-k samples are all-gathered and the smallest keys
        kept. Give each rank its own ``seed`` so that their sampling keys are independent.
        Pending per_batch samples stay on their rank (each rank batches its own data).
        """
        import torch.distributed as dist

        dev = collective_device(group)

        def reduce(t: torch.Tensor) -> torch.Tensor:
            t = t.to(dev)
            dist.all_reduce(t, group=group)
            return t.cpu()

        if self.protocol == "per_batch":
            self._flush(final=False)
        ready = float(self.batches > 0 if self.protocol == "per_batch" else self.samples_seen > 0)
        if reduce(torch.tensor([ready], dtype=torch.float64)).item() < dist.get_world_size(group):
            raise ValueError(
                "all_reduce needs data on every rank (with per_batch: at least one full batch on every rank)"
            )  # raised on every rank together, so none is left waiting in a collective
        count = reduce(torch.tensor([float(self.samples_seen)], dtype=torch.float64))
        if self.protocol == "per_batch":
            self.batches = int(reduce(torch.tensor([float(self.batches)], dtype=torch.float64)).item())
            self.batch_sums = {m: reduce(self.batch_sums[m].clone()) for m in self.metrics}
        else:
            if "cosine" in self.metrics:
                self.cos_sum = reduce(self.cos_sum.clone())
            if self.cka is not None:
                self.cka.all_reduce(group)
            if self.kept is not None:
                gathered: list = [None] * dist.get_world_size(group)
                dist.all_gather_object(gathered, (self.keys, self.kept.cpu()), group=group)
                self.keys = self.kept = None  # every rank's sample, this one's included, is in gathered
                self._keep_smallest(gathered)
        self.samples_seen = int(count.item())
        return self

    def _settings(self) -> tuple:
        return (self.metrics, self.representation, self.protocol, self.debiased, self.k, self.frames,
                self.include_input, self.max_samples, self.batch_size)

    def merge(self, other: "LayerSimilarity") -> "LayerSimilarity":
        """Fold in another accumulator (disjoint data, same settings); returns self."""
        if not isinstance(other, LayerSimilarity):
            raise TypeError(f"other must be a LayerSimilarity; got {type(other).__name__}")
        if other._settings() != self._settings():
            raise ValueError("can only merge accumulators with the same settings (metrics, representation, protocol, ...)")
        if self.protocol == "per_batch":
            for m, v in other.batch_sums.items():
                self.batch_sums[m] = v if m not in self.batch_sums else self.batch_sums[m] + v
            self.batches += other.batches
            self.pending += other.pending
        else:
            if other.cos_sum is not None:
                self.cos_sum = other.cos_sum if self.cos_sum is None else self.cos_sum + other.cos_sum
            if self.cka is not None:
                self.cka.merge(other.cka)
            if other.keys is not None:
                self._keep_smallest([(other.keys, other.kept)])
        self.samples_seen += other.samples_seen
        return self
