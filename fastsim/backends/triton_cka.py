"""CKA over all layer pairs through the Triton kernels.

* Linear kernel, feature space (the cheaper path unless n < sum(d)): a StreamingCKA over row
  chunks, each chunk's co-moment from the upper-triangle Gram tiles of fastsim.kernels.comoment.
* Linear kernel in sample space, and the RBF kernel: fastsim.kernels.kernel_tiles forms every
  layer's kernel tiles on the fly and reduces them to the pair sums and row sums (O(n L) extra
  memory). The layers are read through one (L, n, d) view when they are slices of one tensor,
  else stacked once (a copy of the data, narrower layers padded with zero columns, which change
  no dot product and no distance).

Precision: both paths follow `precision` for the Gram dots: "highest" = 3xTF32 on GPUs (exact
float32 under the interpreter), "high" = TF32, "medium" = bf16 operands; accumulators are float32
(float64 for float64 inputs). The tile kernel's second dot (the pair sums) is always float32.
"""

from __future__ import annotations

import torch

from .. import options
from ..streaming import StreamingCKA
from .torch_cka import _finish, _linear_uses_sample_space, hsic_matrix, rbf_bandwidths, stats_from_rows
from .torch_moments import layer_moments, scale_halves
from .triton_cosine import stacked_view


def cka_matrix(
    layers: list[torch.Tensor], *, kernel: str, sigma: float | None, debiased: bool, precision: str
) -> torch.Tensor:
    n, dims = layers[0].shape[0], [x.shape[1] for x in layers]
    if kernel == "linear" and not _linear_uses_sample_space(n, dims):
        acc = StreamingCKA(debiased=debiased, backend="triton", precision=precision, check_finite=False)
        return acc.update(layers).compute_tensor()
    from ..kernels.kernel_tiles import kernel_tile_sums

    dt = options.compute_dtype(layers)
    mom = layer_moments(layers, dt)
    bad = mom.degenerate()
    L = len(layers)
    sq = torch.empty(L, n, dtype=torch.float64, device=layers[0].device)
    for s, e in options.row_chunks(n, 2 * sum(dims) * 8):
        for l, x in enumerate(layers):
            sq[l, s:e] = mom.chunk(l, x, s, e).double().square().sum(1)
    x = stacked_view(layers)
    if x is None:  # one (L, n, max d) copy; zero columns change no dot product or distance
        x = torch.zeros(L, n, max(dims), dtype=layers[0].dtype, device=layers[0].device)
        for l, t in enumerate(layers):
            x[l, :, : dims[l]] = t
    mean = torch.zeros(L, x.shape[2], dtype=dt, device=x.device)
    for l, mu in enumerate(mom.mean):
        mean[l, : dims[l]] = mu
    scale = torch.tensor([scale_halves(c) for c in mom.scale], dtype=torch.float64, device=x.device)
    if kernel == "rbf":
        sigmas, shifted, zero_sigma = rbf_bandwidths(layers, mom, sigma)
        bad = bad | zero_sigma
        coef = torch.tensor([-0.5 / s**2 for s in sigmas], dtype=torch.float64, device=x.device)
        shift = torch.tensor(shifted, device=x.device)
        S, R = kernel_tile_sums(x, mean, scale, sq, coef, shift, precision)
        diag = (1.0 - shift.double())[:, None].expand(L, n)
    else:
        S, R = kernel_tile_sums(x, mean, scale, sq, None, None, precision)
        diag = sq
    st = stats_from_rows(n, S, diag, R)
    return _finish(hsic_matrix(st, debiased), bad, debiased).to(dt)
