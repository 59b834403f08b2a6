"""GPU benchmark: fastsim's backends against plain-torch baselines at the issues' target sizes.

Prints one table: seconds, ratio baseline / fastsim, the physical floor (FLOPs over the matmul
rate, or bytes over the copy bandwidth, both measured here at start) and the fraction of it
reached. Timing: CUDA events, one warm-up call, best of --repeat.

Run:  python bench/gpu.py                      # on a CUDA machine (bench/device.sh runs it)
      python bench/gpu.py --device cpu --small # code-path check on a CPU, tiny sizes
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import fastsim


def timer(device: torch.device):
    def run(fn, repeat: int) -> float:
        fn()
        best = float("inf")
        for _ in range(repeat):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                best = min(best, start.elapsed_time(end) / 1e3)
            else:
                t = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t)
        return best

    return run


def rates(device: torch.device, size: int, run) -> dict[str, float]:
    """Measured matmul FLOP/s (fp32-highest, tf32, bf16) and copy bytes/s."""
    out = {}
    for name, dtype, prec in (("fp32", torch.float32, "highest"), ("tf32", torch.float32, "high"), ("bf16", torch.bfloat16, "highest")):
        a = torch.randn(size, size, device=device, dtype=dtype)
        with fastsim.options.matmul_precision(prec):
            out[name] = 2 * size**3 / run(lambda: a @ a, 3)
    buf = torch.empty(size * size * 16, dtype=torch.uint8, device=device)
    dst = torch.empty_like(buf)
    out["bytes"] = 2 * buf.numel() / run(lambda: dst.copy_(buf), 3)
    return out


def stacked_layers(L: int, n: int, d: int, dtype, device, seed=0) -> list[torch.Tensor]:
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(n, d, device=device, dtype=torch.float32, generator=g)
    out = [x.to(dtype)]
    for _ in range(L - 1):
        x = x + 0.5 * torch.randn(n, d, device=device, dtype=torch.float32, generator=g)
        out.append(x.to(dtype))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--small", action="store_true", help="tiny sizes, to check the code paths")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    dev = torch.device(args.device)
    run = timer(dev)
    s = 64 if args.small else 1
    r = rates(dev, 512 if args.small else 8192, run)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"# {name} | torch {torch.__version__} | fastsim {fastsim.__version__} | {time.strftime('%Y-%m-%d')}")
    print(f"# measured: fp32 {r['fp32']/1e12:.1f} TFLOP/s, tf32 {r['tf32']/1e12:.1f}, bf16 {r['bf16']/1e12:.1f}, copy {r['bytes']/1e12:.2f} TB/s")
    rows = []

    def row(work, method, seconds, base, floor):
        rows.append((work, method, seconds, base / seconds if base else float("nan"), floor, floor / seconds))

    # 1. all-pairs linear CKA, L = 25, d = 1024, n = 65 536 (feature space, upper triangle)
    L, d, n = 25, 1024 // s, 65536 // s
    layers = stacked_layers(L, n, d, torch.float32, dev)
    Z = torch.cat(layers, 1)
    base = run(lambda: (Z.T @ Z), args.repeat)
    flops = n * (L * d) ** 2  # 2 * n * D^2 / 2: upper triangle
    for prec, rate in (("highest", r["fp32"]), ("high", r["tf32"]), ("medium", r["bf16"])):
        for backend in ("torch", "triton"):
            t = run(lambda: fastsim.similarity_matrix(layers, "cka", precision=prec, backend=backend), args.repeat)
            row(f"cka L={L} d={d} n={n}", f"fastsim {backend} {prec}", t, base, flops / rate)
    row(f"cka L={L} d={d} n={n}", "torch stacked Gram (fp32)", base, base, flops / r["fp32"])
    del Z, layers

    # 2. all-pairs cosine, L = 25, d = 1024, n = 262 144, bf16
    n = 262144 // s
    layers = stacked_layers(L, n, d, torch.bfloat16, dev)
    loop = lambda: [F.cosine_similarity(layers[i], layers[j], dim=1).mean() for i in range(L) for j in range(i + 1, L)]  # noqa: E731
    base = run(loop, 1)
    floor = L * n * d * 2 / r["bytes"]
    row(f"cosine L={L} d={d} n={n} bf16", "fastsim torch", run(lambda: fastsim.similarity_matrix(layers, "cosine"), args.repeat), base, floor)
    stacked = torch.stack(layers)  # the one-read kernel wants an (L, n, d) tensor
    del layers
    row(f"cosine L={L} d={d} n={n} bf16", "fastsim triton", run(lambda: fastsim.similarity_matrix(stacked, "cosine", backend="triton"), args.repeat), base, floor)
    layers = list(stacked)
    row(f"cosine L={L} d={d} n={n} bf16", "torch pair loop", base, base, floor)
    del layers, stacked

    # 3. RBF CKA of two layers, d = 1024, n = 16 384
    n = 16384 // s
    a, b = stacked_layers(2, n, d, torch.float32, dev)
    sigma = 1.0 * d**0.5

    def materialized():
        def k(x):
            return torch.exp(-torch.cdist(x, x).square() / (2 * sigma**2))

        H = torch.eye(n, device=dev) - 1.0 / n
        Ka, Kb = H @ k(a) @ H, H @ k(b) @ H
        return (Ka * Kb).sum() / (Ka.norm() * Kb.norm())

    base = run(materialized, 1)
    floor = 2 * n * n * d * 2 / r["fp32"]
    row(f"rbf cka d={d} n={n}", "fastsim torch", run(lambda: fastsim.cka(a, b, kernel="rbf", sigma=sigma), args.repeat), base, floor)
    for prec in ("highest", "high"):
        row(f"rbf cka d={d} n={n}", f"fastsim triton {prec}", run(lambda: fastsim.cka(a, b, kernel="rbf", sigma=sigma, backend="triton", precision=prec), args.repeat), base, floor)
    row(f"rbf cka d={d} n={n}", "materialized n x n", base, base, floor)

    # 4. kNN (issue 4): d = 1024, k = 10. Baselines: chunked torch.topk (the usual memory-bounded
    #    recipe) and platonic-rep's full n x n argsort where it fits in memory.
    from fastsim.backends.torch_knn import knn_indices

    k = 10

    def chunked_topk(x, block=4096):
        u = F.normalize(x, dim=1)
        idx = []
        for start in range(0, u.shape[0], block):
            sims = u[start : start + block] @ u.T
            sims[torch.arange(sims.shape[0]), torch.arange(start, start + sims.shape[0])] = -float("inf")
            idx.append(sims.topk(k, dim=1).indices)
        return torch.cat(idx)

    def platonic_knn(x):
        u = F.normalize(x, dim=1)
        sims = u @ u.T
        sims.fill_diagonal_(-1e8)
        return sims.argsort(dim=1, descending=True)[:, :k]

    def mutual(lists_a, lists_b):
        return (lists_a[:, :, None] == lists_b[:, None, :]).any(2).float().mean()

    # 4a. mutual kNN of two layers, n = 65 536 (target <= 0.05 s at "high")
    n = 65536 // s
    a, b = stacked_layers(2, n, d, torch.float32, dev)
    floor = 2 * n * n * d / r["tf32"]  # two layers, half of each n x n (symmetric tiles)
    with fastsim.options.matmul_precision("high"):
        base = run(lambda: mutual(chunked_topk(a), chunked_topk(b)), 1)
        fits = 2 * n * n * 12 < torch.cuda.get_device_properties(dev).total_memory if dev.type == "cuda" else n <= 4096
        try:
            plat = run(lambda: mutual(platonic_knn(a), platonic_knn(b)), 1) if fits else float("nan")
        except RuntimeError as exc:  # out of memory, or a sort too large for the device
            print(f"# platonic argsort at n={n} failed: {str(exc).splitlines()[0]}")
            plat = float("nan")
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    for prec in ("highest", "high"):
        t = run(lambda: fastsim.mutual_knn(a, b, k=k, precision=prec), args.repeat)
        row(f"mutual knn d={d} n={n}", f"fastsim {prec}", t, base, floor)
    row(f"mutual knn d={d} n={n}", "chunked topk (tf32)", base, base, floor)
    row(f"mutual knn d={d} n={n}", "platonic argsort (tf32)", plat, base, floor)
    del a, b

    # 4b. kNN of one layer, n = 262 144 (target <= 0.45 s at "high"); how often "high" differs
    #     from the exact "highest" lists (near-ties that TF32 pushed out of the candidates)
    n = 262144 // s
    (x,) = stacked_layers(1, n, d, torch.float32, dev)
    floor = n * n * d / r["tf32"]
    with fastsim.options.matmul_precision("high"):
        base = run(lambda: chunked_topk(x), 1)
    for prec in ("highest", "high", "medium"):
        t = run(lambda: knn_indices(x, k, precision=prec, use_native=True), args.repeat)
        row(f"knn d={d} n={n}", f"fastsim {prec}", t, base, floor)
    row(f"knn d={d} n={n}", "chunked topk (tf32)", base, base, floor)
    exact = knn_indices(x, k, precision="highest", use_native=True).sort(1).values
    for prec in ("high", "medium"):
        got = knn_indices(x, k, precision=prec, use_native=True).sort(1).values
        print(f"# knn n={n}: {int((got != exact).any(1).sum())} of {n} neighbour sets at {prec!r} differ from 'highest' (exact)")
    del x, exact

    # 4c. kNN of one layer, n = 1 000 000 (target <= 7 s), bounded memory: peak allocation printed
    n = 1_000_000 // s
    (x,) = stacked_layers(1, n, d, torch.float32, dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    before = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0
    t = run(lambda: knn_indices(x, k, precision="high", use_native=True), 1)
    peak = (torch.cuda.max_memory_allocated(dev) - before) / 2**30 if dev.type == "cuda" else float("nan")
    row(f"knn d={d} n={n}", "fastsim high", t, float("nan"), n * n * d / r["tf32"])
    print(f"# knn n={n}: peak extra GPU memory {peak:.2f} GiB (the input itself: {n * d * 4 / 2**30:.2f} GiB; n x n float32 would be {n * n * 4 / 2**30:.0f} GiB)")
    del x

    print(f"{'work':<32} {'method':<28} {'seconds':>9} {'x base':>7} {'floor s':>9} {'of floor':>8}")
    for work, method, sec, ratio, floor, frac in rows:
        print(f"{work:<32} {method:<28} {sec:9.4f} {ratio:7.2f} {floor:9.4f} {frac:8.2f}")


if __name__ == "__main__":
    main()
