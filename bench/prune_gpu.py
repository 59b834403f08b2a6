"""GPU check for fastsim.prune: skip_layers adds no memory, and inference time against layers removed.

For each architecture (random weights: the cost does not depend on the values):

1. memory: ``torch.cuda.memory_allocated()`` before and inside ``skip_layers`` (must be equal),
   every parameter's storage pointer unchanged, and the peak memory of one forward pass, full
   and pruned;
2. agreement: the output inside ``skip_layers`` against ``remove_layers`` on a copy (max abs diff);
3. time: the forward pass over a batch of audio with 0, 2, 4, ... layers skipped (CUDA events,
   best of --repeat after a warm-up), as ms per second of audio and relative to the full model.

Run:  python bench/prune_gpu.py                      # on a CUDA machine (bench/device.sh runs it)
      python bench/prune_gpu.py --device cpu --small # code-path check on a CPU, tiny sizes
"""

from __future__ import annotations

import argparse
import copy

import torch

from fastsim.models import random_model
from fastsim.prune import remove_layers, skip_layers
from fastsim.prune.hooks import storage_pointers
from gpu import timer  # bench/gpu.py: best of `repeat` calls after one warm-up (CUDA events on CUDA)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="tiny models and inputs (a code-path check)")
    ap.add_argument("--batch", type=int, default=8, help="clips per forward pass")
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds of audio per clip")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dtype", default="float16", choices=("float32", "float16", "bfloat16"))
    args = ap.parse_args()
    dev = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if dev.type == "cuda" else torch.float32
    archs = [("wav2vec2", "tiny"), ("wavlm", "tiny")] if args.small else \
        [("wav2vec2", "base"), ("wavlm", "base"), ("hubert", "large"), ("data2vec-audio", "base")]
    seconds = 1.0 if args.small else args.seconds
    print(f"device: {torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}; {str(dtype).replace('torch.', '')}; "
          f"batch {args.batch} x {seconds:g} s of audio")
    rows = []
    for family, size in archs:
        model = random_model(family, size).to(dev, dtype)
        L = model.config.num_hidden_layers
        x = torch.randn(args.batch, int(16_000 * seconds), device=dev, dtype=dtype)
        audio_s = args.batch * seconds

        @torch.no_grad()
        def forward():
            return model(x).last_hidden_state

        # 1. memory and storage
        removed_half = list(range(0, L, 2))  # layer 0 among them: WavLM's position bias moves
        if dev.type == "cuda":
            torch.cuda.synchronize()
        before = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0
        pointers = storage_pointers(model)
        with skip_layers(model, removed_half):
            inside = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0
            same_storage = set(storage_pointers(model).values()) <= set(pointers.values())
        assert inside == before, f"{family}-{size}: skip_layers allocated {inside - before} bytes"
        assert same_storage and storage_pointers(model) == pointers

        def peak(layers):
            if dev.type != "cuda":
                return float("nan")
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(dev)
            base = torch.cuda.memory_allocated(dev)
            with skip_layers(model, layers):
                forward()
            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated(dev) - base) / 2**20

        peak_full, peak_half = peak([]), peak(removed_half)
        # 2. agreement with a physically pruned copy
        with skip_layers(model, removed_half):
            hooked = forward()
        pruned = remove_layers(copy.deepcopy(model), removed_half)
        with torch.no_grad():
            diff = (pruned(x).last_hidden_state - hooked).abs().max().item()
        del pruned
        # 3. time against layers removed
        full_t = timer(dev)(forward, args.repeat)
        for n in sorted(set(list(range(0, L, 2)) + [L - 1])):
            with skip_layers(model, list(range(L - n, L))):
                t = timer(dev)(forward, args.repeat)
            rows.append((f"{family}-{size}", L, n, 1e3 * t / audio_s, t / full_t))
        print(f"{family}-{size}: skip_layers({len(removed_half)} of {L}) allocated {inside - before} bytes, storage "
              f"unchanged; forward peak {peak_full:.0f} MiB full, {peak_half:.0f} MiB pruned; "
              f"|skip - remove_layers| max {diff:.2e}")
        del model, x
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    print(f"\n{'model':<22} {'layers':>6} {'removed':>7} {'ms / s audio':>12} {'vs full':>8}")
    for name, L, n, ms, rel in rows:
        print(f"{name:<22} {L:>6} {n:>7} {ms:12.3f} {rel:8.3f}")


if __name__ == "__main__":
    main()
