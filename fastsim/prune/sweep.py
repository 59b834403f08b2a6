"""Pruning without post-training, evaluated: ``sweep(model, strategies, levels, probe_task)``.

For each strategy and each number of removed layers, the model runs with those layers skipped
(``skip_layers``: nothing is copied, nothing is retrained), a linear probe is fitted on the
mean-pooled last kept layer (``fastsim.speech.probes``) and scored on held-out clips. Reported per point:

* probe accuracy (the mean over ``probe_seeds`` stratified splits) and accuracy relative to the
  unpruned model's;
* parameters the pruned model holds;
* inference time per second of audio: the wall time of the forward passes over all the task's
  clips (batches as ``fastsim.speech.runner.hidden_state_batches`` forms them, only the last hidden
  state asked for), divided by the seconds of audio.

The similarity matrices that "block", "adjacent" and "block_influence" read are computed once on
the unpruned model over the same clips (``fastsim.analyze``, frames, stack input included; no
labels are used): linear CKA for "block" and "adjacent", mean per-frame cosine for
"block_influence" (``plans.DEFAULT_METRIC``; pass ``similarity`` to use your own). A level that a
strategy cannot reach (more layers than "block" finds inside blocks) is reported as not possible;
on a matrix without block structure "block" removes nothing, and the summary says so.
Plans that coincide (every strategy at level 0, for one) run once.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..analysis import analyze
from ..blocks import MIN_CONTRAST
from ..speech.audio import SAMPLE_RATE
from ..speech.files import staged_directory, write_json
from ..speech.inference import Stopwatch, count_parameters
from ..speech.probes import pooled_features, probe_accuracy
from ..speech.tasks import LoadedClips, load_labelled, task_clips
from .plans import DEFAULT_METRIC, NEEDS_SIMILARITY, STRATEGIES, layer_blocks, removal_order
from .surgery import find_layer_stack, kept_layers, skip_layers

DEFAULT_STRATEGIES = ("block", "adjacent", "block_influence", "last", "first", "random")


@dataclass
class SweepPoint:
    """One (strategy, number of removed layers) point."""

    strategy: str
    n_removed: int
    removed: list[int] | None  # None: the strategy cannot remove that many
    kept: list[int] | None = None
    accuracy: float | None = None
    accuracies: list[float] | None = None
    relative_accuracy: float | None = None
    parameters: int | None = None
    seconds_per_audio_second: float | None = None
    note: str = ""


@dataclass
class SweepResult:
    model_name: str
    task: str
    num_layers: int
    clips: int
    seconds_of_audio: float
    labels: int
    baseline_accuracy: float
    baseline_parameters: int
    points: list[SweepPoint]
    similarity: dict[str, list[list[float]]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def strategies(self) -> list[str]:
        return list(dict.fromkeys(p.strategy for p in self.points))

    def levels(self) -> list[int]:
        return sorted({p.n_removed for p in self.points})

    def point(self, strategy: str, n: int) -> SweepPoint:
        return next(p for p in self.points if p.strategy == strategy and p.n_removed == n)

    def table(self) -> str:
        """Rows: layers removed; columns: parameters, time per second of audio (mean over the
        strategies' runs), and each strategy's relative accuracy."""
        strategies = self.strategies()
        head = f"{'removed':>7} {'params':>9} {'ms / s audio':>12} " + " ".join(f"{s:>15}" for s in strategies)
        lines = [head]
        for n in self.levels():
            pts = [self.point(s, n) for s in strategies]
            ran = [p for p in pts if p.removed is not None]
            params = f"{ran[0].parameters / 1e6:8.2f}M" if ran else f"{'-':>9}"
            ms = f"{1e3 * np.mean([p.seconds_per_audio_second for p in ran]):12.1f}" if ran else f"{'-':>12}"
            cells = [f"{p.relative_accuracy:15.3f}" if p.relative_accuracy is not None else f"{'n/a':>15}" for p in pts]
            lines.append(f"{n:>7} {params} {ms} " + " ".join(cells))
        return "\n".join(lines)

    def summary(self) -> str:
        lines = [
            f"model: {self.model_name} ({self.num_layers} layers, {self.baseline_parameters / 1e6:.2f}M parameters)",
            f"task: {self.task}: {self.clips} clips, {self.labels} labels, {self.seconds_of_audio:.1f} s of audio",
            f"unpruned probe accuracy: {self.baseline_accuracy:.3f} (chance {1 / self.labels:.3f}; mean of "
            f"{self.settings.get('probe_seeds', 1)} splits, test fraction {self.settings.get('test_fraction', 0.3)})",
            "relative accuracy = probe accuracy / unpruned probe accuracy; n/a = the strategy cannot remove that many",
            "",
            self.table(),
        ]
        removed = {}
        for s in self.strategies():
            last = [p for p in self.points if p.strategy == s and p.removed]
            if last:
                removed[s] = max(last, key=lambda p: p.n_removed).removed
        if removed:
            lines.append("")
            lines.append("removal order (the deepest level each strategy reached, layers 0-based):")
            lines += [f"  {s:>15}: {r}" for s, r in removed.items()]
        blocks = self.settings.get("blocks")
        if blocks:
            lines.append("")
            metric = self.settings.get("similarity_metrics", {}).get("block", "cka")
            lines.append(f"block strategy ({metric}, layers 0-based): {blocks}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["points"] = [asdict(p) for p in self.points]
        return out

    def save(self, out: str | os.PathLike) -> list[str]:
        """Write prune.json and prune.png (relative accuracy and time against layers removed) into
        out, as a set (``fastsim.speech.files.staged_directory``: an interrupted save changes nothing)."""
        with staged_directory(out, last="prune.json") as stage:
            write_json(os.path.join(stage, "prune.json"), self.to_json(), indent=1)
            self.plot(os.path.join(stage, "prune.png"))
        return [os.path.join(os.fspath(out), n) for n in ("prune.json", "prune.png")]

    def plot(self, path: str | os.PathLike) -> str:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        fig, (ax, ax_t) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 2]})
        for s in self.strategies():
            pts = [p for p in self.points if p.strategy == s and p.relative_accuracy is not None]
            ax.plot([p.n_removed for p in pts], [p.relative_accuracy for p in pts], marker="o", ms=4, label=s)
        ax.axhline(1.0, color="0.6", lw=0.8, ls="--")
        if self.baseline_accuracy > 0:  # (relative to an unpruned accuracy of 0, chance has no place)
            ax.axhline(1 / self.labels / self.baseline_accuracy, color="0.6", lw=0.8, ls=":", label="chance")
        ax.set_xlabel(f"layers removed (of {self.num_layers})")
        ax.set_ylabel("probe accuracy relative to the unpruned model")
        ax.set_title(f"{self.model_name}\n{self.task}: linear probe, no post-training", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        by_n: dict[int, list[float]] = {}
        for p in self.points:
            if p.seconds_per_audio_second is not None:
                by_n.setdefault(p.n_removed, []).append(1e3 * p.seconds_per_audio_second)
        ns = sorted(by_n)
        ax_t.plot(ns, [np.median(by_n[n]) for n in ns], marker="o", ms=4, color="k")
        ax_t.set_xlabel("layers removed")
        ax_t.set_ylabel("inference ms per second of audio (median over strategies)")
        ax_t.set_title(f"{self.settings.get('device', '')}", fontsize=9)
        ax_t.grid(alpha=0.3)
        ax_t.set_ylim(bottom=0)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return os.fspath(path)


def similarity_for_plans(model, loaded: LoadedClips, metrics: Sequence[str], *, batch_size: int = 8,
                         progress: bool = False) -> dict[str, np.ndarray]:
    """The unpruned model's (L+1) x (L+1) similarity matrices (stack input first) over the clips."""
    res = analyze(model, [w for _, w in loaded.waves], metrics=tuple(metrics), sample_rate=SAMPLE_RATE,
                  batch_size=batch_size, progress=progress, include_input=True)
    return res.matrices


def sweep(
    model: torch.nn.Module,
    strategies: Sequence[str | Sequence[int]] = DEFAULT_STRATEGIES,
    levels: Sequence[int] | None = None,
    probe_task: str | Sequence[Any] | LoadedClips = "keywords",
    *,
    similarity: dict[str, Any] | None = None,
    model_name: str | None = None,
    batch_size: int = 8,
    probe_seeds: int = 3,
    test_fraction: float = 0.3,
    seed: int = 0,
    threshold: float | None = None,
    min_contrast: float = MIN_CONTRAST,
    progress: bool = True,
) -> SweepResult:
    """Probe accuracy, parameters and inference time of ``model`` pruned by each strategy at each
    level (number of layers removed; default 0 .. L-1).

    probe_task: "keywords", "speakers", a directory of label subfolders, a list of
    ``Clip(path, label)``, or ``LoadedClips``. strategies: names from ``STRATEGIES`` or explicit
    layer lists (removal orders). similarity: {metric: (L+1) x (L+1) matrix with the input row};
    computed on the probe clips when a strategy needs it and it is not given. threshold and
    min_contrast: the block finder's, for "block" (``fastsim.blocks.block_structure``)."""
    stack = find_layer_stack(model)
    L = len(stack.layers)
    if kept_layers(model) != list(range(L)):
        raise ValueError("model: sweep starts from an unpruned model (this one has layers removed already)")
    if isinstance(probe_task, str):
        task_name, clips = probe_task, task_clips(probe_task, seed=seed)
    else:
        task_name, clips = "given clips", probe_task
    loaded = load_labelled(clips)
    n_labels = len(set(loaded.labels.tolist()))
    if n_labels < 2:
        raise ValueError(f"probe_task: {n_labels} label(s) among the usable clips; a probe needs at least 2")
    levels = list(range(L)) if levels is None else [int(n) for n in levels]
    bad = [n for n in levels if not 0 <= n < L]
    if bad:
        raise ValueError(f"levels: {bad[0]} layers cannot be removed from a {L}-layer model (0 .. {L - 1})")
    levels = sorted(set(levels) | {0})
    if not strategies:
        raise ValueError("strategies: give at least one")
    names = []
    for s in strategies:
        if isinstance(s, str) and s not in STRATEGIES:
            raise ValueError(f"strategies: unknown strategy {s!r}; choose from {', '.join(STRATEGIES)} or give a layer list")
        names.append(s if isinstance(s, str) else "list:" + "/".join(str(int(i)) for i in s))
    needed = sorted({DEFAULT_METRIC[s] for s in strategies if isinstance(s, str) and s in NEEDS_SIMILARITY})
    if needed and similarity is None:
        similarity = similarity_for_plans(model, loaded, needed, batch_size=batch_size, progress=progress)
    missing = [m for m in needed if m not in similarity] if needed else []
    if missing:
        raise ValueError(f"similarity: no {missing[0]!r} matrix, which {', '.join(s for s in DEFAULT_METRIC if DEFAULT_METRIC[s] == missing[0])} "
                         f"read(s); pass {{metric: (L+1) x (L+1) matrix}} with {', '.join(needed)}, or similarity=None")
    orders, limits = {}, {}
    for name, s in zip(names, strategies):
        sim = similarity[DEFAULT_METRIC[s]] if isinstance(s, str) and s in NEEDS_SIMILARITY else None
        orders[name] = removal_order(sim, s, num_layers=L, seed=seed, threshold=threshold, min_contrast=min_contrast)
        if s == "block":
            structure = layer_blocks(sim, num_layers=L, threshold=threshold, min_contrast=min_contrast)
            limits[name] = structure.describe()

    plans: dict[tuple[int, ...], None] = {}
    for name in names:
        for n in levels:
            if n <= len(orders[name]):
                plans[tuple(sorted(orders[name][:n]))] = None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plans), desc="pruned models", unit="model")
    with torch.no_grad():  # warm-up, so the first timed run does not pay for it
        pooled_features(model, LoadedClips(loaded.waves[:batch_size], loaded.labels[:batch_size], []),
                        batch_size=batch_size)
    results: dict[tuple[int, ...], dict[str, Any]] = {}
    dev = next(model.parameters()).device
    try:
        for removed in plans:
            with skip_layers(model, list(removed)) as kept:
                with Stopwatch(dev) as sw:
                    X, y = pooled_features(model, loaded, batch_size=batch_size)
                params = count_parameters(model)
            accs = [probe_accuracy(X, y, seed=seed + k, test_fraction=test_fraction) for k in range(probe_seeds)]
            results[removed] = dict(kept=kept, accuracies=accs, parameters=params, seconds=sw.seconds / loaded.seconds)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    base = results[()]
    base_acc = float(np.mean(base["accuracies"]))
    points = []
    for name in names:
        for n in levels:
            if n > len(orders[name]):
                why = f" ({limits[name]})" if name in limits else ""
                points.append(SweepPoint(name, n, None, note=f"{name} can remove at most {len(orders[name])} layers{why}"))
                continue
            removed = tuple(sorted(orders[name][:n]))
            r = results[removed]
            acc = float(np.mean(r["accuracies"]))
            points.append(SweepPoint(name, n, list(removed), r["kept"], acc, r["accuracies"],
                                     acc / base_acc if base_acc > 0 else float("nan"), r["parameters"], r["seconds"]))
    device = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu, {torch.get_num_threads()} thread(s)"
    settings = {"strategies": names, "levels": levels, "probe_seeds": probe_seeds, "test_fraction": test_fraction,
                "seed": seed, "threshold": threshold, "min_contrast": min_contrast, "blocks": limits.get("block"),
                "batch_size": batch_size, "device": device,
                "similarity_metrics": {s: DEFAULT_METRIC[s] for s in strategies if isinstance(s, str) and s in NEEDS_SIMILARITY},
                "distinct_pruned_models": len(plans), "skipped_clips": [f.source for f in loaded.failures]}
    sim_json = {k: np.asarray(v, dtype=float).tolist() for k, v in (similarity or {}).items()}
    return SweepResult(model_name or type(model).__name__, task_name, L, len(loaded.waves), loaded.seconds, n_labels,
                       base_acc, base["parameters"], points, sim_json, settings)
