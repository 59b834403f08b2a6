"""CPU benchmark: exact cosine kNN of one layer, fastsim against faiss-cpu (IndexFlatIP).

Both search the same float32 unit rows for each sample's k nearest other samples (faiss asked
for k + 1 and its self hit dropped). Printed: seconds, ratio faiss / fastsim, the matmul floor
(n^2 d multiply-adds at the float32 rate measured at start), and how many neighbour sets differ
(faiss ranks float32 scores; fastsim's sets are exact against the float64 definition, so a
difference is a near-tie that float32 resolved otherwise).

Run:  python bench/knn_cpu.py --n 50000 --dim 768 --k 10
"""

from __future__ import annotations

import argparse
import datetime
import time

import numpy as np
import torch

from fastsim.backends.torch_knn import knn_indices


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    import faiss

    g = torch.Generator().manual_seed(args.seed)
    # Clustered data, like frames of speech: neighbours are meaningful, near-ties exist.
    centers = torch.randn(args.n // 50 + 1, args.dim, generator=g)
    x = centers[torch.randint(0, centers.shape[0], (args.n,), generator=g)] + 0.5 * torch.randn(args.n, args.dim, generator=g)
    a = torch.randn(2048, 2048)
    t = time.perf_counter()
    a @ a
    rate = 2 * 2048**3 / (time.perf_counter() - t)
    print(f"date {datetime.datetime.now().isoformat(timespec='seconds')} | torch threads {torch.get_num_threads()} | faiss {faiss.__version__} threads {faiss.omp_get_max_threads()}")
    print(f"n={args.n} d={args.dim} k={args.k}; float32 matmul {rate / 1e9:.0f} GFLOP/s; floor {args.n**2 * args.dim * 2 / rate:.2f} s")

    t = time.perf_counter()
    ours = knn_indices(x, args.k, precision="highest")
    t_ours = time.perf_counter() - t

    u = torch.nn.functional.normalize(x, dim=1).numpy()
    t = time.perf_counter()
    index = faiss.IndexFlatIP(args.dim)
    index.add(u)
    _, found = index.search(u, args.k + 1)
    t_faiss = time.perf_counter() - t
    theirs = np.array([[j for j in row if j != i][: args.k] for i, row in enumerate(found)])

    differ = sum(set(a) != set(b) for a, b in zip(ours.numpy().tolist(), theirs.tolist()))
    print(f"{'method':<34} {'seconds':>8} {'faiss/x':>8}")
    print(f"{'fastsim knn (exact, highest)':<34} {t_ours:8.2f} {t_faiss / t_ours:8.2f}")
    print(f"{'faiss IndexFlatIP (float32)':<34} {t_faiss:8.2f} {1.0:8.2f}")
    print(f"neighbour sets that differ: {differ} of {args.n}")


if __name__ == "__main__":
    main()
