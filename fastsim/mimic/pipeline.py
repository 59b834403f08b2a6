"""The distillation pipeline: distill -> replace -> timing -> probes -> baseline -> report.

``run_pipeline(model, audio, config)`` trains the mimic (``distill``), puts it in place of the
stack (``replace_stack``), and measures the three reductions: parameters (whole model, CNN front
end included), inference time (the same batch, per second of audio; ``timing.compare``) and the
probe accuracy of the mimicked model relative to the full one on each probe task, beside the
no-distillation baseline (the same small network trained on the labels; ``baseline``). It returns
a ``DistillReport``: ``summary()`` prints the reductions, ``save(dir)`` writes the mimic and
``report.json``. This is what ``fastsim distill`` runs.

``choose_targets`` picks the teacher layer of each block: given ones, the stack's output for a
1-block mimic, else the ends of the first similarity blocks (``similarity_targets``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..analysis import analyze
from ..speech.files import staged_directory, write_json
from ..speech.probes import pooled_features, probe_accuracy
from ..speech.synth import SynthesisError
from ..speech.tasks import load_labelled, task_clips
from .baseline import label_baseline
from .distill import DEFAULT_STEPS, DistillResult, distill
from .network import MimicConfig
from .replace import replace_stack
from .reports import ParameterReport, TimeReport, parameter_report
from .timing import compare


class TaskError(ValueError):
    """A probe task that cannot be had (not a built-in task nor a folder of labels, or no speech)."""


def similarity_targets(model: torch.nn.Module, audio: Sequence[Any], depth: int, *,
                       progress: bool = False) -> tuple[tuple[int, ...], str]:
    """Teacher layers for a depth-block mimic: the last layers of the first depth-1 similarity
    blocks (linear CKA over frames, Otsu threshold), then the output; evenly spaced if the model
    has fewer blocks than that. Returns them and how they were found."""
    L = model.config.num_hidden_layers
    res = analyze(model, audio, metrics=["cka"], include_input=False, progress=progress)
    ends = [b + 1 for _, b in res.blocks["cka"]][: depth - 1]
    found = res.block_note("cka")
    if len(ends) == depth - 1 and all(e < L for e in ends):
        return (*ends, L), f"similarity blocks (linear CKA): {found}"
    even = tuple(round(L * (b + 1) / depth) for b in range(depth))
    return even, f"similarity blocks (linear CKA): {found}; too few for {depth} blocks, evenly spaced instead"


def choose_targets(model: torch.nn.Module, audio: Sequence[Any], depth: int, given: Sequence[int] | None = None, *,
                   progress: bool = False) -> tuple[tuple[int, ...], str]:
    """(teacher layer per block, how they were chosen): ``given`` (-1 and L both mean the output),
    the stack's output for one block, else ``similarity_targets``."""
    L = model.config.num_hidden_layers
    if given is not None:
        return tuple(L if t in (-1, L) else t for t in given), "given"
    if depth == 1:
        return (L,), "the stack's output"
    return similarity_targets(model, audio, depth, progress=progress)


@dataclass
class ProbeScores:
    """Probe accuracy on one task: the full model, the mimicked one, the baseline (None: not run)."""

    clips: int
    full: float
    mimicked: float
    baseline: float | None

    @property
    def relative(self) -> float:
        return self.mimicked / self.full if self.full > 0 else float("nan")


