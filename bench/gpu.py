"""GPU benchmark: fastsim beside the anchors of issue 11, measured in the same run.

One table per workload. In each, the anchors (the plain-torch recipes a user would write, and
pytorch-cka) are timed first, then every fastsim row prints its speed-up over each anchor
(anchor seconds / fastsim seconds; > 1 means fastsim is faster), the fraction of the physical
floor it reaches (FLOPs over the matmul rate, or bytes over the copy bandwidth, both measured
here at the start), and its error against a float64 reference computed on the first n_ref
samples (the same call on the reduced inputs, compared with float64 torch). The issue's H200
figures (torch 2.11) stand beside the anchors this run measured.

Timing: one warm-up call, then the best of up to --repeat calls (CUDA events); a slow row is timed
once. Every row prints the moment it is measured; a row over --row-limit seconds becomes a
"timeout" row, a failing row or section prints its error, and the rest goes on; rows that no
longer fit before FASTSIM_BENCH_DEADLINE (set by bench/device.sh) are skipped with a line saying so.

Run:  python bench/gpu.py                        # on a CUDA machine (bench/device.sh runs it)
      python bench/gpu.py --device cpu --small   # every section and row on a CPU, tiny sizes
                                                 # (Triton's interpreter), a code-path check
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import glob
import importlib.util
import math
import os
import sys
import tempfile
import time
import traceback
import zipfile
from collections.abc import Callable
from typing import Any

import benchlib
import torch
import torch.nn.functional as F
from benchlib import RowTimeout, Table, describe, free, left, measure, note, outcome, section, skip_row, time_limit, timer  # noqa: F401

HERE = os.path.dirname(os.path.abspath(__file__))

#: issue 11's H200 measurements (torch 2.11), printed beside this run's anchors
ISSUE = {
    "cka bf16": 0.128, "cka tf32": 0.383, "cka loop": 2.76, "cka floor": 0.058,
    "cos loop": 2.93, "cos floor": 0.0032, "rbf materialized": 0.68,
    "mknn platonic": 0.96, "mknn chunked": 0.147, "knn chunked": 1.23, "knn floor": 0.37,
}

FULL = dict(L=25, d=1024, n_cka=65536, n_cos=262144, n_rbf=16384, n_mknn=65536, n_knn=262144,
            n_big=1_000_000, n_pcka=(8192, 16384), n_ref=2048, k=10, rate_size=8192)
SMALL = dict(L=5, d=32, n_cka=1024, n_cos=2048, n_rbf=256, n_mknn=1024, n_knn=2048,
             n_big=4096, n_pcka=(128,), n_ref=256, k=10, rate_size=512)

COLUMNS = [("method", "method", ""), ("seconds", "seconds", "s"), ("err", "max err vs f64 @n_ref", "e"),
           ("vs", "speed-up over anchors", ""), ("of_floor", "floor / time", "%"),
           ("issue_s", "issue 11 H200 s", "s"), ("status", "note", "")]


@contextlib.contextmanager
def matmul_precision(p: str):
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(p)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


# ----------------------------------------------------------------------------- float64 references


def ref_linear_cka(layers: list[torch.Tensor], debiased: bool = False) -> torch.Tensor:
    """(L, L) linear CKA in float64 from the n x n Grams of the centered layers."""
    K = []
    for x in layers:
        u = x.double()
        u = u - u.mean(0)
        K.append(u @ u.T)
    if debiased:
        xy, xx, yy = unbiased_hsic(torch.stack(K), torch.stack(K))
        return xy / torch.sqrt(torch.outer(xx, yy))
    S = torch.stack(K).flatten(1)
    G = S @ S.T
    s = G.diagonal().sqrt()
    return G / torch.outer(s, s)


def unbiased_hsic(gx: torch.Tensor, gy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Song et al.'s unbiased HSIC of every pair of two stacks of n x n Grams: (Lx, Ly), (Lx,), (Ly,)."""
    n = gx.shape[-1]

    def parts(g):
        gt = g.clone()
        gt.diagonal(dim1=-2, dim2=-1).zero_()
        return gt, gt.sum((-2, -1)), gt.sum(-1)

    tx, sx, rx = parts(gx)
    ty, sy, ry = parts(gy)

    def h(a, b, sa, sb, ra, rb, cross):
        tr = a.flatten(1) @ b.flatten(1).T if cross else (a * b).sum((-2, -1))
        ss = torch.outer(sa, sb) if cross else sa * sb
        rr = ra @ rb.T if cross else (ra * rb).sum(-1)
        return (tr + ss / ((n - 1) * (n - 2)) - 2 * rr / (n - 2)) / (n * (n - 3))

    return h(tx, ty, sx, sy, rx, ry, True), h(tx, tx, sx, sx, rx, rx, False), h(ty, ty, sy, sy, ry, ry, False)


