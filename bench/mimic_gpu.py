"""GPU timing of the fused mimicking-block kernel against the module's forward (eager and
torch.compile), for a base-size stack (768 wide) at batch 8 x 500 frames, and the whole
wav2vec2-base (random weights) against its mimicked version at the paper's setting (batch 128 x
1 s, CUDA events after 100 warm-up passes). Run by bench/device.sh on a lent GPU.

    python bench/mimic_gpu.py [--batch 8] [--frames 500] [--dim 768] [--no-model]
"""

from __future__ import annotations

import argparse
import sys

import torch


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--no-model", action="store_true", help="skip the whole-model timing")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench/mimic_gpu.py: no CUDA device; nothing to time")
        return 0
    from fastsim.mimic import MimickingNetwork, fused as fused_mod
    from fastsim.mimic.timing import time_call

    dev = torch.device("cuda")
    print(f"\n## mimicking block: fused Triton kernel vs module forward ({torch.cuda.get_device_name()}, "
          f"x = {args.batch} x {args.frames} x {args.dim}; median of 200 after 50 warm-up, CUDA events)\n")
    print("| mimic | dtype | path | us per pass | vs eager | max abs err vs float64 module |")
    print("|---|---|---|---:|---:|---:|")
    configs = [("1 block h=64", dict(widths=(64,))), ("2 blocks h=64", dict(widths=(64, 64))),
               ("1 block h=256 gelu residual", dict(widths=(256,), activation="gelu", residual=True)),
               ("1 block h=64 context 3", dict(widths=(64,), context=3))]
    for label, kw in configs:
        torch.manual_seed(0)
        base = MimickingNetwork(dim=args.dim, **kw).eval().to(dev)
        x32 = torch.randn(args.batch, args.frames, args.dim, device=dev)
        with torch.no_grad():
            ref = base.double()(x32.double(), fused=False)
        base.float()
        for dtype in (torch.float32, torch.bfloat16):
            net = MimickingNetwork(base.config).eval().to(dev, dtype)
            net.load_state_dict(base.state_dict())
            x = x32.to(dtype)
            compiled = torch.compile(lambda t: net(t, fused=False), dynamic=False)
            paths = [("eager", lambda: net(x, fused=False)), ("torch.compile", lambda: compiled(x))]
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
                t = time_call(fn, dev, warmup=50, repeats=200)
                eager_t = eager_t or t
                print(f"| {label} | {str(dtype).replace('torch.', '')} | {name} | {1e6 * t:.1f} | {eager_t / t:.2f}x | {err:.2e} |")
            fused_mod.PRECISION = "highest"
    if not args.no_model:
        from fastsim.mimic import replace_stack, parameter_report
        from fastsim.mimic.timing import compare
        from fastsim.models import random_model

        model = random_model("wav2vec2", "base").to(dev)
        mimicked = replace_stack(model, MimickingNetwork(dim=768).to(dev))
        rep = compare(model, mimicked, batch=128, clip_seconds=1.0, warmup=100, repeats=50)
        print("\n## whole model: wav2vec2-base (random weights) vs its 1-block h=64 mimicked version\n")
        print(parameter_report(model, mimicked).summary())
        print(rep.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
