"""Hugging Face speech encoders: build, load, and run them over audio, one batch of hidden states at a time.

Families: Wav2Vec2, HuBERT, WavLM and Data2VecAudio, in their base (group-norm CNN, post-norm
transformer) and large ("stable layer norm": layer-norm CNN, pre-norm transformer) variants, and
any checkpoint of theirs (CTC / classification heads included: the encoder inside is used).

``hidden_state_batches`` is the runner: it loads clips, batches them, and yields each batch's
hidden states — the input of the transformer stack first, then every layer's output, as the
model's ``output_hidden_states`` gives them — with the frame-level mask. Only one batch of
activations exists at a time. The last one is the stack's output, ``last_hidden_state``: in the
stable-layer-norm (large) models that is after the encoder's final layer norm, as transformers
4.x's ``hidden_states[-1]`` was; transformers 5 returns it before that norm, so the runner puts
``last_hidden_state`` in its place and the results do not depend on the transformers version.

Padding. A frame-level mask is exact only where the model's output for a clip does not depend on
what else is in its batch. That holds for the layer-norm CNN families with an attention mask
(Wav2Vec2/HuBERT/WavLM large); it does not for the group-norm CNN (base models: group norm
normalizes over time, padding included) nor for Data2VecAudio (its stacked positional
convolutions carry values from padding frames into the clip). For those the runner batches only
clips of the same length, so no clip is ever padded; results are the same as one clip at a time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from .audio import SAMPLE_RATE, AudioError, load_audio

#: family -> (config class, model class) names in transformers
FAMILIES = {
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"),
    "hubert": ("HubertConfig", "HubertModel"),
    "wavlm": ("WavLMConfig", "WavLMModel"),
    "data2vec-audio": ("Data2VecAudioConfig", "Data2VecAudioModel"),
}
SIZES = ("tiny", "small", "base", "large")
#: model_type (config) -> family
MODEL_TYPES = {"wav2vec2": "wav2vec2", "hubert": "hubert", "wavlm": "wavlm", "data2vec-audio": "data2vec-audio"}


class ModelError(ValueError):
    """A model that fastsim cannot analyse (not an audio encoder, no hidden states, not found)."""


def _transformers():
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - the speech extra is missing
        raise ImportError('fastsim\'s speech tools need transformers: pip install "fastsim[speech]"') from e
    return transformers


def config_for(family: str = "wav2vec2", size: str = "base", **overrides: Any):
    """The transformers config of a family at a size.

    base: 12 layers x 768 (group-norm CNN); large: 24 x 1024 (stable layer norm, layer-norm CNN);
    small: the base layout (12 layers) at width 256 with a 128-channel CNN, for quick CPU runs;
    tiny: 4 layers x 32 with a narrow CNN, for tests. All keep the frame rate (20 ms frames,
    400-sample receptive field). ``overrides`` are passed to the config."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}; got {family!r}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}; got {size!r}")
    cls = getattr(_transformers(), FAMILIES[family][0])
    kw: dict[str, Any] = {}
    if size == "large":
        kw = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
        if family != "data2vec-audio":  # data2vec-audio has layer-norm CNN and pre-norm stack always
            kw.update(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
    elif size == "small":
        kw = dict(hidden_size=256, num_attention_heads=4, intermediate_size=1024, conv_dim=(128,) * 7)
        if family == "wavlm":
            kw.update(num_buckets=160, max_bucket_distance=400)
    elif size == "tiny":
        kw = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                  conv_dim=(32,) * 7, num_conv_pos_embedding_groups=4)
        kw["num_conv_pos_embeddings"] = 3 if family == "data2vec-audio" else 16
        if family == "data2vec-audio":
            kw["conv_pos_kernel_size"] = 5
        if family == "wavlm":
            kw.update(num_buckets=32, max_bucket_distance=64)
    kw.update(overrides)
    return cls(**kw)


