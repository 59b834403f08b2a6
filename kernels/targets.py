"""Compile the kernels' shipped configurations for real GPUs, offline: no device needed.

``triton.compile`` with a ``GPUTarget`` builds a kernel for any NVIDIA architecture on a machine
without a GPU; Triton's bundled ``ptxas -v`` then reports what a launch there would need:
registers, spill stores/loads and the stack frame per thread, and Triton's metadata the shared
memory per block. A configuration whose shared memory exceeds the target's per-block opt-in
limit cannot launch there (``OutOfResources``); spills cost local-memory traffic.

    python -m fastsim.kernels.targets [--arch 80,90] [--all] [--json]

prints every configuration of every kernel (``configs()`` of each kernel module) with its usage.
Run it without TRITON_INTERPRET=1: under the interpreter the kernels are not compilable objects.
Results of ptxas are cached in a JSON file beside Triton's cache (keyed by the PTX), so a rerun
costs only Triton's own cache lookups.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile

#: the shared memory one block may use (opt-in maximum), bytes: A100 (sm_80), consumer Ampere/Ada
#: (sm_86/sm_89), H100/H200 (sm_90)
SHARED_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448}

#: spill bytes (stores + loads) per thread that ``main`` accepts: every shipped configuration was
#: sized so that ptxas keeps everything in registers (the test's SPILL_BUDGET is the same 0)
SPILL_BUDGET = 0

#: the modules whose ``configs()`` are checked, in report order
MODULES = ("comoment", "linear_cka", "moments", "kernel_tiles", "cosine", "mimic_block")


def all_configs(exhaustive: bool = True, modules=MODULES) -> list:
    """Every LaunchConfig of every kernel module (``exhaustive=False``: each module's
    representative subset, ``configs(exhaustive=False)``)."""
    import importlib

    out = []
    for name in modules:
        mod = importlib.import_module(f"{__package__}.{name}")
        out.extend(mod.configs(exhaustive=exhaustive))
    return out


def _cache_file() -> str:
    base = os.environ.get("TRITON_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".triton", "cache")
    os.makedirs(base, exist_ok=True)
    return os.path.join(base, "fastsim-ptxas.json")


def _ptxas(cap: int) -> str:
    from triton.backends.nvidia.compiler import get_ptxas

    return get_ptxas(cap).path


def parse_ptxas(log: str) -> dict:
    """Registers, stack frame, spill stores/loads and static shared memory from ``ptxas -v``."""
    def grab(pattern: str) -> int:
        m = re.search(pattern, log)
        return int(m.group(1)) if m else 0

    return {
        "regs": grab(r"Used (\d+) registers"),
        "stack": grab(r"(\d+) bytes stack frame"),
        "spill_stores": grab(r"(\d+) bytes spill stores"),
        "spill_loads": grab(r"(\d+) bytes spill loads"),
        "static_smem": grab(r"(\d+) bytes smem"),
    }


def ptxas_usage(ptx: str, cap: int, cache: dict | None = None) -> dict:
    """``ptxas -v`` of a PTX module for sm_<cap> (sm_90a for 90, as Triton compiles it)."""
    ptxas = _ptxas(cap)
    key = hashlib.sha256(f"{ptxas}|{cap}|".encode() + ptx.encode()).hexdigest()
    if cache is not None and key in cache:
        return cache[key]
    arch = f"sm_{cap}a" if cap >= 90 else f"sm_{cap}"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        run = subprocess.run([ptxas, "-v", f"--gpu-name={arch}", src, "-o", os.path.join(tmp, "k.cubin")],
                             capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(f"ptxas failed for {arch}:\n{run.stderr[-3000:]}")
    usage = parse_ptxas(run.stderr)
    if cache is not None:
        cache[key] = usage
    return usage


def aligned_args(cfg) -> list[str]:
    """The runtime arguments a typical launch specializes as divisible by 16: every pointer (torch
    allocations are aligned), the strides and the feature counts (d, D)."""
    return [k for k, t in cfg.signature if t.startswith("*") or k.startswith("stride") or k in ("d", "D")]


def compile_config(cfg, cap: int, cache: dict | None = None, aligned: bool | None = None) -> dict:
    """Compile one LaunchConfig for sm_<cap>: {'shared', 'regs', 'stack', 'spill_stores', ...}.

    aligned (default cfg.aligned): compile the specialization Triton picks when the pointers,
    strides and feature counts are multiples of 16 (the usual launch), or the unaligned one."""
    aligned = cfg.aligned if aligned is None else aligned
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = cfg.kernel
    if not hasattr(fn, "arg_names") or type(fn).__name__ == "InterpretedFunction":
        raise RuntimeError("compile for GPUs without TRITON_INTERPRET=1 (the kernels are interpreted here)")
    consts = dict(cfg.constexprs)
    runtime = dict(cfg.signature)
    sig = {}
    for name in fn.arg_names:
        if name in consts:
            sig[name] = "constexpr"
        elif name in runtime:
            sig[name] = runtime[name]
        else:
            raise KeyError(f"{cfg.name}: no type for argument {name!r}")
    attrs = {(fn.arg_names.index(k),): [["tt.divisibility", 16]] for k in aligned_args(cfg)} if aligned else {}
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()}, attrs=attrs)
    ck = triton.compile(src, target=GPUTarget("cuda", cap, 32),
                        options=dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages))
    usage = dict(ptxas_usage(ck.asm["ptx"], cap, cache))
    usage["shared"] = int(ck.metadata.shared)
    return usage


def describe(cfg) -> str:
    """One line naming a configuration: kernel, dispatch key, the tile constexprs, warps, stages."""
    skip = {"ACC", "EMULATE_BF16", "TO_BF16", "PRECISION", "OP", "EMULATE", "DOT_F32"}
    tiles = " ".join(f"{k}={v}" for k, v in cfg.constexprs if k not in skip and isinstance(v, (int, bool)))
    return f"{cfg.name} [{cfg.label}] {tiles} w{cfg.num_warps} s{cfg.num_stages}{'' if cfg.aligned else ' (unaligned)'}"


_JOBS: list = []  # (configuration, arch) pairs of the current check_all, read by forked workers


def _work(arg):
    """Compile job i against a copy of the ptxas cache; returns (i, usage or error, new cache entries)."""
    i, cache = arg
    local: dict = dict(cache)
    cfg, cap = _JOBS[i]
    try:
        res = compile_config(cfg, cap, local)
    except Exception as e:  # reported per configuration, not fatal for the others
        res = f"{type(e).__name__}: {str(e)[-2000:]}"
    return i, res, {k: v for k, v in local.items() if k not in cache}


def check_all(caps=(80, 90), exhaustive: bool = True, jobs: int = 1, modules=MODULES) -> list[dict]:
    """Compile every configuration for every target; one record per (configuration, target):
    {'config', 'kernel', 'label', 'arch', 'regs', 'spill_stores', 'spill_loads', 'stack', 'shared'}
    or {'error'}. Triton caches the compiles; ptxas reports are cached by PTX in _cache_file()."""
    global _JOBS
    _JOBS = [(c, cap) for c in all_configs(exhaustive, modules) for cap in caps]
    path = _cache_file()
    try:
        with open(path) as f:
            cache = json.load(f)
    except (OSError, ValueError):
        cache = {}
    args = [(i, cache) for i in range(len(_JOBS))]
    if jobs > 1 and len(args) > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(jobs) as pool:
            done = pool.map(_work, args, chunksize=1)
    else:
        done = [_work(a) for a in args]
    results: list = [None] * len(_JOBS)
    for i, res, new in done:
        results[i] = res
        cache.update(new)
    try:
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(cache, f)
        os.replace(tmp, path)
    except OSError:
        pass
    out = []
    for (cfg, cap), res in zip(_JOBS, results):
        rec = {"config": describe(cfg), "kernel": cfg.name, "label": cfg.label, "arch": cap}
        if isinstance(res, str):
            rec["error"] = res
        else:
            rec.update(res)
        out.append(rec)
    return out


def markdown(recs: list[dict], caps, title: str) -> str:
    """One row per configuration: registers, spill stores/loads (bytes per thread) and shared
    memory (bytes per block) for each target."""
    rows: dict[str, dict] = {}
    for r in recs:
        rows.setdefault(r["config"], {})[r["arch"]] = r
    head = "| configuration | " + " | ".join(f"sm_{c} regs | sm_{c} spill st/ld | sm_{c} shared" for c in caps) + " |"
    lines = [f"### {title}", "", head, "|" + "---|" * (1 + 3 * len(caps))]
    for config, by_arch in rows.items():
        cells = []
        for c in caps:
            r = by_arch.get(c, {})
            if "error" in r or not r:
                cells += ["error", "", ""]
            else:
                over = " **over**" if r["shared"] > SHARED_LIMIT[c] else ""
                cells += [str(r["regs"]), f"{r['spill_stores']}/{r['spill_loads']}", f"{r['shared']}{over}"]
        lines.append(f"| {config} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="80,90", help="compute capabilities, comma-separated (default 80,90)")
    p.add_argument("--all", action="store_true", help="every configuration (default: the representative subset)")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--json", action="store_true", help="one JSON list on stdout")
    p.add_argument("--markdown", action="store_true", help="a Markdown table, one row per configuration")
    p.add_argument("--modules", default=",".join(MODULES), help="kernel modules, comma-separated")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("unset TRITON_INTERPRET to compile for GPUs", file=sys.stderr)
        return 2
    caps = tuple(int(a) for a in args.arch.split(","))
    recs = check_all(caps, exhaustive=args.all, jobs=args.jobs, modules=tuple(args.modules.split(",")))
    if args.json:
        print(json.dumps(recs))
        return 0
    import triton

    if args.markdown:
        print(markdown(recs, caps, f"Triton {triton.__version__}"))
        return 0

    print(f"triton {triton.__version__}; shared-memory limits {SHARED_LIMIT}")
    print(f"{'arch':>4} {'regs':>4} {'spill st/ld':>11} {'shared':>7}  configuration")
    bad = 0
    for r in recs:
        if "error" in r:
            print(f"sm_{r['arch']} ERROR {r['config']}: {r['error'].splitlines()[-1] if r['error'] else ''}")
            bad += 1
            continue
        over = r["shared"] > SHARED_LIMIT[r["arch"]]
        spills = r["spill_stores"] + r["spill_loads"] > SPILL_BUDGET
        bad += over or spills
        flag = " OVER" if over else " SPILL" if spills else "     "
        print(f"sm_{r['arch']} {r['regs']:>4} {r['spill_stores']:>5}/{r['spill_loads']:<5} {r['shared']:>7}{flag} {r['config']}")
    print(f"{len(recs)} compiles, {bad} failing (compile error, shared memory over the limit, or spills)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
