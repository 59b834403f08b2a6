"""Mean per-sample cosine, pairwise and all-pairs, through the Triton kernels in fastsim.kernels.cosine."""

from __future__ import annotations

import importlib.util
import os

import torch

from .. import options
from .torch_cosine import unit_rows, warn_zero_rows


def usable(device: torch.device) -> tuple[bool, str]:
    """Whether Triton kernels can run on tensors of `device` here, and if not, why."""
    # find_spec, not import: importing triton fixes its interpreter mode (TRITON_INTERPRET) for
    # the rest of the process, so it must first happen when the kernels are really launched.
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed"
    if device.type == "cuda":
        return True, ""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True, ""
    return False, "Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 to run them on the CPU interpreter)"


def cosine_pair(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    from ..kernels.cosine import row_cosine

    cos, flag = row_cosine(a, b)
    rescue = (flag == 2).nonzero().flatten()
    if rescue.numel():  # extreme magnitudes: recompute those rows with per-row scaling
        ua, _ = unit_rows(a[rescue], cos.dtype)
        ub, _ = unit_rows(b[rescue], cos.dtype)
        cos[rescue] = (ua * ub).sum(1)
    warn_zero_rows(int((flag == 1).sum()))
    return cos.sum(dtype=torch.float64).div(a.shape[0]).clamp(-1.0, 1.0).to(cos.dtype)


def stacked_view(layers: list[torch.Tensor]) -> torch.Tensor | None:
    """The (L, n, d) tensor that `layers` are equally spaced slices of, without a copy, if any
    (as when a 3-D array was split into its layers); else None."""
    first = layers[0]
    base = first.untyped_storage().data_ptr()
    if any(
        x.shape != first.shape
        or x.dtype != first.dtype
        or x.stride() != first.stride()
        or x.untyped_storage().data_ptr() != base
        for x in layers
    ):
        return None
    if first.stride(1) != 1:
        return None
    if len(layers) == 1:
        return first.unsqueeze(0)
    step = layers[1].data_ptr() - first.data_ptr()
    if step <= 0 or step % first.element_size() or any(
        x.data_ptr() - first.data_ptr() != i * step for i, x in enumerate(layers)
    ):
        return None
    return first.as_strided((len(layers), *first.shape), (step // first.element_size(), *first.stride()))


def cosine_matrix(layers: list[torch.Tensor]) -> torch.Tensor:
    """(L, L) mean per-sample cosine of all layer pairs in one pass over the data (layers of equal d)."""
    from ..kernels.cosine import layer_cosine_sums

    n, L, d = layers[0].shape[0], len(layers), layers[0].shape[1]
    dt = options.compute_dtype(layers)
    stacked = stacked_view(layers)
    total = torch.zeros(L, L, dtype=torch.float64, device=layers[0].device)
    zero_per_layer = torch.zeros(L, dtype=torch.long, device=layers[0].device)
    zero_frames = 0
    # Without a stacked view, frames are gathered chunk by chunk (one extra copy of each chunk).
    spans = [(0, n)] if stacked is not None else list(options.row_chunks(n, 2 * L * d * layers[0].element_size()))
    for s, e in spans:
        x = stacked[:, s:e] if stacked is not None else torch.stack([t[s:e] for t in layers])
        sums, flag = layer_cosine_sums(x)
        total += sums
        redo = flag.nonzero().flatten()
        if redo.numel():  # zero rows or extreme magnitudes: scaled recomputation of those frames
            units, zero = zip(*(unit_rows(t[s:e][redo], dt) for t in layers))
            flat = torch.stack(units).reshape(L, -1)
            total += (flat @ flat.T).double()
            zero = torch.stack(zero)
            zero_per_layer += zero.sum(1)
            zero_frames += int(zero.any(0).sum())
    warn_zero_rows(zero_frames)
    out = (total / n).clamp(-1.0, 1.0)
    out.diagonal().copy_((n - zero_per_layer).double() / n)
    return out.to(dt)
