"""Mimicking layers: distill a speech encoder's whole transformer stack into a small network.

* ``MimickingNetwork`` (and ``MimicConfig``): the small per-frame network (fastsim.mimic.network).
* ``distill(model, audio, ...)``: knowledge distillation from the frozen model (fastsim.mimic.distill).
* ``replace_stack(model, mimic)``: the model with the mimic in place of its stack (fastsim.mimic.replace).
* ``fastsim distill``: the command (fastsim.mimic.command).
"""

from .distill import DistillResult, distill
from .network import MimicConfig, MimickingNetwork, parameter_report
from .replace import MimickedModel, replace_stack

__all__ = ["MimickingNetwork", "MimicConfig", "distill", "DistillResult", "replace_stack", "MimickedModel", "parameter_report"]