def ref_cosine(layers: list[torch.Tensor]) -> torch.Tensor:
    U = torch.stack([F.normalize(x.double(), dim=1) for x in layers]).flatten(1)
    return U @ U.T / layers[0].shape[0]


def ref_rbf_cka(a: torch.Tensor, b: torch.Tensor, sigma: float) -> float:
    def centered(x):
        x = x.double()
        sq = (x * x).sum(1)
        K = torch.exp(-(sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(0) / (2 * sigma**2))
        return K - K.mean(0, keepdim=True) - K.mean(1, keepdim=True) + K.mean()

    Ka, Kb = centered(a), centered(b)
    return float((Ka * Kb).sum() / (Ka.norm() * Kb.norm()))


def ref_knn(x: torch.Tensor, k: int) -> torch.Tensor:
    u = F.normalize(x.double(), dim=1)
    s = u @ u.T
    s.fill_diagonal_(-math.inf)
    return s.topk(k, dim=1).indices


def overlap(la: torch.Tensor, lb: torch.Tensor) -> float:
    return float((la[:, :, None] == lb[:, None, :]).any(2).double().mean())


def ref_mutual_knn(a: torch.Tensor, b: torch.Tensor, k: int) -> float:
    return overlap(ref_knn(a, k), ref_knn(b, k))


def sets_differ(got: torch.Tensor, ref: torch.Tensor) -> float:
    """Fraction of rows whose neighbour set differs."""
    return float((got.sort(1).values != ref.sort(1).values).any(1).double().mean())


def max_err(got: Any, ref: Any) -> float:
    g = torch.as_tensor(got).detach().double().cpu()
    r = torch.as_tensor(ref).detach().double().cpu()
    return float((g - r).abs().max())


def check_references(fastsim: Any) -> None:
    """The float64 torch references above against fastsim.reference (NumPy float64) on tiny inputs."""
    R = fastsim.reference
    layers = stacked_layers(3, 48, 8, torch.float32, torch.device("cpu"), seed=3)
    a, b = layers[0], layers[2]
    t = Table("float64 references of this script against fastsim.reference (NumPy), n=48, d=8, L=3",
              [("what", "reference", ""), ("err", "max abs difference", "e")])
    t.row(what="linear CKA matrix", err=max_err(ref_linear_cka(layers), R.similarity_matrix(layers, "cka")))
    t.row(what="debiased linear CKA matrix", err=max_err(ref_linear_cka(layers, True), R.similarity_matrix(layers, "cka", debiased=True)))
    t.row(what="cosine matrix", err=max_err(ref_cosine(layers), R.similarity_matrix(layers, "cosine")))
    t.row(what="RBF CKA (sigma 3)", err=abs(ref_rbf_cka(a, b, 3.0) - float(R.cka(a, b, kernel="rbf", sigma=3.0))))
    t.row(what="mutual kNN k=5", err=abs(ref_mutual_knn(a, b, 5) - float(R.mutual_knn(a, b, k=5))))
    t.row(what="kNN k=5 (fraction of sets differing)", err=sets_differ(ref_knn(a, 5), torch.as_tensor(R.knn_indices(a, 5))))


# ----------------------------------------------------------------------------- data and rates


def stacked_layers(L: int, n: int, d: int, dtype, device, seed=0, out: torch.Tensor | None = None) -> list[torch.Tensor]:
    """L layers, each the previous plus 0.5 N(0, 1) noise (a deep-net-like CKA decay). With `out`
    (an (L, n, d) tensor), written into it and returned as its views."""
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(n, d, device=device, dtype=torch.float32, generator=g)
    res = []
    for i in range(L):
        if i:
            x.add_(torch.randn(n, d, device=device, dtype=torch.float32, generator=g), alpha=0.5)
        if out is not None:
            out[i].copy_(x)
            res.append(out[i])
        else:
            res.append(x.to(dtype, copy=True))
    return res


def rates(device: torch.device, size: int) -> dict[str, float]:
    """Measured matmul FLOP/s (fp32-highest, tf32, bf16) and copy bytes/s (read + write)."""
    out = {}
    for name, dtype, prec in (("fp32", torch.float32, "highest"), ("tf32", torch.float32, "high"), ("bf16", torch.bfloat16, "highest")):
        a = torch.randn(size, size, device=device, dtype=dtype)
        with matmul_precision(prec):
            out[name] = 2 * size**3 / measure(lambda: a @ a, device, 3)
    buf = torch.empty(size * size * 16, dtype=torch.uint8, device=device)
    dst = torch.empty_like(buf)
    out["bytes"] = 2 * buf.numel() / measure(lambda: dst.copy_(buf), device, 3)
    return out


# ----------------------------------------------------------------------------- pytorch-cka


def _pytorch_cka_style(feats_x: torch.Tensor, feats_y: torch.Tensor, hsic: Callable) -> torch.Tensor:
    """pytorch-cka 1.1.3's cka_from_features on (L, n, d) stacks: L n x n Grams per side (bmm),
    unbiased HSIC of every pair, clamped to [0, 1]."""
    gx = torch.bmm(feats_x, feats_x.transpose(1, 2))
    gy = torch.bmm(feats_y, feats_y.transpose(1, 2))
    xy, xx, yy = hsic(gx, gy)
    den = torch.sqrt(torch.clamp(xx.unsqueeze(1) * yy.unsqueeze(0), min=0.0))
    den = torch.where(den == 0, 1e-6, den)
    return torch.clamp(xy / den, min=0.0, max=1.0)


def load_pytorch_cka() -> tuple[Callable, str]:
    """pytorch-cka's cka_from_features: the installed package; else the wheel in bench/wheels/
    (carried to the GPU machine, which has no network); else the same computation inline."""
    try:
        import cka  # type: ignore[import-not-found]

        if hasattr(cka, "cka_from_features"):
            return cka.cka_from_features, f"pytorch-cka {getattr(cka, '__version__', '?')} cka_from_features"
    except ImportError:
        pass
    wheels = sorted(glob.glob(os.path.join(HERE, "wheels", "pytorch_cka-*.whl")))
    if wheels:
        whl = wheels[-1]
        version = os.path.basename(whl).split("-")[1]
        sys.path.insert(0, whl)  # a pure-Python wheel imports straight from the zip
        try:
            import cka  # type: ignore[import-not-found]

            return cka.cka_from_features, f"pytorch-cka {version} cka_from_features (wheel)"
        except ImportError as exc:  # its __init__ imports matplotlib and tqdm, absent on the GPU machine
            missing = getattr(exc, "name", None) or describe(exc)
            sys.path.remove(whl)
            for name in [m for m in sys.modules if m == "cka" or m.startswith("cka.")]:
                del sys.modules[name]
            tmp = tempfile.mkdtemp(prefix="pytorch_cka_")
            zipfile.ZipFile(whl).extract("cka/hsic.py", tmp)
            spec = importlib.util.spec_from_file_location("pytorch_cka_hsic", os.path.join(tmp, "cka", "hsic.py"))
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            return (functools.partial(_pytorch_cka_style, hsic=mod.hsic),
                    f"pytorch-cka {version} hsic(), cka_from_features inline (no {missing})")
    return functools.partial(_pytorch_cka_style, hsic=unbiased_hsic), "pytorch-cka-style inline (package absent)"


# ----------------------------------------------------------------------------- the sections


class Bench:
    """One workload's table: anchors first, then fastsim rows with their speed-up over each."""

    def __init__(self, title: str, dev: torch.device, args: argparse.Namespace, floor: float = math.nan):
        self.table = Table(title, COLUMNS)
        self.dev, self.args, self.floor = dev, args, floor
        self.anchors: dict[str, float] = {}
        self.timed_out: set[str] = set()  # row groups with a row that timed out: their other rows are skipped

    def floor_row(self, method: str, issue: float | None = None) -> None:
        self.table.row(method=method, seconds=self.floor, of_floor=1.0 if self.floor > 0 else None, issue_s=issue,
                       status="computed, not run")

    def row(self, method: str, fn: Callable[[], Any], *, err: Callable[[], float] | None = None,
            anchor: str | None = None, issue: float | None = None, repeat: int | None = None,
            need: float = 3.0, status: str = "", group: str | None = None) -> float | None:
        values: dict[str, Any] = dict(method=method, issue_s=issue)
        reason = f"skipped: a {group} row timed out" if group in self.timed_out else skip_row(need)
        if reason:
            self.table.row(**values, status=reason)
            return None
        try:
            with time_limit(self.args.row_limit):
                t = measure(fn, self.dev, repeat=self.args.repeat if repeat is None else repeat)
        except RowTimeout as exc:
            free(self.dev)
            self.table.row(**values, status=outcome(exc))
            if group and not exc.by_deadline:
                self.timed_out.add(group)
            return None
        except Exception as exc:  # out of memory, out of resources, a bug: say so and go on
            traceback.print_exc()
            free(self.dev)
            self.table.row(**values, status=f"error: {describe(exc)}")
            return None
        e = None
        if err is not None:
            try:
                with time_limit(max(10.0, self.args.row_limit / 2)):
                    e = err()
            except (Exception, RowTimeout) as exc:
                traceback.print_exc()
                free(self.dev)
                why = outcome(exc)  # "stopped: ..." (the deadline) is no failure of the row
                status = (f"stopped (error column): {why}" if why.startswith("stopped") else f"error (error column): {why}") \
                    + (f"; {status}" if status else "")
        ratios = {} if anchor else {k: a / t for k, a in self.anchors.items()}
        if anchor:
            self.anchors[anchor] = t
        vs = ", ".join(f"{k} {r:.3g}x" for k, r in ratios.items())
        self.table.row(**values, seconds=t, err=e, vs=vs or None, ratios=ratios,
                       of_floor=self.floor / t if self.floor > 0 else None, status=status or None)
        return t


def section_cka(fastsim, dev, args, s, r) -> None:
    L, d, n, nr = s["L"], s["d"], s["n_cka"], s["n_ref"]
    layers = stacked_layers(L, n, d, torch.float32, dev)
    small = [x[:nr] for x in layers]
    ref = ref_linear_cka(small)
    D = L * d
    b = Bench(f"all-pairs linear CKA: L={L}, d={d}, n={n}, float32 input ({L * (L - 1) // 2} pairs; err at n_ref={nr})",
              dev, args, floor=n * D * D / r["bf16"])

    def stacked_gram(dtype, prec, xs):
        with matmul_precision(prec):
            Z = torch.cat(xs, 1)
            Z = (Z - Z.mean(0)).to(dtype)
            G = (Z.T @ Z).float().reshape(L, d, L, d)
            B = G.square().sum((1, 3))
            del G, Z
            sd = B.diagonal().sqrt()
            return B / torch.outer(sd, sd)

    def pair_loop(xs):
        out = torch.eye(L, device=dev)
        with matmul_precision("highest"):
            for i in range(L):
                for j in range(i + 1, L):
                    x, y = xs[i] - xs[i].mean(0), xs[j] - xs[j].mean(0)
                    out[i, j] = out[j, i] = (x.T @ y).square().sum() / ((x.T @ x).norm() * (y.T @ y).norm())
        return out

    b.row("stacked Gram, bf16 (anchor)", lambda: stacked_gram(torch.bfloat16, "highest", layers),
          err=lambda: max_err(stacked_gram(torch.bfloat16, "highest", small), ref), anchor="bf16Gram", issue=ISSUE["cka bf16"])
    b.row("stacked Gram, TF32 (anchor)", lambda: stacked_gram(torch.float32, "high", layers),
          err=lambda: max_err(stacked_gram(torch.float32, "high", small), ref), anchor="tf32Gram", issue=ISSUE["cka tf32"])
    b.row("pair loop, fp32, 3 Grams a pair (anchor)", lambda: pair_loop(layers), repeat=1,
          err=lambda: max_err(pair_loop(small), ref), anchor="loop", issue=ISSUE["cka loop"], need=10)
    b.floor_row("floor: n (Ld)^2 MAC (upper triangle) at the bf16 rate", ISSUE["cka floor"])
    for backend in ("torch", "triton"):
        for prec in ("highest", "high", "medium"):
            b.row(f"fastsim {backend} {prec}",
                  lambda: fastsim.similarity_matrix(layers, "cka", precision=prec, backend=backend),
                  err=lambda: max_err(fastsim.similarity_matrix(small, "cka", precision=prec, backend=backend), ref),
                  group=backend)  # an op-bound Triton path times out once, not three times


def section_pytorch_cka(fastsim, dev, args, s, r) -> None:
    L, d, nr = s["L"], s["d"], s["n_ref"]
    fn, label = load_pytorch_cka()
    for n in s["n_pcka"]:
        # pytorch-cka holds 2 L n x n float32 Grams and a temporary of the same size
        need_bytes = 3 * L * n * n * 4 + L * n * d * 4
        if dev.type == "cuda":
            free_bytes = torch.cuda.mem_get_info(dev)[0]
            if need_bytes > 0.8 * free_bytes:
                note(f"pytorch-cka at n={n}: skipped, needs ~{need_bytes / 2**30:.0f} GiB, {free_bytes / 2**30:.0f} GiB free")
                continue
        if skip_row(20):
            note(f"pytorch-cka at n={n}: {skip_row(20)}")
            continue
        m = min(nr, n)
        feats = torch.stack(stacked_layers(L, n, d, torch.float32, dev, seed=1))
        layers = list(feats)
        small = [x[:m] for x in layers]
        ref = ref_linear_cka(small, debiased=True)
        b = Bench(f"all-pairs debiased linear CKA: L={L}, d={d}, n={n}, float32 (pytorch-cka's estimator: "
                  f"unbiased HSIC of L n x n Grams; err at n_ref={m})", dev, args,
                  floor=n * (L * d) ** 2 / r["bf16"])
        b.row(label + " (anchor)", lambda: fn(feats, feats), err=lambda: max_err(fn(feats[:, :m], feats[:, :m]), ref.clamp(0, 1)),
              anchor="pytorch-cka", repeat=2)
        b.floor_row("floor: n (Ld)^2 MAC (upper triangle) at the bf16 rate")
        for backend, prec in (("torch", "highest"), ("torch", "high"), ("triton", "high")):
            b.row(f"fastsim {backend} {prec} debiased",
                  lambda: fastsim.similarity_matrix(layers, "cka", debiased=True, precision=prec, backend=backend),
                  err=lambda: max_err(fastsim.similarity_matrix(small, "cka", debiased=True, precision=prec, backend=backend), ref))
        feats = layers = small = None  # (not del: the lambdas above close over them)
        free(dev)


def section_cosine(fastsim, dev, args, s, r) -> None:
    L, d, n, nr = s["L"], s["d"], s["n_cos"], s["n_ref"]
    stacked = torch.empty(L, n, d, device=dev, dtype=torch.bfloat16)  # the one-read Triton kernel wants (L, n, d)
    layers = stacked_layers(L, n, d, torch.bfloat16, dev, out=stacked)
    small = [x[:nr] for x in layers]
    ref = ref_cosine(small)
    b = Bench(f"all-pairs cosine: L={L}, d={d}, n={n}, bfloat16 ({L * (L - 1) // 2} pairs; err at n_ref={nr})",
              dev, args, floor=L * n * d * 2 / r["bytes"])

    def loop(xs):
        out = torch.eye(L, device=dev)
        for i in range(L):
            for j in range(i + 1, L):
                out[i, j] = out[j, i] = F.cosine_similarity(xs[i], xs[j], dim=1).float().mean()
        return out

    b.row("pair loop, F.cosine_similarity (anchor)", lambda: loop(layers), repeat=1,
          err=lambda: max_err(loop(small), ref), anchor="loop", issue=ISSUE["cos loop"], need=10)
    b.floor_row("floor: one read of the L layers at the copy bandwidth", ISSUE["cos floor"])
    b.row("fastsim torch (list of layers)", lambda: fastsim.similarity_matrix(layers, "cosine", backend="torch"),
          err=lambda: max_err(fastsim.similarity_matrix(small, "cosine", backend="torch"), ref))
    b.row("fastsim triton (stacked L x n x d)", lambda: fastsim.similarity_matrix(stacked, "cosine", backend="triton"),
          err=lambda: max_err(fastsim.similarity_matrix(stacked[:, :nr], "cosine", backend="triton"), ref))
    b.row("fastsim auto (stacked)", lambda: fastsim.similarity_matrix(stacked, "cosine"),
          err=lambda: max_err(fastsim.similarity_matrix(stacked[:, :nr], "cosine"), ref))


def section_rbf(fastsim, dev, args, s, r) -> None:
    d, n, nr = s["d"], s["n_rbf"], s["n_ref"]
    a, bb = stacked_layers(2, n, d, torch.float32, dev)
    sigma = 1.0 * d**0.5
    ref = ref_rbf_cka(a[:nr], bb[:nr], sigma)
    b = Bench(f"RBF CKA of two layers: d={d}, n={n}, float32, sigma=sqrt(d) (err at n_ref={nr})", dev, args,
              floor=2 * n * n * d * 2 / r["fp32"])

    def materialized(x, y):
        m = x.shape[0]
        with matmul_precision("highest"):
            def k(z):
                return torch.exp(-torch.cdist(z, z).square() / (2 * sigma**2))

            H = torch.eye(m, device=dev) - 1.0 / m
            Ka, Kb = H @ k(x) @ H, H @ k(y) @ H
            return (Ka * Kb).sum() / (Ka.norm() * Kb.norm())

    b.row("materialized n x n, H K H (anchor)", lambda: materialized(a, bb), repeat=1,
          err=lambda: max_err(materialized(a[:nr], bb[:nr]), ref), anchor="materialized", issue=ISSUE["rbf materialized"])
    b.floor_row("floor: two n x n distance products at the fp32 rate")
    for backend, prec in (("torch", "highest"), ("torch", "high"), ("triton", "highest"), ("triton", "high"), ("triton", "medium")):
        b.row(f"fastsim {backend} {prec}",
              lambda: fastsim.cka(a, bb, kernel="rbf", sigma=sigma, backend=backend, precision=prec),
              err=lambda: max_err(fastsim.cka(a[:nr], bb[:nr], kernel="rbf", sigma=sigma, backend=backend, precision=prec), ref))


def chunked_topk(x: torch.Tensor, k: int, block: int = 4096) -> torch.Tensor:
    """The usual memory-bounded recipe: normalized rows, one block of rows against all, topk."""
    u = F.normalize(x, dim=1)
    idx = []
    for start in range(0, u.shape[0], block):
        sims = u[start : start + block] @ u.T
        rows = torch.arange(sims.shape[0], device=x.device)
        sims[rows, rows + start] = -math.inf
        idx.append(sims.topk(k, dim=1).indices)
    return torch.cat(idx)


def platonic_knn(x: torch.Tensor, k: int) -> torch.Tensor:
    """platonic-rep's recipe: the full n x n similarity, argsort of every row."""
    u = F.normalize(x, dim=1)
    sims = u @ u.T
    sims.fill_diagonal_(-1e8)
    return sims.argsort(dim=1, descending=True)[:, :k]


def section_mutual_knn(fastsim, dev, args, s, r) -> None:
    d, n, nr, k = s["d"], s["n_mknn"], s["n_ref"], s["k"]
    a, bb = stacked_layers(2, n, d, torch.float32, dev)
    ref = ref_mutual_knn(a[:nr], bb[:nr], k)
    b = Bench(f"mutual kNN of two layers: d={d}, n={n}, k={k}, float32 (err at n_ref={nr})", dev, args,
              floor=2 * n * n * d / r["tf32"])

    def with_tf32(fn):
        def run():
            with matmul_precision("high"):
                return fn()
        return run

    b.row("chunked topk, TF32 (anchor)", with_tf32(lambda: overlap(chunked_topk(a, k), chunked_topk(bb, k))), repeat=2,
          err=with_tf32(lambda: abs(overlap(chunked_topk(a[:nr], k), chunked_topk(bb[:nr], k)) - ref)),
          anchor="chunked", issue=ISSUE["mknn chunked"])
    # n x n float32 similarities, their sort's keys out and int64 indices in and out: ~24 bytes an entry
    fits = (24 * n * n < 0.95 * torch.cuda.mem_get_info(dev)[0]) if dev.type == "cuda" else n <= 4096
    if fits:
        b.row("platonic-rep argsort, TF32 (anchor)", with_tf32(lambda: overlap(platonic_knn(a, k), platonic_knn(bb, k))), repeat=1,
              err=with_tf32(lambda: abs(overlap(platonic_knn(a[:nr], k), platonic_knn(bb[:nr], k)) - ref)),
              anchor="platonic", issue=ISSUE["mknn platonic"], need=10)
    else:
        b.table.row(method="platonic-rep argsort, TF32 (anchor)", issue_s=ISSUE["mknn platonic"], status="skipped: n x n does not fit")
    b.floor_row("floor: 2 layers x n^2 d / 2 MAC (symmetric) at the TF32 rate")
    for prec in ("highest", "high", "medium"):
        b.row(f"fastsim {prec}", lambda: fastsim.mutual_knn(a, bb, k=k, precision=prec),
              err=lambda: abs(float(fastsim.mutual_knn(a[:nr], bb[:nr], k=k, precision=prec)) - ref))


def section_knn(fastsim, dev, args, s, r) -> None:
    from fastsim.core.knn import knn_indices
    d, n, nr, k = s["d"], s["n_knn"], s["n_ref"], s["k"]
    (x,) = stacked_layers(1, n, d, torch.float32, dev)
    ref = ref_knn(x[:nr], k)
    b = Bench(f"kNN of one layer: d={d}, n={n}, k={k}, float32 (err: fraction of neighbour sets that differ from "
              f"float64 at n_ref={nr})", dev, args, floor=2 * n * n * d / r["tf32"])

    def tf32(fn):
        def run():
            with matmul_precision("high"):
                return fn()
        return run

    b.row("chunked topk, TF32 (anchor)", tf32(lambda: chunked_topk(x, k)), repeat=2,
          err=tf32(lambda: sets_differ(chunked_topk(x[:nr], k), ref)), anchor="chunked", issue=ISSUE["knn chunked"])
    b.floor_row("floor: 2 n^2 d FLOP (the full product) at the TF32 rate", ISSUE["knn floor"])
    for prec in ("highest", "high", "medium"):
        b.row(f"fastsim {prec} (native top-k)", lambda: knn_indices(x, k, precision=prec, use_native=True),
              err=lambda: sets_differ(knn_indices(x[:nr], k, precision=prec, use_native=True), ref))
    if skip_row(15) is None:
        try:
            with time_limit(args.row_limit):
                exact = knn_indices(x, k, precision="highest", use_native=True).sort(1).values
                for prec in ("high", "medium"):
                    got = knn_indices(x, k, precision=prec, use_native=True).sort(1).values
                    b.table.note(f"n={n}: {int((got != exact).any(1).sum())} of {n} neighbour sets at {prec!r} differ from 'highest' (exact)")
        except (Exception, RowTimeout) as exc:
            b.table.note(f"full-size comparison with 'highest': {outcome(exc)}")


def section_knn_big(fastsim, dev, args, s, r) -> None:
    from fastsim.core.knn import knn_indices
    d, n, k = s["d"], s["n_big"], s["k"]
    (x,) = stacked_layers(1, n, d, torch.float32, dev)
    b = Bench(f"kNN of one layer, bounded memory: d={d}, n={n}, k={k}, float32 (target <= 7 s on a GPU)", dev, args,
              floor=n * n * d / r["tf32"])
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(dev)
    before = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0
    t = b.row("fastsim high (native top-k)", lambda: knn_indices(x, k, precision="high", use_native=True), repeat=1, need=20)
    if t is not None and dev.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(dev) - before) / 2**30
        b.table.note(f"peak extra GPU memory {peak:.2f} GiB (the input itself: {n * d * 4 / 2**30:.2f} GiB; "
                     f"n x n float32 would be {n * n * 4 / 2**30:.0f} GiB)")


