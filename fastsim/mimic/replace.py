"""replace_stack: a speech encoder whose transformer stack is a MimickingNetwork.

The returned model runs CNN -> feature projection -> mimic (-> the original's adapter, if any) and
returns what the original returns: the same output class, ``last_hidden_state`` of the same
shape, ``extract_features`` where the original has it, and ``hidden_states`` when asked
(``output_hidden_states=True``): the stack input, then every mimic block's output; its config
says ``num_hidden_layers`` = the number of blocks, so ``fastsim.speech.runner.hidden_state_batches``,
``fastsim analyze`` and the probes run on it unchanged. Attention masks give the same frame
lengths as the original's (padding frames are zeroed at the stack input, as the encoders do).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..speech.inference import eval_mode
from ..speech.models import check_model
from ..speech.whisper import is_whisper
from .network import MimickingNetwork
from .whisper_stack import replace_stack as replace_whisper_stack


def stack_lengths(model: nn.Module, samples: torch.Tensor) -> torch.Tensor:
    """Frames of the stack input for clips of these lengths (before any adapter downsamples)."""
    try:
        return model._get_feat_extract_output_lengths(samples, add_adapter=False)
    except TypeError:  # HuBERT: no adapter, no such argument
        return model._get_feat_extract_output_lengths(samples)


def stack_input(model: nn.Module, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None):
    """(the transformer stack's input (B, T, D) — the feature-projection output the encoder
    receives, padding frames zeroed —, extract_features, the (B, T) frame mask or None)."""
    feats = model.feature_extractor(input_values).transpose(1, 2)
    proj = model.feature_projection(feats)
    hidden, extract = proj if isinstance(proj, tuple) else (proj, None)
    mask = None
    if attention_mask is not None:
        lengths = stack_lengths(model, attention_mask.long().sum(-1))
        mask = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths.to(hidden.device)[:, None]
        hidden = hidden * mask[..., None].to(hidden.dtype)
    return hidden, extract, mask


class MimickedModel(nn.Module):
    """CNN front end and feature projection of a speech encoder, a mimic in place of its stack."""

    def __init__(self, model: nn.Module, mimic: MimickingNetwork, output_class: type, output_fields: set[str]):
        super().__init__()
        self.feature_extractor = model.feature_extractor
        self.feature_projection = model.feature_projection
        self.adapter = getattr(model, "adapter", None)
        self.mimic = mimic
        self.config = copy.deepcopy(model.config)
        self.config.num_hidden_layers = mimic.config.depth
        self.config.mimicked_layers = model.config.num_hidden_layers
        self._teacher_cls = type(model)
        self._output_class = output_class
        self._output_fields = output_fields

    def _get_feat_extract_output_lengths(self, input_lengths, *args: Any, **kwargs: Any):
        # the teacher's own formula: it reads only the config's conv kernels and strides
        return self._teacher_cls._get_feat_extract_output_lengths(self, input_lengths, *args, **kwargs)

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None, **_: Any):
        if output_hidden_states is None:
            output_hidden_states = bool(getattr(self.config, "output_hidden_states", False))
        if return_dict is None:
            return_dict = bool(getattr(self.config, "return_dict", True))
        hidden, extract, mask = stack_input(self, input_values, attention_mask)
        outs = self.mimic(hidden, mask, return_all=True)
        last = outs[-1]
        if self.adapter is not None:
            last = self.adapter(last)
        fields: dict[str, Any] = {"last_hidden_state": last}
        if "extract_features" in self._output_fields:
            fields["extract_features"] = extract
        if output_hidden_states and "hidden_states" in self._output_fields:
            fields["hidden_states"] = (hidden, *outs)
        out = self._output_class(**fields)
        return out if return_dict else out.to_tuple()


def replace_stack(model: nn.Module, mimic: MimickingNetwork) -> MimickedModel:
    """The model with its transformer stack (``model.encoder``) replaced by ``mimic`` (moved to
    the model's device and dtype). The original is left as it is; the two share the CNN front end
    and feature projection (the same modules, not copies). A Whisper encoder gets
    ``fastsim.mimic.whisper_stack.MimickedWhisper`` (the mimic replaces its layers and final norm)."""
    check_model(model)
    if is_whisper(model):
        return replace_whisper_stack(model, mimic)
    if not isinstance(mimic, MimickingNetwork):
        raise TypeError(f"mimic must be a MimickingNetwork; got {type(mimic).__name__}")
    if not all(hasattr(model, a) for a in ("feature_extractor", "feature_projection", "encoder")):
        raise ValueError(f"model: {type(model).__name__} has no feature_extractor/feature_projection/encoder to split")
    if mimic.config.dim != model.config.hidden_size:
        raise ValueError(f"mimic: its width {mimic.config.dim} differs from the model's hidden size {model.config.hidden_size}")
    p = next(model.parameters())
    mimic.to(p.device, p.dtype)
    # The original's output class and fields, from one forward pass on 25 ms of silence.
    was_training = model.training
    with eval_mode(model), torch.no_grad():
        probe = model(torch.zeros(1, 400, device=p.device, dtype=p.dtype), output_hidden_states=True, return_dict=True)
    fields = set(getattr(type(probe), "__dataclass_fields__", {})) or set(probe.keys())
    out = MimickedModel(model, mimic, type(probe), fields)
    return out.train(was_training)
