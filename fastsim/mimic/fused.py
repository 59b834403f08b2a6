"""Dispatch of a mimicking block to the fused Triton kernel (fastsim.kernels.mimic_block).

Automatic (``fused=None``): the kernel runs when the network is in eval mode, no gradient is
needed (torch.no_grad / inference_mode, or nothing requires grad), the input is on a CUDA device,
Triton is usable, and every block's width is at most the kernel's limit,
fastsim.kernels.mimic_block.MAX_WIDTH (the hidden tile lives in registers and shared memory; wider
networks use the module). ``fused=True`` runs the kernel whatever the device (on the CPU under
TRITON_INTERPRET=1, for tests); it refuses when a gradient is needed, since the kernel has no
backward, and raises ValueError for a block wider than MAX_WIDTH. The training path is always the plain module.

Tolerance (documented, tested): against the module forward in float32, the fused block agrees to
max |fused - module| <= 1e-4 * (1 + max |module|) with precision="highest" (3xTF32 on GPUs, exact
float32 under the interpreter, measured ~1e-6 there); "high" (TF32) and float16/bfloat16 inputs
to about 1e-2 relative.
"""

from __future__ import annotations

import torch

from ..core.triton_support import usable

#: the precision of the dot operands of the fused kernel (see fastsim.kernels.precision)
PRECISION = "highest"


def _needs_grad(net: torch.nn.Module, x: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in net.parameters()))


def should_fuse(net: torch.nn.Module, x: torch.Tensor) -> bool:
    if net.training or x.device.type != "cuda" or _needs_grad(net, x) or not usable(x.device)[0]:
        return False
    from ..kernels.mimic_block import MAX_WIDTH  # (imports triton: only once it is known to be usable)

    return all(b.fc1.out_features <= MAX_WIDTH for b in net.blocks)


def block_forward(block: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The block's forward through the kernel: (B, T, D) -> (B, T, D)."""
    ok, why = usable(x.device)
    if not ok:
        raise RuntimeError(f"fused mimic forward: {why}")
    if _needs_grad(block, x):
        raise RuntimeError("fused mimic forward has no backward: call it under torch.no_grad() or use fused=False")
    from ..kernels.mimic_block import mimic_block

    B, T, D = x.shape
    hidden = None
    if block.conv is not None:  # temporal context: fc1 + depthwise conv in torch, the rest fused
        hidden = block.hidden(x, mask).reshape(B * T, -1)
    y = mimic_block(
        x.reshape(B * T, D), block.fc1.weight, block.fc1.bias, block.norm.weight, block.norm.bias,
        block.fc2.weight, block.fc2.bias, eps=block.norm.eps, activation=block.activation,
        residual=block.residual, hidden=hidden, precision=PRECISION,
    )
    return y.reshape(B, T, D)
