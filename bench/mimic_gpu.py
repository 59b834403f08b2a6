"""GPU timing of the fused mimicking-block kernel against the module's forward (eager and
torch.compile), for a base-size stack (768 wide) at batch 8 x 500 frames, and the whole
wav2vec2-base (random weights) against its mimicked version at the paper's setting (batch 128 x
1 s, CUDA events after 100 warm-up passes). Run by bench/device.sh on a lent GPU.

    python bench/mimic_gpu.py [--batch 8] [--frames 500] [--dim 768] [--no-model]
    python bench/mimic_gpu.py --device cpu --small   # a smoke run here: Triton interpreter, tiny sizes
"""

from __future__ import annotations

import argparse
import os
import sys

import torch


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--no-model", action="store_true", help="skip the whole-model timing")
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
    warm, reps = (1, 2) if args.small else (50, 200)
    from fastsim.mimic import MimickingNetwork, fused as fused_mod
    from fastsim.mimic.timing import time_call

    dev = torch.device(args.device)
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "CPU, Triton interpreter (smoke run)"
    print(f"\n## mimicking block: fused Triton kernel vs module forward ({name}, "
          f"x = {args.batch} x {args.frames} x {args.dim}; median of {reps} after {warm} warm-up, {'CUDA events' if dev.type == 'cuda' else 'wall clock'})\n")
    print("| mimic | dtype | path | us per pass | vs eager | max abs err vs float64 module |")
    print("|---|---|---|---:|---:|---:|")
    configs = [("1 block h=64", dict(widths=(64,))), ("2 blocks h=64", dict(widths=(64, 64))),
               ("1 block h=256 gelu residual", dict(widths=(256,), activation="gelu", residual=True)),
               ("1 block h=64 context 3", dict(widths=(64,), context=3))]
    for label, kw in configs:
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
            paths = [("eager", lambda: net(x, fused=False))]
            if dev.type == "cuda":  # (inductor on the CPU needs a compiler toolchain; not part of the smoke run)
                compiled = torch.compile(lambda t: net(t, fused=False), dynamic=False)
                paths.append(("torch.compile", lambda: compiled(x)))
            precisions = ["highest", "high"] if dtype == torch.float32 else ["highest"]
            for prec in precisions:
                def run(prec=prec):
                    fused_mod.PRECISION = prec
                    return net(x, fused=True)
                paths.append((f"fused Triton ({prec})" if dtype == torch.float32 else "fused Triton", run))
            eager_t = None
            for name, fn in paths:
                with torch.no_grad():
                    out = fn()
                    err = (out.double() - ref).abs().max().item()
                t = time_call(fn, dev, warmup=warm, repeats=reps)
                eager_t = eager_t or t
                print(f"| {label} | {str(dtype).replace('torch.', '')} | {name} | {1e6 * t:.1f} | {eager_t / t:.2f}x | {err:.2e} |")
            fused_mod.PRECISION = "highest"
    if not args.no_model:
        from fastsim.mimic import replace_stack, parameter_report
        from fastsim.mimic.timing import compare
        from fastsim.models import random_model

        model = random_model("wav2vec2", "tiny" if args.small else "base").to(dev)
        mimicked = replace_stack(model, MimickingNetwork(dim=model.config.hidden_size).to(dev))
        rep = compare(model, mimicked, batch=2 if args.small else 128, clip_seconds=1.0,
                      warmup=1 if args.small else 100, repeats=2 if args.small else 50)
        print(f"\n## whole model: wav2vec2-{'tiny' if args.small else 'base'} (random weights) vs its 1-block h=64 "
              f"mimicked version (paper's protocol: batch 128 x 1 s, 100 warm-up passes)\n")
        print(parameter_report(model, mimicked).summary())
        print(rep.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
