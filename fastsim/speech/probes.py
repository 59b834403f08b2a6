"""Linear probes on frozen representations: how much a model's last layer still knows.

* ``pooled_features(model, clips)`` — each clip's last hidden state (``last_hidden_state``: the
  output of the last layer that runs, after the final layer norm in stable-layer-norm models and
  in Whisper), averaged over the clip's own frames. Runs through
  ``fastsim.speech.runner.hidden_state_batches``, so the padding policy holds (no clip's result
  depends on its batch). The clips are laid out as ``fastsim.speech.packing`` says: one clip per
  input, or for Whisper (its default) packed 30 to a 30 s window, in a seeded order.
* ``input_batches(clips, indices)`` and ``batch_features(model, inputs)`` — the same in steps: a
  task's clips read, laid out and grouped into batches of inputs as they are needed (a task need
  not fit in memory), and one batch's features.
* ``fit_head(features, labels)`` — a ``Head``: the linear probe (standardization + multinomial
  logistic regression), trained once and then applied as it is to other features (the seed
  paper's protocol for pruning: the head of the unpruned model, kept fixed).
* ``probe_accuracy(features, labels)`` — a head trained on the stratified train/test split of
  ``fastsim.speech.tasks.probe_split`` and its test accuracy.

The probe: features standardized with the training mean and standard deviation, then float64,
full-batch L-BFGS to convergence on cross-entropy plus an L2 penalty of ``l2 / 2 * |W|^2``
(default 1e-2; the bias is not penalized). Everything is seeded: the same features give the same
accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .audio import AudioError
from .inference import torch_threads
from .packing import ProbeInput, pack, resolve_layout, segment_means
from .runner import Batch, Failure, hidden_state_batches
from .tasks import LoadedClips, load_labelled, probe_split


def input_batches(clips: Any, indices: Sequence[int] | None = None, *, layout: str = "clip", batch_size: int = 8,
                  seed: int = 0, failures: list[Failure] | None = None) -> Iterator[list[ProbeInput]]:
    """Batches of ``batch_size`` inputs (``fastsim.speech.packing.pack``) of the clips at
    ``indices`` (default all) of ``clips`` (``LoadedClips`` or ``StreamedClips``), taken in a
    shuffle seeded with ``seed``. Waves are read as the inputs fill; a clip that cannot be read is
    appended to ``failures`` (when given) and left out."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    idx = np.arange(len(clips)) if indices is None else np.asarray(indices, dtype=np.int64)
    order = idx[np.random.default_rng(seed).permutation(idx.size)]

    def read() -> Iterator[tuple[int, np.ndarray]]:
        for i in order.tolist():
            try:
                wave = clips.wave(i)
            except AudioError as e:
                if failures is not None:
                    failures.append(Failure(clips.name(i), str(e)))
                continue
            yield i, wave

    batch: list[ProbeInput] = []
    for inp in pack(read(), layout):
        batch.append(inp)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.no_grad()
def batch_features(model: torch.nn.Module, inputs: Sequence[ProbeInput], *, all_layers: bool = False,
                   states: Callable[[Batch], None] | None = None) -> list[tuple[int, np.ndarray]]:
    """(clip index, mean-pooled last hidden state) of every clip in one batch of inputs, run as one
    runner batch. ``all_layers``: ask the model for every hidden state and hand each runner
    ``Batch`` to ``states`` (e.g. a similarity accumulator) before pooling."""
    named = [(str(j), inp.wave) for j, inp in enumerate(inputs)]
    rows: list[tuple[int, np.ndarray]] = []
    for batch in hidden_state_batches(model, named, batch_size=len(named), all_layers=all_layers):
        if states is not None:
            states(batch)
        rows += segment_means(batch.hidden_states[-1], batch.mask, [inputs[int(n)] for n in batch.names])
    return rows


