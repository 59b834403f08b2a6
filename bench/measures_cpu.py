"""CPU benchmark of the issue-15 measures: fastsim's all-pairs implementation against a loop over
layer pairs with each measure's PyPI peers and a plain NumPy loop written from the definition.

Every method sees the same random float32 layers (each the previous one plus a nonlinear mix and
noise, so no measure is trivially 0 or 1). fastsim computes the whole (L, L) matrix in one call
(``fastsim.similarity_matrix``, default backend and precision "highest": float64 covariance
blocks). The peers are timed on ``--pairs`` layer pairs at the full size, in a child process with
a time limit (``--limit`` seconds per pair; a peer that runs out is reported as "> limit"), and
their per-pair time is multiplied by the pairs a loop needs: L (L - 1) / 2 for symmetric
measures, L (L - 1) for the others (PWCCA, linear regression, cycle kNN). The table gives
fastsim's seconds, each peer's seconds per pair and for the whole loop, the ratio loop / fastsim,
and the largest absolute difference between the peer's values and fastsim's on the timed pairs.

Peers (loop over pairs unless said otherwise):
  numpy       the definition in float64 NumPy, written plainly (centered data, QR/SVD bases,
              n x n kernels for RSA): what a user writes without a library
  cca-zoo     cca_zoo.linear.CCA(n_components=min(d)).fit([X, Y]), the canonical variates'
              correlations from its transform (mean rho, mean rho^2)
  repsim      repsim.cca / svcca (summary "pillai": mean rho, "yanai": mean rho^2) and
              repsim.pwcca, each called on the two layers of a pair (repsim computes all pairs
              of its list itself; one pair times its per-pair cost). repsim's PWCCA follows
              Google's code (weights from the narrower layer, means added back), fastsim the
              paper (weights from the first layer): values differ by design
  rsatoolbox  rsatoolbox.rdm.calc_rdm(method="correlation") per layer (n x n), then
              rsatoolbox.rdm.compare(method="spearman"); fastsim's rsa_spearman samples
              --spearman-pairs of the n (n - 1) / 2 pairs (its default 1 000 000), so its value
              differs from the exact one by sampling
  sklearn     ReSi's kNN measures: sklearn NearestNeighbors(metric="cosine") lists per pair
  platonic    platonic-rep's cycle kNN: full n x n similarity, argsort, knn_A[knn_B]

Run:  python bench/measures_cpu.py                       # L = 13, d = 768, n = 4096
      python bench/measures_cpu.py --n 1024 --d 128 --L 4 --limit 60   # quick
      python bench/measures_cpu.py --only procrustes,cca_r2 --skip cca-zoo
"""

from __future__ import annotations

import argparse
import importlib.metadata
import multiprocessing as mp
import os
import platform
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch

import fastsim

SYMMETRIC_PAIRS = lambda L: L * (L - 1) // 2
ORDERED_PAIRS = lambda L: L * (L - 1)
COVARIANCE = ["procrustes", "cca_r2", "cca_mean", "svcca", "pwcca", "linear_regression", "rsa_linear", "rsa_cosine"]
SAMPLED = ["rsa_spearman", "jaccard_knn", "rank_knn", "second_order_cosine", "cycle_knn"]


