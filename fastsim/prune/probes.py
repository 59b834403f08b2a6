"""Linear probes on frozen representations: how much a (pruned) model's last layer still knows.

* ``task_clips(task)`` — the labelled audio of a task: ``"keywords"`` (espeak-ng keyword clips,
  1 s, a Speech Commands stand-in), ``"speakers"`` (espeak-ng voices), or a directory whose
  subfolders are the labels and hold the audio files.
* ``pooled_features(model, clips)`` — each clip's last hidden state (``last_hidden_state``: the
  output of the last layer that runs, after the final layer norm in stable-layer-norm models),
  averaged over the clip's own frames. Runs through ``fastsim.models.hidden_state_batches``, so
  the padding policy holds (no clip's result depends on its batch).
* ``probe_accuracy(features, labels)`` — multinomial logistic regression (the only thing
  trained) on a stratified train/test split, features standardized with the training mean and
  standard deviation; returns the test accuracy.

The probe: float64, full-batch L-BFGS to convergence on cross-entropy plus an L2 penalty of
``l2 / 2 * |W|^2`` (default 1e-2; the bias is not penalized). Everything is seeded: the same
features give the same accuracy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .. import synth
from ..audio import AUDIO_SUFFIXES, SAMPLE_RATE
from ..models import Failure, hidden_state_batches, load_clips, no_usable_audio

TASKS = ("keywords", "speakers")


def task_clips(task: str, *, seed: int = 0) -> list[synth.Clip]:
    """Labelled clips of a built-in task ("keywords", "speakers") or of a directory of
    label subfolders holding audio files (searched recursively within each label)."""
    if task == "keywords":
        return synth.keyword_task(seed=seed)
    if task == "speakers":
        return synth.speaker_task(seed=seed)
    root = Path(os.fspath(task))
    if not root.is_dir():
        raise ValueError(f"task must be one of {', '.join(TASKS)} or a directory of label subfolders; "
                         f"{task!r} is neither")
    clips = []
    labels = 0
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(str(f) for f in sub.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
        labels += bool(files)
        clips += [synth.Clip(f, sub.name) for f in files]
    if labels < 2:
        raise ValueError(
            f"task directory {task!r} has {labels} label subfolder(s) with audio files ({', '.join(AUDIO_SUFFIXES)}); "
            f"a probe needs at least 2 (one subfolder per label, e.g. {task}/yes/*.wav, {task}/no/*.wav)"
        )
    return clips


@dataclass
class LoadedClips:
    """Clips read into memory once (16 kHz waves), their labels, and the ones that failed."""

    waves: list[tuple[str, np.ndarray]]
    labels: np.ndarray
    failures: list[Failure]

    @property
    def seconds(self) -> float:
        return sum(w.size for _, w in self.waves) / SAMPLE_RATE


def load_labelled(clips: Sequence[Any]) -> LoadedClips:
    """Read labelled clips (``Clip(path, label)``s) once; unreadable ones are skipped and listed."""
    if isinstance(clips, LoadedClips):
        return clips
    paths = [os.fspath(c.path) for c in clips]
    labels = [str(c.label) for c in clips]
    waves, failures = load_clips(paths)
    by_path = dict(zip(paths, labels))
    if not waves:
        raise no_usable_audio(len(paths), failures)
    return LoadedClips(waves, np.array([by_path[name] for name, _ in waves]), failures)


@torch.no_grad()
def pooled_features(model: torch.nn.Module, clips: Sequence[Any] | LoadedClips, *, batch_size: int = 8,
                    progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(n, D) float32 mean-pooled last hidden states and the (n,) string labels, in clip order
    (clips that cannot be read are skipped)."""
    loaded = load_labelled(clips)
    indexed = [(str(i), wave) for i, (_, wave) in enumerate(loaded.waves)]
    rows: list[np.ndarray | None] = [None] * len(indexed)
    for batch in hidden_state_batches(model, indexed, batch_size=batch_size, progress=progress, all_layers=False):
        h = batch.hidden_states[-1].float()
        m = batch.mask.to(h.device, h.dtype)[..., None]
        mean = (h * m).sum(1) / m.sum(1).clamp_min(1)
        for name, row in zip(batch.names, mean.cpu().numpy()):
            rows[int(name)] = row
    return np.stack(rows).astype(np.float32), loaded.labels.copy()


def stratified_split(labels: np.ndarray, *, seed: int = 0, test_fraction: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: within each label, a seeded shuffle and round(test_fraction * n)
    clips to the test set (at least one when the label has two or more clips, none when it has one)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for lab in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == lab)
        idx = idx[rng.permutation(idx.size)]
        k = 0 if idx.size < 2 else min(idx.size - 1, max(1, int(round(test_fraction * idx.size))))
        test += idx[:k].tolist()
        train += idx[k:].tolist()
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(test, dtype=np.int64))


def fit_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression by full-batch L-BFGS: (W (D, C), b (C,)). Runs on one CPU
    thread: the matrices are small, and on a busy machine thread hand-offs cost more than they give."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_logistic(x, y, n_classes, l2)
    finally:
        torch.set_num_threads(threads)


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    W = torch.zeros(x.shape[1], n_classes, dtype=x.dtype, requires_grad=True)
    b = torch.zeros(n_classes, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=500, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ W + b, y) + 0.5 * l2 * (W * W).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach(), b.detach()


def probe_accuracy(features: Any, labels: Any, *, seed: int = 0, test_fraction: float = 0.3, l2: float = 1e-2) -> float:
    """Test accuracy of a linear probe (multinomial logistic regression, standardized features,
    stratified split with a fixed seed)."""
    X = np.asarray(features, dtype=np.float64)
    y_str = np.asarray(labels).astype(str)
    if X.ndim != 2 or X.shape[0] != y_str.shape[0]:
        raise ValueError(f"features must be (n, D) with one label per row; got features {X.shape} and {y_str.shape[0]} labels")
    if not np.isfinite(X).all():
        raise ValueError("features contain NaN or Inf")
    classes = sorted(set(y_str.tolist()))
    if len(classes) < 2:
        raise ValueError(f"labels: a probe needs at least 2 classes; got {len(classes)}")
    y = np.array([classes.index(v) for v in y_str])
    train, test = stratified_split(y_str, seed=seed, test_fraction=test_fraction)
    if test.size == 0:
        raise ValueError("no clip left for the test set: every label has a single clip")
    mean = X[train].mean(0)
    std = X[train].std(0)
    Z = (X - mean) / np.where(std > 1e-12, std, 1.0)
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)
        W, b = fit_logistic(torch.from_numpy(Z[train]), torch.from_numpy(y[train]), len(classes), l2)
    pred = (torch.from_numpy(Z[test]) @ W + b).argmax(1).numpy()
    return float((pred == y[test]).mean())
