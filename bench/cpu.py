"""CPU benchmark: fastsim's torch backend against PyPI peers on the same inputs.

Every method computes the (L, L) layer-similarity matrix of the same random float32 layers (each
layer is the previous one plus noise, so the values are far from 0 and 1). The table gives
seconds, the ratio peer time / fastsim time, and the largest absolute difference from fastsim's
matrix (compared in float64 NumPy).

  cka (linear, biased HSIC)
    fastsim         fastsim.similarity_matrix(layers, "cka", backend="torch"), one call
    ckatorch        ckatorch.cka_base(x, y, kernel="linear", unbiased=False) per pair
    repsim          repsim.cka(mats, kernel_type="linear", estimator="gretton"), its own all-pairs call
    pytorch-cka     cka.cka_from_features(layers, layers) (PyPI pytorch-cka 1.1.3): all pairs in one
                    call from L full n x n Grams, unbiased HSIC; compared with fastsim's debiased
                    CKA (its values are the debiased ones, clamped to [0, 1])
    platonic        full n x n Gram K = X X^T per layer, centered H K H, then per pair
                    HSIC = trace(K_a H K_b H) = sum((H K_a H) * (H K_b H))
  mutual_knn (k neighbours by cosine)
    fastsim         fastsim.similarity_matrix(layers, "mutual_knn", k=k, backend="torch")
    platonic        per layer: full n x n cosine similarity, diagonal -1e8, argsort, first k
                    (platonic-rep's compute_nearest_neighbors); per pair: n x n 0/1 masks,
                    intersection counted as in platonic-rep's AlignmentMetrics.mutual_knn
  cosine (mean per-sample cosine)
    fastsim         fastsim.similarity_matrix(layers, "cosine", backend="torch")
    torchloop       torch.nn.functional.cosine_similarity(x, y, dim=1).mean() per pair

Pair loops run the strict upper triangle i < j, mirror it, and put 1 on the diagonal. The
column max|diff| is each method's largest absolute difference from the float64 value
(fastsim.similarity_matrix on the float64 layers), so every row, fastsim's included, shows its
own error.

--busy N starts N competing busy processes (pure Python loops, one core each; children of this
process, so in its scheduling group) for the whole run, as when fastsim runs beside training jobs
or data loaders. --compare-idle times fastsim first without them, then with them, in the same
run, and prints busy / idle. --accuracy prints the table of precision modes x measured error
(float32 and float64 inputs; Gaussian layers and layers with massive activations) against a
longdouble oracle, and exits.
fastsim and the bench's own torch baselines get one untimed warm-up call and the best of
--repeat timed calls; the slow peers (ckatorch, repsim) run once, without warm-up.

Beside fastsim's time: the floor, the matmul multiply-adds the computation needs at least
(linear CKA: n^2 * sum(d) / 2 in sample space when n < sum(d), else n * sum(d)^2 / 2 in feature
space; mutual kNN: the per-layer Gram, n^2 * sum(d) / 2) at the rate of one large float32
torch.mm measured at start, and floor / time, the fraction of that rate achieved.

Run:  python bench/cpu.py --n 4096
      python bench/cpu.py --n 4096 --skip ckatorch,repsim   # leave out the slow peers
      python bench/cpu.py --busy 1 --compare-idle --only cka --skip repsim,platonic
      python bench/cpu.py --accuracy
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

import fastsim

try:
    import ckatorch
except ImportError:
    ckatorch = None
try:
    import repsim
except ImportError:
    repsim = None
try:
    import cka as pytorch_cka  # PyPI pytorch-cka
except ImportError:
    pytorch_cka = None

PEERS = ("ckatorch", "repsim", "pytorch-cka", "platonic", "torchloop")
METRICS = ("cka", "mutual_knn", "cosine")


@contextlib.contextmanager
def busy_processes(count: int) -> Iterator[None]:
    """`count` processes spinning a Python loop (one core each) while the block runs."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        if procs:
            time.sleep(0.5)  # let them start spinning
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


# ----------------------------------------------------------------------------- inputs, timing


