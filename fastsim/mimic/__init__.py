"""Mimicking layers: distill a speech encoder's whole transformer stack into a small network.

* ``MimickingNetwork`` (and ``MimicConfig``): the small per-frame network (fastsim.mimic.network).
* ``distill(model, audio, ...)``: knowledge distillation from the frozen model (fastsim.mimic.distill).
* ``replace_stack(model, mimic)``: the model with the mimic in place of its stack (fastsim.mimic.replace).
* ``run_pipeline(model, audio, config)``: distill, replace, and measure the parameter, time and
  probe-accuracy reductions beside the no-distillation baseline; a ``DistillReport`` with
  ``summary()`` and ``save(dir)`` (fastsim.mimic.pipeline). ``fastsim distill`` runs it.
"""

from .distill import DistillResult, distill
from .network import MimicConfig, MimickingNetwork
from .pipeline import DistillReport, run_pipeline
from .replace import MimickedModel, replace_stack
from .reports import ParameterReport, TimeReport, parameter_report

__all__ = ["MimickingNetwork", "MimicConfig", "distill", "DistillResult", "replace_stack", "MimickedModel", "parameter_report",
           "ParameterReport", "TimeReport", "run_pipeline", "DistillReport"]
