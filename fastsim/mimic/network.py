"""MimickingNetwork: a small per-frame network that stands in for a whole transformer stack.

The paper's design is the default: per frame, Linear(D->h) -> LayerNorm -> ReLU -> Linear(h->D)
with h = 64 (the 1-block mimicker). More blocks stack (the 2-block mimicker: the first block is
trained towards an intermediate layer, the end of the first similarity block, the second towards
the last layer). Widths, depth, activation, a residual connection and a small temporal context
(a depthwise 1-D convolution over time on the h hidden channels, after the first linear) are
configurable.

At inference on CUDA (eval mode, no gradient needed, every block at most 256 wide) each block runs
as one fused Triton kernel (``fastsim.kernels.mimic_block``, dispatched by ``fastsim.mimic.fused``);
training, the CPU and wider networks use the plain module ops below, which define the block.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..speech.files import write_json
from ..speech.inference import count_parameters

ACTIVATIONS = ("relu", "gelu", "silu", "tanh")


@dataclass
class MimicConfig:
    """dim: D, the stack's width (input and output of every block).
    widths: the hidden width h of each block; the number of widths is the depth.
    targets: per block, the teacher layer it is trained towards: an index into the teacher's
    hidden states (1..L; L and -1 mean the stack's output, ``last_hidden_state``); None: the last
    block -> the output, earlier blocks -> evenly spaced layers.
    context: kernel size (odd) of the depthwise temporal convolution; 0 = none (per frame).
    residual: y = x + block(x) instead of y = block(x)."""

    dim: int
    widths: tuple[int, ...] = (64,)
    activation: str = "relu"
    context: int = 0
    residual: bool = False
    layer_norm_eps: float = 1e-5
    targets: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        self.widths = _int_tuple(self.widths, "widths")
        if self.targets is not None:
            self.targets = _int_tuple(self.targets, "targets")
        if not isinstance(self.context, int) or isinstance(self.context, bool):
            raise ValueError(f"context must be 0 (none) or an odd kernel size (an int); got {self.context!r}")
        if not (isinstance(self.layer_norm_eps, (int, float)) and self.layer_norm_eps > 0):
            raise ValueError(f"layer_norm_eps must be a positive number; got {self.layer_norm_eps!r}")
        if not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"dim must be a positive int; got {self.dim!r}")
        if not self.widths or any(w < 1 for w in self.widths):
            raise ValueError(f"widths must be one or more positive ints (one per block); got {self.widths!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}; got {self.activation!r}")
        if self.context < 0 or (self.context and self.context % 2 == 0):
            raise ValueError(f"context must be 0 (none) or an odd kernel size; got {self.context!r}")
        if self.targets is not None and len(self.targets) != len(self.widths):
            raise ValueError(f"targets must name one teacher layer per block ({len(self.widths)}); got {self.targets!r}")

    @property
    def depth(self) -> int:
        return len(self.widths)

    def resolved_targets(self, num_layers: int) -> tuple[int, ...]:
        """Teacher layer per block in 1..num_layers (num_layers = the stack's output)."""
        if self.targets is None:
            n = self.depth
            return tuple(round(num_layers * (b + 1) / n) for b in range(n))
        out = []
        for t in self.targets:
            t = num_layers if t == -1 else t
            if not 1 <= t <= num_layers:
                raise ValueError(f"target layer {t} is outside 1..{num_layers} (the teacher's layers; -1 = the output)")
            out.append(t)
        if out[-1] != num_layers:
            raise ValueError(f"the last block must be trained towards the stack's output (layer {num_layers}); got {out[-1]}")
        if any(b <= a for a, b in zip(out, out[1:])):
            raise ValueError(f"target layers must increase from block to block; got {out}")
        return tuple(out)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MimicConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown mimic config keys {sorted(unknown)}")
        return cls(**d)


def _int_tuple(value: Any, name: str) -> tuple[int, ...]:
    """An int or a sequence of ints as a tuple; anything else (strings, fractions) is an error naming ``name``."""
    items = (value,) if isinstance(value, int) else value
    try:
        items = tuple(items)
    except TypeError:
        raise ValueError(f"{name} must be an int or a sequence of ints; got {value!r}") from None
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must be ints; got {value!r}")
        out.append(int(v))
    return tuple(out)


def activate(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "relu":
        return torch.relu(x)
    if name == "gelu":
        return torch.nn.functional.gelu(x)
    if name == "silu":
        return torch.nn.functional.silu(x)
    return torch.tanh(x)


class MimicBlock(nn.Module):
    """Linear(D->h) [-> depthwise conv over time] -> LayerNorm -> activation -> Linear(h->D) [+ x]."""

    def __init__(self, dim: int, width: int, activation: str, context: int, residual: bool, eps: float):
        super().__init__()
        self.activation, self.residual, self.context = activation, residual, context
        self.fc1 = nn.Linear(dim, width)
        self.conv = nn.Conv1d(width, width, context, padding=context // 2, groups=width) if context else None
        self.norm = nn.LayerNorm(width, eps=eps)
        self.fc2 = nn.Linear(width, dim)

    def hidden(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """fc1 and the temporal convolution: (B, T, D) -> (B, T, h). Padding frames (mask False)
        are zeroed before the convolution, so valid frames never see them."""
        u = self.fc1(x)
        if self.conv is not None:
            if mask is not None:
                u = u * mask[..., None].to(u.dtype)
            u = self.conv(u.transpose(1, 2)).transpose(1, 2)
        return u

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.fc2(activate(self.norm(self.hidden(x, mask)), self.activation))
        return x + y if self.residual else y


class MimickingNetwork(nn.Module):
    """Maps the stack's input (B, T, D) to its output (B, T, D); see the module docs.

    ``forward(x, mask=None, *, fused=None, return_all=False)``: mask (B, T) marks valid frames
    (only the temporal convolution needs it). fused=None picks the fused Triton kernel in eval
    mode with no gradient needed on CUDA; True forces it (on the CPU it needs TRITON_INTERPRET=1);
    False forces the module ops. return_all: every block's output (a tuple), not only the last."""

    def __init__(self, config: MimicConfig | None = None, **kwargs: Any):
        super().__init__()
        if config is None:
            config = MimicConfig(**kwargs)
        elif kwargs:
            config = dataclasses.replace(config, **kwargs)
        self.config = config
        c = config
        self.blocks = nn.ModuleList(
            MimicBlock(c.dim, w, c.activation, c.context, c.residual, c.layer_norm_eps) for w in c.widths
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, *, fused: bool | None = None,
                return_all: bool = False):
        if x.dim() != 3 or x.shape[-1] != self.config.dim:
            raise ValueError(f"MimickingNetwork: input must be (batch, frames, {self.config.dim}); got {tuple(x.shape)}")
        if mask is not None and mask.shape != x.shape[:2]:
            raise ValueError(f"MimickingNetwork: mask must be (batch, frames) = {tuple(x.shape[:2])}; got {tuple(mask.shape)}")
        from . import fused as fused_mod

        use = fused_mod.should_fuse(self, x) if fused is None else fused
        outs = []
        for block in self.blocks:
            x = fused_mod.block_forward(block, x, mask) if use else block(x, mask)
            outs.append(x)
        return tuple(outs) if return_all else x

    # ---- sizes ---------------------------------------------------------------------------------
    def num_parameters(self) -> int:
        return count_parameters(self)

    # ---- files ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> str:
        """Weights to PATH (safetensors) and the config (+ extra) to PATH with .json."""
        from safetensors.torch import save_file

        path = os.fspath(path)
        tmp = f"{path}.tmp"
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, tmp)
        os.replace(tmp, path)
        meta = {"config": self.config.to_json(), **(extra or {})}
        write_json(_json_path(path), meta)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | torch.device | None = None) -> MimickingNetwork:
        from safetensors.torch import load_file

        path = os.fspath(path)
        for p in (path, _json_path(path)):
            if not os.path.exists(p):
                raise FileNotFoundError(f"mimic checkpoint: {p} does not exist")
        with open(_json_path(path)) as f:
            meta = json.load(f)
        net = cls(MimicConfig.from_json(meta["config"]))
        net.load_state_dict(load_file(path, device="cpu"))
        return net.to(device) if device is not None else net


def _json_path(path: str) -> str:
    root, ext = os.path.splitext(path)
    return (root if ext == ".safetensors" else path) + ".json"
