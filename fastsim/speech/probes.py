"""Linear probes on frozen representations: how much a model's last layer still knows.

* ``pooled_features(model, clips)`` — each clip's last hidden state (``last_hidden_state``: the
  output of the last layer that runs, after the final layer norm in stable-layer-norm models),
  averaged over the clip's own frames. Runs through ``fastsim.speech.runner.hidden_state_batches``,
  so the padding policy holds (no clip's result depends on its batch).
* ``probe_accuracy(features, labels)`` — multinomial logistic regression (the only thing
  trained) on the stratified train/test split of ``fastsim.speech.tasks.probe_split``, features
  standardized with the training mean and standard deviation; returns the test accuracy.

The probe: float64, full-batch L-BFGS to convergence on cross-entropy plus an L2 penalty of
``l2 / 2 * |W|^2`` (default 1e-2; the bias is not penalized). Everything is seeded: the same
features give the same accuracy.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from .inference import torch_threads
from .runner import hidden_state_batches
from .tasks import LoadedClips, load_labelled, probe_split


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


def probe_accuracy(features: Any, labels: Any, *, seed: int = 0, test_fraction: float = 0.3, l2: float = 1e-2) -> float:
    """Test accuracy of a linear probe (multinomial logistic regression, standardized features,
    stratified split with a fixed seed)."""
    X = np.asarray(features, dtype=np.float64)
    n_labels = np.asarray(labels).shape[0]
    if X.ndim != 2 or X.shape[0] != n_labels:
        raise ValueError(f"features must be (n, D) with one label per row; got features {X.shape} and {n_labels} labels")
    if not np.isfinite(X).all():
        raise ValueError("features contain NaN or Inf")
    split = probe_split(labels, seed=seed, test_fraction=test_fraction)
    y, train, test = split.y, split.train, split.test
    mean = X[train].mean(0)
    std = X[train].std(0)
    Z = (X - mean) / np.where(std > 1e-12, std, 1.0)
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)
        W, b = fit_logistic(torch.from_numpy(Z[train]), torch.from_numpy(y[train]), len(split.classes), l2)
    pred = (torch.from_numpy(Z[test]) @ W + b).argmax(1).numpy()
    return float((pred == y[test]).mean())