@dataclass
class DistillReport:
    """What ``run_pipeline`` found: the distillation, and the parameter, time and probe reductions."""

    model_name: str
    config: MimicConfig
    loss: str
    steps: int
    distilled: DistillResult
    parameters: ParameterReport
    time: TimeReport
    probes: dict[str, ProbeScores] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The content of report.json."""
        res = self.distilled
        return {"model": self.model_name, "mimic": self.config.to_json(), "targets": list(res.targets),
                "loss": self.loss, "steps": self.steps, "first_loss": res.losses[0] if res.losses else None,
                "final_loss": res.final(), "unexplained_variance": res.final(res.unexplained),
                "parameters": vars(self.parameters) | {"reduction": self.parameters.reduction},
                "time": self.time.to_json(), "probes": {t: vars(p) for t, p in self.probes.items()},
                "stage_seconds": self.stage_seconds}

    def summary(self) -> str:
        random_note = " (RANDOM weights: these numbers show the machinery, not a trained model's behaviour)" \
            if "RANDOM" in self.model_name else ""
        lines = [f"== reductions{random_note}", self.parameters.summary(), self.time.summary()]
        if self.probes:
            lines.append("probe accuracy (linear probe on mean-pooled last hidden states):")
            for task, p in self.probes.items():
                lines.append(f"  {task} ({p.clips} clips): full {100 * p.full:.1f} %, mimicked {100 * p.mimicked:.1f} % "
                             f"({100 * p.relative:.0f} % of full)"
                             + ("" if p.baseline is None else f"; no-distillation baseline {100 * p.baseline:.1f} %"))
        else:
            lines.append("probe accuracy: not measured (no probe tasks were given)")
        return "\n".join(lines)

    def save(self, out: str | os.PathLike) -> list[str]:
        """Write mimic.safetensors (+ mimic.json: config, targets, teacher) and report.json into out,
        as a set (``fastsim.speech.files.staged_directory``: an interrupted save changes nothing)."""
        names = ("mimic.safetensors", "report.json")
        with staged_directory(out, last="report.json") as stage:
            self.distilled.mimic.save(os.path.join(stage, names[0]),
                                      {"targets": list(self.distilled.targets), "teacher": self.model_name})
            write_json(os.path.join(stage, names[1]), self.to_json())
        return [os.path.join(os.fspath(out), n) for n in names]


def _probe_task(task: str, seed: int):
    try:
        return load_labelled(task_clips(task, seed=seed))
    except (ValueError, SynthesisError) as e:
        raise TaskError(str(e)) from None


def run_pipeline(
    model: torch.nn.Module,
    audio: Sequence[Any],
    config: MimicConfig,
    *,
    model_name: str | None = None,
    loss: str = "mse",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    steps: int = DEFAULT_STEPS,
    batch_size: int = 8,
    crop_seconds: float | None = 4.0,
    cache_targets: bool | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
    resume: bool = False,
    overwrite: bool = False,
    tasks: Sequence[str] = ("keywords", "speakers"),
    baseline_steps: int | None = 300,
    time_batch: int | None = None,
    time_seconds: float | None = None,
    warmup: int | None = None,
    repeats: int | None = None,
    seed: int = 0,
    strict: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    started: float | None = None,
) -> DistillReport:
    """Distill ``model``'s stack into a mimic of ``config`` on ``audio`` and measure the reductions.

    cache_targets None: on for the CPU, off for CUDA. resume / overwrite: what to do with a checkpoint
    already in checkpoint_dir (``distill``: one of them is needed when there is one). tasks: probe
    tasks (``task_clips`` names or label folders); baseline_steps None: no baseline. Timing defaults: on CUDA batch 128 x 1 s, 100
    warm-up and 50 timed passes; on the CPU 2 x 2 s, 1 and 3. ``log`` gets the progress lines
    (skipped clips, the distillation's loss); ``started``, a ``time.perf_counter()`` value, is
    where the first stage's clock starts (default: now). Raises TaskError for a task that cannot
    be loaded, ValueError (``ModelError``) for bad settings or no usable audio."""
    t_start = time.perf_counter() if started is None else started
    say = log or (lambda line: None)
    name = model_name or type(model).__name__
    dev = next(model.parameters()).device
    cuda = dev.type == "cuda"
    cache = not cuda if cache_targets is None else cache_targets
    res = distill(model, audio, mimic=config, loss=loss, lr=lr, weight_decay=weight_decay, steps=steps,
                  batch_size=batch_size, crop_seconds=crop_seconds, cache_targets=cache, checkpoint_dir=checkpoint_dir,
                  checkpoint_every=checkpoint_every, resume=resume, overwrite=overwrite, seed=seed, strict=strict,
                  progress=progress)
    for f in res.failures:
        say(f"skipped {f.source}: {f.reason}")
    say(f"distilled: {len(res.losses)} steps in {res.seconds:.1f} s ({'teacher frames cached' if cache else 'targets on the fly'}); "
        f"{loss} loss {res.losses[0] if res.losses else float('nan'):.4g} -> {res.final():.4g}"
        + (f" ({100 * res.final(res.unexplained):.1f} % of the targets' variance unexplained)" if loss == "mse" else ""))

    stages = {"distill": time.perf_counter() - t_start}
    mimicked = replace_stack(model, res.mimic)
    params = parameter_report(model, mimicked)
    times = compare(model, mimicked, batch=time_batch or (128 if cuda else 2),
                    clip_seconds=time_seconds if time_seconds is not None else (1.0 if cuda else 2.0),
                    warmup=warmup if warmup is not None else (100 if cuda else 1),
                    repeats=repeats or (50 if cuda else 3), seed=seed)
    stages["timing"] = time.perf_counter() - t_start - sum(stages.values())

    probes = {}
    for task in tasks:
        loaded = _probe_task(task, seed)
        t = time.perf_counter()
        full = probe_accuracy(*pooled_features(model, loaded, progress=progress), seed=seed)
        stages[f"{task}: full model"] = time.perf_counter() - t
        t = time.perf_counter()
        mim = probe_accuracy(*pooled_features(mimicked, loaded, progress=progress), seed=seed)
        stages[f"{task}: mimicked"] = time.perf_counter() - t
        t = time.perf_counter()
        base = None if baseline_steps is None else label_baseline(model, loaded, config, seed=seed, steps=baseline_steps,
                                                                   progress=progress)
        stages[f"{task}: baseline"] = time.perf_counter() - t
        probes[task] = ProbeScores(len(loaded.waves), full, mim, base)
    return DistillReport(name, config, loss, steps, res, params, times, probes, stages)
