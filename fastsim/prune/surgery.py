"""Layer surgery: taking transformer layers out of a model, for the length of a ``with`` block or for good.

``skip_layers(model, layers)`` swaps the model's layer ``nn.ModuleList`` for a new list that holds
the kept layer *objects* (no weight is copied or moved; the model stays on its device) and puts
the original list back on exit, also when the body raises. ``remove_layers(model, layers)`` does
the same for good and updates the config, so ``save_pretrained`` / ``from_pretrained`` give the
pruned model back.

Layer indices are 0-based positions in the model's layer list as it is now (layer i is the i-th
block; in a similarity matrix with the stack input, that is row i + 1). ``kept_layers(model)``
says which layers of the original model the current ones are: it is kept in
``config.fastsim_kept_layers`` (saved with the config), and composes over repeated pruning.

Model quirks handled:

* the layer stack is found as the one ``nn.ModuleList`` of ``config.num_hidden_layers`` blocks
  (``encoder.layers`` in the speech encoders, ``encoder.layer`` in BERT-style text encoders), never
  in a decoder: in a whole Whisper model (``WhisperForConditionalGeneration``) it is the encoder's,
  and ``config.num_hidden_layers`` is an alias of ``encoder_layers``, so that is what is updated;
* WavLM computes its relative position bias in layer 0 only (``rel_attn_embed``) and hands it on
  to the later layers. When layer 0 goes, its bias embedding (the same module, not a copy) is
  attached to the first kept layer, which then computes the bias, as the first layer of a
  physically smaller WavLM does;
* stable-layer-norm (large) variants: the encoder's final layer norm stays after the last kept
  layer, because only the list changes;
* ``config.num_hidden_layers`` is set to the kept count (restored on exit by ``skip_layers``), so
  ``output_hidden_states`` returns the stack input plus one state per kept layer, and code that
  checks that count (``fastsim.speech.runner.hidden_state_batches``) works inside the block;
* ``layer_idx`` attributes (cache slots in BERT-style attention) are renumbered to the new
  positions;
* layerdrop is the model's own: off in eval mode; in training mode it drops among the kept layers
  (WavLM never drops the first, which now carries the bias);
* transformers >= 5 records hidden states with forward hooks installed lazily on each layer; they
  are installed before the swap, so layers taken out and put back keep theirs.

Not thread-safe: the model is changed while the block runs.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

#: submodules that only the first layer owns and the following layers rely on (WavLM's relative
#: position bias). When the first layer is removed, they move to the new first layer.
FIRST_LAYER_ONLY = ("rel_attn_embed",)
#: attribute names under which transformers keeps a model's block list, most likely first
STACK_NAMES = ("layers", "layer", "h", "blocks", "block")
_NOT_THE_STACK = ("conv", "feature_extractor", "feature_encoder", "adapter", "tdnn", "quantizer", "decoder")


class LayerStackError(ValueError):
    """The model has no single list of transformer layers that fastsim can prune."""


@dataclass
class LayerStack:
    """Where a model keeps its transformer layers: ``getattr(owner, attr)`` is ``layers``."""

    owner: nn.Module
    attr: str
    path: str
    layers: nn.ModuleList
    config: Any


def _config(model: nn.Module):
    cfg = getattr(model, "config", None)
    if cfg is None or not isinstance(getattr(cfg, "num_hidden_layers", None), int):
        raise LayerStackError(
            f"model: {type(model).__name__} has no config.num_hidden_layers; fastsim.prune works on transformers "
            f"models whose layers sit in one nn.ModuleList (Wav2Vec2, HuBERT, WavLM, Data2VecAudio, BERT-style encoders)"
        )
    return cfg


def find_layer_stack(model: nn.Module) -> LayerStack:
    """The model's list of transformer layers: the nn.ModuleList of config.num_hidden_layers blocks
    of one class, named like a layer list and not part of a CNN front end or adapter."""
    cfg = _config(model)
    n = cfg.num_hidden_layers
    found = []
    for path, module in model.named_modules():
        for attr, child in module._modules.items():
            if not isinstance(child, nn.ModuleList) or len(child) != n or n == 0:
                continue
            full = f"{path}.{attr}" if path else attr
            if attr not in STACK_NAMES or any(word in full.lower() for word in _NOT_THE_STACK):
                continue
            if len({type(m) for m in child}) != 1:
                continue
            found.append(LayerStack(module, attr, full, child, cfg))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(s.path for s in found)})"
        raise LayerStackError(
            f"model: {type(model).__name__} has {what} candidate layer list(s) of config.num_hidden_layers={n} "
            f"blocks; fastsim.prune needs exactly one nn.ModuleList named one of {', '.join(STACK_NAMES)}"
        )
    return found[0]


def kept_layers(model: nn.Module) -> list[int]:
    """Which layers of the original (unpruned) model the current layers are, in order."""
    cfg = _config(model)
    kept = getattr(cfg, "fastsim_kept_layers", None)
    return list(kept) if kept is not None else list(range(cfg.num_hidden_layers))


def check_layers(layers: Any, num_layers: int, name: str = "layers") -> list[int]:
    """Sorted, validated layer indices to remove (0-based). Rejects out-of-range indices,
    duplicates, non-integers, and removing every layer."""
    if isinstance(layers, (int, str, bytes)) or not hasattr(layers, "__iter__"):
        raise TypeError(f"{name} must be a list of 0-based layer indices; got {layers!r}")
    out = []
    for v in layers:
        try:
            if isinstance(v, bool):
                raise TypeError
            out.append(operator.index(v))
        except TypeError:
            raise TypeError(f"{name} must hold integer layer indices; got {v!r}") from None
    bad = [v for v in out if not 0 <= v < num_layers]
    if bad:
        raise ValueError(f"{name}: layer index {bad[0]} is out of range; the model has {num_layers} layers (0..{num_layers - 1})")
    dup = sorted({v for v in out if out.count(v) > 1})
    if dup:
        raise ValueError(f"{name}: layer {dup[0]} is listed more than once")
    if len(out) >= num_layers:
        raise ValueError(f"{name}: cannot remove all {num_layers} layers; at least one must stay")
    return sorted(out)


def _install_capture_hooks(model: nn.Module) -> None:
    """transformers >= 5 installs its hidden-state hooks on every layer the first time hidden states
    are asked for; do it now, while every layer is in the list."""
    try:
        from transformers import PreTrainedModel
        from transformers.utils.output_capturing import maybe_install_capturing_hooks
    except ImportError:  # older transformers collect hidden states in the loop itself
        return
    flag = "_output_capturing_hooks_installed"
    for m in model.modules():  # outer models first; each installs for its inner models
        if not isinstance(m, PreTrainedModel) or getattr(m, flag, False):
            continue
        inner_done = any(getattr(s, flag, False) for s in m.modules() if s is not m and isinstance(s, PreTrainedModel))
        if not inner_done:  # else installing here would hook the inner model's layers twice
            maybe_install_capturing_hooks(m)


def _first_layer_moves(layers: nn.ModuleList, keep: list[int]) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent in the new first layer, name, module) for each first-layer-only submodule of layer 0
    that the new first layer lacks."""
    if not keep or keep[0] == 0:
        return []
    first, new_first = layers[0], layers[keep[0]]
    moves = []
    for path, module in first.named_modules():
        parent_path, _, name = path.rpartition(".")
        if name not in FIRST_LAYER_ONLY:
            continue
        try:
            parent = new_first.get_submodule(parent_path) if parent_path else new_first
        except AttributeError:
            continue
        if name not in parent._modules:
            moves.append((parent, name, module))
    return moves


