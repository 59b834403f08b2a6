"""Prefix sharing: evaluate many pruned models of one model at the cost of their differing parts.

A model with layers removed computes, up to its first removed layer r, exactly what the full model
computes: the same layers 0 .. r-1 on the same input. So for one batch, the full model runs once
with every layer's output recorded (``recording``); each pruned model then runs with its first r
layers *replayed* (``replayed_prefix``: each returns, call by call, the output it gave in the
recorded run, without computing anything) and only its layers after r computed. The result is
the pruned model's own output, bit for bit: the replayed values are the ones its layers 0 .. r-1
would compute, the same batch goes through the same code. A plan that removes the last layers
(r = L - k) costs nothing but the model's front end; one that removes layer 0 gains nothing.

The model's front end is replayed the same way: the modules named in ``FRONT_END`` (the CNN
feature encoder of the wav2vec2 family, ``feature_extractor``; Whisper's two convolutions) return
their recorded outputs, so a pruned model's pass costs its layers after r and the cheap glue
between (Whisper's log-mel and positions, the SSL models' feature projection and positional
convolution). Module outputs are returned as recorded, whatever their form (a tensor, or a tuple
that carries WavLM's position bias on), so the mechanism is the same for every family. Use it
inside ``skip_layers(model, removed)``; the pass must be the recorded one (same inputs, same
batching), which ``replayed_prefix`` checks by the number of calls.

Inference *time* of a pruned model is not measured this way: time the pruned model itself
(``skip_layers`` alone), as ``fastsim.prune.sweep`` does on a few batches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .surgery import find_layer_stack, kept_layers

#: front-end modules (by attribute name) whose outputs are recorded and replayed: the CNN feature
#: encoder of Wav2Vec2 / HuBERT / WavLM / Data2VecAudio, Whisper's two convolutions
FRONT_END = ("feature_extractor", "conv1", "conv2")


@dataclass
class Recording:
    """Outputs of one run of the full model, call by call: ``layers[i][c]`` of layer i,
    ``front[path][c]`` of each front-end module."""

    layers: list[list[Any]] = field(default_factory=list)
    front: dict[str, list[Any]] = field(default_factory=dict)
    #: the shape of each call's first tensor argument, as ``layers`` / ``front`` (checked on replay)
    layer_shapes: list[list[tuple | None]] = field(default_factory=list)
    front_shapes: dict[str, list[tuple | None]] = field(default_factory=dict)

    @property
    def calls(self) -> int:
        return len(self.layers[0]) if self.layers else 0


def front_end(model: nn.Module) -> dict[str, nn.Module]:
    """path -> module of the model's front-end modules (``FRONT_END``; not in the layer stack or a decoder)."""
    stack = find_layer_stack(model).path
    return {path: m for path, m in model.named_modules()
            if path.rsplit(".", 1)[-1] in FRONT_END and not path.startswith(stack + ".") and "decoder" not in path}


@contextlib.contextmanager
def recording(model: nn.Module, upto: int | None = None) -> Iterator[Recording]:
    """Record the outputs of the front end and of layers 0 .. upto-1 (default: all but the last,
    which no replay needs) of the model as it runs inside the block. The model must be unpruned."""
    stack = find_layer_stack(model)
    L = len(stack.layers)
    upto = L - 1 if upto is None else int(upto)
    if not 0 <= upto <= L:
        raise ValueError(f"upto must be in [0, {L}]; got {upto}")
    if kept_layers(model) != list(range(L)):
        raise ValueError("recording: the model has layers removed; record the full model")
    front = front_end(model)
    rec = Recording([[] for _ in range(upto)], {path: [] for path in front},
                    [[] for _ in range(upto)], {path: [] for path in front})
    hooks = []

    def store_in(calls: list[Any], shapes: list[tuple | None]):
        def store(_module, args, kwargs, output):
            calls.append(output)
            shapes.append(_first_shape(args, kwargs))
        return store

    try:
        for i in range(upto):
            hooks.append(stack.layers[i].register_forward_hook(store_in(rec.layers[i], rec.layer_shapes[i]),
                                                               with_kwargs=True))
        for path, m in front.items():
            hooks.append(m.register_forward_hook(store_in(rec.front[path], rec.front_shapes[path]), with_kwargs=True))
        yield rec
    finally:
        for h in hooks:
            h.remove()


def _first_shape(args: tuple, kwargs: dict) -> tuple | None:
    for v in (*args, *kwargs.values()):
        if isinstance(v, torch.Tensor):
            return tuple(v.shape)
    return None


class _Replay:
    """A module's ``forward`` for the length of a replay: the recorded outputs in order, its input
    ignored (set on the instance, so the module keeps its attributes, e.g. a convolution's stride)."""

    def __init__(self, outputs: list[Any], shapes: list[tuple | None], what: str):
        self.outputs = outputs
        self.shapes = shapes
        self.what = what
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.calls >= len(self.outputs):
            raise RuntimeError(f"replayed {self.what}: called {self.calls + 1} times, recorded "
                               f"{len(self.outputs)} (the pass differs from the recorded one)")
        shape = _first_shape(args, kwargs)
        if shape != self.shapes[self.calls]:
            raise RuntimeError(f"replayed {self.what}: call {self.calls + 1} has an input of shape {shape}, the recorded "
                               f"one {self.shapes[self.calls]} (the pass differs from the recorded one)")
        out = self.outputs[self.calls]
        self.calls += 1
        return out


@contextlib.contextmanager
def replayed_prefix(model: nn.Module, rec: Recording, upto: int) -> Iterator[None]:
    """Inside the block, the front end and the first ``upto`` layers of the model's current layer
    list (which must be the original layers 0 .. upto-1: inside ``skip_layers`` of a plan whose
    first removed layer is ``upto`` or later) return their recorded outputs instead of computing.
    On a normal exit every recorded call must have been replayed."""
    stack = find_layer_stack(model)
    if kept_layers(model)[:upto] != list(range(upto)):
        raise ValueError(f"replayed_prefix: the model's first {upto} layers are not the original layers 0..{upto - 1} "
                         f"(kept: {kept_layers(model)})")
    if upto > len(rec.layers):
        raise ValueError(f"replayed_prefix: {upto} layers to replay, {len(rec.layers)} recorded")
    modules = front_end(model)
    if set(modules) != set(rec.front):
        raise ValueError("replayed_prefix: the model's front end is not the recorded one")
    targets = [(modules[path], _Replay(calls, rec.front_shapes[path], path)) for path, calls in rec.front.items()]
    targets += [(stack.layers[j], _Replay(rec.layers[j], rec.layer_shapes[j], f"layer {j}")) for j in range(upto)]
    if any("forward" in m.__dict__ for m, _ in targets):
        raise ValueError("replayed_prefix: a module already has its forward replaced (nested replays?)")
    try:
        for m, replay in targets:
            m.forward = replay
        yield
    finally:
        for m, _ in targets:
            m.__dict__.pop("forward", None)
    short = [r for _, r in targets if r.calls != len(r.outputs)]
    if short:
        raise RuntimeError(f"replayed {short[0].what}: {short[0].calls} of {len(short[0].outputs)} recorded "
                           f"calls replayed (the pass differs from the recorded one)")


__all__ = ["FRONT_END", "Recording", "front_end", "recording", "replayed_prefix"]