SECTIONS = {  # name: (function, seconds it needs at least on an H200)
    "cka": (section_cka, 40),
    "cosine": (section_cosine, 25),
    "rbf": (section_rbf, 15),
    "mutual_knn": (section_mutual_knn, 20),
    "knn": (section_knn, 20),
    "pytorch_cka": (section_pytorch_cka, 20),
    "knn_big": (section_knn_big, 25),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--small", action="store_true", help="tiny sizes, to check the code paths")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--row-limit", type=float, default=None, help="seconds one row may take (default 25 on CUDA, 120 on the CPU)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    args = p.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device (run with --device cpu --small for a code-path check)")
        return 2
    if dev.type == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is first imported
    if args.row_limit is None:
        args.row_limit = 25.0 if dev.type == "cuda" else 120.0
    import fastsim

    s = SMALL if args.small else FULL
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU (Triton interpreter; tiny sizes: a code-path check)"
    benchlib.emit(f"\n## bench/gpu.py · {time.strftime('%Y-%m-%d')} · {name} · torch {torch.__version__} · fastsim {fastsim.__version__}")
    r = {"fp32": math.nan, "tf32": math.nan, "bf16": math.nan, "bytes": math.nan}
    with section("measured rates", dev) as ok:
        if ok:
            r = rates(dev, s["rate_size"])
            t = Table("measured rates (the floors' denominators)", [("what", "what", ""), ("rate", "rate", "")])
            t.row(what=f"matmul {s['rate_size']}^3 fp32 (highest)", rate=f"{r['fp32'] / 1e12:.2f} TFLOP/s", value=r["fp32"])
            t.row(what=f"matmul {s['rate_size']}^3 TF32 (high)", rate=f"{r['tf32'] / 1e12:.2f} TFLOP/s", value=r["tf32"])
            t.row(what=f"matmul {s['rate_size']}^3 bf16", rate=f"{r['bf16'] / 1e12:.2f} TFLOP/s", value=r["bf16"])
            t.row(what="copy (read + write)", rate=f"{r['bytes'] / 1e12:.3f} TB/s", value=r["bytes"])
    with section("reference check", dev) as ok:
        if ok:
            check_references(fastsim)
    wanted = [x.strip() for x in args.sections.split(",") if x.strip()]
    for key in wanted:
        if key not in SECTIONS:
            note(f"unknown section {key!r} (known: {', '.join(SECTIONS)})")
            continue
        fn, need = SECTIONS[key]
        with section(key, dev, need=need if dev.type == "cuda" else 0) as ok:
            if ok:
                fn(fastsim, dev, args, s, r)
    return benchlib.finish()


if __name__ == "__main__":
    sys.exit(main())
