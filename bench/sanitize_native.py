"""Small inputs through fastsim's CUDA C++ kernels, for compute-sanitizer (memcheck, racecheck,
synccheck) to watch: the top-k tile kernels (row side and column side, float32 and float64, tiles
that are views with a leading dimension larger than their width, heaps larger than n - 1, and a
diagonal tile) and the all-pairs overlap kernel (int32 and int64 lists). Every result is also
checked against a plain torch computation, so the run means something without the sanitizer.

    compute-sanitizer --tool memcheck --error-exitcode 9 python bench/sanitize_native.py
    python bench/sanitize_native.py --device cpu      # the same checks on the CPU kernels

bench/device.sh runs it under each tool with PYTORCH_NO_CUDA_MEMORY_CACHING=1, so that every
tensor is its own allocation and an access past its end is caught. Exit 0: all checks passed.
"""

from __future__ import annotations

import argparse
import sys

import torch


def brute_topk(sims: torch.Tensor, count: int) -> torch.Tensor:
    """(n, count) indices of each row's best entries, self excluded, ties to the smaller index;
    slots past n - 1 hold EMPTY_INDEX."""
    from fastsim.native import EMPTY_INDEX

    n = sims.shape[0]
    s = sims.double().clone()
    s.fill_diagonal_(-float("inf"))
    pos = torch.sort(s, dim=1, descending=True, stable=True).indices  # stable: equal values keep index order
    out = torch.full((n, count), EMPTY_INDEX, dtype=torch.int64, device=s.device)
    m = min(count, n - 1)
    out[:, :m] = pos[:, :m]
    return out


def feed(sims: torch.Tensor, count: int, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tiles on and right of the diagonal (views of `sims`, leading dimension n), as fastsim's kNN does."""
    from fastsim import native

    n = sims.shape[0]
    vals, idx = native.topk_state(n, count, sims.dtype, sims.device)
    for s in range(0, n, rows):
        e = min(n, s + rows)
        for c0 in range(s, n, cols):
            c1 = min(n, c0 + cols)
            native.topk_tile(sims[s:e, c0:c1], s, c0, vals, idx, col_side_begin=max(0, e - c0))
    native.topk_sort(vals, idx)
    return vals, idx


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    dev = torch.device(args.device)
    from fastsim import native

    if dev.type == "cuda" and not torch.cuda.is_available():
        print("skipped: no GPU")
        return 0
    if not native.available() or (dev.type == "cuda" and not native.cuda_compiled()):
        print(f"skipped: fastsim._C {'has no CUDA kernels' if native.available() else 'is not built'}")
        return 0
    failures = 0

    def check(name: str, ok: bool) -> None:
        nonlocal failures
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}", flush=True)

    g = torch.Generator().manual_seed(0)
    # top-k: (n, d, count, row block, column block); count > n - 1 leaves empty slots
    for dtype in (torch.float32, torch.float64):
        for n, d, count, rows, cols in ((300, 16, 10, 64, 96), (257, 8, 1, 300, 300), (20, 4, 25, 7, 5), (130, 8, 40, 33, 130)):
            x = torch.randn(n, d, generator=g, dtype=torch.float64)
            x = torch.nn.functional.normalize(x, dim=1)
            sims = (x @ x.T).to(dtype).to(dev)  # built on the CPU: the sanitizer sees only fastsim's kernels and copies
            vals, idx = feed(sims, count, rows, cols)
            want = brute_topk(sims.cpu(), count)
            check(f"topk_tile+topk_sort {str(dtype)[6:]} n={n} count={count} tiles {rows}x{cols}", torch.equal(idx.cpu(), want))
    # a tile with a leading dimension larger than its width, only the row side, one sub-block of rows
    x = torch.nn.functional.normalize(torch.randn(100, 8, generator=g, dtype=torch.float64), dim=1)
    sims = (x @ x.T).float().to(dev)
    vals, idx = native.topk_state(100, 5, torch.float32, dev)
    native.topk_tile(sims[10:50, :], 10, 0, vals, idx)  # rows 10..49 against every column
    native.topk_sort(vals, idx)
    want = brute_topk(sims.cpu(), 5)
    check("topk_tile row side only, rows 10..49 of 100", torch.equal(idx[10:50].cpu(), want[10:50])
          and bool((idx[:10].cpu() == native.EMPTY_INDEX).all()) and bool((idx[50:].cpu() == native.EMPTY_INDEX).all()))
    # overlap of every pair of layers
    for itype in (torch.int32, torch.int64):
        L, n, k, pool = 5, 333, 10, 40
        lists = torch.stack([torch.rand(n, pool, generator=g).argsort(1)[:, :k] for _ in range(L)]).to(itype)
        got = native.overlap_all_pairs(lists.to(dev)).cpu()
        a = lists.long()
        want = torch.stack([torch.stack([(a[i][:, :, None] == a[j][:, None, :]).any(2).sum() for j in range(L)]) for i in range(L)])
        check(f"overlap_all_pairs {str(itype)[6:]} L={L} n={n} k={k}", torch.equal(got, want))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    print(f"{failures} of the checks failed" if failures else "all checks passed", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
