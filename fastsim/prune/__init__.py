"""Pruning without post-training: take transformer layers out of a model and measure what is left.

* ``skip_layers(model, layers)`` — a context manager: the model runs without those layers, no
  weight copied or moved, restored exactly on exit (``surgery``).
* ``remove_layers(model, layers)`` — the same for good, config updated (``surgery``).
* ``plan(similarity, n_remove, strategy)`` — which layers to remove (``plans``; ``STRATEGIES``).
* ``sweep(model, strategies, levels, probe_task)`` — linear-probe accuracy, parameters and
  inference time against layers removed (``sweep``; the tasks and probes are
  ``fastsim.speech.tasks`` and ``fastsim.speech.probes``), a ``SweepResult`` with ``summary()``
  and ``save(dir)``. By default the seed paper's protocol: the probe head of the unpruned model,
  trained once and kept fixed, scores every pruned model on the task's fixed test clips.
* ``recording`` / ``replayed_prefix`` — the full model's outputs recorded once per batch and
  replayed for the layers a pruned model shares with it (``replay``), which makes a sweep cost
  about what its pruned models compute beyond their first removed layer.
* ``fastsim prune`` — the command (``fastsim.cli.prune``).
"""

from .plans import STRATEGIES, plan
from .surgery import kept_layers, remove_layers, skip_layers
from .sweep import SweepResult, sweep

__all__ = ["skip_layers", "remove_layers", "kept_layers", "plan", "sweep", "SweepResult", "STRATEGIES"]
