"""GPU timing of the fused mimicking-block kernel against the module's forward (eager and
torch.compile), for a base-size stack (768 wide) at batch 8 x 500 frames, and the whole
wav2vec2-base (random weights) against its mimicked version (the paper's setting is batch 128 x
1 s after 100 warm-up passes; this run uses fewer passes, --model-warmup/--model-repeats).

Order, so that a short time budget still returns the most: every eager and fused row first, then
the whole model, then the torch.compile rows (each compile takes seconds) while time is left.
Rows print as they are measured and check the step's deadline (FASTSIM_BENCH_DEADLINE).

    python bench/mimic_gpu.py [--batch 8] [--frames 500] [--dim 768] [--no-model] [--no-compile]
    python bench/mimic_gpu.py --device cpu --small   # a smoke run here: Triton interpreter, tiny sizes
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import benchlib
import numpy as np
import torch
from benchlib import RowTimeout, Table, free, outcome, section, skip_row, time_limit


def median_time(fn, dev: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds per call after warm-up, under inference_mode (CUDA events on CUDA)."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            if dev.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--no-model", action="store_true", help="skip the whole-model timing")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    ap.add_argument("--model-warmup", type=int, default=20)
    ap.add_argument("--model-repeats", type=int, default=20)
    ap.add_argument("--row-limit", type=float, default=45.0, help="seconds one row may take")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--small", action="store_true", help="tiny sizes and few passes (a smoke run, not a measurement)")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench/mimic_gpu.py: no CUDA device; nothing to time (--device cpu --small for a smoke run)")
        return 0
    if args.device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
    if args.small:
        args.batch, args.frames, args.dim = 2, 20, 64
    warm, reps = (1, 2) if args.small else (20, 100)
    from fastsim.mimic import MimickingNetwork, parameter_report, replace_stack

    fused_mod = benchlib.optional_import("fastsim.mimic.fused")  # internal: its PRECISION switches the kernel's matmul precision
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "CPU, Triton interpreter (smoke run)"
    table = Table(f"mimicking block: fused Triton kernel vs module forward ({name}, x = {args.batch} x {args.frames} x "
                  f"{args.dim}; median of {reps} after {warm} warm-up, {'CUDA events' if dev.type == 'cuda' else 'wall clock'})",
                  [("mimic", "mimic", ""), ("dtype", "dtype", ""), ("path", "path", ""), ("us", "us per pass", ""),
                   ("vs_eager", "vs eager", "x"), ("err", "max abs err vs float64 module", "e"), ("status", "note", "")])
    configs = [("1 block h=64", dict(widths=(64,))), ("2 blocks h=64", dict(widths=(64, 64))),
               ("1 block h=256 gelu residual", dict(widths=(256,), activation="gelu", residual=True)),
               ("1 block h=64 context 3", dict(widths=(64,), context=3))]
    compile_jobs = []  # (label, dtype, net, x, ref, eager seconds): timed at the end, while time is left

    def row(label, dtype, path, fn, ref, eager_t, limit=args.row_limit, need=2.0):
        values = dict(mimic=label, dtype=str(dtype).replace("torch.", ""), path=path)
        reason = skip_row(need)
        if reason:
            table.row(**values, status=reason)
            return None
        try:
            with time_limit(limit):
                with torch.no_grad():
                    out = fn()
                    err = (out.double() - ref).abs().max().item()
                t = median_time(fn, dev, warm, reps)
        except (Exception, RowTimeout) as exc:
            free(dev)
            table.row(**values, status=outcome(exc))
            return None
        finally:
            fused_mod.PRECISION = "highest"
        table.row(**values, us=f"{1e6 * t:.1f}", seconds=t, vs_eager=eager_t / t if eager_t else 1.0, err=err)
        return t

    for label, kw in configs:
        with section(f"mimic {label}", dev, need=5) as ok:
            if not ok:
                continue
            torch.manual_seed(0)
            if args.small:
                kw = {**kw, "widths": tuple(min(w, 32) for w in kw["widths"])}
            base = MimickingNetwork(dim=args.dim, **kw).eval().to(dev)
            x32 = torch.randn(args.batch, args.frames, args.dim, device=dev)
            with torch.no_grad():
                ref = base.double()(x32.double(), fused=False)
            base.float()
            for dtype in (torch.float32, torch.bfloat16):
                net = MimickingNetwork(base.config).eval().to(dev, dtype)
                net.load_state_dict(base.state_dict())
                x = x32.to(dtype)
                eager_t = row(label, dtype, "eager", lambda: net(x, fused=False), ref, None)
                precisions = ["highest", "high"] if dtype == torch.float32 else ["highest"]
                for prec in precisions:
                    def fused(prec=prec):
                        fused_mod.PRECISION = prec
                        return net(x, fused=True)
                    row(label, dtype, f"fused Triton ({prec})" if dtype == torch.float32 else "fused Triton", fused, ref, eager_t)
                if dev.type == "cuda" and not args.no_compile:  # (inductor on the CPU needs a compiler toolchain)
                    compile_jobs.append((label, dtype, net, x, ref, eager_t))
    if not args.no_model:
        with section("whole model", dev, need=25 if dev.type == "cuda" else 0) as ok:
            if ok:
                from fastsim.mimic.timing import compare  # internal: the paper's timing protocol
                from fastsim.speech.models import random_model
                size = "tiny" if args.small else "base"
                model = random_model("wav2vec2", size).to(dev)
                mimicked = replace_stack(model, MimickingNetwork(dim=model.config.hidden_size).to(dev))
                batch = 2 if args.small else 128
                with time_limit(max(10.0, min(120.0, benchlib.left() - 5))):
                    rep = compare(model, mimicked, batch=batch, clip_seconds=1.0,
                                         warmup=1 if args.small else args.model_warmup,
                                         repeats=2 if args.small else args.model_repeats)
                t = Table(f"whole model: wav2vec2-{size} (random weights) vs its 1-block h=64 mimicked version, batch {batch} x 1 s "
                          f"({rep.method})", [("what", "what", ""), ("full", "full model", ""), ("mimicked", "mimicked", ""),
                                              ("reduction", "reduction", "")])
                pa = rep.per_audio_second
                t.row(what="whole model, ms per s of audio", full=f"{pa(rep.full_s):.3f}", mimicked=f"{pa(rep.mimicked_s):.3f}",
                      reduction=f"{100 * rep.reduction:.1f}%", report=rep.to_json())
                t.row(what="stack alone, ms per s of audio", full=f"{pa(rep.stack_s):.3f}", mimicked=f"{pa(rep.mimic_s):.3f}",
                      reduction=f"{100 * rep.stack_reduction:.1f}%")
                t.note(parameter_report(model, mimicked).summary().replace("\n", " | "))
                del model, mimicked
    if compile_jobs:
        table = Table(f"mimicking block: torch.compile of the module forward ({name}; compile time not counted)",
                      table.columns)
        for label, dtype, net, x, ref, eager_t in compile_jobs:
            with section(f"torch.compile {label} {dtype}", dev, need=15) as ok:
                if ok:
                    compiled = torch.compile(lambda t, net=net: net(t, fused=False), dynamic=False)
                    row(label, dtype, "torch.compile", lambda: compiled(x), ref, eager_t, need=15)
    return benchlib.finish()


if __name__ == "__main__":
    sys.exit(main())