def random_model(family: str = "wav2vec2", size: str = "base", *, seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """A model of that architecture with random weights (seeded), in eval mode."""
    cfg = config_for(family, size, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(_transformers(), FAMILIES[family][1])(cfg)
    return model.eval()


def _encoder_of(model: torch.nn.Module) -> torch.nn.Module:
    """The bare encoder of a model with a head (Wav2Vec2ForCTC.wav2vec2, ...), or the model itself."""
    base = getattr(model, "base_model", model)
    return base if base is not None else model


def load_model(name_or_path: str | os.PathLike, *, device: str | torch.device | None = None) -> torch.nn.Module:
    """A speech encoder from a local directory (``save_pretrained`` layout) or a hub name, in eval
    mode, on ``device`` (default: CUDA when available). Heads are dropped: the encoder is returned."""
    tf = _transformers()
    src = os.fspath(name_or_path)
    try:
        model = tf.AutoModel.from_pretrained(src)
    except OSError as e:
        where = "directory" if os.path.isdir(src) else "hub name (no network? set HF_HUB_OFFLINE=1 and use a local directory)"
        raise ModelError(f"model {src!r}: cannot load it as a {where}: {e}") from None
    except ValueError as e:
        raise ModelError(f"model {src!r}: not a model transformers can load ({e})") from None
    model = _encoder_of(model)
    check_model(model, src)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(dev).eval()


def check_model(model: torch.nn.Module, name: str = "model") -> None:
    """Raise ModelError unless the model is an audio encoder that returns per-layer hidden states."""
    cfg = getattr(model, "config", None)
    if cfg is None or not hasattr(model, "_get_feat_extract_output_lengths"):
        raise ModelError(
            f"{name}: not a speech encoder fastsim can run (needs a transformers audio model with a CNN "
            f"front end, e.g. {', '.join(FAMILIES)}); got {type(model).__name__}"
        )
    if getattr(cfg, "num_hidden_layers", 0) < 1:
        raise ModelError(f"{name}: the model has no transformer layers, so there are no hidden states to compare")


def family_of(model: torch.nn.Module) -> str:
    return MODEL_TYPES.get(getattr(model.config, "model_type", ""), getattr(model.config, "model_type", "unknown"))


def padding_safe(model: torch.nn.Module) -> bool:
    """Whether padded batches with an attention mask give each clip exactly its own result
    (see the module docs): layer-norm CNN, and not Data2VecAudio."""
    cfg = model.config
    return getattr(cfg, "feat_extract_norm", "layer") == "layer" and family_of(model) != "data2vec-audio"


def layer_labels(model: torch.nn.Module) -> list[str]:
    """Names of the hidden states: "input" (the stack input), then "1" .. "L"."""
    return ["input"] + [str(i) for i in range(1, model.config.num_hidden_layers + 1)]


def frame_counts(model: torch.nn.Module, samples: Sequence[int]) -> list[int]:
    """Frames the CNN front end makes of clips of these lengths (in samples)."""
    out = model._get_feat_extract_output_lengths(torch.as_tensor(list(samples), dtype=torch.long))
    return [int(v) for v in out]


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


@torch.no_grad()
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
    check_model(model)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    dev = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    lengths = [wave.size for _, wave in clips]
    safe = padding_safe(model)
    plan = plan_batches(lengths, batch_size, equal_length=not safe)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        # counted in samples (exact integers), shown in seconds of audio
        bar = tqdm(total=sum(lengths), unit="s audio", unit_scale=1 / SAMPLE_RATE, desc="hidden states",
                   bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s audio [{elapsed}<{remaining}, {rate_fmt}]")
    was_training = model.training
    model.eval()
    try:
        for group in plan:
            waves = [clips[i][1] for i in group]
            if do_normalize:
                waves = [normalize(w) for w in waves]
            longest = max(w.size for w in waves)
            x = torch.zeros(len(waves), longest, dtype=torch.float32)
            sample_mask = torch.zeros(len(waves), longest, dtype=torch.long)
            for b, w in enumerate(waves):
                x[b, : w.size] = torch.from_numpy(w)
                sample_mask[b, : w.size] = 1
            padded = any(w.size != longest for w in waves)
            out = model(
                x.to(dev, dtype),
                attention_mask=sample_mask.to(dev) if padded else None,
                output_hidden_states=all_layers,
                return_dict=True,
            )
            states = out.hidden_states if all_layers else (out.last_hidden_state,)
            if all_layers and (states is None or len(states) != model.config.num_hidden_layers + 1):
                raise ModelError(f"{type(model).__name__} did not return the {model.config.num_hidden_layers + 1} hidden states "
                                 f"(stack input + every layer) that output_hidden_states=True asks for")
            if all_layers and out.last_hidden_state.shape == states[-1].shape:  # (an adapter changes the frame rate)
                states = (*states[:-1], out.last_hidden_state)
            T = states[0].shape[1]
            frames = torch.as_tensor(frame_counts(model, [w.size for w in waves]), device=states[0].device)
            mask = torch.arange(T, device=frames.device)[None, :] < frames[:, None]
            yield Batch(tuple(states), mask, [clips[i][0] for i in group])
            if bar is not None:
                bar.update(sum(w.size for w in waves))
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
