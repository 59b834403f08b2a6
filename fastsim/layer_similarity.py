"""LayerSimilarity: the layer-by-layer similarity matrices of a model, accumulated over batches.

Feed it every batch's hidden states, one (B, T, d) tensor per layer (the stack input first, as
Hugging Face's ``output_hidden_states`` returns them), with the frame-level attention mask; ask
``compute()`` for the L x L matrix of each metric. It is a collection of accumulators
(``fastsim.accumulators``): one exact streaming state per metric that has one, one bounded
uniform sample shared by the others, or one per-batch average.

Samples (what the metrics compare), by ``representation``:

* ``"frames"``: every frame the mask marks valid; padding frames are dropped.
* ``"mean"``: one vector per utterance, the mean of its valid frames.
* ``"flatten"``: one vector per utterance, its first ``frames`` frame positions side by side
  (positions the mask marks as padding, and positions past the end, are zero frames), the seed
  paper's protocol (1 s = 49 frames at 16 kHz). With right-padded batches, as Hugging Face's
  feature extractors make them, these are the utterance's first frames.

Metrics: any names of ``fastsim.metrics.names()`` ("cosine", "cka", "rbf_cka", "mutual_knn",
"cknna", ...); their options (``k``, ``debiased``, ``sigma``, ...) are given once and go to every
metric that declares them.

Protocols, by ``protocol``:

* ``"exact"``: metrics with an exact streaming state (cosine: sums of per-sample cosines; linear
  CKA: ``StreamingCKA``) stream over all samples. The others, which need all samples at once, use
  a uniform sample of at most ``max_samples`` samples (``BottomKSample``), which stays uniform when
  two accumulators merge.
* ``"per_batch"``: the seed paper's protocol. Samples are grouped into batches of
  ``batch_size`` (128 in the paper); each metric is computed within each full batch, and the
  matrices are averaged over batches. A last, partial batch is used only when no full batch exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from typing_extensions import Self

from .accumulators import BottomKSample, PerBatch
from .accumulators.base import all_reduce_sum
from .core import threads
from .core.errors import check_choice, check_flag, check_int
from .core.inputs import first_nonfinite_row
from .core.precision import PRECISIONS
from .metrics import registry

REPRESENTATIONS = ("frames", "mean", "flatten")
PROTOCOLS = ("exact", "per_batch")


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
        **options: Any,
    ) -> None:
        if isinstance(metrics, str) or not metrics:
            raise TypeError(f"metrics must be a non-empty sequence of names from {registry.names()}; got {metrics!r}")
        for m in metrics:
            check_choice("metric", m, registry.names())
        self.metrics = tuple(dict.fromkeys(metrics))
        self.representation = check_choice("representation", representation, REPRESENTATIONS)
        self.protocol = check_choice("protocol", protocol, PROTOCOLS)
        self.precision = check_choice("precision", precision, PRECISIONS)
        self.include_input = check_flag("include_input", include_input)
        self.frames = check_int("frames", frames, 1)
        self.max_samples = check_int("max_samples", max_samples, 2)
        self.batch_size = check_int("batch_size", batch_size, 2)
        self.seed = check_int("seed", seed)
        given = {"k": k, "debiased": debiased, **options}
        known = {o for m in self.metrics for o in registry.get(m).option_names()} | {"k", "debiased"}
        unknown = sorted(set(given) - known)
        if unknown:
            raise TypeError(f"LayerSimilarity got option(s) {', '.join(map(repr, unknown))} that none of {self.metrics} takes")
        self.options = {
            m: registry.get(m).resolve_options({key: v for key, v in given.items() if key in registry.get(m).option_names()})
            for m in self.metrics
        }
        # the resolved k and debiased (validated even when no chosen metric uses them)
        self.k = check_int("k", k, 1)
        self.debiased = check_flag("debiased", debiased)
        if self.protocol == "per_batch":
            for m in self.metrics:
                registry.get(m).check_samples(self.options[m], self.batch_size)
        self.reset()

    def reset(self) -> None:
        self.samples_seen = 0
        self.exact = {}
        self.sample = None
        self.per_batch = None
        if self.protocol == "per_batch":
            self.per_batch = PerBatch(self.batch_size, self._matrices)
            return
        for m in self.metrics:
            spec = registry.get(m)
            if spec.streaming == "exact":
                self.exact[m] = spec.accumulator(**self.options[m], precision=self.precision)
        if any(registry.get(m).streaming != "exact" for m in self.metrics):
            self.sample = BottomKSample(self.max_samples, self.seed)

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
        shape = tuple(states[0].shape) if isinstance(states[0], torch.Tensor) else None
        for i, h in enumerate(states):
            if not isinstance(h, torch.Tensor) or h.dim() != 3 or tuple(h.shape) != shape:
                raise ValueError(
                    f"hidden_states must be (batch, frames, features) tensors of one shape; layer {i} has "
                    f"{tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__}, layer 0 {shape}"
                )
            if not h.is_floating_point():
                raise TypeError(f"hidden_states must be floating point; layer {i} is {h.dtype}")
        B, T, _ = shape
        if mask is None:
            valid = torch.ones(B, T, dtype=torch.bool, device=states[0].device)
        else:
            if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (B, T):
                got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
                raise ValueError(f"mask must be a (batch, frames) = {(B, T)} tensor to match hidden_states; got {got}")
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

    def update(self, hidden_states: Sequence[torch.Tensor], mask: torch.Tensor | None = None) -> Self:
        """Add one batch: hidden_states (one (B, T, d) tensor per layer) and its (B, T) frame mask.

        The batch is checked in full before any state changes: a rejected batch (NaN or Inf in a
        valid frame, shapes that do not fit) leaves the accumulator as it was. On the CPU the many
        small operations run single-threaded and the large ones on fastsim's worker pool
        (``fastsim.core.threads``), so a busy machine slows it down only in proportion."""
        try:
            device = hidden_states[0].device
        except (AttributeError, IndexError, TypeError, KeyError):
            device = torch.device("cpu")  # _samples says what is wrong with the input
        with threads.single_threaded(device):
            return self._update(hidden_states, mask)

    def _update(self, hidden_states: Sequence[torch.Tensor], mask: torch.Tensor | None) -> Self:
        x = self._samples(hidden_states, mask)
        if x.shape[1] == 0:
            return self
        for layer in range(x.shape[0]):
            row = first_nonfinite_row(x[layer])
            if row is not None:
                raise ValueError(
                    f"hidden_states: layer {layer} has NaN or Inf in sample {row} of this batch "
                    "(the batch was not added)"
                )
        self.samples_seen += x.shape[1]
        if self.per_batch is not None:
            self.per_batch.update(x)
            return self
        layers = list(x)
        for acc in self.exact.values():
            acc.update(layers)
        if self.sample is not None:
            self.sample.update(x)
        return self

    # ------------------------------------------------------------------ result

    def _matrices(self, x: torch.Tensor, metrics: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Every requested metric (or those given) on one set of samples (L, S, D), as float64 CPU."""
        layers = list(x)
        out = {}
        for m in self.metrics if metrics is None else metrics:
            spec = registry.get(m)
            try:
                spec.check_samples(self.options[m], x.shape[1])
            except ValueError as e:
                raise ValueError(f"{e} ({x.shape[1]} {self.representation} samples were kept)") from None
            out[m] = spec.matrix(layers, precision=self.precision, **self.options[m]).double().cpu()
        return out

    def compute(self) -> dict[str, torch.Tensor]:
        """{metric: (L, L) float64 CPU tensor} over everything seen so far."""
        if self.samples_seen == 0:
            raise ValueError("no samples yet: call update() first")
        if self.per_batch is not None:
            return self.per_batch.compute()
        out: dict[str, torch.Tensor] = {}
        for m, acc in self.exact.items():
            r = acc.compute()
            out[m] = (r if isinstance(r, torch.Tensor) else torch.as_tensor(r)).double().cpu()
        sampled = [m for m in self.metrics if m not in self.exact]
        if sampled:
            out.update(self._matrices(self.sample.compute(), sampled))
        return {m: out[m] for m in self.metrics}

    def _accumulators(self) -> list:
        if self.per_batch is not None:
            return [self.per_batch]
        return [*(self.exact[m] for m in self.metrics if m in self.exact), *([self.sample] if self.sample else [])]

    def settings(self) -> tuple:
        return (self.metrics, self.representation, self.protocol, self.frames, self.include_input,
                self.max_samples, self.batch_size, repr(sorted((m, sorted(o.items())) for m, o in self.options.items())))

    def merge(self, other: LayerSimilarity) -> Self:
        """Fold in another accumulator (disjoint data, same settings); returns self."""
        if not isinstance(other, LayerSimilarity):
            raise TypeError(f"other must be a LayerSimilarity; got {type(other).__name__}")
        if other.settings() != self.settings():
            raise ValueError("can only merge accumulators with the same settings (metrics, representation, protocol, ...)")
        for mine, theirs in zip(self._accumulators(), other._accumulators()):
            mine.merge(theirs)
        self.samples_seen += other.samples_seen
        return self

    def all_reduce(self, group: Any = None) -> Self:
        """Combine the accumulators of every rank of a torch.distributed group, in place.

        Each accumulator reduces itself (``fastsim.accumulators``): sums are all-reduced, linear
        CKA goes through ``StreamingCKA.all_reduce``, the bounded samples are gathered and the
        smallest keys kept. Give each rank its own ``seed`` so that their sampling keys are
        independent. Pending per_batch samples stay on their rank (each rank batches its own data).
        """
        import torch.distributed as dist

        def total(value: float) -> float:
            return float(all_reduce_sum(torch.tensor([value], dtype=torch.float64), group).item())

        if self.per_batch is not None:
            self.per_batch.flush()
        ready = self.per_batch.batches > 0 if self.per_batch is not None else self.samples_seen > 0
        if total(float(ready)) < dist.get_world_size(group):
            raise ValueError(
                "all_reduce needs data on every rank (with per_batch: at least one full batch on every rank)"
            )  # raised on every rank together, so none is left waiting in a collective
        count = total(float(self.samples_seen))
        for acc in self._accumulators():  # the same order on every rank
            acc.all_reduce(group)
        self.samples_seen = int(count)
        return self
