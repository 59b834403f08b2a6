"""Layer-similarity analysis of a speech encoder: the work behind ``fastsim analyze``.

``analyze(model, audio)`` runs the model over the audio (``fastsim.speech.runner``), feeds every batch
of hidden states to a ``LayerSimilarity`` accumulator, and returns an ``Analysis``: one L x L
matrix per metric, the detected blocks (``fastsim.blocks``: none where a matrix has no block
structure), and what was skipped: clips whose audio cannot be used and clips for which the model's
hidden states hold NaN or Inf. ``Analysis.save(out)`` writes the matrices (npz, csv, json) and one
heatmap per metric, as a set (``fastsim.speech.files.staged_directory``): an interrupted save leaves
``out`` as it was, and result files of an earlier run with other metrics are removed.

Under ``torch.distributed`` (``torchrun``), pass ``distributed=True``: rank r takes clips r,
r + W, r + 2W, ...; the accumulators are all-reduced, so every rank ends with the result of
the whole set. Give each rank's reservoir its own seed (done here: seed + rank).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .accumulators.base import collective_device
from .blocks import MIN_CONTRAST, BlockStructure, block_structure
from .layer_similarity import LayerSimilarity
from .massive import THRESHOLD as MASSIVE_THRESHOLD
from .massive import MassivePass, WithoutMassive
from .metrics import names as metric_names
from .metrics import title as metric_title
from .speech.audio import SAMPLE_RATE
from .speech.files import staged_directory, write_json
from .speech.models import layer_labels
from .speech.runner import Batch, Failure, hidden_state_batches, load_clips, no_usable_audio

#: the files ``Analysis.save`` writes besides the per-metric ones
RESULT_FILES = ("matrices.npz", "analysis.json")


def result_files(metric: str) -> tuple[str, str]:
    """The files ``Analysis.save`` writes for one metric: its CSV matrix and its heatmap."""
    return f"{metric}.csv", f"heatmap_{metric}.png"


@dataclass
class Analysis:
    """The result of one analysis run."""

    model_name: str
    labels: list[str]
    matrices: dict[str, np.ndarray]
    blocks: dict[str, list[tuple[int, int]]]
    clips: int
    frames: int
    seconds_of_audio: float
    failures: list[Failure] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    #: per metric, what the block finder found (its blocks are ``blocks[metric]``; missing for a
    #: matrix with NaN, where no blocks are looked for)
    structures: dict[str, BlockStructure] = field(default_factory=dict)
    #: the massive-activation report, and the matrices without those frames when asked (``fastsim.massive``)
    massive: WithoutMassive | None = None

    def block_names(self, metric: str) -> list[str]:
        return [f"{self.labels[a]}-{self.labels[b]}" for a, b in self.blocks[metric]]

    def block_note(self, metric: str) -> str:
        """The blocks by layer name, or why there are none."""
        names = ", ".join(self.block_names(metric))
        st = self.structures.get(metric)
        if names:
            return names + ("" if st is None or st.contrast is None else f" (contrast {st.contrast:.3f})")
        if st is None:
            return "none (the matrix has NaN entries)" if not np.isfinite(self.matrices[metric]).all() else "none"
        return st.describe(self.labels).replace("no block structure: ", "none: no block structure; ")

    def summary(self) -> str:
        lines = [
            f"model: {self.model_name}",
            f"audio: {self.clips} clips, {self.seconds_of_audio:.1f} s, {self.frames} frames"
            + (f"; {len(self.failures)} skipped" if self.failures else ""),
            f"hidden states: {', '.join(self.labels)} ({self.settings.get('representation', 'frames')}, "
            f"{self.settings.get('protocol', 'exact')})",
        ]
        for f in self.failures:  # (reasons that begin with the clip's name do not repeat it)
            lines.append(f"  skipped {f.source}: {f.reason.removeprefix(f'{f.source}: ')}")
        for metric, m in self.matrices.items():
            L = m.shape[0]
            adjacent = np.array([m[i, i + 1] for i in range(L - 1)])
            lines.append(f"\n{metric_title(metric)} ({metric}):")
            lines.append("       " + "".join(f"{lab:>6}" for lab in self.labels))
            for i in range(L):
                lines.append(f"{self.labels[i]:>6} " + "".join(f"{v:6.2f}" for v in m[i]))
            lines.append(f"  neighbouring layers: mean {adjacent.mean():.3f}, min {adjacent.min():.3f}")
            lines.append(f"  blocks of mutually similar consecutive layers: {self.block_note(metric)}")
        if self.massive is not None:
            lines += self.massive.lines()
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "layers": self.labels,
            "clips": self.clips,
            "frames": self.frames,
            "seconds_of_audio": self.seconds_of_audio,
            "settings": self.settings,
            "metrics": {
                m: {"matrix": self.matrices[m].tolist(), "blocks": [list(b) for b in self.blocks[m]],
                    "block_layers": self.block_names(m), "block_structure": self._structure_json(m)}
                for m in self.matrices
            },
            "skipped": [{"source": f.source, "reason": f.reason} for f in self.failures],
            "massive_activations": None if self.massive is None else self.massive.to_json(),
        }

    def _structure_json(self, metric: str) -> dict[str, Any] | None:
        st = self.structures.get(metric)
        if st is None:
            return None
        return {"found": st.structured, "contrast": st.contrast, "min_contrast": st.min_contrast,
                "threshold": st.threshold, "candidates": [list(b) for b in st.candidates], "note": st.describe(self.labels)}

    def save(self, out: str | os.PathLike, *, heatmaps: bool = True) -> list[str]:
        """Write matrices.npz, <metric>.csv, analysis.json and heatmap_<metric>.png into out, as a set:
        staged, then moved into place (``staged_directory``); files of these names for metrics this
        analysis lacks (an earlier run's) are removed. Returns the paths written."""
        stale = [name for m in metric_names() for name in (*result_files(m), f"heatmap_{m}_without_massive.png")]
        with staged_directory(out, stale, last="analysis.json") as stage:
            names = self._write(stage, heatmaps)
        return [os.path.join(os.fspath(out), n) for n in names]

    def _write(self, folder: str, heatmaps: bool) -> list[str]:
        names = list(RESULT_FILES[:1])
        np.savez(os.path.join(folder, "matrices.npz"), layers=np.array(self.labels), **self.matrices,
                 **(self.massive.arrays() if self.massive is not None else {}))
        for metric, m in self.matrices.items():
            csv = result_files(metric)[0]
            with open(os.path.join(folder, csv), "w") as fh:
                fh.write("layer," + ",".join(self.labels) + "\n")
                for lab, row in zip(self.labels, m):
                    fh.write(lab + "," + ",".join(repr(float(v)) for v in row) + "\n")
            names.append(csv)
        write_json(os.path.join(folder, "analysis.json"), self.to_json(), indent=1)
        names.append("analysis.json")
        if heatmaps:
            from .heatmap import save_heatmap

            for metric, m in self.matrices.items():
                rep = self.settings.get("representation", "frames")
                title = (f"{self.model_name}\n{metric_title(metric)}: {self.frames} frames of "
                         f"{self.clips} clips" + ("" if rep == "frames" else f", {rep} per clip"))
                png = result_files(metric)[1]
                # the shared 0-1 scale, widened where a metric leaves it (negative correlations, CKNNA > 1)
                finite = m[np.isfinite(m)]
                lo = min(0.0, float(finite.min())) if finite.size else 0.0
                hi = max(1.0, float(finite.max())) if finite.size else 1.0
                save_heatmap(m, self.labels, os.path.join(folder, png), title=title, vmin=lo, vmax=hi,
                             colorbar_label=metric_title(metric), blocks=self.blocks[metric])
                names.append(png)
            if self.massive is not None:
                names += [os.path.basename(p) for p in self.massive.save_heatmaps(folder, self.model_name)]
        return names


def nonfinite_clips(batch: Batch) -> dict[int, int]:
    """{clip index in the batch: the first hidden state (layer row) with NaN or Inf in its frames}."""
    bad: dict[int, int] = {}
    for layer, h in enumerate(batch.hidden_states):
        finite = torch.isfinite(h).flatten(2).all(-1) | ~batch.mask.to(h.device)  # (B, T): padding does not count
        for b in torch.nonzero(~finite.all(1)).flatten().tolist():
            bad.setdefault(b, layer)
    return bad


def analyze(
    model: torch.nn.Module,
    audio: Sequence[Any],
    *,
    metrics: Sequence[str] = ("cosine", "cka", "mutual_knn"),
    model_name: str | None = None,
    sample_rate: int | None = None,
    batch_size: int = 8,
    strict: bool = False,
    progress: bool = False,
    distributed: bool = False,
    block_threshold: float | None = None,
    block_min_contrast: float = MIN_CONTRAST,
    massive_threshold: float | None = MASSIVE_THRESHOLD,
    without_massive: bool = False,
    **similarity_options: Any,
) -> Analysis:
    """Similarity matrices of every pair of hidden states of ``model`` over ``audio``.

    audio: paths (soundfile formats) or 1-D arrays (with ``sample_rate``). Clips that cannot be
    used are skipped and listed in ``Analysis.failures`` (``strict=True``: the first one raises);
    so are clips for which the model's hidden states hold NaN or Inf. block_threshold and
    block_min_contrast go to ``fastsim.blocks.block_structure``. similarity_options go to
    ``LayerSimilarity`` (k, debiased, representation, frames, include_input, protocol, max_samples,
    batch_size -> per_batch_size, seed, precision).
    massive_threshold: report the frames and dimensions carrying more than this share of a layer's
    variance (``fastsim.massive``; None: no report); without_massive: also the matrices without
    those frames."""
    opts = dict(similarity_options)
    if "per_batch_size" in opts:
        opts["batch_size"] = opts.pop("per_batch_size")
    rank, world = 0, 1
    if distributed:
        import torch.distributed as dist

        if not dist.is_initialized():
            raise RuntimeError("distributed=True needs torch.distributed initialised (e.g. launched with torchrun)")
        rank, world = dist.get_rank(), dist.get_world_size()
        opts["seed"] = opts.get("seed", 0) + rank
    acc = LayerSimilarity(metrics, **opts)
    watch = None if massive_threshold is None else MassivePass(threshold=massive_threshold, without=without_massive)
    sources = list(audio)
    clips, failures = load_clips(sources[rank::world], sample_rate=sample_rate, strict=strict)
    all_labels = layer_labels(model)
    indexed = [(str(i), wave) for i, (_, wave) in enumerate(clips)]  # (names may repeat; indices do not)
    used, frames, samples = 0, 0, 0
    for batch in hidden_state_batches(model, indexed, batch_size=batch_size, progress=progress and rank == 0):
        batch = _add(acc, batch, [clips[int(n)][0] for n in batch.names], all_labels, failures, strict)
        if watch is not None:
            watch.add(batch, [clips[int(n)][0] for n in batch.names])
        used += len(batch.names)
        frames += int(batch.mask.sum())
        samples += sum(clips[int(n)][1].size for n in batch.names)
    counts = [float(used), float(frames), samples / SAMPLE_RATE]
    if distributed:
        import torch.distributed as dist

        totals = torch.tensor(counts, dtype=torch.float64, device=collective_device())
        dist.all_reduce(totals)  # every rank learns the totals before any rank can raise
        counts = totals.tolist()
        gathered: list = [None] * world
        dist.all_gather_object(gathered, failures)
        failures = [f for part in gathered for f in part]
    if counts[0] == 0:
        raise no_usable_audio(len(sources), failures)
    if distributed:
        acc.all_reduce()
    n_clips, frames, seconds = int(counts[0]), int(counts[1]), counts[2]
    matrices = {m: v.numpy() for m, v in acc.compute().items()}
    labels = all_labels if acc.include_input else all_labels[1:]
    structures = {m: block_structure(v, block_threshold, min_contrast=block_min_contrast)
                  for m, v in matrices.items() if np.isfinite(v).all()}
    blocks = {m: structures[m].blocks if m in structures else [] for m in matrices}
    settings = {"metrics": list(acc.metrics), "representation": acc.representation, "protocol": acc.protocol,
                "k": acc.k, "debiased": acc.debiased, "max_samples": acc.max_samples, "include_input": acc.include_input,
                "precision": acc.precision, "block_threshold": block_threshold,
                "block_min_contrast": block_min_contrast, "ranks": world}
    result = Analysis(model_name or type(model).__name__, labels, matrices, blocks, n_clips, frames, seconds,
                      failures, settings, structures)
    if watch is not None:
        result.massive = watch.finish(
            all_labels, labels, matrices, lambda: LayerSimilarity(metrics, **opts),
            lambda: hidden_state_batches(model, indexed, batch_size=batch_size),
            lambda b: [clips[int(n)][0] for n in b.names], make_cka=lambda: LayerSimilarity(["cka"], **opts),
            block_threshold=block_threshold, distributed=distributed)
    return result


def _add(acc: LayerSimilarity, batch: Batch, names: list[str], labels: list[str], failures: list[Failure],
         strict: bool) -> Batch:
    """Add a batch to the accumulator; clips whose hidden states hold NaN or Inf are left out and
    listed as failures (strict: raised). Returns the batch that was added (possibly empty)."""
    try:
        acc.update(batch.hidden_states, batch.mask)
        return batch
    except ValueError:
        bad = nonfinite_clips(batch)
        if not bad:
            raise
    # LayerSimilarity checks a batch in full before it changes any state: the rejected one left no trace
    for b, layer in sorted(bad.items()):
        reason = (f"{names[b]}: the model's hidden states for this clip hold NaN or Inf (from hidden state "
                  f"{labels[layer]} on)")
        if strict:
            raise ValueError(reason)
        failures.append(Failure(names[b], reason))
    keep = [b for b in range(len(names)) if b not in bad]
    kept = Batch(tuple(h[keep] for h in batch.hidden_states), batch.mask[keep], [batch.names[b] for b in keep])
    if keep:
        acc.update(kept.hidden_states, kept.mask)
    return kept