def make_layers(L: int, n: int, d: int, seed: int) -> list[torch.Tensor]:
    """L float32 (n, d) layers, each the previous one plus Gaussian noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    layers = [x]
    for _ in range(L - 1):
        x = x + 0.5 * torch.randn(n, d, generator=g)
        layers.append(x)
    return layers


def timed(fn: Callable[[], object], repeat: int, warmup: bool) -> tuple[float, object]:
    """Best wall time of `repeat` calls (after one untimed call if `warmup`), and the last result."""
    if warmup:
        fn()
    best, out = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def matmul_rate(size: int = 2048) -> float:
    """FLOP/s of a float32 size^3 torch.mm (best of three after a warm-up)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    seconds, _ = timed(lambda: torch.mm(a, b), repeat=3, warmup=True)
    return 2.0 * size**3 / seconds


def as_f64(m: object) -> np.ndarray:
    if isinstance(m, torch.Tensor):
        m = m.detach().cpu().numpy()
    return np.asarray(m, dtype=np.float64)


def pair_loop(L: int, pair: Callable[[int, int], object]) -> np.ndarray:
    """(L, L) from pair(i, j) over i < j, mirrored, 1 on the diagonal."""
    out = np.eye(L)
    for i in range(L):
        for j in range(i + 1, L):
            out[i, j] = out[j, i] = float(pair(i, j))
    return out


# ----------------------------------------------------------------------------- baselines


def platonic_cka(layers: list[torch.Tensor]) -> np.ndarray:
    n = layers[0].shape[0]
    H = torch.eye(n) - 1.0 / n
    centered = [H @ (x @ x.T) @ H for x in layers]  # H K H, full n x n per layer

    def hsic(i: int, j: int) -> torch.Tensor:  # trace(K_i H K_j H)
        return (centered[i] * centered[j]).sum()

    self_hsic = [hsic(i, i) for i in range(len(layers))]
    return pair_loop(len(layers), lambda i, j: hsic(i, j) / torch.sqrt(self_hsic[i] * self_hsic[j]))


def platonic_mutual_knn(layers: list[torch.Tensor], k: int) -> np.ndarray:
    def neighbours(x: torch.Tensor) -> torch.Tensor:
        f = F.normalize(x, dim=-1)
        return (f @ f.T).fill_diagonal_(-1e8).argsort(dim=1, descending=True)[:, :k]

    knn = [neighbours(x) for x in layers]
    n = layers[0].shape[0]
    rows = torch.arange(n).unsqueeze(1)

    def pair(i: int, j: int) -> torch.Tensor:
        mask_a, mask_b = torch.zeros(n, n), torch.zeros(n, n)
        mask_a[rows, knn[i]] = 1.0
        mask_b[rows, knn[j]] = 1.0
        return ((mask_a * mask_b).sum(dim=1) / k).mean()

    return pair_loop(len(layers), pair)


# ----------------------------------------------------------------------------- main


