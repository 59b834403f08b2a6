"""The Triton linear-CKA path is two launches and a few hundred torch ops, not millions.

Issue 11: through StreamingCKA with 256 MiB chunks, L = 25, d = 1024, n = 65,536 took ~151 rounds
and about 8 million torch ops per call (on a GPU each op is a launch: op-bound); then, with the
fused kernel (``fastsim.kernels.linear_cka``), 2,982, of which ~2,500 were the per-layer moments
(chunks, buffers, two passes, twice). Now one launch of ``kernels.moments.column_moments`` gives
every layer's scale, float64 mean, zero variance and NaN/Inf (``core.moments.layer_summary``), and
one launch of ``linear_cka`` the sums. This test counts every torch operation of the public call,
on the CPU, with the two kernel launches stubbed (the interpreter would take minutes at this
size): each stub writes its outputs with one or two ops, counted as the launch it stands for.
Every layer is the same 268 MB tensor, so the test needs no 6.7 GB of data; torch runs one thread
so that every operation is issued on this thread, where the dispatch counter sees it.
"""

from __future__ import annotations

import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fastsim
from fastsim.core import triton_support


class OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.names: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        self.names[str(func)] += 1
        return func(*args, **(kwargs or {}))


class StubKernel:
    """Stands for a @triton.jit kernel: ``kernel[grid](*args, **constexprs)`` calls `fill(args)`."""

    def __init__(self, fill) -> None:
        self.fill = fill
        self.launches = 0

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches += 1
            self.fill(args)

        return launch


@pytest.mark.skipif(not triton_support.usable(torch.device("cpu"))[0], reason="Triton is not usable here")
@pytest.mark.parametrize("check_finite, bound", [(False, 200), (True, 500)])
def test_triton_linear_cka_issues_a_few_hundred_torch_ops(one_torch_thread, monkeypatch, check_finite, bound):
    """Measured: about 140 ops with check_finite=False; about 415 with the default check_finite=True, whose
    per-input finite check (one aminmax and a few ops per layer, before the backend runs) is 11
    ops per layer."""
    from fastsim.kernels import linear_cka, moments

    L, n, d = 25, 65_536, 1024
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    layers = [x] * L
    lo, hi = torch.aminmax(x, dim=0)  # the moments kernel's outputs for one layer, made beforehand
    one = torch.stack([lo.double(), hi.double(), x[0].double(), (x.double() - x[0].double()).sum(0),
                       torch.zeros(d, dtype=torch.float64)])
    summary = one.repeat(1, L)
    # args: (layer table, tiles, out, ...) and (table, mean, scale, tiles, blocks, sums, sq, ...)
    stub_moments = StubKernel(lambda args: args[2].copy_(summary))
    stub_sums = StubKernel(lambda args: (args[5].fill_(1.0), args[6].fill_(1.0)))
    monkeypatch.setattr(moments, "column_moments_kernel", stub_moments)
    monkeypatch.setattr(linear_cka, "linear_cka_kernel", stub_sums)
    counter = OpCounter()
    with counter:
        out = fastsim.similarity_matrix(layers, "cka", backend="triton", check_finite=check_finite)
    assert out.shape == (L, L)
    assert stub_moments.launches == 1 and stub_sums.launches == 1
    print(f"torch ops per call: {counter.count}: {counter.names.most_common(12)}")
    assert counter.count <= bound, (counter.count, counter.names.most_common(20))
