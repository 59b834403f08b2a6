"""Mean per-sample cosine through the Triton kernel in fastsim.kernels.cosine."""

from __future__ import annotations

import importlib.util
import os

import torch

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