def make_layers(L: int, n: int, d: int, seed: int) -> list[np.ndarray]:
    """L float32 (n, d) layers: x_{l+1} = x_l + 0.5 tanh(x_l W_l / sqrt(d)) + 0.3 noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    out = [x]
    for _ in range(L - 1):
        x = x + 0.5 * np.tanh(x @ rng.normal(size=(d, d)) / np.sqrt(d)) + 0.3 * rng.normal(size=(n, d))
        out.append(x)
    return [v.astype(np.float32) for v in out]


# ---------------------------------------------------------------- plain NumPy, from the definitions
def _c(x):
    x = np.asarray(x, dtype=np.float64)
    return x - x.mean(0)


def _basis(x):
    u, s, _ = np.linalg.svd(_c(x), full_matrices=False)
    return u[:, s > s[0] * 1e-10]


def np_procrustes(a, b):
    x, y = _c(a), _c(b)
    return np.linalg.norm(x.T @ y, "nuc") / (np.linalg.norm(x) * np.linalg.norm(y))


def np_cca(a, b):
    qa, qb = _basis(a), _basis(b)
    return np.linalg.svd(qa.T @ qb, compute_uv=False)[: min(qa.shape[1], qb.shape[1])]


def np_svcca(a, b, keep=0.99):
    bases = []
    for x in (a, b):
        u, s, _ = np.linalg.svd(_c(x), full_matrices=False)
        k = int(np.searchsorted(np.cumsum(s**2) >= keep * np.sum(s**2), True)) + 1
        bases.append(u[:, :k])
    m = min(q.shape[1] for q in bases)
    return np.mean(np.linalg.svd(bases[0].T @ bases[1], compute_uv=False)[:m])


def np_pwcca(a, b):
    qa, qb = _basis(a), _basis(b)
    p, s, _ = np.linalg.svd(qa.T @ qb)
    m = min(qa.shape[1], qb.shape[1])
    h = qa @ p[:, :m]
    alpha = np.abs(h.T @ _c(a)).sum(1)
    return np.sum(alpha * s[:m]) / np.sum(alpha)


def np_linreg(a, b):
    x, y = _c(a), _c(b)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return 1 - np.sum((y - x @ coef) ** 2) / np.sum(y**2)


def _upper_corr(K, Lm):
    iu = np.triu_indices(K.shape[0], 1)
    return np.corrcoef(K[iu], Lm[iu])[0, 1]


def np_rsa_linear(a, b):
    x, y = _c(a), _c(b)
    return _upper_corr(x @ x.T, y @ y.T)


def np_rsa_cosine(a, b):
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    x, y = x / np.linalg.norm(x, axis=1, keepdims=True), y / np.linalg.norm(y, axis=1, keepdims=True)
    return _upper_corr(x @ x.T, y @ y.T)


# ---------------------------------------------------------------- library peers
def zoo_cca(a, b, squared):
    from cca_zoo.linear import CCA

    m = min(a.shape[1], b.shape[1])
    za, zb = CCA(n_components=m).fit([a.astype(np.float64), b.astype(np.float64)]).transform(
        [a.astype(np.float64), b.astype(np.float64)])
    rho = np.array([np.corrcoef(za[:, i], zb[:, i])[0, 1] for i in range(m)])
    return np.mean(rho**2) if squared else np.mean(rho)


def repsim_pair(a, b, fn, **kw):
    import repsim

    return getattr(repsim, fn)([a.astype(np.float64), b.astype(np.float64)], **kw)[0, 1]


def repsim_call(fn, **kw):
    return partial(repsim_pair, fn=fn, **kw)


def np_cca_r2(a, b):
    return np.mean(np_cca(a, b) ** 2)


def np_cca_mean(a, b):
    return np.mean(np_cca(a, b))


def rsatoolbox_spearman(a, b):
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm, compare

    ra, rb = calc_rdm(Dataset(a.astype(np.float64)), method="correlation"), calc_rdm(Dataset(b.astype(np.float64)),
                                                                                      method="correlation")
    return float(compare(ra, rb, method="spearman")[0, 0])


def _sk_lists(x, k):
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(x).kneighbors(x)[1][:, 1:]


def sk_jaccard(a, b, k):
    la, lb = _sk_lists(a, k), _sk_lists(b, k)
    return np.mean([len(set(x) & set(y)) / len(set(x) | set(y)) for x, y in zip(la.tolist(), lb.tolist())])


def sk_rank(a, b, k):
    la, lb = _sk_lists(a, k), _sk_lists(b, k)
    out = []
    for x, y in zip(la.tolist(), lb.tolist()):
        shared = set(x) & set(y)
        if not shared:
            out.append(0.0)
            continue
        v = sum(1 / t for t in range(1, len(shared) + 1))
        out.append(sum(2 / ((1 + abs(x.index(j) - y.index(j))) * (x.index(j) + y.index(j) + 2)) for j in shared) / v)
    return np.mean(out)


def sk_second_order(a, b, k):
    la, lb = _sk_lists(a, k), _sk_lists(b, k)
    xa = a / np.linalg.norm(a, axis=1, keepdims=True)
    xb = b / np.linalg.norm(b, axis=1, keepdims=True)
    sa, sb = xa @ xa.T, xb @ xb.T
    out = []
    for i in range(a.shape[0]):
        u = sorted(set(la[i].tolist()) | set(lb[i].tolist()))
        va, vb = sa[i, u], sb[i, u]
        out.append(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb)))
    return np.mean(out)


def platonic_cycle(a, b, k):
    def lists(x):
        x = torch.nn.functional.normalize(torch.from_numpy(x), dim=-1)
        return (x @ x.T).fill_diagonal_(-1e8).argsort(dim=1, descending=True)[:, :k]

    ka, kb = lists(a), lists(b)
    n = ka.shape[0]
    return (ka[kb] == torch.arange(n).view(-1, 1, 1)).float().view(n, -1).max(dim=1).values.mean().item()


PEERS: dict[str, list[tuple[str, Callable]]] = {
    "procrustes": [("numpy", np_procrustes)],
    "cca_r2": [("numpy", np_cca_r2), ("cca-zoo", partial(zoo_cca, squared=True)),
               ("repsim", repsim_call("cca", summary_type="yanai"))],
    "cca_mean": [("numpy", np_cca_mean), ("cca-zoo", partial(zoo_cca, squared=False)),
                 ("repsim", repsim_call("cca", summary_type="pillai"))],
    "svcca": [("numpy", np_svcca), ("repsim", repsim_call("svcca", summary_type="pillai"))],
    "pwcca": [("numpy", np_pwcca), ("repsim", repsim_call("pwcca"))],
    "linear_regression": [("numpy", np_linreg)],
    "rsa_linear": [("numpy", np_rsa_linear)],
    "rsa_cosine": [("numpy", np_rsa_cosine)],
    "rsa_spearman": [("rsatoolbox", rsatoolbox_spearman)],
    "jaccard_knn": [("sklearn", sk_jaccard)],
    "rank_knn": [("sklearn", sk_rank)],
    "second_order_cosine": [("sklearn", sk_second_order)],
    "cycle_knn": [("platonic", platonic_cycle)],
}
ORDERED = {"pwcca", "linear_regression", "cycle_knn"}


def _child(fn, a, b, queue):
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    t0 = time.perf_counter()
    value = float(fn(a, b))
    queue.put((time.perf_counter() - t0, value))


def timed_pair(fn, a, b, limit: float) -> tuple[float | None, float | None]:
    """(seconds, value) of fn(a, b) in a child process; (None, None) past `limit` seconds."""
    ctx = mp.get_context("spawn")  # a forked child of a process with a live OpenMP pool can hang
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, a, b, queue))
    proc.start()
    proc.join(limit)
    if proc.is_alive():
        proc.terminate()
        proc.join()
        return None, None
    return queue.get() if not queue.empty() else (None, None)


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--L", type=int, default=13)
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--pairs", type=int, default=1, help="layer pairs each peer is timed on")
    p.add_argument("--limit", type=float, default=300.0, help="seconds one peer pair may take")
    p.add_argument("--spearman-pairs", type=int, default=1_000_000)
    p.add_argument("--only", default="", help="comma list of measures (default: all)")
    p.add_argument("--skip", default="", help="comma list of peers to leave out (numpy, cca-zoo, repsim, ...)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    names = [m for m in args.only.split(",") if m] or COVARIANCE + SAMPLED
    skip = {s for s in args.skip.split(",") if s}
    layers = make_layers(args.L, args.n, args.d, args.seed)
    print(f"# issue-15 measures, CPU: L={args.L} d={args.d} n={args.n} float32, k={args.k}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), numpy {np.__version__}, cca-zoo {version('cca-zoo')}, "
          f"repsim {version('repsim')}, rsatoolbox {version('rsatoolbox')}, scikit-learn {version('scikit-learn')}")
    print(f"# peers timed on {args.pairs} pair(s) each, at most {args.limit:g} s per pair; loop = per pair x pairs a loop needs")
    print()
    print(f"| measure | fastsim s (all {args.L}x{args.L}) | peer | s / pair | loop s | loop / fastsim | max abs diff |")
    print("|---|---:|---|---:|---:|---:|---:|")
    rng = np.random.default_rng(args.seed + 1)
    pairs = [tuple(sorted(rng.choice(args.L, 2, replace=False).tolist())) for _ in range(args.pairs)]
    for name in names:
        peers = [(peer, partial(fn, k=args.k) if name in SAMPLED[1:] else fn) for peer, fn in PEERS.get(name, [])]
        opts = {"k": args.k} if name in SAMPLED and name != "rsa_spearman" else {}
        if name == "rsa_spearman":
            opts = {"pairs": args.spearman_pairs}
        t0 = time.perf_counter()
        with np.errstate(all="ignore"):
            ours = np.asarray(fastsim.similarity_matrix(layers, name, **opts), dtype=np.float64)
        ours_s = time.perf_counter() - t0
        loops = ORDERED_PAIRS(args.L) if name in ORDERED else SYMMETRIC_PAIRS(args.L)
        first = True
        for peer, fn in peers:
            if peer in skip:
                continue
            times, diffs, over = [], [], False
            for a, b in pairs:
                seconds, value = timed_pair(fn, layers[a], layers[b], args.limit)
                if seconds is None:
                    over = True
                    break
                times.append(seconds)
                diffs.append(abs(value - ours[a, b]))
            cell = f"{ours_s:.2f}" if first else ""
            first = False
            if over:
                print(f"| {name if cell else ''} | {cell} | {peer} | > {args.limit:g} | > {args.limit * loops:.0f} | "
                      f"> {args.limit * loops / ours_s:.0f}x | n/a |", flush=True)
                continue
            per = float(np.mean(times))
            print(f"| {name if cell else ''} | {cell} | {peer} | {per:.2f} | {per * loops:.0f} | "
                  f"{per * loops / ours_s:.1f}x | {max(diffs):.1e} |", flush=True)
        if first:
            print(f"| {name} | {ours_s:.2f} | (no peer) | | | | |", flush=True)


if __name__ == "__main__":
    main()
