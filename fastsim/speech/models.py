"""Hugging Face speech encoders: the model families, and building, loading and checking a model.

Families: Wav2Vec2, HuBERT, WavLM and Data2VecAudio, in their base (group-norm CNN, post-norm
transformer) and large ("stable layer norm": layer-norm CNN, pre-norm transformer) variants, and
any checkpoint of theirs (CTC / classification heads included: the encoder inside is used).
``FAMILIES`` is the registry: one ``Family`` per model type (its transformers classes, what each
size changes in the config, and whether padded batches are exact for it; see
``fastsim.speech.runner`` for the padding policy). Adding a family is one entry there.

Running a model over audio is ``fastsim.speech.runner``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

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
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}; got {size!r}")
    fam = FAMILIES[family]
    cls = getattr(_transformers(), fam.config_class)
    return cls(**{**_SIZE_CONFIG[size], **fam.sizes.get(size, {}), **overrides})


def random_model(family: str = "wav2vec2", size: str = "base", *, seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """A model of that architecture with random weights (seeded), in eval mode."""
    cfg = config_for(family, size, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(_transformers(), FAMILIES[family].model_class)(cfg)
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
    """The model's family name: its ``config.model_type``."""
    return getattr(model.config, "model_type", "unknown")


def padding_safe(model: torch.nn.Module) -> bool:
    """Whether padded batches with an attention mask give each clip exactly its own result (see
    ``fastsim.speech.runner``): a layer-norm CNN (group norm normalizes over time, padding
    included), in a family whose stack keeps padding out (not Data2VecAudio)."""
    family = FAMILIES.get(family_of(model))
    return getattr(model.config, "feat_extract_norm", "layer") == "layer" and (family is None or family.masks_padding)


def layer_labels(model: torch.nn.Module) -> list[str]:
    """Names of the hidden states: "input" (the stack input), then "1" .. "L"."""
    return ["input"] + [str(i) for i in range(1, model.config.num_hidden_layers + 1)]


def frame_counts(model: torch.nn.Module, samples: Sequence[int]) -> list[int]:
    """Frames the CNN front end makes of clips of these lengths (in samples)."""
    out = model._get_feat_extract_output_lengths(torch.as_tensor(list(samples), dtype=torch.long))
    return [int(v) for v in out]
