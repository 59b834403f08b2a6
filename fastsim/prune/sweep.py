"""Pruning without post-training, evaluated: ``sweep(model, strategies, levels, probe_task)``.

For each strategy and each number of removed layers, the model runs with those layers skipped
(``skip_layers``: nothing is copied, nothing is retrained) and a linear probe reads the
mean-pooled last hidden state (``fastsim.speech.probes``).

The protocol (``head="fixed"``, the default, the seed paper's): the probe head is trained ONCE, on
the unpruned model's features of the task's training clips, and then kept fixed — standardization
and weights — while layers are removed; every pruned model is scored with that head on the task's
held-out test clips. Nothing is retrained. ``head="refit"`` trains a new head on each pruned
model's own training features instead (how much the features still hold, not how well the model
still works with its head).

The task and its split. The test clips are fixed: the task's own split where its clips carry one
(the keyword task holds out speakers, Speech Commands has its lists), else a stratified split
seeded with ``seed`` (``fastsim.speech.tasks.fixed_split``). ``probe_seeds`` heads are trained,
each on a seeded stratified subsample (``head_fraction``) of the training clips
(``head_samples``); a point's accuracy is the mean over the heads. Two spreads are reported: the
standard deviation over the heads (how much the probe's own training sample matters), and a 95 %
interval from a bootstrap over the test clips (how much the finite test set matters; resampled
together with the unpruned model's, so it is the interval of the *relative* accuracy).
``separation`` says, per level, which pairs of strategies differ beyond that interval (a paired
bootstrap of their difference).

Reported per point: accuracy and accuracy relative to the unpruned model's, the fraction of layers
removed, parameters the pruned model holds, and inference time per second of audio (the pruned
model itself, ``skip_layers`` alone, timed on the first ``timing_seconds`` of test audio after a
warm-up: the fastest of ``timing_repeats`` rounds in which the plans take turns).
``SweepResult.summary`` adds the largest level per strategy that keeps >= 95 % of the unpruned
accuracy (``keeps``).

Cost. The clips are read when needed, never held (a task of any size). The training clips go
through the unpruned model once (their features train the heads; the similarity matrices the
"block", "adjacent" and "block_influence" strategies read are computed on the first
``similarity_seconds`` of them — the plans never see a test clip). The test clips go through
the unpruned model once per batch with its layer outputs recorded, and each distinct pruned model
then runs on the same batch with the layers before its first removed one replayed
(``fastsim.prune.replay``): exact, and a plan that removes the last layers costs only the front
end. With ``head="refit"`` the training clips go the same way. Inputs are laid out as
``fastsim.speech.packing`` says (``layout``; Whisper: 30 one-second clips to a 30 s window).

The similarity matrices: linear CKA for "block" and "adjacent", mean per-frame cosine for
"block_influence" (``plans.DEFAULT_METRIC``; pass ``similarity`` to use your own), over frames,
stack input included (``fastsim.layer_similarity.LayerSimilarity``'s defaults). A level that a
strategy cannot reach (more layers than "block" finds inside blocks) is reported as not possible;
on a matrix without block structure "block" removes nothing, and the summary says so. Plans that
coincide (every strategy at level 0, for one) run once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..blocks import MIN_CONTRAST
from ..layer_similarity import LayerSimilarity
from ..speech.audio import SAMPLE_RATE
from ..speech.files import staged_directory, write_json
from ..speech.inference import Stopwatch, count_parameters
from ..speech.packing import ProbeInput, resolve_layout
from ..speech.probes import batch_features, fit_head, input_batches
from ..speech.runner import Failure
from ..speech.tasks import LoadedClips, StreamedClips, fixed_split, head_samples, task_clips
from .plans import DEFAULT_METRIC, NEEDS_SIMILARITY, STRATEGIES, layer_blocks, removal_order
from .replay import recording, replayed_prefix
from .surgery import find_layer_stack, kept_layers, skip_layers

DEFAULT_STRATEGIES = ("block", "adjacent", "block_influence", "last", "first", "random")
HEADS = ("fixed", "refit")
#: the accuracy a pruned model must keep, relative to the unpruned model's (``SweepResult.keeps``)
KEEP = 0.95
BOOTSTRAP = 1000


@dataclass
class SweepPoint:
    """One (strategy, number of removed layers) point."""

    strategy: str
    n_removed: int
    removed: list[int] | None  # None: the strategy cannot remove that many
    kept: list[int] | None = None
    accuracy: float | None = None
    accuracies: list[float] | None = None  # one per probe head
    relative_accuracy: float | None = None
    parameters: int | None = None
    seconds_per_audio_second: float | None = None
    note: str = ""
    fraction_removed: float | None = None
    accuracy_std: float | None = None  # over the heads
    relative_std: float | None = None  # over the heads (each head's accuracy / its unpruned accuracy)
    relative_interval: list[float] | None = None  # 95 % bootstrap interval over the test clips


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
    #: per level: [strategy a, strategy b, relative accuracy a - b, 95 % bootstrap interval lo, hi]
    separation: dict[str, list[list[Any]]] = field(default_factory=dict)

    def strategies(self) -> list[str]:
        return list(dict.fromkeys(p.strategy for p in self.points))

    def levels(self) -> list[int]:
        return sorted({p.n_removed for p in self.points})

    def point(self, strategy: str, n: int) -> SweepPoint:
        return next(p for p in self.points if p.strategy == strategy and p.n_removed == n)

    def keeps(self, threshold: float = KEEP) -> dict[str, int]:
        """Per strategy, the largest number of removed layers whose relative accuracy (mean over
        the heads) is at least ``threshold`` (0: none above level 0)."""
        out = {}
        for s in self.strategies():
            ok = [p.n_removed for p in self.points
                  if p.strategy == s and p.relative_accuracy is not None and p.relative_accuracy >= threshold]
            out[s] = max(ok, default=0)
        return out

    def table(self) -> str:
        """Rows: layers removed (and their share); columns: parameters, time per second of audio
        (mean over the strategies' runs), and each strategy's relative accuracy ± its standard
        deviation over the probe heads."""
        strategies = self.strategies()
        head = f"{'removed':>7} {'%':>4} {'params':>9} {'ms / s audio':>12} " + " ".join(f"{s:>15}" for s in strategies)
        lines = [head]
        for n in self.levels():
            pts = [self.point(s, n) for s in strategies]
            ran = [p for p in pts if p.removed is not None]
            params = f"{ran[0].parameters / 1e6:8.2f}M" if ran else f"{'-':>9}"
            ms = f"{1e3 * np.mean([p.seconds_per_audio_second for p in ran]):12.1f}" if ran else f"{'-':>12}"
            cells = []
            for p in pts:
                if p.relative_accuracy is None:
                    cells.append(f"{'n/a':>15}")
                elif p.relative_std is None:
                    cells.append(f"{p.relative_accuracy:15.3f}")
                else:
                    cells.append(f"{p.relative_accuracy:9.3f}±{p.relative_std:.3f}")
            lines.append(f"{n:>7} {100 * n / self.num_layers:4.0f} {params} {ms} " + " ".join(cells))
        return "\n".join(lines)

    def summary(self) -> str:
        st = self.settings
        head = st.get("head", "refit")
        heads = st.get("probe_seeds", 1)
        if head == "fixed":
            protocol = (f"head: FIXED (the seed paper's protocol): {heads} linear probe head(s) trained once on the "
                        f"unpruned model's features of {st.get('train_clips', '?')} training clips "
                        f"({100 * st.get('head_fraction', 1):.0f} % subsample each), then kept as they are; nothing is retrained")
        else:
            protocol = (f"head: REFIT: {heads} linear probe head(s) trained anew on every pruned model's own features "
                        f"of {st.get('train_clips', '?')} training clips")
        unit = "accuracy over test clips; mean of the heads"
        lines = [
            f"model: {self.model_name} ({self.num_layers} layers, {self.baseline_parameters / 1e6:.2f}M parameters)",
            f"task: {self.task}: {self.clips} clips, {self.labels} labels, {self.seconds_of_audio:.1f} s of audio; "
            f"{st.get('split', 'split')}: {st.get('test_clips', '?')} test clips; inputs: {st.get('layout', 'clip')} layout",
            protocol,
            f"unpruned probe accuracy: {self.baseline_accuracy:.3f} ({unit}; chance {1 / self.labels:.3f})",
            "relative accuracy = probe accuracy / unpruned probe accuracy, ± its standard deviation over the heads; "
            "n/a = the strategy cannot remove that many",
            "",
            self.table(),
        ]
        widths = [p.relative_interval[1] - p.relative_interval[0] for p in self.points
                  if p.relative_interval is not None and p.n_removed > 0]
        if widths:
            lines.append(f"95 % bootstrap interval over the test clips (relative accuracy): median width "
                         f"{np.median(widths):.3f}, largest {max(widths):.3f} (prune.json: relative_interval)")
        keeps = self.keeps()
        lines.append("")
        lines.append(f"largest level keeping >= {100 * KEEP:.0f} % of the unpruned accuracy (layers removed of "
                     f"{self.num_layers}):")
        for s, n in keeps.items():
            p = self.point(s, n)
            lo = "" if p.relative_interval is None or n == 0 else f", interval {p.relative_interval[0]:.3f}-{p.relative_interval[1]:.3f}"
            lines.append(f"  {s:>15}: {n} ({100 * n / self.num_layers:.0f} %; relative {p.relative_accuracy:.3f}{lo})")
        if self.separation:
            lines.append("")
            lines.append("strategy pairs whose relative accuracies differ beyond the 95 % interval of their difference "
                         "(paired bootstrap over the test clips):")
            for level, pairs in self.separation.items():
                apart = [f"{a} {'>' if d > 0 else '<'} {b}" for a, b, d, lo, hi in pairs if lo > 0 or hi < 0]
                lines.append(f"  {level} removed: {len(apart)} of {len(pairs)} distinct pairs"
                             + (f" ({'; '.join(apart)})" if apart and len(apart) <= 6 else ""))
        removed = {}
        for s in self.strategies():
            last = [p for p in self.points if p.strategy == s and p.removed]
            if last:
                removed[s] = max(last, key=lambda p: p.n_removed).removed
        if removed:
            lines.append("")
            lines.append("removal order (the deepest level each strategy reached, layers 0-based):")
            lines += [f"  {s:>15}: {r}" for s, r in removed.items()]
        if st.get("stage_seconds"):
            lines.append("")
            lines.append(f"{st.get('distinct_pruned_models', '?')} distinct pruned models; wall time: "
                         + ", ".join(f"{k} {v:.0f} s" for k, v in st["stage_seconds"].items()))
        blocks = st.get("blocks")
        if blocks:
            lines.append("")
            metric = st.get("similarity_metrics", {}).get("block", "cka")
            lines.append(f"block strategy ({metric}, layers 0-based): {blocks}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["points"] = [asdict(p) for p in self.points]
        out["keeps_95"] = self.keeps()
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
        strategies = self.strategies()
        for k, s in enumerate(strategies):
            pts = [p for p in self.points if p.strategy == s and p.relative_accuracy is not None]
            dx = 0.04 * (k - (len(strategies) - 1) / 2)  # (side by side, so the bars do not hide each other)
            x = [100 * p.n_removed / self.num_layers + 100 * dx / self.num_layers for p in pts]
            y = [p.relative_accuracy for p in pts]
            err = [p.relative_std or 0.0 for p in pts]
            ax.errorbar(x, y, yerr=err, marker="o", ms=4, capsize=2, label=s)
        ax.axhline(1.0, color="0.6", lw=0.8, ls="--")
        ax.axhline(KEEP, color="C3", lw=0.9, ls="-.", label=f"{KEEP:.2f} of unpruned")
        if self.baseline_accuracy > 0:  # (relative to an unpruned accuracy of 0, chance has no place)
            ax.axhline(1 / self.labels / self.baseline_accuracy, color="0.6", lw=0.8, ls=":", label="chance")
        ax.set_xlabel(f"layers removed, % of {self.num_layers}")
        ax.set_ylabel("probe accuracy relative to the unpruned model")
        head = self.settings.get("head", "refit")
        ax.set_title(f"{self.model_name}\n{self.task}: {head} linear-probe head, no post-training "
                     f"(bars: std over {self.settings.get('probe_seeds', 1)} heads)", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        by_n: dict[int, list[float]] = {}
        for p in self.points:
            if p.seconds_per_audio_second is not None:
                by_n.setdefault(p.n_removed, []).append(1e3 * p.seconds_per_audio_second)
        ns = sorted(by_n)
        ax_t.plot([100 * n / self.num_layers for n in ns], [np.median(by_n[n]) for n in ns], marker="o", ms=4, color="k")
        ax_t.set_xlabel("layers removed, %")
        ax_t.set_ylabel("ms per second of audio (median over strategies)")
        ax_t.set_title(f"{self.settings.get('device', '')}", fontsize=9)
        ax_t.grid(alpha=0.3)
        ax_t.set_ylim(bottom=0)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return os.fspath(path)


def _task(probe_task: Any, seed: int) -> tuple[str, Any]:
    """(name, clips to read: LoadedClips as given, else StreamedClips)."""
    if isinstance(probe_task, LoadedClips):
        return "given clips", probe_task
    if isinstance(probe_task, (str, os.PathLike)):
        return os.fspath(probe_task), StreamedClips(task_clips(os.fspath(probe_task), seed=seed))
    return "given clips", StreamedClips(probe_task)


def _seconds(inputs: Sequence[ProbeInput]) -> float:
    return sum(x.wave.size for x in inputs) / SAMPLE_RATE


def _bootstrap_weights(n: int, seed: int, draws: int = BOOTSTRAP) -> np.ndarray:
    """(draws, n) multinomial resampling counts of n test clips (shared by every point: paired)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=draws).astype(np.float32)


