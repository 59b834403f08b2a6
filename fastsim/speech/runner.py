"""Running a speech encoder over audio: clips in, batches of hidden states out.

* ``load_clips(audio)`` — every clip (paths or arrays) as a 16 kHz wave; the ones that cannot be
  used are listed as ``Failure``s (or, with ``strict=True``, the first raises).
* ``pad(sequences)`` — the one pad-and-mask batch builder: (T_i, ...) tensors to (B, T, ...) and the
  (B, T) mask of real steps. Waves, stack-input frames and distillation targets all go through it.
* ``forward_batches(model, waves)`` — the one place a model runs over clips: batches planned under
  the padding policy below, padded, run in eval mode without gradients; each pass's output, the
  clips' frame counts and, when asked, the transformer stack's input.
* ``hidden_state_batches(model, clips)`` — the runner that ``analyze`` and the probes read: each
  batch's hidden states — the input of the transformer stack first, then every layer's output, as
  the model's ``output_hidden_states`` gives them — with the frame-level mask. Only one batch of
  activations exists at a time. The last one is the stack's output, ``last_hidden_state``: in the
  stable-layer-norm (large) models that is after the encoder's final layer norm, as transformers
  4.x's ``hidden_states[-1]`` was; transformers 5 returns it before that norm, so the runner puts
  ``last_hidden_state`` in its place and the results do not depend on the transformers version.

Padding. A frame-level mask is exact only where the model's output for a clip does not depend on
what else is in its batch. That holds for the layer-norm CNN families with an attention mask
(Wav2Vec2/HuBERT/WavLM large); it does not for the group-norm CNN (base models: group norm
normalizes over time, padding included) nor for Data2VecAudio (its stacked positional
convolutions carry values from padding frames into the clip). For those the runner batches only
clips of the same length, so no clip is ever padded; results are the same as one clip at a time
(``fastsim.speech.models.padding_safe``).

Whisper (``fastsim.speech.whisper``) runs through ``whisper.encode``: each clip in its own zero-padded
30 s log-mel window(s), no attention mask, waves not normalized (the log-mel has its own), so any
lengths share a batch; the stack input first, the last state after the final layer norm.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import whisper
from .audio import SAMPLE_RATE, AudioError, load_audio
from .inference import eval_mode
from .models import ModelError, check_model, frame_counts, padding_safe
from .whisper import is_whisper


def normalize(wave: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per clip, as the feature extractors of these models do."""
    return ((wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)).astype(np.float32)


@dataclass
class Failure:
    """A clip that was skipped, and why."""

    source: str
    reason: str


@dataclass
class Batch:
    """One batch: hidden states (stack input first), the (B, T) frame mask, and the clips' names."""

    hidden_states: tuple[torch.Tensor, ...]
    mask: torch.Tensor
    names: list[str]


@dataclass
class Forward:
    """One forward pass: the clips it ran (indices into the waves given), the model's output, each
    clip's number of frames in the transformer stack (``output.hidden_states``), and the stack's
    input (B, T, D) when it was asked for (what ``model.encoder`` received, before the encoder
    zeroes padding frames). ``output_frames``: each clip's frames in ``output.last_hidden_state``
    where they differ from the stack's (a model with an adapter after the stack, which changes
    the frame rate); None: the same."""

    indices: list[int]
    output: Any
    frames: list[int]
    stack_input: torch.Tensor | None = None
    output_frames: list[int] | None = None

    @property
    def last_frames(self) -> list[int]:
        """Each clip's frames in ``output.last_hidden_state``."""
        return self.frames if self.output_frames is None else self.output_frames


def _source_name(src: Any, i: int) -> str:
    if isinstance(src, (str, os.PathLike)):
        return os.fspath(src)
    return f"array #{i}"


def load_clips(audio: Sequence[Any], *, sample_rate: int | None = None, strict: bool = False,
               min_samples: int = 400) -> tuple[list[tuple[str, np.ndarray]], list[Failure]]:
    """Load every clip (paths or arrays; arrays need sample_rate). Returns the (name, wave) pairs
    and the failures; with strict=True the first failure raises AudioError instead."""
    clips, failures = [], []
    for i, src in enumerate(audio):
        name = _source_name(src, i)
        try:
            wave = load_audio(src, None if isinstance(src, (str, os.PathLike)) else sample_rate, name=name)
            if wave.size < min_samples:
                raise AudioError(f"{name}: {wave.size} samples at {SAMPLE_RATE} Hz is shorter than one frame "
                                 f"({min_samples} samples = {min_samples / SAMPLE_RATE * 1000:.0f} ms)")
        except AudioError as e:
            if strict:
                raise
            failures.append(Failure(name, str(e)))
            continue
        clips.append((name, wave))
    return clips, failures


def no_usable_audio(given: int, failures: Sequence[Failure]) -> ValueError:
    """The error for a run left without a single usable clip (the first reasons included)."""
    detail = "; ".join(f.reason for f in failures[:3]) or "no audio given"
    return ValueError(f"no usable audio: {given} clip(s) given, none could be used ({detail})")


def plan_batches(lengths: Sequence[int], batch_size: int, equal_length: bool) -> list[list[int]]:
    """Clip indices per batch: lengths sorted (less padding); with equal_length, a batch holds
    clips of one length only."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and (not equal_length or lengths[batches[-1][0]] == lengths[i]):
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def pad(sequences: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, ...) of the (T_i, ...) sequences zero-padded at the end to the longest T, on the
    first one's device and dtype, and the (B, T) bool mask of their own steps."""
    first = sequences[0]
    T = max(s.shape[0] for s in sequences)
    out = first.new_zeros((len(sequences), T, *first.shape[1:]))
    mask = torch.zeros(len(sequences), T, dtype=torch.bool, device=first.device)
    for b, s in enumerate(sequences):
        out[b, : s.shape[0]] = s
        mask[b, : s.shape[0]] = True
    return out, mask