def _layer_idx_modules(layer: nn.Module) -> list[nn.Module]:
    return [m for m in layer.modules() if isinstance(getattr(m, "layer_idx", None), int)]


@contextlib.contextmanager
def skip_layers(model: nn.Module, layers: Sequence[int]) -> Iterator[list[int]]:
    """Run ``model`` without the given layers (0-based positions) inside the block.

    Yields the original indices of the layers that stay. No parameter is copied or moved; on exit
    (also on an exception) the model is exactly as before: same modules, same config values."""
    stack = find_layer_stack(model)
    L = len(stack.layers)
    remove = check_layers(layers, L)
    keep = [i for i in range(L) if i not in set(remove)]
    original_kept = kept_layers(model)
    new_kept = [original_kept[i] for i in keep]
    if not remove:
        yield new_kept
        return
    _install_capture_hooks(model)
    cfg, original = stack.config, stack.layers
    had_kept_attr = "fastsim_kept_layers" in cfg.__dict__
    old_kept_attr = cfg.__dict__.get("fastsim_kept_layers")
    old_n = cfg.num_hidden_layers
    moves = _first_layer_moves(original, keep)
    idx_saved = [(m, m.layer_idx) for i in keep for m in _layer_idx_modules(original[i])]
    shorter = nn.ModuleList([original[i] for i in keep])
    shorter.train(original.training)
    done: list[tuple[nn.Module, str]] = []
    try:
        setattr(stack.owner, stack.attr, shorter)
        for parent, name, module in moves:
            parent._modules[name] = module
            done.append((parent, name))
        for pos, i in enumerate(keep):
            for m in _layer_idx_modules(original[i]):
                m.layer_idx = pos
        cfg.num_hidden_layers = len(keep)
        cfg.fastsim_kept_layers = new_kept
        yield new_kept
    finally:
        setattr(stack.owner, stack.attr, original)
        original.training = shorter.training
        for parent, name in done:
            del parent._modules[name]
        for m, idx in idx_saved:
            m.layer_idx = idx
        cfg.num_hidden_layers = old_n
        if had_kept_attr:
            cfg.fastsim_kept_layers = old_kept_attr
        elif "fastsim_kept_layers" in cfg.__dict__:
            delattr(cfg, "fastsim_kept_layers")


