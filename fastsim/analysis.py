"""Layer-similarity analysis of a speech encoder: the work behind ``fastsim analyze``.

``analyze(model, audio)`` runs the model over the audio (``fastsim.speech.runner``), feeds every batch
of hidden states to a ``LayerSimilarity`` accumulator, and returns an ``Analysis``: one L x L
matrix per metric, the detected blocks (``fastsim.blocks``), and what was skipped.
``Analysis.save(out)`` writes the matrices (npz, csv, json) and one heatmap per metric.

Under ``torch.distributed`` (``torchrun``), pass ``distributed=True``: rank r takes clips r,
r + W, r + 2W, ...; the accumulators are all-reduced, so every rank ends with the result of
the whole set. Give each rank's reservoir its own seed (done here: seed + rank).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .blocks import find_blocks
from .layer_similarity import LayerSimilarity, collective_device
from .metrics import title as metric_title
from .speech.audio import SAMPLE_RATE
from .speech.models import layer_labels
from .speech.runner import Failure, hidden_state_batches, load_clips, no_usable_audio


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

    def block_names(self, metric: str) -> list[str]:
        return [f"{self.labels[a]}-{self.labels[b]}" for a, b in self.blocks[metric]]

    def summary(self) -> str:
        lines = [
            f"model: {self.model_name}",
            f"audio: {self.clips} clips, {self.seconds_of_audio:.1f} s, {self.frames} frames"
            + (f"; {len(self.failures)} skipped" if self.failures else ""),
            f"hidden states: {', '.join(self.labels)} ({self.settings.get('representation', 'frames')}, "
            f"{self.settings.get('protocol', 'exact')})",
        ]
        for f in self.failures:
            lines.append(f"  skipped {f.source}: {f.reason}")
        for metric, m in self.matrices.items():
            L = m.shape[0]
            adjacent = np.array([m[i, i + 1] for i in range(L - 1)])
            lines.append(f"\n{metric_title(metric)} ({metric}):")
            lines.append("       " + "".join(f"{lab:>6}" for lab in self.labels))
            for i in range(L):
                lines.append(f"{self.labels[i]:>6} " + "".join(f"{v:6.2f}" for v in m[i]))
            lines.append(f"  neighbouring layers: mean {adjacent.mean():.3f}, min {adjacent.min():.3f}")
            lines.append(f"  blocks of mutually similar consecutive layers: {', '.join(self.block_names(metric)) or 'none'}")
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
                    "block_layers": self.block_names(m)}
                for m in self.matrices
            },
            "skipped": [{"source": f.source, "reason": f.reason} for f in self.failures],
        }

    def save(self, out: str | os.PathLike, *, heatmaps: bool = True) -> list[str]:
        """Write matrices.npz, <metric>.csv, analysis.json and heatmap_<metric>.png into out."""
        os.makedirs(out, exist_ok=True)
        written = [os.path.join(out, "matrices.npz")]
        np.savez(written[0], layers=np.array(self.labels), **self.matrices)
        for metric, m in self.matrices.items():
            path = os.path.join(out, f"{metric}.csv")
            with open(path, "w") as fh:
                fh.write("layer," + ",".join(self.labels) + "\n")
                for lab, row in zip(self.labels, m):
                    fh.write(lab + "," + ",".join(repr(float(v)) for v in row) + "\n")
            written.append(path)
        path = os.path.join(out, "analysis.json")
        with open(path, "w") as fh:
            json.dump(self.to_json(), fh, indent=1)
        written.append(path)
        if heatmaps:
            from .heatmap import save_heatmap

            for metric, m in self.matrices.items():
                rep = self.settings.get("representation", "frames")
                title = (f"{self.model_name}\n{metric_title(metric)}: {self.frames} frames of "
                         f"{self.clips} clips" + ("" if rep == "frames" else f", {rep} per clip"))
                written.append(save_heatmap(m, self.labels, os.path.join(out, f"heatmap_{metric}.png"), title=title,
                                            colorbar_label=metric_title(metric), blocks=self.blocks[metric]))
        return written


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
    **similarity_options: Any,
) -> Analysis:
    """Similarity matrices of every pair of hidden states of ``model`` over ``audio``.

    audio: paths (soundfile formats) or 1-D arrays (with ``sample_rate``). Clips that cannot be
    used are skipped and listed in ``Analysis.failures`` (``strict=True``: the first one raises).
    similarity_options go to ``LayerSimilarity`` (k, debiased, representation, frames,
    include_input, protocol, max_samples, batch_size -> per_batch_size, seed, precision)."""
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
    sources = list(audio)
    clips, failures = load_clips(sources[rank::world], sample_rate=sample_rate, strict=strict)
    frames = 0
    for batch in hidden_state_batches(model, clips, batch_size=batch_size, progress=progress and rank == 0):
        acc.update(batch.hidden_states, batch.mask)
        frames += int(batch.mask.sum())
    counts = [float(len(clips)), float(frames), sum(c[1].size for c in clips) / SAMPLE_RATE]
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
    labels = layer_labels(model)
    if not acc.include_input:
        labels = labels[1:]
    blocks = {}
    for m, v in matrices.items():
        blocks[m] = find_blocks(v, block_threshold) if np.isfinite(v).all() else []
    settings = {"metrics": list(acc.metrics), "representation": acc.representation, "protocol": acc.protocol,
                "k": acc.k, "debiased": acc.debiased, "max_samples": acc.max_samples, "include_input": acc.include_input,
                "precision": acc.precision, "block_threshold": block_threshold, "ranks": world}
    return Analysis(model_name or type(model).__name__, labels, matrices, blocks, n_clips, frames, seconds,
                    failures, settings)