def stack_frame_counts(model: torch.nn.Module, samples: Sequence[int]) -> tuple[list[int], list[int] | None]:
    """Frames of clips of these lengths in the transformer stack and, for a model with an adapter
    after the stack (``config.add_adapter``: it shortens the sequence), in its output; else None."""
    if not getattr(model.config, "add_adapter", False):
        return frame_counts(model, samples), None
    stack = model._get_feat_extract_output_lengths(torch.as_tensor(list(samples), dtype=torch.long), add_adapter=False)
    return [int(v) for v in stack], frame_counts(model, samples)


def frame_mask(frames: Sequence[int], num_frames: int, device: torch.device | str) -> torch.Tensor:
    """(B, T) bool mask of each clip's own frames, given their counts."""
    counts = torch.as_tensor(list(frames), device=device)
    return torch.arange(num_frames, device=device)[None, :] < counts[:, None]


def forward_batches(model: torch.nn.Module, waves: Sequence[np.ndarray], *, batch_size: int,
                    output_hidden_states: bool = True, do_normalize: bool = True,
                    stack_input: bool = False) -> Iterator[Forward]:
    """Run the model over 16 kHz waves, a batch at a time, and yield each pass (see ``Forward``).

    Waves are sorted by length, normalized per clip (``do_normalize``) and zero-padded at the end;
    the model gets an attention mask where a batch is padded. Models that are not padding-safe get
    batches of equal-length clips only (see the module docs). The model runs in eval mode (its
    mode is restored afterwards) without gradients. Checks the model and batch size when called."""
    check_model(model)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    return _forward_batches(model, waves, batch_size, output_hidden_states, do_normalize, stack_input)


@torch.no_grad()
def _forward_batches(model: torch.nn.Module, waves: Sequence[np.ndarray], batch_size: int, output_hidden_states: bool,
                     do_normalize: bool, stack_input: bool) -> Iterator[Forward]:
    p = next(model.parameters())
    plan = plan_batches([w.size for w in waves], batch_size, equal_length=not padding_safe(model))
    captured: dict[str, torch.Tensor] = {}

    def grab(_module, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        captured["x"] = h.clone()  # before the encoder zeroes padding frames in place

    if is_whisper(model):  # log-mel 30 s windows (own normalization; no per-clip wave normalization)
        for group in plan:
            out, frames, first = whisper.forward_batch(model, [waves[i] for i in group], window_batch=batch_size,
                                                       output_hidden_states=output_hidden_states, stack_input=stack_input)
            yield Forward(group, out, frames, first)
        return
    with eval_mode(model):
        for group in plan:
            ws = [normalize(waves[i]) if do_normalize else waves[i] for i in group]
            x, valid = pad([torch.from_numpy(w) for w in ws])
            padded = not bool(valid.all())
            captured.clear()
            hook = model.encoder.register_forward_pre_hook(grab, with_kwargs=True) if stack_input else None
            try:
                out = model(x.to(p.device, p.dtype), attention_mask=valid.long().to(p.device) if padded else None,
                            output_hidden_states=output_hidden_states, return_dict=True)
            finally:
                if hook is not None:
                    hook.remove()
            frames, output_frames = stack_frame_counts(model, [w.size for w in ws])
            yield Forward(group, out, frames, captured.get("x"), output_frames)


def hidden_state_batches(
    model: torch.nn.Module,
    clips: Sequence[tuple[str, np.ndarray]],
    *,
    batch_size: int = 8,
    do_normalize: bool = True,
    progress: bool = False,
    all_layers: bool = True,
) -> Iterator[Batch]:
    """Run the model over clips (name, 16 kHz wave) and yield each batch's hidden states and mask.

    Clips are sorted by length and padded with zeros at the end; the model gets an attention
    mask, and the yielded mask marks each clip's own frames. Models that are not padding-safe get
    batches of equal-length clips only (see the module docs). With ``all_layers=False`` the model
    is not asked for every hidden state: ``Batch.hidden_states`` is ``(last_hidden_state,)``."""
    passes = forward_batches(model, [wave for _, wave in clips], batch_size=batch_size,
                             output_hidden_states=all_layers, do_normalize=do_normalize)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        # counted in samples (exact integers), shown in seconds of audio
        bar = tqdm(total=sum(wave.size for _, wave in clips), unit="s audio", unit_scale=1 / SAMPLE_RATE,
                   desc="hidden states",
                   bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s audio [{elapsed}<{remaining}, {rate_fmt}]")
    try:
        for f in passes:
            out, L = f.output, model.config.num_hidden_layers
            states = out.hidden_states if all_layers else (out.last_hidden_state,)
            if all_layers and (states is None or len(states) != L + 1):
                raise ModelError(f"{type(model).__name__} did not return the {L + 1} hidden states "
                                 f"(stack input + every layer) that output_hidden_states=True asks for")
            if all_layers and f.output_frames is None and out.last_hidden_state.shape == states[-1].shape:
                # (with an adapter, last_hidden_state is at the adapter's frame rate: not the stack's output)
                states = (*states[:-1], out.last_hidden_state)
            mask = frame_mask(f.frames if all_layers else f.last_frames, states[0].shape[1], states[0].device)
            yield Batch(tuple(states), mask, [clips[i][0] for i in f.indices])
            if bar is not None:
                bar.update(sum(clips[i][1].size for i in f.indices))
    finally:
        passes.close()
        if bar is not None:
            bar.close()