def remove_layers(model: nn.Module, layers: Sequence[int]) -> nn.Module:
    """Remove the given layers (0-based positions) for good, in place; returns the model.

    The config's num_hidden_layers becomes the kept count and ``fastsim_kept_layers`` lists the
    original indices of the layers that stay, so ``save_pretrained`` and ``from_pretrained``
    round-trip the pruned model. Kept layers keep their parameters (no copies)."""
    stack = find_layer_stack(model)
    L = len(stack.layers)
    remove = check_layers(layers, L)
    if not remove:
        return model
    keep = [i for i in range(L) if i not in set(remove)]
    new_kept = [kept_layers(model)[i] for i in keep]
    original = stack.layers
    for parent, name, module in _first_layer_moves(original, keep):
        parent._modules[name] = module
    for pos, i in enumerate(keep):
        for m in _layer_idx_modules(original[i]):
            m.layer_idx = pos
    shorter = nn.ModuleList([original[i] for i in keep])
    shorter.train(original.training)
    setattr(stack.owner, stack.attr, shorter)
    stack.config.num_hidden_layers = len(keep)
    stack.config.fastsim_kept_layers = new_kept
    return model


def storage_pointers(model: nn.Module) -> dict[str, int]:
    """name -> data pointer of every parameter and buffer (to check that nothing was copied)."""
    out = {f"param:{n}": p.data_ptr() for n, p in model.named_parameters(remove_duplicate=False)}
    out.update({f"buffer:{n}": b.data_ptr() for n, b in model.named_buffers(remove_duplicate=False)})
    return out


__all__ = ["skip_layers", "remove_layers", "kept_layers", "find_layer_stack", "check_layers", "LayerStack",
           "LayerStackError", "storage_pointers"]
