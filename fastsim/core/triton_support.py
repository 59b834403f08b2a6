"""Whether Triton kernels can run on a device here, and zero-copy stacked views of layers."""

from __future__ import annotations

import importlib.util
import os

import torch


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
