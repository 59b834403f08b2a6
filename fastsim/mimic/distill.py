"""distill: train a MimickingNetwork to stand in for a speech encoder's transformer stack.

Knowledge distillation: the frozen model is the teacher. For each batch of clips it runs once;
its stack input (what ``model.encoder`` receives: the feature-projection output) is the student's
input, and its hidden states at the target layers (``last_hidden_state`` for the last block) are
the student's targets. The loss is per frame, padding masked: mean squared error (the paper's) or
cosine distance, averaged over the blocks. AdamW, lr 1e-3 by default (weight decay 0 = Adam).

Data. Clips (paths, arrays or fastsim.speech.synth Clips) are loaded and resampled to 16 kHz. Each
epoch shuffles them; clips longer than ``crop_seconds`` are cut to a random window of that length
(new windows every epoch), each normalized as the feature extractors do. The teacher runs each
batch under the padding policy of ``fastsim.speech.runner`` (padding-unsafe models get equal-length
sub-batches). With ``cache_targets=True`` the teacher runs once over one window per clip and the
frames are kept in memory (on the model's device) for every epoch: far cheaper when the teacher
is big and the corpus small, at the cost of the window augmentation.

Everything is a function of (seed, step): batch order, windows and initialization, so a run
resumed from a checkpoint continues exactly as the uninterrupted run would have.

Checkpoints (every ``checkpoint_every`` steps and at the end, atomically, the latest only) go to
``checkpoint_dir``: ``mimic.safetensors`` + ``mimic.json`` (weights, config), ``optimizer.safetensors``
(AdamW moments) and ``state.json`` (step, settings, loss history), atomic as a set
(``fastsim.mimic.checkpoint``). ``resume=True`` continues from
them (and starts afresh where there are none yet); settings that change the run (lr, seed, batch,
crop, loss, clips, mimic config, caching) must match; ``steps`` may grow. A checkpoint is never
replaced silently: into a ``checkpoint_dir`` that holds one, a run needs ``resume=True`` or
``overwrite=True`` (start afresh; the old checkpoint stays until the new run's first save).
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..speech.audio import SAMPLE_RATE
from ..speech.models import check_model
from ..speech.runner import Failure, forward_batches, load_clips, no_usable_audio, normalize, pad
from ..speech.whisper import is_whisper
from .checkpoint import Checkpoint
from .network import MimicConfig, MimickingNetwork

LOSSES = ("mse", "cosine")

#: optimizer steps of a distillation run (the library, the pipeline and `fastsim distill` alike)
DEFAULT_STEPS = 400


@dataclass
class DistillResult:
    """What distill did: the trained mimic, the teacher layer of each block, the loss (and, for
    mse, the fraction of the targets' variance left unexplained) at every step of this run."""

    mimic: MimickingNetwork
    targets: tuple[int, ...]
    losses: list[float] = field(default_factory=list)
    unexplained: list[float] = field(default_factory=list)
    steps: int = 0
    start_step: int = 0
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    audio_seconds: float = 0.0

    def final(self, values: list[float] | None = None, frac: float = 0.1) -> float:
        """Mean of the last 10 % of the steps' values (the losses by default)."""
        v = self.losses if values is None else values
        if not v:
            return float("nan")
        k = max(1, int(len(v) * frac))
        tail = np.asarray(v[-k:], dtype=float)
        tail = tail[np.isfinite(tail)]  # (steps without an unexplained fraction are nan)
        return float(tail.mean()) if tail.size else float("nan")


class Teacher:
    """The frozen model's stack input and target hidden states for a list of (normalized) waves, clip by clip."""

    def __init__(self, model: torch.nn.Module, layers: Sequence[int]):
        self.model, self.layers = model, tuple(layers)
        self.num_layers = model.config.num_hidden_layers
        self.need_hidden = any(layer != self.num_layers for layer in self.layers)

    @torch.no_grad()
    def __call__(self, waves: list[np.ndarray]) -> list[tuple[torch.Tensor, tuple[torch.Tensor, ...]]]:
        results: list[Any] = [None] * len(waves)
        for f in forward_batches(self.model, waves, batch_size=max(1, len(waves)), output_hidden_states=self.need_hidden,
                                 do_normalize=False, stack_input=True):
            out = f.output
            for b, i in enumerate(f.indices):
                n = f.frames[b]
                tg = tuple((out.last_hidden_state if layer == self.num_layers else out.hidden_states[layer])[b, :n]
                           for layer in self.layers)
                results[i] = (f.stack_input[b, :n], tg)
        return results


def collate(items: list[tuple[torch.Tensor, tuple[torch.Tensor, ...]]]):
    """Per-clip frames -> (x (B, T, D), targets [(B, T, D)] per block, mask (B, T)), zero-padded."""
    x, mask = pad([xi for xi, _ in items])
    tg = [pad([ti[k] for _, ti in items])[0] for k in range(len(items[0][1]))]
    return x, tg, mask


def frame_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Mean over valid frames of the per-frame loss: squared error averaged over features (mse)
    or 1 - cosine similarity (cosine)."""
    if kind == "mse":
        per_frame = (pred.float() - target.float()).pow(2).mean(-1)
    else:
        per_frame = 1.0 - torch.nn.functional.cosine_similarity(pred.float(), target.float(), dim=-1, eps=1e-8)
    m = mask.to(per_frame.dtype)
    return (per_frame * m).sum() / m.sum().clamp_min(1.0)


def _variance(target: torch.Tensor, mask: torch.Tensor) -> float:
    v = target[mask].float()
    return float(v.var(0, unbiased=False).mean()) if v.shape[0] else float("nan")


def _unexplained(parts: list[torch.Tensor], targets: list[torch.Tensor], mask: torch.Tensor) -> float:
    """Mean over blocks of mse / the targets' variance; blocks whose targets do not vary in this
    batch (one valid frame: a batch of one 25 ms window) have no such fraction (nan if none has)."""
    fr = [float(p.detach()) / v for p, t in zip(parts, targets) if (v := _variance(t, mask)) > 0]
    return float(np.mean(fr)) if fr else float("nan")


def _as_source(a: Any) -> Any:
    return a.path if hasattr(a, "path") and hasattr(a, "label") else a


def _epoch_plan(seed: int, epoch: int, sizes: list[int], crop: int | None):
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(sizes))
    starts = [int(rng.integers(0, s - crop + 1)) if crop and s > crop else 0 for s in sizes]
    return order, starts


def _window(wave: np.ndarray, start: int, crop: int | None, norm: bool = True) -> np.ndarray:
    w = wave[start : start + crop] if crop else wave
    return normalize(w) if norm else w



class _Batches:
    """The training clips, batched as a function of (seed, step): each epoch a seeded order and,
    for clips longer than the crop, a seeded window each; the teacher's frames for a batch, from
    the cache (one pass over epoch 0's windows) or computed on the fly."""

    def __init__(self, teacher: Teacher, waves: list[np.ndarray], batch_size: int, crop: int | None, seed: int):
        self.teacher, self.waves, self.batch_size, self.crop, self.seed = teacher, waves, batch_size, crop, seed
        self.norm = not is_whisper(teacher.model)  # (Whisper's log-mel has its own normalization)
        self.sizes = [w.size for w in waves]
        self.per_epoch = -(-len(waves) // batch_size)
        self.cache: list[Any] | None = None
        self._plan: tuple[int, Any] = (-1, None)

    def plan(self, epoch: int):
        if self._plan[0] != epoch:
            self._plan = (epoch, _epoch_plan(self.seed, epoch, self.sizes, self.crop))
        return self._plan[1]

    def cache_targets(self, progress: bool) -> None:
        _, starts0 = _epoch_plan(self.seed, 0, self.sizes, self.crop)
        n, bs = len(self.waves), self.batch_size
        chunks = range(0, n, bs)
        if progress:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc="teacher pass", unit="batch")
        self.cache = []
        for s in chunks:
            self.cache += self.teacher([_window(self.waves[i], starts0[i], self.crop, self.norm)
                                        for i in range(s, min(s + bs, n))])

    def __call__(self, step: int) -> tuple[list[int], list[tuple[torch.Tensor, tuple[torch.Tensor, ...]]]]:
        """The clip indices of a step's batch and each clip's (stack input, targets)."""
        epoch, b = divmod(step, self.per_epoch)
        order, starts = self.plan(epoch)
        idx = [int(i) for i in order[b * self.batch_size : (b + 1) * self.batch_size]]
        if self.cache is not None:
            return idx, [self.cache[i] for i in idx]
        return idx, self.teacher([_window(self.waves[i], starts[i], self.crop, self.norm) for i in idx])

    def seconds(self, idx: list[int]) -> float:
        """Seconds of audio the clips give in a batch (their windows)."""
        return sum(min(self.sizes[i], self.crop or self.sizes[i]) for i in idx) / SAMPLE_RATE


def _check_arguments(model: torch.nn.Module, loss: str, steps: int, batch_size: int, checkpoint_every: int, lr: float,
                     weight_decay: float, crop_seconds: float | None, resume: bool, overwrite: bool,
                     checkpoint_dir: Any) -> None:
    check_model(model)
    if getattr(model.config, "add_adapter", False):
        raise ValueError("model: it has an adapter after the stack (config.add_adapter), which changes the frame rate; "
                         "distill mimics the stack frame by frame, so it needs a model without one")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}; got {loss!r}")
    for name, v in (("steps", steps), ("batch_size", batch_size), ("checkpoint_every", checkpoint_every)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int; got {v!r}")
    if not (isinstance(lr, numbers.Real) and 0 < lr < math.inf):
        raise ValueError(f"lr must be a finite number > 0; got {lr!r}")
    if not (isinstance(weight_decay, numbers.Real) and 0 <= weight_decay < math.inf):
        raise ValueError(f"weight_decay must be a finite number >= 0; got {weight_decay!r}")
    if crop_seconds is not None and not (isinstance(crop_seconds, numbers.Real) and 0.025 <= crop_seconds < math.inf):
        raise ValueError(f"crop_seconds must be a finite number of seconds, at least 0.025 (one frame), or None; "
                         f"got {crop_seconds!r}")
    if (resume or overwrite) and checkpoint_dir is None:
        raise ValueError(f"{'resume' if resume else 'overwrite'}=True needs checkpoint_dir")


def _network(mimic: MimickingNetwork | MimicConfig | None, dim: int, seed: int) -> MimickingNetwork:
    """The network to train: as given, or built from a config (default: the 1-block h = 64 mimicker)
    with weights seeded by ``seed``."""
    if mimic is None:
        mimic = MimicConfig(dim=dim)
    if isinstance(mimic, MimicConfig):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            mimic = MimickingNetwork(mimic)
    if not isinstance(mimic, MimickingNetwork):
        raise TypeError(f"mimic must be a MimickingNetwork, a MimicConfig or None; got {type(mimic).__name__}")
    if mimic.config.dim != dim:
        raise ValueError(f"mimic: its width {mimic.config.dim} differs from the model's hidden size {dim}")
    return mimic


def _train_step(mimic: MimickingNetwork, opt: torch.optim.Optimizer, x: torch.Tensor, targets: list[torch.Tensor],
                mask: torch.Tensor, loss: str) -> tuple[float, list[torch.Tensor]]:
    """One optimizer step; returns the loss (mean over the blocks) and each block's loss."""
    x = x.to(next(mimic.parameters()).dtype)
    outs = mimic(x, mask, fused=False, return_all=True)
    parts = [frame_loss(o, t, mask, loss) for o, t in zip(outs, targets)]
    total = torch.stack(parts).mean()
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    return float(total.detach()), parts


def distill(
    model: torch.nn.Module,
    audio: Sequence[Any],
    *,
    mimic: MimickingNetwork | MimicConfig | None = None,
    loss: str = "mse",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    steps: int = DEFAULT_STEPS,
    batch_size: int = 8,
    crop_seconds: float | None = 4.0,
    cache_targets: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
    resume: bool = False,
    overwrite: bool = False,
    seed: int = 0,
    sample_rate: int | None = None,
    strict: bool = False,
    progress: bool = True,
) -> DistillResult:
    """Train ``mimic`` (default: the paper's 1-block h = 64 mimicker of the model's width) to map
    the model's stack input to its stack output (and each earlier block to its target layer) on
    ``audio``; see the module docs. Returns a DistillResult; the mimic is in eval mode. Raises
    CheckpointError (a ValueError) before any work when ``checkpoint_dir`` holds a checkpoint and
    neither ``resume`` nor ``overwrite`` is given, and when a checkpoint to resume is damaged."""
    _check_arguments(model, loss, steps, batch_size, checkpoint_every, lr, weight_decay, crop_seconds, resume,
                     overwrite, checkpoint_dir)
    if checkpoint_dir is not None:
        Checkpoint(checkpoint_dir, {}).check_start(resume, overwrite)
    D, L = model.config.hidden_size, model.config.num_hidden_layers
    mimic = _network(mimic, D, seed)
    layers = mimic.config.resolved_targets(L)
    dev = next(model.parameters()).device
    mimic.to(dev)

    sources = [_as_source(a) for a in audio]
    clips, failures = load_clips(sources, sample_rate=sample_rate, strict=strict)
    if not clips:
        raise no_usable_audio(len(sources), failures)
    crop = None if crop_seconds is None else int(round(crop_seconds * SAMPLE_RATE))
    batches = _Batches(Teacher(model, layers), [w for _, w in clips], batch_size, crop, seed)

    opt = torch.optim.AdamW(mimic.parameters(), lr=lr, weight_decay=weight_decay)
    checkpoint = None
    if checkpoint_dir is not None:
        checkpoint = Checkpoint(checkpoint_dir, dict(
            lr=lr, weight_decay=weight_decay, batch_size=batch_size, crop_seconds=crop_seconds, loss=loss, seed=seed,
            cache_targets=cache_targets, targets=list(layers), mimic=mimic.config.to_json(),
            clips=hashlib.sha1(json.dumps([[n, w.size] for n, w in clips]).encode()).hexdigest()[:16],
        ))
    start, history = 0, {"loss": [], "unexplained": []}
    if checkpoint is not None and resume and checkpoint.exists():
        start, history = checkpoint.resume(mimic, opt, dev, steps)
    result = DistillResult(mimic=mimic, targets=layers, failures=failures, steps=steps, start_step=start)

    t0 = time.perf_counter()
    if cache_targets and start < steps:
        batches.cache_targets(progress)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start, desc="distilling", unit="step")
    mimic.train()
    try:
        for step in range(start, steps):
            idx, items = batches(step)
            x, targets, mask = collate(items)
            value, parts = _train_step(mimic, opt, x, targets, mask, loss)
            if not np.isfinite(value):
                raise FloatingPointError(f"distill: the loss became {value} at step {step}; lower lr (now {lr})")
            history["loss"].append(value)
            history["unexplained"].append(_unexplained(parts, targets, mask) if loss == "mse" else float("nan"))
            result.audio_seconds += batches.seconds(idx)
            if bar is not None:
                bar.set_postfix(loss=f"{value:.4g}")
                bar.update(1)
            if checkpoint is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
                checkpoint.save(step + 1, mimic, opt, layers, history)
    finally:
        if bar is not None:
            bar.close()
        mimic.eval()
    result.losses = history["loss"][start:]
    result.unexplained = history["unexplained"][start:]
    result.seconds = time.perf_counter() - t0
    return result