@torch.no_grad()
def pooled_features(model: torch.nn.Module, clips: Sequence[Any] | LoadedClips, *, batch_size: int = 8,
                    progress: bool = False, layout: str | None = "auto", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, D) float32 mean-pooled last hidden states and the (n,) string labels, in clip order
    (clips that cannot be read are skipped). layout: "clip", "packed" (Whisper) or "auto" (packed
    for Whisper, else clip; ``fastsim.speech.packing``); ``batch_size`` inputs per pass; seed: the
    order in which clips are packed."""
    loaded = load_labelled(clips)
    layout = resolve_layout(model, layout)
    rows: list[np.ndarray | None] = [None] * len(loaded)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(loaded), desc="probe features", unit="clip")
    try:
        for inputs in input_batches(loaded, layout=layout, batch_size=batch_size, seed=seed):
            for i, row in batch_features(model, inputs):
                rows[i] = row
            if bar is not None:
                bar.update(sum(len(x.segments) for x in inputs))
    finally:
        if bar is not None:
            bar.close()
    return np.stack(rows).astype(np.float32), loaded.labels.copy()


def fit_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression by full-batch L-BFGS: (W (D, C), b (C,)). Runs on one CPU
    thread: the matrices are small, and on a busy machine thread hand-offs cost more than they give."""
    with torch_threads(1):
        return _fit_logistic(x, y, n_classes, l2)


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


@dataclass
class Head:
    """A trained linear probe: the training features' mean and scale, then logits = z @ W + b over
    ``classes`` (sorted label names)."""

    classes: list[str]
    mean: np.ndarray
    scale: np.ndarray
    W: torch.Tensor
    b: torch.Tensor

    def predict(self, features: Any) -> np.ndarray:
        """The predicted label (a name from ``classes``) of each row."""
        X = _check_features(features)
        if X.shape[1] != self.mean.size:
            raise ValueError(f"features have {X.shape[1]} dimensions; this head was trained on {self.mean.size}")
        Z = (X - self.mean) / self.scale
        return np.asarray(self.classes)[(torch.from_numpy(Z) @ self.W + self.b).argmax(1).numpy()]

    def correct(self, features: Any, labels: Any) -> np.ndarray:
        """Per row: is the prediction its label (bool)."""
        return self.predict(features) == np.asarray(labels).astype(str)

    def accuracy(self, features: Any, labels: Any) -> float:
        return float(self.correct(features, labels).mean())


def _check_features(features: Any, n_labels: int | None = None) -> np.ndarray:
    X = np.asarray(features, dtype=np.float64)
    if X.ndim != 2 or (n_labels is not None and X.shape[0] != n_labels):
        raise ValueError(f"features must be (n, D) with one label per row; got features {X.shape} and {n_labels} labels")
    if not np.isfinite(X).all():
        raise ValueError("features contain NaN or Inf")
    return X


def fit_head(features: Any, labels: Any, *, classes: Sequence[str] | None = None, l2: float = 1e-2,
             seed: int = 0) -> Head:
    """Train a probe head on these (training) features and labels; ``classes`` default: the sorted
    labels (give the task's, so that heads of one task share their classes)."""
    y_str = np.asarray(labels).astype(str)
    X = _check_features(features, y_str.shape[0])
    classes = sorted(set(y_str.tolist())) if classes is None else [str(c) for c in classes]
    unknown = sorted(set(y_str.tolist()) - set(classes))
    if unknown:
        raise ValueError(f"labels: {unknown[0]!r} is not one of the classes")
    if len(classes) < 2:
        raise ValueError(f"labels: a probe needs at least 2 classes; got {len(classes)}")
    index = {c: k for k, c in enumerate(classes)}
    y = np.array([index[v] for v in y_str])
    mean = X.mean(0)
    std = X.std(0)
    scale = np.where(std > 1e-12, std, 1.0)
    Z = (X - mean) / scale
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)
        W, b = fit_logistic(torch.from_numpy(Z), torch.from_numpy(y), len(classes), l2)
    return Head(list(classes), mean, scale, W, b)


def probe_accuracy(features: Any, labels: Any, *, seed: int = 0, test_fraction: float = 0.3, l2: float = 1e-2) -> float:
    """Test accuracy of a linear probe (``fit_head`` on the training side of the stratified split
    with a fixed seed, ``fastsim.speech.tasks.probe_split``)."""
    X = _check_features(features, np.asarray(labels).shape[0])
    split = probe_split(labels, seed=seed, test_fraction=test_fraction)
    y_str = np.asarray(split.classes)[split.y]
    head = fit_head(X[split.train], y_str[split.train], classes=split.classes, l2=l2, seed=seed)
    return head.accuracy(X[split.test], y_str[split.test])