def _interval(values: np.ndarray) -> list[float]:
    """The 2.5 and 97.5 percentiles of bootstrap values (draws whose unpruned accuracy is 0 left out)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return [float("nan"), float("nan")]
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def sweep(
    model: torch.nn.Module,
    strategies: Sequence[str | Sequence[int]] = DEFAULT_STRATEGIES,
    levels: Sequence[int] | None = None,
    probe_task: Any = "keywords",
    *,
    similarity: dict[str, Any] | None = None,
    model_name: str | None = None,
    batch_size: int = 8,
    probe_seeds: int = 3,
    head: str = "fixed",
    layout: str | None = "auto",
    head_fraction: float = 0.8,
    test_fraction: float = 0.3,
    seed: int = 0,
    threshold: float | None = None,
    min_contrast: float = MIN_CONTRAST,
    similarity_seconds: float = 300.0,
    timing_seconds: float = 30.0,
    timing_repeats: int = 3,
    progress: bool = True,
) -> SweepResult:
    """Probe accuracy, parameters and inference time of ``model`` pruned by each strategy at each
    level (number of layers removed; default 0 .. L-1). See the module docs for the protocol.

    probe_task: "keywords", "speakers", a directory of label subfolders, a list of
    ``Clip(path, label[, split])`` (read from disk as needed), or ``LoadedClips``. strategies:
    names from ``STRATEGIES`` or explicit layer lists (removal orders). head: "fixed" or "refit".
    probe_seeds: heads. layout: "clip", "packed" (Whisper) or "auto" (``fastsim.speech.packing``);
    batch_size: inputs per pass (Whisper packed: 30 s windows). test_fraction: only for a task
    without its own split. similarity: {metric: (L+1) x (L+1) matrix with the input row}; computed
    on the training clips when a strategy needs it and it is not given. threshold and
    min_contrast: the block finder's, for "block" (``fastsim.blocks.block_structure``)."""
    stack = find_layer_stack(model)
    L = len(stack.layers)
    if kept_layers(model) != list(range(L)):
        raise ValueError("model: sweep starts from an unpruned model (this one has layers removed already)")
    if head not in HEADS:
        raise ValueError(f"head must be one of {', '.join(HEADS)}; got {head!r}")
    if probe_seeds < 1:
        raise ValueError(f"probe_seeds must be >= 1; got {probe_seeds}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    if timing_repeats < 1:
        raise ValueError(f"timing_repeats must be >= 1; got {timing_repeats}")
    for name, value in (("similarity_seconds", similarity_seconds), ("timing_seconds", timing_seconds)):
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number of seconds; got {value}")
    layout = resolve_layout(model, layout)
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
    if needed and similarity is not None:
        missing = [m for m in needed if m not in similarity]
        if missing:
            raise ValueError(f"similarity: no {missing[0]!r} matrix, which "
                             f"{', '.join(s for s in DEFAULT_METRIC if DEFAULT_METRIC[s] == missing[0])} read(s); pass "
                             f"{{metric: (L+1) x (L+1) matrix}} with {', '.join(needed)}, or similarity=None")

    task_name, clips = _task(probe_task, seed)
    labels = clips.labels
    classes = sorted(set(labels.tolist()))
    if len(classes) < 2:
        raise ValueError(f"probe_task: {len(classes)} label(s) among the clips; a probe needs at least 2")
    train, test = fixed_split(labels, clips.splits, test_fraction=test_fraction, seed=seed)
    split_name = ("the task's own split" if clips.splits is not None
                  else f"stratified split (seed {seed}, test fraction {test_fraction})")
    failures: list[Failure] = []
    dev = next(model.parameters()).device

    def batches(indices):
        return input_batches(clips, indices, layout=layout, batch_size=batch_size, seed=seed, failures=failures)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(train.size + test.size + (train.size if head == "refit" else 0)), desc="clips", unit="clip")

    clock = time.perf_counter()
    stages: dict[str, float] = {}

    def stage(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        stages[name] = round(now - clock, 2)
        clock = now

    # 1. the training clips through the unpruned model: the heads' features, and the plans' similarity
    acc = LayerSimilarity(tuple(needed), include_input=True) if needed and similarity is None else None
    sim_seconds = 0.0
    base_train: dict[int, np.ndarray] = {}
    seconds = 0.0
    try:
        for inputs in batches(train):
            want = acc is not None and sim_seconds < similarity_seconds
            rows = batch_features(model, inputs, all_layers=want,
                                  states=(lambda b: acc.update(b.hidden_states, b.mask)) if want else None)
            sim_seconds += _seconds(inputs) if want else 0.0
            base_train.update(rows)
            seconds += _seconds(inputs)
            if bar is not None:
                bar.update(len(rows))
        if acc is not None:
            if sim_seconds == 0:
                raise ValueError("probe_task: no usable training clip to compute the similarity matrices on")
            similarity = {m: v.numpy() for m, v in acc.compute().items()}

        orders, limits = {}, {}
        for name, s in zip(names, strategies):
            sim = similarity[DEFAULT_METRIC[s]] if isinstance(s, str) and s in NEEDS_SIMILARITY else None
            orders[name] = removal_order(sim, s, num_layers=L, seed=seed, threshold=threshold, min_contrast=min_contrast)
            if s == "block":
                limits[name] = layer_blocks(sim, num_layers=L, threshold=threshold, min_contrast=min_contrast).describe()
        plans: dict[tuple[int, ...], None] = {(): None}
        for name in names:
            for n in levels:
                if n <= len(orders[name]):
                    plans[tuple(sorted(orders[name][:n]))] = None

        samples = head_samples(labels, np.array(sorted(base_train), dtype=np.int64), probe_seeds,
                               fraction=head_fraction, seed=seed) if base_train else []

        def heads_for(train_rows: dict[int, np.ndarray]):
            return [fit_head(np.stack([train_rows[i] for i in s]), labels[s], classes=classes, seed=seed + k)
                    for k, s in enumerate(samples)]

        if not base_train:
            raise ValueError(f"probe_task: no usable training clip ({len(failures)} could not be read"
                             + (f": {failures[0].reason})" if failures else ")"))
        fixed_heads = heads_for(base_train) if head == "fixed" else None

        stage("training clips, unpruned model (features, similarity, heads)")

        # 2. every plan on the test clips (refit: the training clips too), the prefix replayed. Fixed
        # heads score each batch at once (only right/wrong is kept); refit keeps the features.
        got: dict[tuple[int, ...], dict[int, Any]] = {plan: {} for plan in plans}

        def keep(plan: tuple[int, ...], rows: list[tuple[int, np.ndarray]], scored: bool) -> None:
            if not scored:
                got[plan].update(rows)
                return
            ids = [i for i, _ in rows]
            X = np.stack([r for _, r in rows])
            right = np.stack([h.correct(X, labels[ids]) for h in fixed_heads], axis=1)  # (clips, heads)
            got[plan].update(zip(ids, right))

        sides = [test] if head == "fixed" else [train, test]
        timing_inputs: list[ProbeInput] = []
        for side in sides:
            scored = head == "fixed"
            for inputs in batches(side):
                if side is test:
                    for x in inputs:
                        if _seconds(timing_inputs) >= timing_seconds:
                            break
                        timing_inputs.append(x)
                with recording(model) as rec:
                    rows = batch_features(model, inputs)
                keep((), rows, scored)
                for plan in plans:
                    if plan:
                        with skip_layers(model, list(plan)), replayed_prefix(model, rec, min(plan)):
                            keep(plan, batch_features(model, inputs), scored)
                del rec
                if side is test:
                    seconds += _seconds(inputs)
                if bar is not None:
                    bar.update(len(rows))
    finally:
        if bar is not None:
            bar.close()

    stage("every pruned model on the " + ("test clips" if head == "fixed" else "training and test clips"))
    failures = list({f.source: f for f in failures}.values())  # (refit reads the training clips twice)
    test_set = set(test.tolist())
    test_ok = np.array(sorted(i for i in got[()] if i in test_set), dtype=np.int64)
    train_ok = np.array(sorted(base_train), dtype=np.int64)
    if test_ok.size == 0:
        raise ValueError(f"probe_task: no usable test clip ({len(failures)} could not be read"
                         + (f": {failures[0].reason})" if failures else ")"))

    # 3. timing: each pruned model itself, on the first timing_seconds of test audio; the plans take turns,
    # timing_repeats rounds, and each keeps its fastest (other work on a shared machine only ever adds time)
    times: dict[tuple[int, ...], list[float]] = {plan: [] for plan in plans}
    params: dict[tuple[int, ...], int] = {}
    with torch.no_grad():
        batch_features(model, timing_inputs[:1])  # warm-up, so the first timed run does not pay for it
        for _ in range(timing_repeats):
            for plan in plans:
                with skip_layers(model, list(plan)):
                    with Stopwatch(dev) as sw:
                        batch_features(model, timing_inputs)
                    params[plan] = count_parameters(model)
                times[plan].append(sw.seconds / _seconds(timing_inputs))
    timing = {plan: float(np.min(t)) for plan, t in times.items()}

    stage("timing")

    # 4. scores: (heads, test clips) right/wrong per plan
    correct: dict[tuple[int, ...], np.ndarray] = {}
    y_test = labels[test_ok]
    refit_base = heads_for(got[()]) if head == "refit" else None
    for plan in plans:
        if head == "fixed":
            correct[plan] = np.stack([got[plan][i] for i in test_ok], axis=1).astype(np.float32)
        else:
            hs = refit_base if not plan else heads_for(got[plan])
            X = np.stack([got[plan][i] for i in test_ok])
            correct[plan] = np.stack([h.correct(X, y_test) for h in hs]).astype(np.float32)
    weights = _bootstrap_weights(test_ok.size, seed)
    boot = {plan: weights @ c.mean(0) for plan, c in correct.items()}  # (draws,) correct counts
    base_k = correct[()].mean(1)
    base_acc = float(base_k.mean())
    stage("heads and scores" if head == "refit" else "scores")

    points = []
    for name in names:
        for n in levels:
            if n > len(orders[name]):
                why = f" ({limits[name]})" if name in limits else ""
                points.append(SweepPoint(name, n, None, note=f"{name} can remove at most {len(orders[name])} layers{why}",
                                         fraction_removed=n / L))
                continue
            plan = tuple(sorted(orders[name][:n]))
            acc_k = correct[plan].mean(1)
            acc_mean = float(acc_k.mean())
            with np.errstate(divide="ignore", invalid="ignore"):
                rel_k = acc_k / base_k
                rel_boot = boot[plan] / boot[()]
            kept = [i for i in range(L) if i not in plan]
            points.append(SweepPoint(
                name, n, list(plan), kept, acc_mean, [float(a) for a in acc_k],
                acc_mean / base_acc if base_acc > 0 else float("nan"), params[plan], timing[plan],
                fraction_removed=n / L, accuracy_std=float(acc_k.std()), relative_std=float(np.std(rel_k)),
                relative_interval=_interval(rel_boot) if base_acc > 0 else None))

    separation: dict[str, list[list[Any]]] = {}
    if base_acc > 0:
        for n in levels:
            if n == 0:
                continue
            ran = [(name, tuple(sorted(orders[name][:n]))) for name in names if n <= len(orders[name])]
            pairs, seen = [], set()
            for a in range(len(ran)):
                for b in range(a + 1, len(ran)):
                    (na, pa), (nb, pb) = ran[a], ran[b]
                    if pa == pb or (pa, pb) in seen:
                        continue
                    seen.add((pa, pb))
                    with np.errstate(divide="ignore", invalid="ignore"):
                        diff = (boot[pa] - boot[pb]) / boot[()]
                    d = float((correct[pa].mean() - correct[pb].mean()) / correct[()].mean())
                    pairs.append([na, nb, d, *_interval(diff)])
            separation[str(n)] = pairs

    device = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu, {torch.get_num_threads()} thread(s)"
    settings = {"strategies": names, "levels": levels, "head": head, "probe_seeds": probe_seeds,
                "head_fraction": head_fraction, "layout": layout, "split": split_name,
                "train_clips": int(train_ok.size), "test_clips": int(test_ok.size), "test_fraction": test_fraction,
                "seed": seed, "threshold": threshold, "min_contrast": min_contrast, "blocks": limits.get("block"),
                "batch_size": batch_size, "device": device, "similarity_seconds": sim_seconds,
                "timing_seconds": _seconds(timing_inputs), "timing_repeats": timing_repeats, "bootstrap": BOOTSTRAP,
                "similarity_metrics": {s: DEFAULT_METRIC[s] for s in strategies if isinstance(s, str) and s in NEEDS_SIMILARITY},
                "distinct_pruned_models": len(plans), "stage_seconds": stages,
                "skipped_clips": [f.source for f in failures]}
    sim_json = {k: np.asarray(v, dtype=float).tolist() for k, v in (similarity or {}).items()}
    return SweepResult(model_name or type(model).__name__, task_name, L, int(train_ok.size + test_ok.size), seconds,
                       len(classes), base_acc, params[()], points, sim_json, settings, separation)
