"""The mimic in place of a Whisper encoder's layer stack (``fastsim.speech.whisper``).

What is replaced and what the mimic is trained towards:

* input: the stack input, ``whisper.stack_input`` — GELU(conv1), GELU(conv2) and the sinusoidal
  positions added — over each clip's own frames (⌈samples / 320⌉ of its 30 s window(s));
* target: fastsim's last hidden state of Whisper, ``last_hidden_state``, i.e. the output of the
  last layer **after the encoder's final layer norm**. The mimic therefore stands in for the
  layers *and* the final layer norm (``encoder.layers`` + ``encoder.layer_norm``: the "stack"
  whose parameters are counted as replaced); intermediate targets (a 2-block mimic) are the
  layers' outputs, as ``whisper.encode`` returns them.

``MimickedWhisper`` keeps the teacher's conv front end and positional embeddings (the same
modules, not copies) and runs the mimic on each window's valid frames (the window's padding
frames are zeroed and masked, as in training, where the teacher's frames of a batch are padded
with zeros). It says it stands in for a Whisper encoder (``is_whisper_encoder``), so
``whisper.encode``, the runner, ``fastsim analyze`` and the probes run on it unchanged; its
config is the teacher's with ``encoder_layers`` = the number of mimic blocks.

Timing (``compare``): Whisper's encoder always runs a 30 s window, so the timed batch is of full
30 s windows (``clip_seconds`` is 30 whatever is asked: a shorter clip costs the same window), from
the log-mel features (the feature extraction, the same for both, is not timed): the whole model
(conv front end + stack) against the mimicked one, and the stack (layers + final norm) against the
mimic on the same stack input.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from ..speech import whisper
from ..speech.inference import eval_mode, time_call
from .network import MimickingNetwork
from .reports import TimeReport


class MimickedWhisper(nn.Module):
    """A Whisper encoder's conv front end and positions, a mimic in place of its layers and final norm."""

    is_whisper_encoder = True  # whisper.encoder_of / encode take it for an encoder
    takes_window_frames = True  # whisper.encode passes each window's valid frame count

    def __init__(self, encoder: nn.Module, mimic: MimickingNetwork):
        super().__init__()
        encoder = whisper.encoder_of(encoder)
        self.conv1, self.conv2, self.embed_positions = encoder.conv1, encoder.conv2, encoder.embed_positions
        self.dropout = encoder.dropout
        self.mimic = mimic
        self.config = copy.deepcopy(encoder.config)
        self.config.mimicked_layers = encoder.config.encoder_layers
        self.config.encoder_layers = mimic.config.depth

    def forward(self, input_features: torch.Tensor, attention_mask: Any = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, window_frames: torch.Tensor | None = None, **_: Any):
        from transformers.modeling_outputs import BaseModelOutput

        x = whisper.stack_input(self, input_features)
        mask = None
        if window_frames is not None:
            mask = torch.arange(x.shape[1], device=x.device)[None, :] < window_frames.to(x.device)[:, None]
            x = x * mask[..., None].to(x.dtype)
        outs = self.mimic(x, mask, return_all=True)
        out = BaseModelOutput(last_hidden_state=outs[-1], hidden_states=(x, *outs) if output_hidden_states else None)
        return out if return_dict is None or return_dict else out.to_tuple()


def replace_stack(model: nn.Module, mimic: MimickingNetwork) -> MimickedWhisper:
    """The Whisper encoder with its layers and final norm replaced by ``mimic`` (moved to the
    model's device and dtype); the original is left as it is (the front end is shared)."""
    encoder = whisper.encoder_of(model)
    if not isinstance(mimic, MimickingNetwork):
        raise TypeError(f"mimic must be a MimickingNetwork; got {type(mimic).__name__}")
    if mimic.config.dim != encoder.config.d_model:
        raise ValueError(f"mimic: its width {mimic.config.dim} differs from the model's hidden size {encoder.config.d_model}")
    p = next(encoder.parameters())
    mimic.to(p.device, p.dtype)
    return MimickedWhisper(encoder, mimic).train(encoder.training)


def compare(teacher: nn.Module, mimicked: MimickedWhisper, *, batch: int, clip_seconds: float, warmup: int,
            repeats: int, seed: int = 0):
    """``fastsim.mimic.timing.compare`` for Whisper (see the module docs): full 30 s windows."""
    if batch < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"timing: batch >= 1, repeats >= 1 and warmup >= 0 are needed; got {batch}, {repeats}, {warmup}")
    encoder = whisper.encoder_of(teacher)
    p = next(encoder.parameters())
    dev = p.device
    rng = np.random.default_rng(seed)
    waves = [(0.1 * rng.standard_normal(whisper.WINDOW_SAMPLES)).astype(np.float32) for _ in range(batch)]
    feats = whisper.log_mel(waves, encoder.config.num_mel_bins).to(dev, p.dtype)
    full_frames = torch.full((batch,), whisper.WINDOW_FRAMES, device=dev)
    with eval_mode(encoder, mimicked):
        with torch.inference_mode():
            h = whisper.stack_input(encoder, feats)

        def stack():
            return whisper.final_norm(encoder, whisper.run_stack(encoder, h)[-1])

        full = time_call(lambda: encoder(feats), dev, warmup=warmup, repeats=repeats)
        mim = time_call(lambda: mimicked(feats, window_frames=full_frames), dev, warmup=warmup, repeats=repeats)
        stack_s = time_call(stack, dev, warmup=warmup, repeats=repeats)
        mimic_s = time_call(lambda: mimicked.mimic(h), dev, warmup=warmup, repeats=repeats)
    method = ("CUDA events" if dev.type == "cuda" else "wall clock") + \
        f", median of {repeats} after {warmup} warm-up passes, 30 s windows from log-mel features"
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    return TimeReport(name, method, batch, float(whisper.WINDOW_SECONDS), full, mim, stack_s, mimic_s)


def clip_stack_inputs(model: nn.Module, waves: list[np.ndarray]) -> list[torch.Tensor]:
    """Each clip's stack input over its own frames (float32), for the no-distillation baseline."""
    return [h.float() for h in whisper.clip_stack_inputs(model, waves)]


__all__ = ["MimickedWhisper", "replace_stack", "compare", "clip_stack_inputs"]