def header(args: argparse.Namespace, rate: float) -> None:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    print(f"date     {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"cpu      {cpu}; torch threads {torch.get_num_threads()}")
    print(
        f"versions torch {torch.__version__}, fastsim {fastsim.__version__}, "
        f"ckatorch {version('ckatorch')}, repsim {version('repsim')}, pytorch-cka {version('pytorch-cka')}"
    )
    print(f"load     {' '.join(f'{v:.2f}' for v in os.getloadavg())} (1, 5, 15 min) at start; --busy {args.busy}")
    print(f"matmul   float32 2048^3 torch.mm: {rate / 1e9:.1f} GFLOP/s")
    print(
        f"inputs   L={args.layers} layers of float32 (n={args.n}, d={args.dim}), layer l+1 = layer l + "
        f"0.5 * N(0, 1); seed {args.seed}; k={args.k}; best of {args.repeat}"
    )
    L = args.layers
    print(
        f"pairs    pair loops: strict upper triangle, {L * (L - 1) // 2} pairs, mirrored, diagonal 1; "
        "repsim and fastsim: all pairs in one call"
    )
    print()


def accuracy_table(args: argparse.Namespace) -> None:
    """Precision modes x measured error, against a longdouble oracle (tests/oracles.py)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    import oracles

    n, L, d = args.acc_n, args.acc_layers, args.acc_dim
    data = {
        "Gaussian": oracles.gaussian_layers(L=L, n=n, d=d, dtype=np.float64),
        "massive activations": oracles.massive_layers(L=L, n=n, d=d, big=1000.0, offset=300.0, dtype=np.float64),
    }
    cases = [("cka", False), ("cka", True), ("rbf_cka", False), ("rbf_cka", True), ("cosine", False)]
    print(f"date     {datetime.datetime.now().isoformat(timespec='seconds')}; torch {torch.__version__}")
    print(f"inputs   L={L} layers of (n={n}, d={d}); 'massive activations': 2 features per layer about 1000x the")
    print("         rest (a large constant with 5 % variation) and an offset of 300 on every feature")
    print("error    max |fastsim - oracle| over all pairs; oracle: NumPy longdouble with the formulas written out,")
    print("         on the values passed in (float32 results are rounded to float32: 3e-8 is that rounding)")
    print()
    print("| data | input | metric | highest | high | medium |")
    print("|---|---|---|---|---|---|")
    for name, layers in data.items():
        for dtype in (np.float32, np.float64):
            typed = [x.astype(dtype) for x in layers]
            # the oracle of the values passed in (float32 ones converted exactly)
            want = {case: oracles.similarity_matrix_ld(typed, *case) for case in cases}
            for metric, debiased in cases:
                opts = {} if metric == "cosine" else {"debiased": debiased}
                errs = []
                for precision in ("highest", "high", "medium"):
                    got = fastsim.similarity_matrix(typed, metric, precision=precision, backend="torch", **opts)
                    errs.append(f"{np.nanmax(np.abs(got - want[metric, debiased])):.1e}")
                label = metric + (" debiased" if debiased else "")
                print(f"| {name} | {np.dtype(dtype).name} | {label} | " + " | ".join(errs) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--layers", type=int, default=13)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--k", type=int, default=10)
    p.add_argument(
        "--repeat", type=int, default=1, help="timed calls per warmed-up method, best reported (ckatorch, repsim: once)"
    )
    p.add_argument("--skip", default="", help=f"comma list of peers to leave out: {','.join(PEERS)}")
    p.add_argument("--only", default="", help=f"comma list of metrics to run: {','.join(METRICS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--busy", type=int, default=0, help="competing busy processes during the timings")
    p.add_argument("--compare-idle", action="store_true", help="with --busy: time fastsim idle first, print busy / idle")
    p.add_argument("--accuracy", action="store_true", help="print the precision-mode error table and exit")
    p.add_argument("--acc-n", type=int, default=1024)
    p.add_argument("--acc-layers", type=int, default=6)
    p.add_argument("--acc-dim", type=int, default=256)
    args = p.parse_args()
    if args.accuracy:
        accuracy_table(args)
        return
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if skip - set(PEERS):
        p.error(f"--skip: unknown peer(s) {sorted(skip - set(PEERS))}; choose from {', '.join(PEERS)}")
    only = {s.strip() for s in args.only.split(",") if s.strip()} or set(METRICS)
    if only - set(METRICS):
        p.error(f"--only: unknown metric(s) {sorted(only - set(METRICS))}; choose from {', '.join(METRICS)}")
    for name, module in (("ckatorch", ckatorch), ("repsim", repsim), ("pytorch-cka", pytorch_cka)):
        if module is None and name not in skip:
            p.error(f"{name} is not installed: pip install {name}{'==1.1.3' if name == 'pytorch-cka' else ''}, or pass --skip {name}")
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    if args.busy < 0 or (args.compare_idle and not args.busy):
        p.error("--busy must be >= 0, and --compare-idle needs --busy N")

    rate = matmul_rate()
    header(args, rate)
    layers = make_layers(args.layers, args.n, args.dim, args.seed)
    np_layers = [x.numpy() for x in layers]  # zero-copy float32 views; repsim converts them itself
    n, D, k, L = args.n, args.dim * args.layers, args.k, args.layers

    if n < D:
        cka_macs, cka_path = n * n * D / 2, "sample space"
    else:
        cka_macs, cka_path = n * D * D / 2, "feature space"

    def ckatorch_loop() -> np.ndarray:
        return pair_loop(L, lambda i, j: ckatorch.cka_base(layers[i], layers[j], kernel="linear", unbiased=False))

    def repsim_all() -> np.ndarray:
        return repsim.cka(np_layers, kernel_type="linear", estimator="gretton")

    def pytorch_cka_all() -> np.ndarray:
        return pytorch_cka.cka_from_features(layers, layers)

    def cosine_loop() -> np.ndarray:
        return pair_loop(L, lambda i, j: F.cosine_similarity(layers[i], layers[j], dim=1).mean())

    # metric -> (fastsim options, floor multiply-adds and label, [(peer, label, call, warm-up, options of
    # the float64 value it is compared with)])
    plan = {
        "cka": ({}, (cka_macs, cka_path), [
            ("ckatorch", "ckatorch.cka_base, pair loop", ckatorch_loop, False, {}),
            ("repsim", "repsim.cka(linear, gretton)", repsim_all, False, {}),
            ("pytorch-cka", "pytorch-cka cka_from_features", pytorch_cka_all, True, {"debiased": True}),
            ("platonic", "platonic-style n x n HSIC", lambda: platonic_cka(layers), True, {}),
        ]),
        "mutual_knn": ({"k": k}, (n * n * D / 2, "per-layer Gram"), [
            ("platonic", "platonic-style argsort+masks", lambda: platonic_mutual_knn(layers, k), True, {"k": k}),
        ]),
        "cosine": ({}, None, [
            ("torchloop", "F.cosine_similarity pair loop", cosine_loop, True, {}),
        ]),
    }  # fmt: skip
    layers64 = [x.double() for x in layers]
    exact: dict[tuple, np.ndarray] = {}

    def float64_value(metric: str, options: dict) -> np.ndarray:
        key = (metric, tuple(sorted(options.items())))
        if key not in exact:
            exact[key] = as_f64(fastsim.similarity_matrix(layers64, metric, backend="torch", **options))
        return exact[key]

    idle: dict[str, float] = {}
    if args.compare_idle:
        for metric, (options, _, _) in plan.items():
            if metric in only:
                idle[metric], _ = timed(
                    lambda metric=metric, options=options: fastsim.similarity_matrix(
                        layers, metric, backend="torch", **options
                    ),
                    args.repeat,
                    warmup=True,
                )
                print(f"idle     fastsim {metric}: {idle[metric]:.4f} s (before the busy processes start)")
        print()

    with busy_processes(args.busy):
        print(f"{'metric':<11} {'method':<31} {'warm':>4} {'seconds':>10} {'ratio':>8} {'max|diff|':>10}  floor")
        for metric, (options, floor_of, peers) in plan.items():
            if metric not in only:
                continue
            fs_time, fs_out = timed(
                lambda metric=metric, options=options: fastsim.similarity_matrix(
                    layers, metric, backend="torch", **options
                ),
                args.repeat,
                warmup=True,
            )
            fs_diff = np.abs(as_f64(fs_out) - float64_value(metric, options)).max()
            floor = ""
            if floor_of is not None:
                macs, path = floor_of
                floor_s = 2.0 * macs / rate
                floor = f"{floor_s:.3g} s ({path}, {macs:.2g} MAC), floor/time {floor_s / fs_time:.2f}"
            if metric in idle:
                floor += f"  busy/idle {fs_time / idle[metric]:.2f}"
            print(
                f"{metric:<11} {'fastsim (torch backend)':<31} {'yes':>4} {fs_time:>10.4f} {1.0:>8.2f} "
                f"{fs_diff:>10.2e}  {floor}"
            )
            for name, label, call, warm, exact_options in peers:
                if name in skip:
                    continue
                seconds, out = timed(call, args.repeat if warm else 1, warmup=warm)
                diff = np.abs(as_f64(out) - float64_value(metric, exact_options)).max()
                print(
                    f"{metric:<11} {label:<31} {'yes' if warm else 'no':>4} {seconds:>10.4f} "
                    f"{seconds / fs_time:>8.2f} {diff:>10.2e}"
                )


if __name__ == "__main__":
    main()
